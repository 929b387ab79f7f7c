"""MONAI array transforms of monai_saliency: each takes one channel-first item ``(C, *spatial)``.

Their dictionary twins are in :mod:`monai_saliency.transforms.dictionary`; the tensor math lives in
:mod:`monai_saliency.ops` (and :mod:`monai_saliency.methods` for the structured prox and the signature).

* :class:`FourierLowPass`: ideal Fourier low-pass (FORGrad's filter).
* :class:`StructuredProx`: the structured-gradient prox (seed 000) of one gradient.
* :class:`ImageSignature`: Hou et al.'s image signature (seed 001).
* :class:`PCAProject` / :class:`PCABackProject`: volume -> PCA projections and back.
* :class:`ScaleToUnit`: min-max scaling to [0, 1].

Usage::

    post = Compose([FourierLowPassd(keys="saliency", sigma=12), SaveImaged(keys="saliency", ...)])
    post = Compose([StructuredProxd(keys="grad", solver="exact"), SaveImaged(keys="grad", ...)])
    Compose([LoadImaged("image"), EnsureChannelFirstd("image"), ImageSignatured("image", output_key="signature")])

    pca = PCAProjection().fit(train_volumes, mask=brain)
    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), PCAProjectd("image", pca)])
    item = pre({"image": "scan.nii.gz"})      # item["image"]: (K,) projections
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import GaussianSmooth, Transform
from monai.utils import TransformBackends, convert_to_dst_type

from monai_saliency.methods.structured import prox_options, structured_map, structured_prox
from monai_saliency.models.pca import PCAProjection
from monai_saliency.ops.bilateral import bilateral_filter_axes, bilateral_options
from monai_saliency.ops.fourier import check_cutoff, ideal_lowpass
from monai_saliency.ops.normalize import minmax_normalize
from monai_saliency.ops.precision import cast_back, upcast
from monai_saliency.ops.signature import DCT_AXES, signature_reconstruction, zero_tolerance
from monai_saliency.transforms.utils import channel_first_float, gaussian_smooth

__all__ = [
    "AntiAlias",
    "FourierLowPass",
    "ImageSignature",
    "PCABackProject",
    "PCAProject",
    "ScaleToUnit",
    "StructuredProx",
]

_SMOOTHERS = ("gaussian", "bilateral", "none")
_OUTPUTS = ("saliency", "reconstruction")


def _check_projection(projection: PCAProjection) -> PCAProjection:
    if not isinstance(projection, PCAProjection):
        raise TypeError(f"projection must be a PCAProjection, got {type(projection).__name__}.")
    if not projection.fitted:
        raise ValueError("the projection is not fitted; call projection.fit(volumes, mask) first.")
    return projection


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
        self.sigma = check_cutoff(sigma)

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Filter ``img`` ``(C, *spatial)``; floating output (float32 for integer input)."""
        data = channel_first_float(img)
        out = ideal_lowpass(data, self.sigma, spatial_dims=data.ndim - 1)
        dtype = out.dtype if isinstance(img, torch.Tensor) else out.numpy().dtype
        return convert_to_dst_type(out, img, dtype=dtype)[0]


class StructuredProx(Transform):
    """Structured proxy of one gradient ``(C, *spatial)`` (see :mod:`monai_saliency.methods.structured`).

    Args:
        lambda_grp, lambda_l1, lambda_tv, tv_iters, tv_step, steps, solver, eps, tol, max_iter: as in
            :func:`~monai_saliency.methods.structured.structured_prox` (relative lambdas: ``g / max|g|``).
        output: ``"map"`` (default): ``(1, *spatial)`` map ``||s||_2`` over channels, min-max normalised to [0, 1];
            ``"structured"``: ``s`` ``(C, *spatial)`` in the gradient's units.

    A MetaTensor keeps its metadata; numpy in gives numpy out. The last call's solver info (objective, ...) is
    in :attr:`last_info`.

    Raises:
        ValueError: for bad options, a missing spatial axis, or NaN/Inf input.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        lambda_grp: float = 0.05,
        lambda_l1: float = 0.01,
        lambda_tv: float = 0.2,
        tv_iters: int = 5,
        tv_step: float = 0.15,
        steps: int = 12,
        solver: str = "seed",
        output: str = "map",
        eps: float = 1e-8,
        tol: float = 1e-4,
        max_iter: int = 1000,
    ) -> None:
        if output not in ("map", "structured"):
            raise ValueError(f"unknown output {output!r}; choose 'map' or 'structured'.")
        self.options = prox_options(
            lambda_grp, lambda_l1, lambda_tv, tv_iters, tv_step, steps, solver, eps, tol, max_iter
        )
        self.output = output
        self.last_info: dict | None = None

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Return the map ``(1, *spatial)`` or the structured gradient ``(C, *spatial)``."""
        data = channel_first_float(img, "gradient", check_finite=False)
        sn, info = structured_prox(data[None], normalized=True, **self.options)
        self.last_info = info
        out = structured_map(sn)[0] if self.output == "map" else sn[0] * info["scale"][0]
        out = cast_back(out, data.dtype, "structured gradient")
        dtype = out.dtype if isinstance(img, torch.Tensor) else out.numpy().dtype
        return convert_to_dst_type(out, img, dtype=dtype)[0]


class ImageSignature(Transform):
    """Image signature saliency (Hou et al. 2012; seed 001, Def. 6.1 and Fig. 1) of a channel-first image ``I``.

    For ``I`` ``(C, *spatial)``::

        reconstruction_c = IDCT(sign(DCT(I_c)))                       (output="reconstruction", (C, *spatial))
        saliency         = minmax( G * mean_c reconstruction_c ** 2 )  (output="saliency", (1, *spatial) in [0, 1])

    with an orthonormal DCT over the last two axes of each frame (``dct_axes="frames"``: a 2D image, or every frame
    of a cine ``(C, T, H, W)``) or over all spatial axes (``dct_axes="spatial"``). ``G`` is a Gaussian blur of
    standard deviation ``blur_sigma * width`` (Hou et al.'s default ``blur_sigma = 0.045`` of the map width, the last
    axis) with mirrored borders and a kernel truncated at 3 sigma (Hou et al.'s MATLAB kernel spans +-2 sigma;
    :func:`~monai_saliency.transforms.utils.gaussian_smooth`), or a bilateral filter (``smooth="bilateral"``, on the
    ``[0, 1]``-scaled map with :data:`~monai_saliency.ops.bilateral.BILATERAL_DEFAULTS`), or none. Hou et al.
    also resize the image to a width of 64 pixels first (their scale of "sparse"); this transform works at the
    resolution it is given: resize before it (e.g. ``Resize``) to choose the scale. Channels are averaged as in Hou
    et al.; ``reduce_channels=False`` keeps them.

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
        data = upcast(channel_first_float(img))
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


class PCAProject(Transform):
    """Project one channel-first volume onto the basis: ``(1, *spatial)`` or ``(*spatial)`` -> ``(K,)``.

    Args:
        projection: a fitted :class:`PCAProjection`.

    Raises:
        ValueError: if the volume does not match the fitted grid, or holds NaN/Inf inside the mask.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, projection: PCAProjection) -> None:
        self.projection = _check_projection(projection)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Return the projections ``v = B^T (x - c)`` as a plain ``(K,)`` tensor (float64 by default)."""
        x = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        item = self.projection.item_shape
        if tuple(x.shape) == item:
            x = x[None]
        elif x.ndim == len(item) + 1 and x.shape[0] == 1 and tuple(x.shape[1:]) == item:
            pass
        else:
            raise ValueError(f"expected one volume of shape (1, *{item}) or {item}, got {tuple(x.shape)}.")
        return self.projection.project(x)[0]


class PCABackProject(Transform):
    """Map projections back to a volume: ``(K,)`` -> ``(1, *spatial)`` MetaTensor with the fitted affine.

    Args:
        projection: a fitted :class:`PCAProjection`.
        add_mean: add the training mean volume back (False: the centred reconstruction).

    Raises:
        ValueError: if the input does not hold ``K`` values.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, projection: PCAProjection, add_mean: bool = True) -> None:
        self.projection = _check_projection(projection)
        self.add_mean = add_mean

    def __call__(self, v: torch.Tensor) -> MetaTensor:
        """Return ``B v (+ c)`` in the grid, zeros outside the mask, channel-first."""
        v = torch.as_tensor(v.as_tensor() if isinstance(v, MetaTensor) else v).reshape(-1)
        return self.projection.back_project(v[None], add_mean=self.add_mean)


class ScaleToUnit(Transform):
    """Min-max scale one channel-first map ``(C, *spatial)`` to [0, 1] (zeros for a constant map), metadata kept."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Scale ``img``.

        Args:
            img: ``(C, *spatial)`` map (tensor, MetaTensor or array); a MetaTensor stays one, an array stays one.

        Returns:
            The scaled map, float32.

        Raises:
            ValueError: if the map holds NaN/Inf.
        """
        data = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        scaled = minmax_normalize(data.float()[None])[0]
        if isinstance(img, MetaTensor):
            return MetaTensor(scaled, meta=img.meta, applied_operations=img.applied_operations)
        return scaled.numpy() if isinstance(img, np.ndarray) else scaled


class AntiAlias(Transform):
    """The Gaussian anti-aliasing filter of MONAI's ``Resize(anti_aliasing=True)``, applied a few slices at a time.

    ``Resized(spatial_size, anti_aliasing=True)`` smooths the whole image at once before down-sampling, which for a
    clinical cine ``(1, 48, 512, 512)`` going to ``(1, 48, 64, 64)`` takes about 1 GB of transient memory. This
    transform computes the same filter (MONAI's ``GaussianSmooth`` with skimage's default sigma
    ``max(0, (in / out - 1) / 2)`` per axis), in chunks of ``chunk`` slices along the first spatial axis when that
    axis is not smoothed (sigma 0: frames of a cine are filtered independently), so that ``[AntiAliasd(keys,
    spatial_size), Resized(keys, spatial_size, anti_aliasing=False)]`` gives the output of the anti-aliased ``Resized``
    with a transient of a few slices. It records no transform (a filter has no inverse), so ``Invertd``
    undoes only the resize, as before.

    Args:
        spatial_size: the target size given to ``Resized`` (``-1`` keeps an axis).
        chunk: slices per chunk along the first spatial axis.

    Raises:
        ValueError: ``chunk < 1``; on call, a ``spatial_size`` whose length differs from the image's spatial rank.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, spatial_size: Sequence[int], chunk: int = 8) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}.")
        self.spatial_size = [int(v) for v in spatial_size]
        self.chunk = int(chunk)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Filter ``img`` ``(C, *spatial)``, output in its dtype (returned as is when no axis is down-sampled)."""
        shape = list(img.shape[1:])
        if len(shape) != len(self.spatial_size):
            raise ValueError(f"spatial_size {self.spatial_size} does not match the image's spatial shape {shape}.")
        out = [s if t == -1 else t for s, t in zip(shape, self.spatial_size)]
        if not any(o < s for o, s in zip(out, shape)):
            return img
        sigma = [max(0.0, (s / o - 1) / 2) for s, o in zip(shape, out)]
        if sigma[0] > 0 or len(shape) < 2:
            return GaussianSmooth(sigma=sigma)(img).to(img.dtype)  # MONAI computes half inputs in float32
        # sigma 0 on the first axis: its slices are filtered independently, as channels of a lower-rank image
        smooth = GaussianSmooth(sigma=sigma[1:])
        result = img.clone() if isinstance(img, MetaTensor) else torch.empty_like(img)
        channels = img.shape[0]
        for i in range(0, shape[0], self.chunk):
            part = img[:, i : i + self.chunk]
            part = part.as_tensor() if isinstance(part, MetaTensor) else part
            n = part.shape[1]
            filtered = smooth(part.reshape(channels * n, *shape[1:]))
            filtered = filtered.as_tensor() if isinstance(filtered, MetaTensor) else filtered
            result[:, i : i + self.chunk] = filtered.reshape(channels, n, *shape[1:])
        return result
