"""MONAI transforms for the ideal Fourier low-pass (FORGrad's filter) of channel-first maps.

Usage in a post-processing chain::

    post = Compose([FourierLowPassd(keys="saliency", sigma=12), SaveImaged(keys="saliency", ...)])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type

from monai_saliency.ops.fourier import ideal_lowpass
from monai_saliency.transforms._common import channel_first_float

__all__ = ["FourierLowPass", "FourierLowPassd"]


def _check_sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(
            f"sigma must be a positive number of frequency bins, got {sigma!r}; use a value >= the largest spatial "
            "size for no filtering."
        )
    return float(sigma)


class FourierLowPass(Transform):
    """Ideal (hard, circular/spherical) Fourier low-pass of a channel-first image ``(C, *spatial)``.

    Each channel is filtered independently over all its spatial axes: frequencies farther than ``sigma``
    bins from zero are removed (:func:`monai_saliency.ops.fourier.ideal_lowpass`). ``sigma >= max(spatial)``
    returns the input unchanged. Any size (odd sizes too), 1-N spatial axes. A MetaTensor keeps its metadata
    (no geometric change is applied, so nothing is recorded for inversion); numpy in gives numpy out.

    Args:
        sigma: cut-off radius in frequency bins, > 0.

    Raises:
        ValueError: for ``sigma <= 0``, an image without spatial axes, or NaN/Inf values.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, sigma: float) -> None:
        self.sigma = _check_sigma(sigma)

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Filter ``img`` ``(C, *spatial)``; floating output (float32 for integer input)."""
        data = channel_first_float(img)
        out = ideal_lowpass(data, self.sigma, spatial_dims=data.ndim - 1)
        dtype = out.dtype if isinstance(img, torch.Tensor) else out.numpy().dtype
        return convert_to_dst_type(out, img, dtype=dtype)[0]


class FourierLowPassd(MapTransform):
    """Dictionary twin of :class:`FourierLowPass`.

    Args:
        keys: keys of the items to filter.
        sigma: cut-off radius in frequency bins, > 0.
        allow_missing_keys: skip absent keys instead of raising.
    """

    backend = FourierLowPass.backend

    def __init__(self, keys: KeysCollection, sigma: float, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.filter = FourierLowPass(sigma)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.filter(d[key])
        return d
