from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_saliency.ops.bilateral import bilateral_filter

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize("d, sigma_color, sigma_space", [(5, 0.3, 2.0), (7, 0.1, 3.0), (9, 1.0, 1.5), (3, 0.05, 1.0)])
def test_matches_opencv_2d_float32(d, sigma_color, sigma_space):
    img = np.random.default_rng(0).random((40, 33)).astype(np.float32)
    ref = cv2.bilateralFilter(img, d, sigma_color, sigma_space)
    out = bilateral_filter(torch.from_numpy(img)[None, None], sigma_space, sigma_color, radius=d // 2)[0, 0].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_default_radius_follows_opencv_rule():
    img = np.random.default_rng(1).random((30, 30)).astype(np.float32)
    ref = cv2.bilateralFilter(img, 0, 0.2, 2.0)  # d <= 0: radius = round(1.5 * sigma_space)
    out = bilateral_filter(torch.from_numpy(img)[None, None], 2.0, 0.2)[0, 0].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 12, 13), (2, 2, 12, 13, 14)])
def test_infinite_range_sigma_is_gaussian_blur(shape):
    x = torch.from_numpy(np.random.default_rng(2).random(shape))
    nd = len(shape) - 2
    out = bilateral_filter(x, 1.5, math.inf, radius=3, window="box")
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0) + (1.5,) * nd, mode="mirror", truncate=2.0)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    # a very large finite range sigma converges to the same blur
    big = bilateral_filter(x, 1.5, 1e6, radius=3, window="box")
    np.testing.assert_allclose(big.numpy(), ref, atol=1e-9)


def test_preserves_edges_and_batch_items_independent():
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    out = bilateral_filter(step, 2.0, 0.1)
    assert torch.allclose(out, step, atol=1e-6)  # the edge survives a narrow range kernel
    blur = bilateral_filter(step, 2.0, math.inf)
    assert 0.05 < blur[0, 0, 0, 7] < 0.95  # a plain Gaussian smears it
    a, b = torch.rand(1, 1, 10, 10), torch.rand(1, 1, 10, 10)
    both = bilateral_filter(torch.cat([a, b]), 1.0, 0.2)
    assert torch.allclose(both[1:], bilateral_filter(b, 1.0, 0.2))


def test_bad_input():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="spatial_sigma"):
        bilateral_filter(x, 0, 0.1)
    with pytest.raises(ValueError, match="range_sigma"):
        bilateral_filter(x, 1.0, -1)
    with pytest.raises(ValueError, match="window"):
        bilateral_filter(x, 1.0, 0.1, window="disc")
    with pytest.raises(ValueError, match="radius"):
        bilateral_filter(x, 1.0, 0.1, radius=8)
    with pytest.raises(TypeError):
        bilateral_filter(x.long(), 1.0, 0.1)
    with pytest.raises(ValueError, match="NaN"):
        bilateral_filter(torch.full((1, 1, 8, 8), float("nan")), 1.0, 0.1)


@pytest.mark.parametrize("shape", [(2, 3, 14, 14), (1, 2, 6, 7, 8)])
def test_stacked_and_streamed_paths_agree(shape):
    x = torch.rand(*shape, dtype=torch.float64)
    fast = bilateral_filter(x, 1.3, 0.3, radius=2)
    streamed = bilateral_filter(x, 1.3, 0.3, radius=2, max_elements=0)
    torch.testing.assert_close(fast, streamed, atol=1e-12, rtol=0)


@pytest.mark.parametrize("max_elements", [2**24, 0])
def test_vanishing_range_sigma_keeps_the_map_and_never_gives_nan(max_elements):
    """sigma -> 0 weighs only neighbours of exactly equal value: a map of distinct values comes back unchanged (a
    1e-200 sigma used to overflow the range coefficient to -inf, and -inf * 0 at the centre is NaN)."""
    x = torch.rand(2, 1, 9, 8, generator=torch.Generator().manual_seed(2))
    x[1, 0, :4] = 0.25  # a flat patch: its voxels still average among themselves (to the same value)
    out = bilateral_filter(x, 1.0, 1e-200, max_elements=max_elements)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, x, atol=1e-7, rtol=0)


def test_check_finite_flag_only_skips_the_scan():
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(bilateral_filter(x, 1.0, 0.3, check_finite=False), bilateral_filter(x, 1.0, 0.3))
    bad = x.clone()
    bad[0, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        bilateral_filter(bad, 1.0, 0.3)
    assert torch.isnan(bilateral_filter(bad, 1.0, 0.3, check_finite=False)).any()  # the caller's promise, unchecked
