"""Signature Activation's tensor math (ops/signature.py): energy layouts, precision, round-off, caches, filter."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import scipy.fft as sfft
import torch
from scipy.fftpack import dct as fp_dct
from scipy.fftpack import idct as fp_idct

from monai_saliency.ops.signature import ZERO_TOL_EPS, signature_map
from tests.methods._signature_reference import (
    NB_D,
    _minmax,
    reference_map,
)


# ----------------------------------------------------------------------------------------------------------------------
# The energy's two layouts (channel rows with a Kronecker DCT for blocks <= 64 px, channels-last per-axis GEMMs with
# reused buffers otherwise): notebook scaling, chunking and the caller's tensor untouched in each.
# ----------------------------------------------------------------------------------------------------------------------
def _notebook_energy(a: np.ndarray) -> np.ndarray:
    """The notebook's per-channel formula on the last two axes, batched over the leading ones (float64)."""
    lead = a.shape[:-2]
    flat = a.reshape(-1, *a.shape[-2:])
    out = np.empty_like(flat)
    for i, ch in enumerate(flat):
        c = fp_dct(fp_dct(ch, axis=0), axis=1, norm="ortho")
        out[i] = fp_idct(fp_idct(np.sign(c), axis=0), axis=1, norm="ortho") ** 2
    return out.reshape(*lead, *a.shape[-2:])


@pytest.mark.parametrize("shape", [(2, 5, 7, 7), (2, 5, 14, 12), (1, 3, 70, 9)])
def test_notebook_scaling_in_every_layout(shape):
    a = torch.relu(torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    got = signature_map(a, bilateral=False, dct_scaling="notebook")
    ref = _notebook_energy(a.numpy()).mean(axis=1)
    for b in range(shape[0]):
        np.testing.assert_allclose(got[b, 0].numpy(), _minmax(ref[b]), atol=1e-10)


def test_notebook_scaling_per_frame_of_a_video_layer():
    a = torch.relu(torch.randn(2, 4, 3, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(8)))
    got = signature_map(a, dct_axes="frames", bilateral=False, dct_scaling="notebook")
    ref = _notebook_energy(a.numpy()).mean(axis=1)  # (B, T, H, W)
    for b in range(2):
        np.testing.assert_allclose(got[b, 0].numpy(), _minmax(ref[b]), atol=1e-10)


@pytest.mark.parametrize("shape", [(2, 9, 7, 7), (2, 9, 14, 12), (2, 6, 3, 5, 4), (1, 1, 14, 14), (1, 1, 6, 6)])
def test_energy_layouts_chunk_exactly_and_leave_the_input_alone(shape):
    a = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(5)))
    before = a.clone()
    full = signature_map(a, bilateral=False)
    per_channel = signature_map(a, bilateral=False, max_elements=math.prod(shape[2:]) * shape[0])
    torch.testing.assert_close(full, per_channel, atol=1e-6, rtol=0)
    assert torch.equal(a, before)  # the work buffers never alias the caller's activations
    ref = reference_map(a.numpy(), shape[2:], bilateral=False)
    assert np.abs(full.numpy() - ref).max() <= 1e-4


@pytest.mark.parametrize(
    "shape, size, frames",
    [
        ((1, 12, 14, 14), (56, 56), False),
        ((1, 5, 6, 10, 8), (12, 20, 16), False),
        ((1, 5, 3, 10, 8), (6, 20, 16), True),
    ],
)
def test_single_item_matches_reference_with_filter(shape, size, frames):
    """One item takes the path that folds the first min-max into the filter's range sigma: same map as min-max, then
    filter (checked against OpenCV / the brute-force filter), for 2D, 3D and per-frame maps."""
    a = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(11)))
    got = signature_map(a, spatial_size=size, dct_axes="frames" if frames else "spatial")
    ref = reference_map(a.numpy(), size, frames=frames)
    assert ref.std() > 0.1
    assert np.abs(got.numpy() - ref).max() <= 1e-3
    both = signature_map(torch.cat([a, a.flip(-1)]), spatial_size=size, dct_axes="frames" if frames else "spatial")
    torch.testing.assert_close(both[:1], got, atol=1e-6, rtol=0)  # the batched path (min-max first) agrees


@pytest.mark.parametrize("threads", [1, 3, 4])
@pytest.mark.parametrize("shape", [(1, 12, 9, 10), (2, 6, 9, 10), (4, 3, 9, 10), (1, 6, 3, 9, 10), (2, 4, 3, 9, 10)])
def test_gemm_groups_follow_the_thread_count_exactly(shape, threads):
    """The DCT products are batched over item or channel runs, as many as threads divide: any grouping (1 to 4
    runs, of whole items or of one item's channels, with or without a frame axis) gives the reference map."""
    a = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(8)))
    frames = len(shape) == 5
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = signature_map(a, dct_axes="frames" if frames else "spatial", bilateral=False)
    finally:
        torch.set_num_threads(before)
    ref = reference_map(a.numpy(), shape[2:], frames=frames, bilateral=False)
    assert np.abs(got.numpy() - ref).max() <= 1e-4


# ----------------------------------------------------------------------------------------------------------------------
# Input edge cases: half precision, float32 overflow of the norms, empty input, gradients, constructor checks.
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(acts2d, dtype):
    """The default zero threshold of float16 (8 eps = 0.008 of the norm) would zero many coefficients: half inputs
    are computed in float32 and returned in their own dtype."""
    from monai_saliency.ops.signature import signature_energy, signature_reconstruction

    low = acts2d.to(dtype)
    energy = signature_energy(low, (-2, -1))
    assert energy.dtype == dtype
    torch.testing.assert_close(energy.float(), signature_energy(low.float(), (-2, -1)), rtol=1e-2, atol=1e-3)
    rec = signature_reconstruction(low, (-2, -1))
    assert rec.dtype == dtype
    torch.testing.assert_close(rec.float(), signature_reconstruction(low.float(), (-2, -1)), rtol=1e-2, atol=1e-2)
    m = signature_map(low, (40, 40))
    assert m.dtype == dtype
    torch.testing.assert_close(m.float(), signature_map(low.float(), (40, 40)), rtol=0, atol=1e-2)


def test_float32_overflow_of_the_norms_is_not_reported_as_nan(acts2d):
    """Finite float32 activations whose squares overflow (|a| > ~1e19) give the same map as scaled-down ones, also
    when another channel holds tiny values (each norm group is scaled by its own power of two)."""
    from monai_saliency.ops.signature import signature_energy, signature_reconstruction

    a = acts2d.clone()
    a[:, ::2] *= 1e30
    a[:, 1::4] *= 1e-30
    assert not torch.isfinite(torch.linalg.vector_norm(a, dim=(-2, -1))).all()  # the case at hand
    # the signature of a channel does not depend on its positive scale: same results as the unscaled activations
    torch.testing.assert_close(signature_map(a, (40, 40)), signature_map(acts2d, (40, 40)), rtol=0, atol=1e-5)
    torch.testing.assert_close(signature_energy(a, (-2, -1)), signature_energy(acts2d, (-2, -1)))
    rec = signature_reconstruction(a, (-2, -1))
    torch.testing.assert_close(rec, signature_reconstruction(acts2d, (-2, -1)))
    a[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        signature_map(a)


def test_empty_activations_and_sizes_raise():
    with pytest.raises(ValueError, match="empty"):
        signature_map(torch.zeros(0, 3, 5, 5))
    with pytest.raises(ValueError, match="empty"):
        signature_map(torch.zeros(1, 3, 0, 5))
    with pytest.raises(ValueError, match="positive"):
        signature_map(torch.rand(1, 3, 5, 5), (0, 5))


def test_energy_and_reconstruction_of_inputs_that_require_grad(acts2d):
    """Both are piecewise constant in their input: computed without a graph, equal to the detached computation."""
    from monai_saliency.ops.signature import signature_energy, signature_reconstruction

    a = acts2d.clone().requires_grad_(True)
    e = signature_energy(a, (-2, -1))
    assert not e.requires_grad
    torch.testing.assert_close(e, signature_energy(acts2d, (-2, -1)))
    r = signature_reconstruction(a, (-2, -1))
    assert not r.requires_grad
    torch.testing.assert_close(r, signature_reconstruction(acts2d, (-2, -1)))


# ----------------------------------------------------------------------------------------------------------------------
# The matrix cache: bounded, and never holding inference tensors.
# ----------------------------------------------------------------------------------------------------------------------
def test_matrix_cache_is_bounded_and_holds_no_inference_tensors(monkeypatch):
    from monai_saliency.ops import _cache
    from monai_saliency.ops.dct import batched_dct_matrix, dct_matrix

    monkeypatch.setattr(_cache, "CACHE_MAX_BYTES", 1 << 18)  # 256 KiB: the run below needs several MB
    _cache.CACHED_MATRICES.clear()
    first_key = ("resize", 40, 120, torch.float32, "cpu")
    for n in range(40, 64, 2):  # a run over many input sizes, e.g. whole volumes of different shapes
        signature_map(torch.rand(2, 4, 16, n, n), (32, 2 * n, 2 * n))
        signature_map(torch.rand(1, 3, n, n + 1), (3 * n, 3 * n))
        if n == 40:
            assert first_key in _cache.CACHED_MATRICES
    values = list(_cache.CACHED_MATRICES.values())
    assert values and sum(_cache.nbytes(v) for v in values) <= _cache.CACHE_MAX_BYTES
    assert first_key not in _cache.CACHED_MATRICES  # the least recently used went first
    assert not any(t.is_inference() for t in values)
    # the stack of a long batch is an expanded view of one matrix, not a copy
    stack = batched_dct_matrix(62, 4096, False, torch.float32, torch.device("cpu"))
    assert stack.shape == (4096, 62, 62) and stack.stride(0) == 0
    torch.testing.assert_close(stack[7], dct_matrix(62, torch.float32, "cpu"))


def test_cached_matrices_work_for_autograd_callers_after_a_map(acts2d):
    """Matrices first built inside the map's inference mode are reused by a differentiable caller."""
    from monai_saliency.ops import _cache
    from monai_saliency.ops.dct import dctn

    _cache.CACHED_MATRICES.clear()
    signature_map(acts2d[:1, :, :9, :10])
    x = torch.rand(3, 9, 10, requires_grad=True)
    y = dctn(x, (-2, -1))
    y.square().sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach())  # an orthonormal transform preserves the norm


# ----------------------------------------------------------------------------------------------------------------------
# Defaults: the notebook's bilateral filter, and a zero threshold at the DCT's round-off level (issue 24, part 3).
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(14, 14), (7, 9), (2, 5)])
def test_default_filter_is_the_notebooks_opencv_call(shape):
    """BILATERAL_DEFAULTS on a [0, 1] map is cv2.bilateralFilter(map, 2, 140, 140) on its 0..255 scale, with float32
    input (to float32 round-off) and uint8 input (within one grey level: OpenCV's 8-bit output is not always the
    nearest integer; ours minus OpenCV's was seen in [-0.5, 1))."""
    from monai_saliency.ops.bilateral import BILATERAL_DEFAULTS, bilateral_filter_axes

    m = np.random.default_rng(4).random((3, *shape))
    m = (m - m.min(axis=(1, 2), keepdims=True)) / np.ptp(m, axis=(1, 2), keepdims=True)

    def ours(x: np.ndarray) -> np.ndarray:
        d = BILATERAL_DEFAULTS
        t = torch.from_numpy(x).float()
        return bilateral_filter_axes(t, 2, d["spatial_sigma"], d["range_sigma"], d["radius"], "ball").double().numpy()

    cv_f32 = np.stack([cv2.bilateralFilter((255 * f).astype(np.float32), NB_D, 140, 140) for f in m]) / 255
    np.testing.assert_allclose(ours(m), cv_f32, atol=1e-5, rtol=0)
    q = np.round(255 * m).astype(np.uint8)
    cv_u8 = np.stack([cv2.bilateralFilter(f, NB_D, 140, 140) for f in q]).astype(np.float64)
    assert np.abs(255 * ours(q / 255.0) - cv_u8).max() < 1.0
    # the whole post-processing, batched and per item (min-max folded into the range sigma), 2D and a (1, H, W) map
    # whose singleton time axis is not filtered
    acts = torch.relu(torch.randn(2, 16, *shape, generator=torch.Generator().manual_seed(5)))
    for a in (acts, acts[:1]):
        plain = signature_map(a, bilateral=False)[:, 0].double().numpy()
        ref = np.stack([_minmax(cv2.bilateralFilter((255 * f).astype(np.float32), NB_D, 140, 140)) for f in plain])
        np.testing.assert_allclose(signature_map(a)[:, 0].numpy(), ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(signature_map(a[:, :, None])[:, 0, 0].numpy(), ref, atol=1e-5, rtol=0)


def _relative_coefficients(acts: np.ndarray, n_dct: int) -> np.ndarray:
    """``|DCT(A_s)| / ||A_s||`` per channel in float64 (scipy), over the trailing ``n_dct`` axes."""
    axes = tuple(range(acts.ndim - n_dct, acts.ndim))
    c = sfft.dctn(acts, axes=axes, norm="ortho")
    return np.abs(c) / np.maximum(np.sqrt(np.square(acts).sum(axis=axes, keepdims=True)), 1e-300)


def _relu_activations(shape, seed: int) -> torch.Tensor:
    """ReLU of Gaussians with a random bias and scale per channel (dense and sparse channels), float64."""
    g = torch.Generator().manual_seed(seed)
    view = shape[:2] + (1,) * (len(shape) - 2)
    bias = 0.5 * torch.randn(view, generator=g, dtype=torch.float64)
    return torch.relu(torch.randn(shape, generator=g, dtype=torch.float64) + bias) * (
        torch.rand(view, generator=g) + 0.1
    )


@pytest.mark.parametrize(
    "shape, seed", [((2, 64, 14, 14), 1), ((2, 256, 7, 7), 3), ((1, 32, 4, 14, 14), 8), ((1, 2, 66, 66), 0)]
)
def test_float32_maps_match_the_float64_notebook_reference(shape, seed):
    """Random ReLU activations in float32 give the map of the notebook's float64 computation (scipy DCT per channel,
    ``np.sign`` without any threshold, the same post-processing) within 1e-4: the default threshold zeroes no real
    coefficient that float32 resolves. The seeds are ones whose coefficients all lie above the threshold plus the
    round-off (asserted; a coefficient within ~2 eps * ||A_s|| of zero has no float32 sign, and one within the
    threshold is zeroed: see the module docstring for how often). The former 64 eps zeroed 1 to 6 coefficients of
    each of these inputs and moved their maps by 0.008 to 0.015 from the reference."""
    a64 = _relu_activations(shape, seed)
    rel = _relative_coefficients(a64.numpy(), len(shape) - 2)
    eps = np.finfo(np.float32).eps
    assert rel.min() > (ZERO_TOL_EPS + 2) * eps  # no coefficient within float32 round-off (1.9 eps) of the threshold
    assert (rel <= 64 * eps).sum() > 0  # ... but some that the former default zeroed
    ref = reference_map(a64.numpy(), shape[2:], tol=0.0)
    assert ref.std() > 0.05
    got = signature_map(a64.float())
    assert got.dtype == torch.float32
    assert np.abs(got.double().numpy() - ref).max() <= 1e-4
    assert np.abs(signature_map(a64).numpy() - ref).max() <= 1e-6  # float64: the reference itself


def _exact_zero_activations(shape, seed: int = 7) -> torch.Tensor:
    """``(B, 6, *sp)`` channels whose DCT is zero in exact arithmetic at most frequencies (odd sizes): one voxel at
    the centre, a constant, a centred line, an all-zero channel, a voxel at a corner; plus one random ReLU channel.
    Items differ by their scales and the order of their channels."""
    b, sp = shape[0], shape[1:]
    g = torch.Generator().manual_seed(seed)
    centre = tuple(n // 2 for n in sp)
    chans = torch.zeros(6, *sp, dtype=torch.float64)
    chans[(0, *centre)] = 1.0
    chans[1] = 0.37
    chans[2][(Ellipsis, centre[-1])] = 2.5
    chans[4][(0,) * len(sp)] = 0.8
    chans[5] = torch.relu(torch.randn(sp, generator=g, dtype=torch.float64))
    items = [
        chans[torch.randperm(6, generator=g)] * (torch.rand(6, *(1,) * len(sp), generator=g) + 0.5) for _ in range(b)
    ]
    return torch.stack(items)


@pytest.mark.parametrize("shape, seed", [((4, 7, 7), 7), ((4, 15, 15), 7), ((3, 5, 7, 7), 7), ((2, 65, 65), 4)])
def test_exact_zero_coefficients_are_reproducible(shape, seed):
    """Coefficients that are zero in exact arithmetic come out as round-off (<= 2.2 eps * ||A_s||) below the default
    threshold on every path (Kronecker GEMM, per-axis GEMMs, 3D, FFT for axes > 64): the map is the
    same across runs, batch positions and orders, float32 and float64, and equal to the exact-arithmetic reference
    (scipy in float64 with coefficients below 1e-9 * ||A_s|| set to zero)."""
    a64 = _exact_zero_activations(shape, seed)
    rel = _relative_coefficients(a64.numpy(), len(shape) - 1)
    assert (rel < 1e-12).sum() > a64.numel() // 4  # many exact zeros
    assert rel[rel > 1e-12].min() > 2 * ZERO_TOL_EPS * np.finfo(np.float32).eps  # no real one near the threshold
    ref = reference_map(a64.numpy(), shape[1:], tol=1e-9)
    assert ref.std() > 0.01  # peaked at the single voxels, but not flat
    for dtype in (torch.float32, torch.float64):
        a = a64.to(dtype)
        got = signature_map(a)
        assert torch.equal(got, signature_map(a))  # runs
        assert np.abs(got.double().numpy() - ref).max() <= 1e-4  # float32 and float64 alike
        perm = torch.tensor([*range(1, shape[0]), 0])
        torch.testing.assert_close(signature_map(a[perm]), got[perm], atol=1e-5, rtol=0)  # batch order
        for i in range(shape[0]):  # alone, at batch position 0
            torch.testing.assert_close(signature_map(a[i : i + 1]), got[i : i + 1], atol=1e-5, rtol=0)
