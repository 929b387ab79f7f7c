"""Signature Activation against a straightforward per-channel scipy / OpenCV / NumPy computation, and its protocol."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest
import scipy.fft as sfft
import torch
from monai.data import MetaTensor
from scipy.fftpack import dct as fp_dct
from scipy.fftpack import idct as fp_idct
from torch import nn

from monai_saliency.methods import SignatureActivation
from monai_saliency.ops.signature import ZERO_TOL_EPS, signature_map

# The authors' notebook filters the 0..255 map with cv2.bilateralFilter(map, 2, 140, 140): literal values, not read
# from BILATERAL_DEFAULTS, so that the reference checks the defaults. 3D maps: the same window rule (offsets of norm
# <= d // 2 = 1) in 3D.
NB_D, NB_SIGMA_COLOR, NB_SIGMA_SPACE = 2, 140.0, 140.0
TOL32 = ZERO_TOL_EPS * np.finfo(np.float32).eps


# ----------------------------------------------------------------------------------------------------------------------
# Independent reference: per item, per channel (per frame) loops with scipy.fft, OpenCV / NumPy bilateral, cv2 resize.
# ----------------------------------------------------------------------------------------------------------------------
def _signature_sq(a: np.ndarray, tol: float) -> np.ndarray:
    c = sfft.dctn(a, norm="ortho")
    sig = np.where(np.abs(c) > tol * np.linalg.norm(a), np.sign(c), 0.0)
    return sfft.idctn(sig, norm="ortho") ** 2


def _minmax(m: np.ndarray) -> np.ndarray:
    span = m.max() - m.min()
    return np.zeros_like(m) if span <= 0 else (m - m.min()) / span


def _bilateral_numpy(m: np.ndarray, sp_sigma: float, r_sigma: float, radius: int) -> np.ndarray:
    """Brute-force N-d bilateral filter, ball window, reflect-101 borders."""
    pad = np.pad(m, radius, mode="reflect")
    num = np.zeros_like(m)
    den = np.zeros_like(m)
    for off in itertools.product(range(-radius, radius + 1), repeat=m.ndim):
        if math.sqrt(sum(o * o for o in off)) > radius:
            continue
        nb = pad[tuple(slice(radius + o, radius + o + n) for o, n in zip(off, m.shape))]
        w = np.exp(-sum(o * o for o in off) / (2 * sp_sigma**2)) * np.exp(-((nb - m) ** 2) / (2 * r_sigma**2))
        num += w * nb
        den += w
    return num / den


def _bilateral_ref(m: np.ndarray) -> np.ndarray:
    """The notebook's filter of a ``[0, 1]`` map, on its 0..255 scale (OpenCV on 2D maps, brute force in 3D)."""
    if m.ndim == 2:
        m255 = (255.0 * m).astype(np.float32)
        return cv2.bilateralFilter(m255, NB_D, NB_SIGMA_COLOR, NB_SIGMA_SPACE).astype(np.float64) / 255.0
    return _bilateral_numpy(255.0 * m, NB_SIGMA_SPACE, NB_SIGMA_COLOR, NB_D // 2) / 255.0


def _resize_ref(m: np.ndarray, size) -> np.ndarray:
    if tuple(m.shape) == tuple(size):
        return m
    if m.ndim == 2:  # OpenCV INTER_LINEAR = half-pixel bilinear (align_corners=False) for upsampling
        return cv2.resize(m.astype(np.float64), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    t = torch.from_numpy(m)[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="trilinear", align_corners=False)[0, 0].numpy()


def reference_map(
    acts: np.ndarray, size, frames: bool = False, bilateral: bool = True, tol: float = TOL32
) -> np.ndarray:
    """Per-item, per-channel (and per-frame) Signature Activation, float64; ``tol=0``: plain ``np.sign`` (the
    notebook)."""
    out = []
    for b in range(acts.shape[0]):
        acc = np.zeros(acts.shape[2:])
        for s in range(acts.shape[1]):
            a = acts[b, s].astype(np.float64)
            if frames:
                acc += np.stack([_signature_sq(a[t], tol) for t in range(a.shape[0])])
            else:
                acc += _signature_sq(a, tol)
        m = _minmax(acc / acts.shape[1])
        if bilateral:
            m = np.stack([_bilateral_ref(f) for f in m]) if frames else _bilateral_ref(m)
        out.append(_minmax(_resize_ref(m, size)))
    return np.stack(out)[:, None]


# ----------------------------------------------------------------------------------------------------------------------
# Models whose target activations are known exactly.
# ----------------------------------------------------------------------------------------------------------------------
class Pooled(nn.Module):
    """The target layer ``features`` is an average pooling of the input: activations known in closed form."""

    def __init__(self, spatial_dims: int, factor: int | tuple = 4) -> None:
        super().__init__()
        pool = nn.AvgPool2d if spatial_dims == 2 else nn.AvgPool3d
        self.features = pool(factor)
        self.factor = factor

    def forward(self, x):
        f = self.features(x)
        return f.flatten(2).mean(-1)  # (B, K=C)


def _pool_np(x: np.ndarray, f) -> np.ndarray:
    f = (f,) * (x.ndim - 2) if isinstance(f, int) else f
    shape = list(x.shape[:2])
    for n, k in zip(x.shape[2:], f):
        shape += [n // k, k]
    return x.reshape(shape).mean(axis=tuple(range(3, len(shape), 2)))


@pytest.fixture
def acts2d() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.relu(torch.randn(3, 24, 32, 28, generator=g)) * torch.rand(3, 24, 1, 1, generator=g)


def test_matches_per_channel_reference_2d(acts2d):
    with SignatureActivation(Pooled(2), "features") as sa:
        got = sa(acts2d)
    ref = reference_map(_pool_np(acts2d.numpy(), 4), (32, 28))
    assert got.shape == (3, 1, 32, 28)
    assert ref.std() > 0.1  # a real map, not a trivial comparison
    assert np.abs(got.numpy() - ref).max() <= 1e-3


def test_matches_reference_without_resize_or_filter(acts2d):
    got = signature_map(acts2d, bilateral=False)
    ref = reference_map(acts2d.numpy(), acts2d.shape[2:], bilateral=False)
    assert np.abs(got.numpy() - ref).max() <= 1e-4


@pytest.mark.parametrize("shape", [(2, 5, 7, 7), (2, 5, 14, 12), (1, 3, 80, 66), (2, 4, 30)])
def test_every_dct_path_matches_reference(shape):
    """Kronecker GEMM (<= 64 px), per-axis GEMM (axes <= 64), FFT ops (longer axes) and 1D maps."""
    a = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(9)))
    got = signature_map(a, bilateral=False)
    ref = reference_map(a.numpy(), shape[2:], bilateral=False)
    assert np.abs(got.numpy() - ref).max() <= 1e-4


@pytest.mark.parametrize("frames", [False, True])
def test_matches_per_channel_reference_video(frames):
    g = torch.Generator().manual_seed(4)
    x = torch.relu(torch.randn(2, 6, 8, 24, 20, generator=g))
    with SignatureActivation(Pooled(3, (2, 4, 4)), "features", dct_axes="frames" if frames else "spatial") as sa:
        got = sa(x)
    ref = reference_map(_pool_np(x.numpy(), (2, 4, 4)), (8, 24, 20), frames=frames)
    assert got.shape == (2, 1, 8, 24, 20)
    assert np.abs(got.numpy() - ref).max() <= 1e-3


def test_frames_and_spatial_differ_and_frames_needs_time_axis(cnn3d, cnn2d):
    x = torch.randn(1, 1, 8, 24, 24, generator=torch.Generator().manual_seed(0))
    with (
        SignatureActivation(cnn3d, "features.4", dct_axes="frames") as a,
        SignatureActivation(cnn3d, "features.4") as b,
    ):
        assert not torch.allclose(a(x), b(x), atol=1e-3)
    with SignatureActivation(cnn2d, "features.4", dct_axes="frames") as sa, pytest.raises(ValueError, match="spatial"):
        sa(torch.randn(1, 2, 16, 16))


def test_notebook_scaling_reproduces_authors_formula(acts2d):
    """``dct_scaling="notebook"`` equals the published notebook's per-channel scipy.fftpack loop."""

    def dct2(a):
        return fp_dct(fp_dct(a, axis=0), axis=1, norm="ortho")

    def idct2(a):
        return fp_idct(fp_idct(a, axis=0), axis=1, norm="ortho")

    a = acts2d.double()
    got = signature_map(a, bilateral=False, dct_scaling="notebook")
    ortho = signature_map(a, bilateral=False)
    for b in range(a.shape[0]):
        chans = [idct2(np.sign(dct2(a[b, s].numpy()))) ** 2 for s in range(a.shape[1])]
        ref = _minmax(np.mean(np.array(chans), axis=0))
        np.testing.assert_allclose(got[b, 0].numpy(), ref, atol=1e-10)
    assert (got - ortho).abs().max() > 1e-3  # the two scalings really differ


def test_positive_scaling_invariance(acts2d):
    with SignatureActivation(Pooled(2), "features") as sa:
        base = sa(acts2d)
        for scale in (1e-3, 7.5, 1e4):
            torch.testing.assert_close(sa(acts2d * scale), base, atol=1e-5, rtol=0)


def test_batch_items_independent(cnn2d):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 2, 32, 32, generator=g)
    with SignatureActivation(cnn2d, "features.7") as sa:
        batched = sa(x)
        single = torch.cat([sa(x[i : i + 1]) for i in range(4)])
        other = sa(torch.cat([x[:1], torch.randn(3, 2, 32, 32, generator=g)]))
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)
    torch.testing.assert_close(other[:1], batched[:1], atol=1e-6, rtol=0)
    assert (batched[0] - batched[1]).abs().max() > 1e-2


def test_constant_or_zero_activations_give_zero_map():
    x = torch.zeros(3, 4, 16, 16)
    x[1] = torch.arange(4.0)[:, None, None] + 0.3  # constant per channel, different constants
    x[2, 2] = 5.0
    with SignatureActivation(Pooled(2), "features") as sa:
        m = sa(x)
    assert torch.isfinite(m).all()
    assert m.abs().max() == 0
    # a delta is not constant: the same call gives a real map
    x[2, 2, 5, 7] = 9.0
    with SignatureActivation(Pooled(2, 1), "features") as sa:
        assert sa(x)[2].max() == 1.0


def test_tiny_layer_maps(cnn2d):
    """A 2x2 layer map: filtered by the radius-1 window, finite output. A 1x1 layer map carries no spatial information: a clear
    error instead of an all-zero map."""
    with SignatureActivation(cnn2d, "features.7") as sa:  # features.7 is at a quarter of the input size
        m = sa(torch.randn(2, 2, 8, 8))
        assert m.shape == (2, 1, 8, 8) and torch.isfinite(m).all()
        assert m.min() >= 0 and m.max() <= 1 and m.amax(dim=(1, 2, 3)).eq(1).all()
        with pytest.raises(ValueError, match="single voxel"):
            sa(torch.randn(2, 2, 4, 4))


class _Wrapper(nn.Module):
    """DDP / DataParallel style wrapper: parameters live under ``module.``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def test_ddp_module_prefix(cnn2d):
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(6))
    with SignatureActivation(cnn2d, "features.7") as sa:
        ref = sa(x)
    with SignatureActivation(_Wrapper(cnn2d), "features.7") as sa:
        torch.testing.assert_close(sa(x), ref)
    with SignatureActivation(cnn2d, "module.features.7") as sa:
        torch.testing.assert_close(sa(x), ref)


def test_no_grad_and_model_state_untouched(cnn2d):
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(7), requires_grad=True)
    cnn2d.train()
    flags = [p.requires_grad for p in cnn2d.parameters()]
    with SignatureActivation(cnn2d, "features.7") as sa:
        m = sa(x, class_idx=2)  # class_idx is accepted and ignored (class-agnostic)
        with torch.no_grad():
            m2 = sa(x)
    assert SignatureActivation.class_agnostic
    assert not m.requires_grad and x.grad is None
    assert all(p.grad is None for p in cnn2d.parameters())
    assert [p.requires_grad for p in cnn2d.parameters()] == flags and cnn2d.training
    torch.testing.assert_close(m, m2)
    assert len(cnn2d.features[7]._forward_hooks) == 0  # hooks removed on exit


def test_inside_supervised_evaluator(cnn2d, evaluator_maps):
    images = torch.randn(4, 2, 16, 16)
    explainer = SignatureActivation(cnn2d, "features.4")
    preds = evaluator_maps(cnn2d, explainer, images)
    assert preds.shape == (2, 1, 16, 16)
    torch.testing.assert_close(preds, torch.as_tensor(explainer(images[2:])))
    explainer.close()


def test_metatensor_geometry_kept(cnn3d):
    affine = torch.tensor([[1.5, 0, 0, -10.0], [0, 2.0, 0, 5.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]], dtype=torch.float64)
    x = MetaTensor(torch.randn(1, 1, 8, 16, 16), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    x.applied_operations = [{"class": "Spacingd", "id": 1}]
    with SignatureActivation(cnn3d, "features.7") as sa:
        m = sa(x)
    assert isinstance(m, MetaTensor) and m.shape == (1, 1, 8, 16, 16)
    torch.testing.assert_close(m.affine, affine)
    assert m.meta["filename_or_obj"] == "case.nii.gz"
    assert m.applied_operations == x.applied_operations


def test_several_layers_are_averaged(cnn2d):
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(8))
    with SignatureActivation(cnn2d, "features.4") as a, SignatureActivation(cnn2d, "features.7") as b:
        ma, mb = a(x), b(x)
    with SignatureActivation(cnn2d, ["features.4", "features.7"]) as ab:
        both = ab(x)
    mean = (ma + mb) / 2
    lo = mean.flatten(1).amin(1)[:, None, None, None]
    hi = mean.flatten(1).amax(1)[:, None, None, None]
    torch.testing.assert_close(both, (mean - lo) / (hi - lo), atol=1e-6, rtol=0)


def test_bad_layers_and_options(cnn2d):
    with pytest.raises(ValueError, match="not found"):
        SignatureActivation(cnn2d, "features.77")
    # after global pooling: no spatial axes left
    with SignatureActivation(cnn2d, "pool") as sa, pytest.raises(ValueError, match="spatial"):
        sa(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match="dct_axes"):
        SignatureActivation(cnn2d, "features.7", dct_axes="time")
    with pytest.raises(ValueError, match="bilateral"):
        SignatureActivation(cnn2d, "features.7", bilateral={"sigma": 1.0})
    with pytest.raises(ValueError, match="NaN"):
        SignatureActivation(cnn2d, "features.7")(torch.full((1, 2, 16, 16), float("nan")))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_activations_raise(acts2d, bad):
    a = acts2d.clone()
    a[1, 3, 2, 2] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        signature_map(a)


def test_channel_chunking_is_exact(acts2d):
    full = signature_map(acts2d, spatial_size=(40, 40))
    chunked = signature_map(acts2d, spatial_size=(40, 40), max_elements=2 * 32 * 28 * 3)
    torch.testing.assert_close(full, chunked, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Class-agnostic behaviour (issue item 3): two objects trigger two classes; Grad-CAM on the argmax sees one.
# ----------------------------------------------------------------------------------------------------------------------
class TwoObjectNet(nn.Module):
    """Channels 0-3 respond to bright objects, 4-7 to dark ones; class 0 <- bright, class 1 <- dark."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        conv = nn.Conv2d(1, 8, 3, padding=1)
        k = torch.rand(8, 1, 3, 3, generator=g) + 0.5
        k[4:] *= -1
        conv.weight.data.copy_(k)
        conv.bias.data.zero_()
        self.features = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU())
        mix = torch.eye(8) + 0.1 * torch.rand(8, 8, generator=g) * torch.block_diag(torch.ones(4, 4), torch.ones(4, 4))
        self.features[2].weight.data.copy_(mix[:, :, None, None])
        self.features[2].bias.data.zero_()
        self.head = nn.Linear(8, 2)
        self.head.weight.data.copy_(torch.block_diag(torch.ones(1, 4), torch.ones(1, 4)))
        self.head.bias.data.zero_()

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _two_object_image() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.zeros(1, 1, 48, 48)
    mask_a = torch.zeros(48, 48, dtype=torch.bool)
    mask_b = torch.zeros(48, 48, dtype=torch.bool)
    mask_a[8:18, 8:18] = True  # bright square, class 0 (larger, wins the argmax)
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    mask_b[(yy - 34) ** 2 + (xx - 33) ** 2 <= 16] = True  # dark disk, class 1
    x[0, 0][mask_a] = 1.0
    x[0, 0][mask_b] = -0.8
    return x, mask_a, mask_b


def _grow(mask: torch.Tensor) -> torch.Tensor:
    """Dilate by 2 px (signature maps peak on object borders)."""
    return torch.nn.functional.max_pool2d(mask[None, None].float(), 5, 1, 2)[0, 0] > 0


def _mass_fraction(m: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of the map's total mass inside the dilated ``mask``."""
    return float(m[0, 0][_grow(mask)].sum() / m.sum())


def test_class_agnostic_highlights_both_objects():
    from monai_saliency.methods.cam import GradCAM

    model = TwoObjectNet().eval()
    x, mask_a, mask_b = _two_object_image()
    with torch.no_grad():
        logits = model(x)
    assert int(logits.argmax()) == 0 and float(logits[0, 1]) > 0  # both objects drive a class
    with SignatureActivation(model, "features.3") as sa:
        sig = sa(x)
    with GradCAM(model, "features.3") as gc:
        cam = gc(x)  # argmax class
    sig_a, sig_b = _mass_fraction(sig, mask_a), _mass_fraction(sig, mask_b)
    cam_a, cam_b = _mass_fraction(cam, mask_a), _mass_fraction(cam, mask_b)
    chance_a, chance_b = (float(_grow(m).float().mean()) for m in (mask_a, mask_b))  # a flat map's fractions
    # Signature Activation: both objects hold a comparable share of the map, far above chance
    assert sig_a > 2.5 * chance_a and sig_b > 2.5 * chance_b
    assert min(sig_a, sig_b) / max(sig_a, sig_b) > 0.5
    # Grad-CAM on the argmax class: all of its mass is on the first object, none on the second
    assert cam_a > 0.9 and cam_b < 0.05


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


def test_options_are_checked_in_the_constructor(cnn2d):
    with pytest.raises(ValueError, match="zero_tol"):
        SignatureActivation(cnn2d, "features.7", zero_tol=-1.0)
    with pytest.raises(ValueError, match="zero_tol"):
        signature_map(torch.rand(1, 3, 5, 5), zero_tol=float("nan"))
    with pytest.raises(ValueError, match="max_elements"):
        SignatureActivation(cnn2d, "features.7", max_elements=0)
    with pytest.raises(TypeError, match="bilateral"):
        SignatureActivation(cnn2d, "features.7", bilateral=1)


def test_global_pooling_that_keeps_its_axes_is_reported():
    """``AdaptiveAvgPool2d(1)`` keeps the rank: the single-voxel layer map is an error, not an all-zero map."""
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with SignatureActivation(net, "1") as sa, pytest.raises(ValueError, match="single voxel"):
        sa(torch.rand(2, 2, 16, 16))


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


# ----------------------------------------------------------------------------------------------------------------------
# Layout (issue 18): a gradient-free CAM in methods/cam.py, math in ops/, the old module a deprecation shim.
# ----------------------------------------------------------------------------------------------------------------------
def test_old_import_path_warns_and_returns_the_moved_objects():
    import importlib

    from monai_saliency import methods
    from monai_saliency.methods import cam
    from monai_saliency.ops import bilateral
    from monai_saliency.ops import signature as ops_signature

    old = importlib.import_module("monai_saliency.methods.signature")
    moved = {"SignatureActivation": cam.SignatureActivation}
    for name in ("BILATERAL_DEFAULTS", "bilateral_filter_axes", "bilateral_options"):
        moved[name] = getattr(bilateral, name)
    for name in ("DCT_AXES", "DCT_SCALINGS", "ZERO_TOL_EPS", "signature_energy", "signature_map"):
        moved[name] = getattr(ops_signature, name)
    for name in ("signature_reconstruction", "zero_tolerance"):
        moved[name] = getattr(ops_signature, name)
    for name, obj in moved.items():
        with pytest.warns(DeprecationWarning, match=f"moved to monai_saliency.*{name}"):
            assert getattr(old, name) is obj
    with pytest.warns(DeprecationWarning):
        from monai_saliency.methods.signature import SignatureActivation as OldPath
    assert OldPath is methods.SignatureActivation is cam.SignatureActivation
    with pytest.raises(AttributeError, match="no attribute"):
        _ = old.not_a_name


def test_signature_activation_is_a_gradient_free_cam(cnn2d):
    """It reuses the CAM family's hooks, upsampler and multi-layer fusion: the map of a layer is ``signature_map`` at
    the layer's size, upsampled by the shared ``upsample_maps`` and min-max normalised (any mode, area included)."""
    from monai_saliency.methods.cam import _CAMBase, upsample_maps
    from monai_saliency.ops.normalize import minmax_normalize

    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(3))
    for mode in ("linear", "nearest", "area"):
        with SignatureActivation(cnn2d, "features.7", upsample_mode=mode) as sa:
            assert isinstance(sa, _CAMBase)
            got = sa(x)
            with torch.no_grad():
                act = sa.forward_with_activations(x)[1]["features.7"]
        ref = minmax_normalize(upsample_maps(signature_map(act), (32, 32), mode))
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(got, signature_map(act, (32, 32), upsample_mode=mode), atol=1e-6, rtol=0)
