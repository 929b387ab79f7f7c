"""Pure tensor operations: N-d, batched, device-agnostic, no modules and no I/O."""

from __future__ import annotations

from monai_saliency.ops.bilateral import bilateral_filter
from monai_saliency.ops.blur import gaussian_blur
from monai_saliency.ops.dct import dct, dctn, idct, idctn
from monai_saliency.ops.fourier import frequency_radius, ideal_lowpass, ideal_lowpass_mask
from monai_saliency.ops.normalize import CHANNEL_REDUCTIONS, minmax_normalize, reduce_channels

__all__ = [
    "bilateral_filter",
    "gaussian_blur",
    "dct",
    "dctn",
    "idct",
    "idctn",
    "frequency_radius",
    "ideal_lowpass",
    "ideal_lowpass_mask",
    "CHANNEL_REDUCTIONS",
    "minmax_normalize",
    "reduce_channels",
]
