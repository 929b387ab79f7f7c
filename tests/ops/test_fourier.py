from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_saliency.ops.fourier import check_cutoff, frequency_radius, ideal_lowpass, ideal_lowpass_mask


def _reference_lowpass(x: np.ndarray, radius: float, nd: int) -> np.ndarray:
    """Full complex FFT, mask built from numpy's fftfreq by brute force over every bin."""
    shape = x.shape[-nd:]
    mask = np.zeros(shape, dtype=bool)
    freqs = [np.fft.fftfreq(n) * n for n in shape]
    for idx in np.ndindex(*shape):
        mask[idx] = math.sqrt(sum(freqs[a][i] ** 2 for a, i in enumerate(idx))) <= radius
    axes = tuple(range(-nd, 0))
    return np.fft.ifftn(np.fft.fftn(x, axes=axes) * mask, axes=axes).real


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 2, 15, 22), (2, 1, 9, 10, 7), (1, 1, 8, 8, 8)])
@pytest.mark.parametrize("radius", [1.0, 2.5, 4.0])
def test_matches_bruteforce_reference(shape, radius):
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = ideal_lowpass(x, radius)
    ref = _reference_lowpass(x.numpy(), radius, len(shape) - 2)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10)


def test_cosine_kept_or_removed():
    h, w = 32, 27
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    wave = torch.cos(2 * math.pi * (3 * yy / h + 4 * xx / w))[None, None]  # frequency radius 5
    assert torch.allclose(ideal_lowpass(wave, 5.0), wave, atol=1e-10)
    assert ideal_lowpass(wave, 4.99).abs().max() < 1e-10


@pytest.mark.parametrize("shape", [(1, 1, 31, 17), (2, 2, 9, 12, 15)])
def test_radius_at_least_largest_size_is_identity(shape):
    x = torch.randn(*shape)
    out = ideal_lowpass(x, float(max(shape[2:])))
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_float32_and_real_output():
    x = torch.randn(2, 1, 20, 20)
    out = ideal_lowpass(x, 3)
    assert out.dtype == torch.float32 and not out.is_complex()


def test_mask_and_radius_geometry():
    r = frequency_radius((5, 4))
    assert r[0, 0] == 0 and r[1, 0] == 1 and r[4, 0] == 1 and r[0, 2] == 2  # bin n/2 of an even axis is at 2
    assert ideal_lowpass_mask((5, 4), 1.0).sum() == 5  # DC and the four neighbours


@pytest.mark.parametrize("radius", [0, -1, float("nan"), float("inf")])
def test_bad_radius(radius):
    with pytest.raises(ValueError, match="radius"):
        ideal_lowpass(torch.randn(1, 1, 8, 8), radius)


def test_bad_input():
    with pytest.raises(TypeError):
        ideal_lowpass(torch.ones(1, 1, 4, 4, dtype=torch.int32), 1.0)
    with pytest.raises(ValueError, match="spatial_dims"):
        ideal_lowpass(torch.ones(4, 4), 1.0, spatial_dims=3)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "3"])
def test_check_cutoff_rejects_what_is_not_a_positive_radius(bad):
    with pytest.raises(ValueError, match="positive number of frequency bins"):
        check_cutoff(bad)


def test_check_cutoff_returns_a_float():
    assert check_cutoff(3) == 3.0 and isinstance(check_cutoff(3), float)
