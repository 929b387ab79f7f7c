"""The optional C kernels against straightforward torch computations, their argument checks, and the build itself."""

from __future__ import annotations

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


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 7, 5), (2, 196, 37), (3, 4, 1)])
def test_masked_sign_matches_torch(shape, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype)
    x[..., 0] = 0.0  # a zero column: norm 0, every sign 0
    tiny = shape[-1] > 1
    if tiny:
        x[0, 0, -1] = 1e-9  # far below the threshold of its (non-zero) column
    tol = 1e-3
    norms = torch.linalg.vector_norm(x.double(), dim=1, keepdim=True)
    expected = torch.where(x.double().abs() > tol * norms, x.sign().double(), 0.0).to(dtype)
    out = torch.full_like(x, 7.0)
    assert cpu_kernels.masked_sign(x, tol, out)
    assert torch.equal(out, expected)
    assert (out[..., 0] == 0).all() and (not tiny or out[0, 0, -1] == 0)
    in_place = x.clone()
    assert cpu_kernels.masked_sign(in_place, tol, in_place)  # aliasing is allowed
    assert torch.equal(in_place, expected)


@needs_kernels
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_masked_sign_reports_non_finite(bad):
    x = torch.randn(2, 5, 3)
    x[1, 2, 0] = bad
    assert not cpu_kernels.masked_sign(x, 1e-3, torch.empty_like(x))


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 9, 1, 13, 1), (2, 9, 3, 4, 5), (1, 196, 1, 512, 1), (4, 6, 1, 3, 2)])
def test_channel_energy_matches_torch(shape, dtype):
    y = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    squares = (y.double() ** 2).sum(3)  # (G, R, B, O)
    per_group = squares.permute(0, 2, 3, 1).reshape(-1, shape[4], shape[1])  # (G * B, O, R)
    summed = squares.sum(0).permute(1, 2, 0)  # (B, O, R)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(cpu_kernels.channel_energy(y, sum_groups=False).double(), per_group, rtol=tol, atol=0)
    torch.testing.assert_close(cpu_kernels.channel_energy(y, sum_groups=True).double(), summed, rtol=tol, atol=0)


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spatial, radius, window", [((9,), 2, "ball"), ((14, 14), 2, "ball"), ((5, 6, 7), 1, "box")])
def test_bilateral_gather_matches_brute_force(spatial, radius, window, dtype):
    x = torch.rand(3, *spatial, generator=torch.Generator().manual_seed(2), dtype=dtype)
    flat = x.reshape(3, -1)
    index = bil._neighbour_index(spatial, radius, window)
    log_w = bil._log_spatial_weights(radius, len(spatial), window, 1.3, dtype, torch.device("cpu"))
    got = cpu_kernels.bilateral_gather(flat, index, log_w, 0.5 / 0.2**2)
    nb = flat.double()[:, index].view(3, flat.shape[1], -1)  # independent gather in double
    w = torch.exp(log_w.double() - 0.5 / 0.2**2 * (nb - flat.double()[..., None]) ** 2)
    expected = (w * nb).sum(-1) / w.sum(-1)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)


@needs_kernels
def test_argument_checks():
    x = torch.randn(2, 4, 6)
    with pytest.raises(ValueError, match="masked_sign"):
        cpu_kernels.masked_sign(x, 1e-3, torch.empty(2, 4, 5))
    with pytest.raises(ValueError, match="masked_sign"):
        cpu_kernels.masked_sign(x.transpose(1, 2), 1e-3, torch.empty(2, 6, 4))  # not contiguous
    with pytest.raises(ValueError, match="masked_sign"):
        cpu_kernels.masked_sign(x, 1e-3, torch.empty(2, 4, 6, dtype=torch.float64))  # mixed dtypes
    with pytest.raises(ValueError, match="channel_energy"):
        cpu_kernels.channel_energy(x, sum_groups=False)  # not 5-d
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


@needs_kernels
@pytest.mark.parametrize("shape", [(1, 64, 14, 14), (3, 10, 9, 10), (2, 6, 4, 9, 9)])
def test_signature_map_runs_the_kernels_and_matches_the_torch_path(shape, monkeypatch):
    a = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(3)))
    size = tuple(2 * n for n in shape[2:])
    calls = {"sign": 0, "energy": 0, "bilateral": 0}
    for name, key in (("masked_sign", "sign"), ("channel_energy", "energy"), ("bilateral_gather", "bilateral")):
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
