from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_saliency.metrics.sparsity import fraction_below_median, gini_index, sparsity, top_k_mass
from monai_saliency.metrics.spectrum import high_frequency_power_ratio, power_spectrum, radial_power_spectrum


def test_gini_matches_mean_absolute_difference():
    torch.manual_seed(0)
    maps = torch.randn(3, 2, 5, 4, 3)
    g = gini_index(maps)
    c = maps.abs().sum(1).reshape(3, -1).double().numpy()
    n = c.shape[1]
    ref = np.abs(c[:, :, None] - c[:, None, :]).sum((1, 2)) / (2 * n * c.sum(1))
    np.testing.assert_allclose(g.numpy(), ref, rtol=1e-10)


def test_gini_and_top_k_extremes():
    n = 64
    one_hot = torch.zeros(2, 1, 8, 8)
    one_hot[0, 0, 3, 4] = -5.0  # magnitude counts
    one_hot[1] = 1.0  # constant
    np.testing.assert_allclose(gini_index(one_hot).numpy(), [1 - 1 / n, 0.0])
    np.testing.assert_allclose(top_k_mass(one_hot, 0.1).numpy(), [1.0, 6 / n])  # round(6.4) = 6
    zero = torch.zeros(1, 1, 8, 8)
    assert gini_index(zero).item() == 0 and top_k_mass(zero, 0.25).item() == pytest.approx(0.25)
    # sparser map -> higher Gini and top-k mass
    dense = torch.rand(1, 1, 8, 8) + 1
    sparse = dense * (torch.rand(1, 1, 8, 8) > 0.8)
    assert gini_index(sparse) > gini_index(dense) and top_k_mass(sparse) > top_k_mass(dense)


def test_fraction_below_median_seed000():
    torch.manual_seed(1)
    maps = torch.rand(2, 3, 7, 5)  # N = 35, distinct values
    loc = maps.sum(1).reshape(2, -1).numpy()
    ref = (loc < np.median(loc, axis=1, keepdims=True)).mean(1)
    np.testing.assert_allclose(fraction_below_median(maps).numpy(), ref)
    np.testing.assert_allclose(ref, 17 / 35)  # ≈ 0.5 by construction
    # the oddity: a map with > 50 % zeros scores 0 although it is sparse
    sparse = torch.zeros(1, 1, 10, 10)
    sparse[0, 0, :2] = 1.0
    assert fraction_below_median(sparse).item() == 0.0
    np.testing.assert_allclose(sparsity(maps, "below_median").numpy(), ref)
    with pytest.raises(ValueError, match="unknown sparsity"):
        sparsity(maps, "entropy")
    with pytest.raises(ValueError, match="fraction"):
        top_k_mass(maps, 0.0)


def test_spectrum_matches_numpy_and_parseval():
    torch.manual_seed(2)
    maps = torch.randn(2, 2, 6, 7, 5, dtype=torch.float64)
    p = power_spectrum(maps, remove_mean=False)
    ref = (np.abs(np.fft.fftn(maps.numpy(), axes=(2, 3, 4))) ** 2).sum(1)
    np.testing.assert_allclose(p.numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(p.sum((1, 2, 3)).numpy(), 210 * (maps.numpy() ** 2).sum((1, 2, 3, 4)), rtol=1e-10)


@pytest.mark.parametrize("freq, expected", [(3, 0.0), (12, 1.0)])  # 3/32 and 12/32 cycles per voxel
def test_high_frequency_ratio_cosines(freq, expected):
    t = torch.arange(32, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * freq * t / 32)
    maps = wave[None, None, :, None].expand(1, 1, 32, 16).clone()
    assert high_frequency_power_ratio(maps, cutoff=0.25).item() == pytest.approx(expected, abs=1e-12)
    # mix of both with equal amplitude: half the power is high
    mix = torch.cos(2 * math.pi * 3 * t / 32) + torch.cos(2 * math.pi * 12 * t / 32)
    assert high_frequency_power_ratio(mix[None, None, None].expand(1, 1, 4, 32).clone()).item() == pytest.approx(0.5)


def test_high_frequency_ratio_edge_cases():
    assert high_frequency_power_ratio(torch.ones(2, 1, 8, 8)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="cutoff"):
        high_frequency_power_ratio(torch.rand(1, 1, 8, 8), cutoff=0.8)
    nan = torch.rand(1, 1, 8, 8)
    nan[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        high_frequency_power_ratio(nan)
    # white noise in 3D: ratio = share of bins with rho > cutoff (about)
    torch.manual_seed(3)
    noise = torch.randn(4, 1, 16, 16, 16)
    r = high_frequency_power_ratio(noise).mean().item()
    f = np.fft.fftfreq(16)
    share = (np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None] ** 2) > 0.25).mean()
    assert r == pytest.approx(share, abs=0.03)


def test_radial_spectrum():
    t = torch.arange(32, dtype=torch.float64)
    maps = torch.cos(2 * math.pi * 8 * t / 32)[None, None, None].expand(1, 1, 8, 32).clone()  # 0.25 cycles
    curves, centres = radial_power_spectrum(maps, n_bins=8)
    assert curves.shape == (1, 8) and centres.shape == (8,)
    assert int(curves[0].argmax()) == 4  # bin [0.25, 0.3125)
    assert (curves[0, :4] < 1e-20).all()
