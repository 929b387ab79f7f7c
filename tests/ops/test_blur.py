"""ops.blur.gaussian_blur against scipy.ndimage.gaussian_filter, every boundary mode, any axis size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_saliency.ops.blur import BLUR_MODES, gaussian_blur, gaussian_kernel1d


@pytest.mark.parametrize("mode", BLUR_MODES)
@pytest.mark.parametrize(
    "shape, sigma",
    [
        ((2, 3, 9, 7, 5), (1.5, 0.7, 3.0)),  # sigma 3 -> radius 12 > the last axis (pads wrap around more than once)
        ((2, 1, 12, 11), 2.2),
        ((1, 2, 1, 6), (1.0, 0.0)),  # a size-1 axis, an unblurred axis
        ((3, 17), 4.0),  # 1 spatial axis
        ((1, 1, 3, 4, 5, 6), 1.3),  # 4 spatial axes
    ],
)
@pytest.mark.parametrize("truncate", [4.0, 3.0])
def test_matches_scipy(mode, shape, sigma, truncate):
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    nsp = max(len(shape) - 2, 1)
    out = gaussian_blur(x, sigma, spatial_dims=None if len(shape) > 2 else 1, truncate=truncate, mode=mode)
    sig = (sigma,) * nsp if isinstance(sigma, float) else sigma
    ref = ndimage.gaussian_filter(x.numpy(), (0,) * (len(shape) - nsp) + tuple(sig), mode=mode, truncate=truncate)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def test_per_axis_mode_and_radius_match_scipy():
    x = torch.randn(2, 2, 5, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    modes, radii, sigma = ("nearest", "mirror", "reflect"), (6, 2, 0), (1.7, 2.5, 1.0)
    out = gaussian_blur(x, sigma, mode=modes, radius=radii)
    # scipy skips a sigma-0 axis; radius 0 here means the same
    ref = ndimage.gaussian_filter(x.numpy(), (0, 0, 1.7, 2.5, 0), mode=("nearest",) * 2 + modes, radius=(1, 1) + radii)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def test_float32_batched_metatensor_leading_axes_independent():
    from monai.data import MetaTensor

    x = torch.randn(3, 2, 10, 10, generator=torch.Generator().manual_seed(2))
    mt = MetaTensor(x, affine=torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0])))
    out = gaussian_blur(mt, 1.2, mode="mirror")
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and out.shape == x.shape
    ref = ndimage.gaussian_filter(x.double().numpy(), (0, 0, 1.2, 1.2), mode="mirror")
    np.testing.assert_allclose(out.as_tensor().numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(gaussian_blur(x[1:2], 1.2, mode="mirror").numpy(), out[1:2].as_tensor().numpy())


def test_kernel_is_scipys():
    from scipy.ndimage._filters import _gaussian_kernel1d

    k = gaussian_kernel1d(1.7, 5, dtype=torch.float64)
    np.testing.assert_allclose(k.numpy(), _gaussian_kernel1d(1.7, 0, 5)[::-1], atol=1e-15)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": (1.0,)}, "one per blurred axis"),
        ({"sigma": 1.0, "mode": "constant"}, "mode"),
        ({"sigma": 1.0, "radius": -1}, "radius"),
        ({"sigma": 1.0, "spatial_dims": 5}, "spatial_dims"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gaussian_blur(torch.zeros(1, 1, 4, 4), **kwargs)
    with pytest.raises(ValueError, match="floating"):
        gaussian_blur(torch.zeros(1, 1, 4, 4, dtype=torch.long), 1.0)


def _scipy_over_trailing(x: torch.Tensor, nsp: int, sigma, **kwargs) -> np.ndarray:
    lead = x.ndim - nsp
    sig = (sigma,) * nsp if isinstance(sigma, float) else tuple(sigma)
    modes = kwargs.pop("mode")
    modes = (modes,) * nsp if isinstance(modes, str) else tuple(modes)
    radius = kwargs.pop("radius", None)
    if radius is not None:
        kwargs["radius"] = (1,) * lead + tuple(radius)
    return ndimage.gaussian_filter(x.numpy(), (0,) * lead + sig, mode=("nearest",) * lead + modes, **kwargs)


@pytest.mark.parametrize("shape", [(2, 3, 9, 7, 5), (2, 1, 16, 13), (1, 2, 3, 20)])
def test_perturbation_blur_is_scipy_nearest(shape):
    """metrics.perturbation's blurred start: scipy mode 'nearest', truncate 4, per-axis sigma."""
    from monai_saliency.metrics.perturbation import gaussian_blur_nd

    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    sigma = (1.5, 0.7, 3.0)[: len(shape) - 2]
    np.testing.assert_allclose(
        gaussian_blur_nd(x, sigma).numpy(), _scipy_over_trailing(x, len(shape) - 2, sigma, mode="nearest"), atol=1e-12
    )


@pytest.mark.parametrize("shape, sigma", [((2, 3, 9, 17), 1.5), ((2, 1, 16, 13), 2.4), ((1, 2, 3, 20, 9), 1.1)])
def test_forgrad_blur_is_scipy_mirror_with_nearest_fallback(shape, sigma):
    """FORGrad's insertion start: radius ceil(3 sigma) (>= 1), 'mirror' borders, 'nearest' on axes not longer than
    the radius (an axis of 3 frames with sigma 1.5 here)."""
    from monai_saliency.methods.forgrad import _blur

    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    r = max(1, int(np.ceil(3 * sigma)))
    modes = ["mirror" if n > r else "nearest" for n in shape[2:]]
    ref = _scipy_over_trailing(x, len(shape) - 2, sigma, mode=modes, radius=(r,) * (len(shape) - 2))
    np.testing.assert_allclose(_blur(x, sigma).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("shape, nsp, sigma", [((1, 12, 30), 2, 2.0), ((2, 3, 5, 40), 2, 2.5), ((1, 4, 9, 9), 3, 1.2)])
def test_signature_blur_is_scipy_mirror_with_radius_capped_by_the_axis(shape, nsp, sigma):
    """ImageSignature's smoothing: 'mirror' borders, radius int(3 sigma + 0.5) capped at size - 1 per axis."""
    from monai_saliency.transforms.utils import gaussian_smooth

    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    radii = [int(min(3 * sigma, n - 1) + 0.5) for n in shape[-nsp:]]
    ref = _scipy_over_trailing(x, nsp, sigma, mode="mirror", radius=radii)
    # atol 1e-7: before ops.blur, MONAI's gaussian_1d built this kernel in float32 even for float64 input
    np.testing.assert_allclose(gaussian_smooth(x, sigma, nsp).numpy(), ref, atol=1e-7)
