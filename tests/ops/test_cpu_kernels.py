"""The optional C kernels against straightforward torch computations, their argument checks, and the build itself."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_saliency.methods import signature as sig
from monai_saliency.ops import bilateral as bil
from monai_saliency.ops import cpu_kernels

needs_kernels = pytest.mark.skipif(cpu_kernels._ext is None, reason="the C extension is not built")
DTYPES = [torch.float32, torch.float64]


def _can_build_extensions() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(compiler) is not None and headers.exists()


@pytest.mark.skipif(not _can_build_extensions(), reason="no C compiler or Python headers on this machine")
def test_extension_is_built_wherever_it_can_be():
    # the build is optional=True: a compile error would otherwise pass silently onto the slower torch paths
    assert cpu_kernels._ext is not None, "pip install did not build monai_saliency.ops._cpu_kernels; see its log"
    assert cpu_kernels.available()


needs_fused = pytest.mark.skipif(not cpu_kernels.fused_energy_supported(), reason="no fused kernel on this CPU")


def _energy_reference(a: np.ndarray, tol: float, notebook: bool) -> np.ndarray:
    """Per channel with scipy: sum_s IDCT(sign(DCT(A_s)))^2 over the trailing block, (B, O, *block) from
    (B, S, O, *block), zero threshold tol * ||A_s||, notebook scaling on the DC row of axis -2."""
    import scipy.fft as sfft

    out = np.zeros((a.shape[0], a.shape[2], *a.shape[3:]))
    for b, s, o in np.ndindex(*a.shape[:3]):
        x = a[b, s, o].astype(np.float64)
        c = sfft.dctn(x, norm="ortho")
        sig = np.where(np.abs(c) > tol * np.linalg.norm(x), np.sign(c), 0.0)
        if notebook:
            sig[(Ellipsis, 0, slice(None))] /= np.sqrt(2.0)
        out[b, o] += sfft.idctn(sig, axes=tuple(range(sig.ndim)), norm="ortho") ** 2
    return out


@needs_fused
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape, notebook",
    [
        ((1, 19, 1, 14, 14), False),
        ((2, 8, 3, 5, 9), True),
        ((1, 3, 1, 33), False),
        ((1, 9, 2, 4, 6, 7), False),
        ((1, 5, 1, 9, 10, 3), True),  # butterfly on the odd and even axes, full matrix on the short one
        ((1, 4, 1, 64, 2), False),
    ],
)
def test_signature_energy_matches_per_channel_scipy(shape, notebook, dtype):
    a = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype))
    a[0, 1] = 0.0  # an all-zero channel adds nothing
    a[-1, -1] = 2.5  # a constant channel adds a constant
    block = shape[3:]
    forward, inverse = sig._fused_dct_matrices(block, "notebook" if notebook else "ortho", dtype)
    tol = 1e-4
    got = cpu_kernels.signature_energy(a.reshape(*shape[:3], -1), block, forward, inverse, tol)
    expected = _energy_reference(a.numpy(), tol, notebook).reshape(shape[0], shape[2], -1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-5 if dtype == torch.float32 else 1e-10, atol=1e-6)


def _padded(m: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(m, (0, 0, 0, -m.shape[0] % 8)).reshape(-1)


@needs_fused
@pytest.mark.parametrize("symmetric", ["none", "forward only", "both"])
@pytest.mark.parametrize("n", [9, 14])
def test_signature_energy_with_arbitrary_matrices(n, symmetric):
    """The kernel takes the even/odd butterfly only when both matrices have the DCT-II symmetry; any other pair of
    matrices goes through the full products and still gives sum_s (M sign_t(F a_s))^2."""
    gen = torch.Generator().manual_seed(n)
    dct = sig._kron_dct_matrix((n,), torch.float64, torch.device("cpu"))
    forward = dct if symmetric != "none" else torch.randn(n, n, generator=gen, dtype=torch.float64)
    inverse = dct.T if symmetric == "both" else torch.randn(n, n, generator=gen, dtype=torch.float64)
    a = torch.randn(2, 11, 1, n, generator=gen, dtype=torch.float64)
    tol = 1e-3
    got = cpu_kernels.signature_energy(a, (n,), _padded(forward), _padded(inverse), tol)
    coeff = a @ forward.T
    threshold = tol * a.norm(dim=-1, keepdim=True)
    signs = (coeff > threshold).double() - (coeff < -threshold).double()
    expected = ((signs @ inverse.T) ** 2).sum(1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@needs_fused
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_signature_energy_reports_non_finite(bad):
    a = torch.rand(1, 9, 1, 25)
    a[0, 8, 0, 3] = bad  # in the last, partly filled lane group
    forward, inverse = sig._fused_dct_matrices((5, 5), "ortho", torch.float32)
    assert cpu_kernels.signature_energy(a, (5, 5), forward, inverse, 1e-5) is None


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("range_sigma", [0.2, 3e-3])  # 3e-3: exponents down to -5e4, clamped in the kernel's exp
@pytest.mark.parametrize("spatial, radius, window", [((9,), 2, "ball"), ((14, 14), 2, "ball"), ((5, 6, 7), 1, "box")])
def test_bilateral_gather_matches_brute_force(spatial, radius, window, range_sigma, dtype):
    x = torch.rand(3, *spatial, generator=torch.Generator().manual_seed(2), dtype=dtype)
    flat = x.reshape(3, -1)
    index = bil._neighbour_index(spatial, radius, window)
    log_w = bil._log_spatial_weights(radius, len(spatial), window, 1.3, dtype, torch.device("cpu"))
    h = 0.5 / range_sigma**2
    got = cpu_kernels.bilateral_gather(flat, index, log_w, h)
    nb = flat.double()[:, index].view(3, flat.shape[1], -1)  # independent gather in double
    w = torch.exp(log_w.double() - h * (nb - flat.double()[..., None]) ** 2)
    expected = (w * nb).sum(-1) / w.sum(-1)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
def test_bilateral_gather_weights_follow_exp(dtype):
    """Two voxels 0 and 1, one tap either side (reflected): out(0) = 2w / (1 + 2w) with w = exp(log_w - h), so the
    kernel's exp can be read back over exponents from 0 to -80 and compared with math.exp; beyond the smallest
    normal result it is 0."""
    flat = torch.tensor([[0.0, 1.0]], dtype=dtype)
    index = bil._neighbour_index((2,), 1, "box")
    log_w = bil._log_spatial_weights(1, 1, "box", 1.0, dtype, torch.device("cpu"))
    side = float(log_w[0])
    for h in np.linspace(0.0, 79.0, 97):
        out = float(cpu_kernels.bilateral_gather(flat, index, log_w, float(h))[0, 0])
        w = out / (2.0 * (1.0 - out))
        assert w == pytest.approx(math.exp(side - h), rel=2e-6 if dtype == torch.float32 else 1e-13)
    for h in (100.0, 800.0, 1e30):
        expect_zero = dtype == torch.float32 or h > 708
        out = float(cpu_kernels.bilateral_gather(flat, index, log_w, h)[0, 0])
        assert (out == 0.0) if expect_zero else 0.0 < out < 1e-40


@needs_kernels
@pytest.mark.parametrize("range_sigma", [1e-3, math.inf])
def test_bilateral_gather_overflowing_differences(range_sigma):
    """Differences whose square overflows float32: with a range term their weight is exp(-inf) = 0; without one
    (range_sigma = inf, coefficient 0) the weights are the spatial ones, never 0 * inf = NaN."""
    x = torch.tensor([[0.0, 3e20, -2e20, 1.0, 5e19, 0.5, -1e25, 2.0, 7.0]])
    index = bil._neighbour_index((9,), 2, "ball")
    log_w = bil._log_spatial_weights(2, 1, "ball", 1.3, torch.float32, torch.device("cpu"))
    h = 0.0 if math.isinf(range_sigma) else 0.5 / range_sigma**2
    got = cpu_kernels.bilateral_gather(x, index, log_w, h).double()
    nb = x.double()[:, index].view(1, 9, -1)
    w = torch.exp(log_w.double() - h * (nb - x.double()[..., None]) ** 2)
    expected = (w * nb).sum(-1) / w.sum(-1)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0.0)  # exact zeros where the double result is 0


@needs_kernels
def test_argument_checks():
    if cpu_kernels.fused_energy_supported():
        a = torch.rand(1, 4, 1, 25)
        forward, inverse = sig._fused_dct_matrices((5, 5), "ortho", torch.float32)
        with pytest.raises(ValueError, match="block does not match"):
            cpu_kernels.signature_energy(a, (5, 4), forward, inverse, 1e-5)
        with pytest.raises(ValueError, match="matrix sizes"):
            cpu_kernels.signature_energy(a, (5, 5), forward[:-1], inverse, 1e-5)
        with pytest.raises(ValueError, match="bad arguments"):
            cpu_kernels.signature_energy(a.double(), (5, 5), forward, inverse, 1e-5)  # mixed dtypes
        long_forward, long_inverse = sig._fused_dct_matrices((65,), "ortho", torch.float32)
        with pytest.raises(ValueError, match="1 to 64"):
            cpu_kernels.signature_energy(torch.rand(1, 2, 1, 65), (65,), long_forward, long_inverse, 1e-5)
        with pytest.raises(ValueError, match="bad arguments"):
            cpu_kernels.signature_energy(a.transpose(1, 3), (5, 5), forward, inverse, 1e-5)  # not contiguous
    flat = torch.rand(1, 9)
    index = bil._neighbour_index((9,), 2, "ball")
    log_w = bil._log_spatial_weights(2, 1, "ball", 1.0, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="outside"):
        cpu_kernels.bilateral_gather(flat, torch.where(index == 3, 9, index), log_w, 1.0)
    with pytest.raises(ValueError, match="outside"):
        cpu_kernels.bilateral_gather(flat, torch.where(index == 3, -1, index), log_w, 1.0)
    with pytest.raises(ValueError, match="int64"):
        cpu_kernels.bilateral_gather(flat, index.int(), log_w, 1.0)
    with pytest.raises(ValueError, match="voxels x taps"):
        cpu_kernels.bilateral_gather(flat, index[:-1], log_w, 1.0)


@needs_kernels
def test_usable_only_for_plain_contiguous_cpu_floats():
    x = torch.randn(3, 4)
    assert cpu_kernels.usable(x, torch.randn(2))
    assert not cpu_kernels.usable(x.T)
    assert not cpu_kernels.usable(x.half())
    assert not cpu_kernels.usable(x, torch.randn(2, dtype=torch.float64))
    assert not cpu_kernels.usable(x.requires_grad_())
    previous = cpu_kernels.set_enabled(False)
    try:
        assert not cpu_kernels.usable(torch.randn(3))
    finally:
        cpu_kernels.set_enabled(previous)


def test_enabling_kernels_that_were_not_built_raises(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_ext", None)
    monkeypatch.setattr(cpu_kernels, "_enabled", False)
    with pytest.raises(RuntimeError, match="not built"):
        cpu_kernels.set_enabled(True)
    assert not cpu_kernels.usable(torch.randn(3))


def test_environment_variable_disables_the_kernels():
    code = "from monai_saliency.ops import cpu_kernels; print(cpu_kernels.available())"
    env = {**os.environ, "MONAI_SALIENCY_DISABLE_CPU_KERNELS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@needs_fused
@pytest.mark.parametrize("shape", [(1, 64, 14, 14), (3, 10, 9, 10), (2, 6, 4, 9, 9), (1, 80, 7, 7)])
def test_signature_map_runs_the_kernels_and_matches_the_torch_path(shape, monkeypatch):
    a = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(3)))
    size = tuple(2 * n for n in shape[2:])
    calls = {"energy": 0, "bilateral": 0}
    for name, key in (("signature_energy", "energy"), ("bilateral_gather", "bilateral")):
        original = getattr(cpu_kernels, name)

        def counted(*args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(cpu_kernels, name, counted)
    fused = sig.signature_map(a, spatial_size=size)
    assert all(calls.values()), calls  # the fast path really ran
    previous = cpu_kernels.set_enabled(False)
    try:
        plain = sig.signature_map(a, spatial_size=size)
    finally:
        cpu_kernels.set_enabled(previous)
    assert np.abs(fused.numpy() - plain.numpy()).max() <= 1e-5


@needs_fused
def test_energy_kernel_routing_follows_size_block_and_threads(monkeypatch):
    """Small inputs always take the kernel; inputs above ``_FUSED_ALWAYS_ELEMENTS`` only while torch has few
    threads; blocks beyond the kernel's limits never."""
    calls = []
    original = cpu_kernels.signature_energy
    monkeypatch.setattr(cpu_kernels, "signature_energy", lambda *args: calls.append(args[0].shape) or original(*args))
    tol = 1e-5

    def routed(shape, n_dct, threads):
        calls.clear()
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                sig._channel_sum_energy(torch.rand(shape), n_dct, "ortho", tol, 1 << 24)
        finally:
            torch.set_num_threads(previous)
        return bool(calls)

    large = (2, 512, 12, 12)  # 147,456 activations, above 2**17
    assert math.prod(large) > sig._FUSED_ALWAYS_ELEMENTS
    assert routed((1, 512, 12, 12), 2, 8) and routed(large, 2, 2)
    assert not routed(large, 2, sig._FUSED_BATCH_MAX_THREADS + 1)
    assert not routed((1, 2, 65, 4), 2, 1)  # an axis beyond 64
    assert not routed((1, 2, 17, 16, 16), 3, 1)  # more than 4096 voxels
