"""The image signature of Hou et al. (2012) as MONAI transforms (seed 001, Def. 6.1 and Fig. 1).

For a channel-first image ``I`` ``(C, *spatial)``::

    reconstruction_c = IDCT(sign(DCT(I_c)))                       (output="reconstruction", (C, *spatial), signed)
    saliency         = minmax( G * mean_c reconstruction_c ** 2 )  (output="saliency", (1, *spatial) in [0, 1])

with an orthonormal DCT over the last two axes of each frame (``dct_axes="frames"``: a 2D image, or every frame of a
cine ``(C, T, H, W)``) or over all spatial axes (``dct_axes="spatial"``). ``G`` is a Gaussian blur of standard
deviation ``blur_sigma * width`` (Hou et al.'s default ``blur_sigma = 0.045`` of the map width, the last axis) with
mirrored borders and a kernel truncated at 3 sigma (Hou et al.'s MATLAB kernel spans +-2 sigma), or a bilateral
filter (``smooth="bilateral"``, on the ``[0, 1]``-scaled map with
:data:`~monai_saliency.ops.bilateral.BILATERAL_DEFAULTS`), or none. Hou et al. also resize the image to a width of
64 pixels first (their scale of "sparse"); this transform works at the resolution it is given: resize before it
(e.g. ``Resize``) to choose the scale. Channels are averaged as in Hou et al.; ``reduce_channels=False`` keeps them.

Usage::

    Compose([LoadImaged("image"), EnsureChannelFirstd("image"), ImageSignatured("image", output_key="signature")])
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type

from monai_saliency.ops.bilateral import bilateral_filter_axes, bilateral_options
from monai_saliency.ops.normalize import minmax_normalize
from monai_saliency.ops.signature import DCT_AXES, signature_reconstruction, zero_tolerance
from monai_saliency.transforms._common import channel_first_float

__all__ = ["ImageSignature", "ImageSignatured", "gaussian_smooth"]

_SMOOTHERS = ("gaussian", "bilateral", "none")
_OUTPUTS = ("saliency", "reconstruction")


def gaussian_smooth(x: torch.Tensor, sigma: float, spatial_dims: int, truncate: float = 3.0) -> torch.Tensor:
    """Separable Gaussian blur of the trailing ``spatial_dims`` axes with mirrored borders (MONAI's separable filter).

    Args:
        x: floating-point tensor ``(*leading, *spatial)``.
        sigma: standard deviation in voxels (``<= 0`` returns ``x``).
        spatial_dims: number of trailing axes to blur (1 to 3).
        truncate: kernel half-width in sigmas (reduced per axis so it stays below the axis size).

    Returns:
        Blurred tensor, same shape and dtype.
    """
    if sigma <= 0:
        return x
    spatial = x.shape[x.ndim - spatial_dims :]
    kernels = []
    for n in spatial:
        trunc = min(truncate, (n - 1) / sigma) if n > 1 else 0.0
        if trunc * sigma < 0.5:
            kernels.append(torch.ones(1, dtype=x.dtype, device=x.device))
            continue
        sig_t = torch.tensor(sigma, dtype=x.dtype, device=x.device)
        k = gaussian_1d(sig_t, truncated=trunc, approx="sampled", normalize=True)
        kernels.append(k.to(x.dtype))
    flat = x.reshape(-1, 1, *spatial)
    return separable_filtering(flat, kernels, mode="reflect").reshape(x.shape)


class ImageSignature(Transform):
    """Image signature saliency (Hou et al. 2012) of a channel-first image ``(C, *spatial)``; see the module docstring.

    Args:
        dct_axes: ``"frames"`` (default: 2D DCT over the last two axes; a 2D image, or per frame of a cine
            ``(C, T, H, W)``, as the paper's Fig. 1) or ``"spatial"`` (N-d DCT over all spatial axes).
        output: ``"saliency"`` (default; squared, channel-averaged, smoothed, min-max ``[0, 1]``) or
            ``"reconstruction"`` (signed ``IDCT(sign(DCT(I)))`` per channel, no smoothing).
        smooth: ``"gaussian"`` (default, Hou et al.), ``"bilateral"`` (as Signature Activation) or ``"none"``.
        blur_sigma: Gaussian sigma as a fraction of the width (last axis); default 0.045 (Hou et al.).
        bilateral: options overriding :data:`~monai_saliency.ops.bilateral.BILATERAL_DEFAULTS` for
            ``smooth="bilateral"`` (``spatial_sigma``, ``range_sigma`` on the ``[0, 1]`` scale, ``radius``,
            ``window``).
        reduce_channels: average the squared reconstructions over channels (Hou et al.) -> ``(1, *spatial)``.
        zero_tol: relative threshold for zero DCT coefficients (None: ``8 * eps(dtype)``, the round-off level; see
            :func:`~monai_saliency.ops.signature.zero_tolerance`).

    Raises:
        ValueError: for unknown option values or ``bilateral`` keys, non-positive sigmas, a negative ``zero_tol``;
            when called: too few or (with ``dct_axes="spatial"``) more than 3 spatial axes, NaN/Inf values.
        TypeError: for a ``bilateral`` value that is not a dict.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        dct_axes: str = "frames",
        output: str = "saliency",
        smooth: str = "gaussian",
        blur_sigma: float = 0.045,
        bilateral: Mapping[str, Any] | None = None,
        reduce_channels: bool = True,
        zero_tol: float | None = None,
    ) -> None:
        if dct_axes not in DCT_AXES:
            raise ValueError(f"dct_axes must be one of {DCT_AXES}, got {dct_axes!r}.")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}.")
        if smooth not in _SMOOTHERS:
            raise ValueError(f"smooth must be one of {_SMOOTHERS}, got {smooth!r}.")
        if not math.isfinite(blur_sigma) or blur_sigma < 0:
            raise ValueError(f"blur_sigma must be a finite fraction of the width >= 0, got {blur_sigma!r}.")
        self.dct_axes = dct_axes
        self.output = output
        self.smooth = smooth
        self.blur_sigma = float(blur_sigma)
        if bilateral is not None and not isinstance(bilateral, Mapping):
            raise TypeError(f"bilateral must be a dict of options or None, got {type(bilateral).__name__}.")
        zero_tolerance("ortho", zero_tol)  # validate early
        self.bilateral = bilateral_options(bilateral or True)
        self.reduce_channels = reduce_channels
        self.zero_tol = zero_tol

    def _dct_ndim(self, data: torch.Tensor) -> int:
        nsp = data.ndim - 1
        if self.dct_axes == "frames":
            if nsp < 2:
                raise ValueError(
                    f"dct_axes='frames' needs at least two spatial axes (C, [T,] H, W), got shape {tuple(data.shape)}."
                )
            return 2
        if nsp > 3:
            raise ValueError(
                f"dct_axes='spatial' supports 1 to 3 spatial axes, got shape {tuple(data.shape)}; "
                "use dct_axes='frames' for a stack of 2D frames."
            )
        return nsp

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Compute the signature of ``img``.

        Args:
            img: channel-first image ``(C, *spatial)``: tensor, MetaTensor or array (integers are read as float32,
                half precision is computed in float32).

        Returns:
            The saliency ``(1, *spatial)`` (``(C, *spatial)`` without ``reduce_channels``) or the reconstruction
            ``(C, *spatial)``, of ``img``'s type and floating dtype; a MetaTensor keeps its metadata.

        Raises:
            ValueError: for too few / too many spatial axes, or NaN/Inf values.
        """
        data = channel_first_float(img)
        if data.dtype in (torch.float16, torch.bfloat16):
            data = data.float()
        nd = self._dct_ndim(data)
        dims = list(range(data.ndim - nd, data.ndim))
        rec = signature_reconstruction(data, dims, zero_tol=self.zero_tol)
        if self.output == "reconstruction":
            out = rec
        else:
            energy = rec.square()
            if self.reduce_channels:
                energy = energy.mean(dim=0, keepdim=True)
            if self.smooth == "gaussian":
                energy = gaussian_smooth(energy, self.blur_sigma * data.shape[-1], nd)
            elif self.smooth == "bilateral":
                energy = minmax_normalize(energy[None])[0]
                b = self.bilateral
                energy = bilateral_filter_axes(
                    energy, nd, b["spatial_sigma"], b["range_sigma"], b["radius"], b["window"]
                )
            out = minmax_normalize(energy[None])[0]
        if isinstance(img, torch.Tensor):
            dtype = img.dtype if img.is_floating_point() else out.dtype
        else:
            in_dtype = np.asarray(img).dtype
            dtype = in_dtype if np.issubdtype(in_dtype, np.floating) else out.numpy().dtype
        return convert_to_dst_type(out, img, dtype=dtype)[0]


class ImageSignatured(MapTransform):
    """Dictionary twin of :class:`ImageSignature`.

    Args:
        keys: keys of the images.
        output_key: store the result under this key (only with a single key); None overwrites each key.
        allow_missing_keys: skip absent keys instead of raising.
        kwargs: options of :class:`ImageSignature`.

    Raises:
        ValueError: if ``output_key`` is given with several keys.
    """

    backend = ImageSignature.backend

    def __init__(
        self, keys: KeysCollection, output_key: str | None = None, allow_missing_keys: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_key is not None and len(self.keys) != 1:
            raise ValueError("output_key needs exactly one key; omit it to overwrite every key in place.")
        self.output_key = output_key
        self.signature = ImageSignature(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply :class:`ImageSignature` to every key.

        Args:
            data: a mapping holding the keys (others are copied unchanged; the input mapping is not modified).

        Returns:
            A new dict with the results under the keys (or under ``output_key``).

        Raises:
            KeyError: for a missing key unless ``allow_missing_keys``.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key if self.output_key is not None else key] = self.signature(d[key])
        return d
