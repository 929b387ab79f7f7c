"""Pure tensor operations: N-d, batched, device-agnostic, no modules and no I/O."""

from __future__ import annotations

from monai_saliency.ops.bilateral import BILATERAL_DEFAULTS, bilateral_filter, bilateral_filter_axes, bilateral_options
from monai_saliency.ops.blur import gaussian_blur
from monai_saliency.ops.dct import dct, dctn, idct, idctn
from monai_saliency.ops.fourier import frequency_radius, ideal_lowpass, ideal_lowpass_mask
from monai_saliency.ops.normalize import CHANNEL_REDUCTIONS, minmax_normalize, reduce_channels
from monai_saliency.ops.resize import upsample_maps
from monai_saliency.ops.signature import (
    ZERO_TOL_EPS,
    signature_energy,
    signature_map,
    signature_reconstruction,
    zero_tolerance,
)

__all__ = [
    "BILATERAL_DEFAULTS",
    "CHANNEL_REDUCTIONS",
    "ZERO_TOL_EPS",
    "bilateral_filter",
    "bilateral_filter_axes",
    "bilateral_options",
    "dct",
    "dctn",
    "frequency_radius",
    "gaussian_blur",
    "idct",
    "idctn",
    "ideal_lowpass",
    "ideal_lowpass_mask",
    "minmax_normalize",
    "reduce_channels",
    "signature_energy",
    "signature_map",
    "signature_reconstruction",
    "upsample_maps",
    "zero_tolerance",
]
