"""Ideal (hard) Fourier low-pass filtering of N-d maps: the filter FORGrad applies to gradients."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_saliency.ops.precision import upcast

__all__ = ["check_cutoff", "frequency_radius", "ideal_lowpass", "ideal_lowpass_mask"]


def frequency_radius(
    shape: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    rfft: bool = False,
) -> torch.Tensor:
    """Distance of every DFT bin from the zero frequency, in integer frequency bins.

    Bin ``k`` of an axis of length ``n`` sits at frequency ``k`` for ``k <= n // 2`` and ``k - n``
    above (``torch.fft.fftfreq(n) * n``), so odd and even sizes and non-square shapes are exact.

    Args:
        shape: spatial shape of the signal.
        device: device of the result.
        dtype: floating dtype of the result.
        rfft: if True, the last axis holds only the ``n // 2 + 1`` non-negative bins of an rFFT.

    Returns:
        Tensor of shape ``shape`` (last axis halved when ``rfft``) with the Euclidean radius.
    """
    axes = []
    for i, n in enumerate(shape):
        if rfft and i == len(shape) - 1:
            axes.append(torch.fft.rfftfreq(n, d=1.0 / n, device=device, dtype=dtype))
        else:
            axes.append(torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype))
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.sqrt(sum(g**2 for g in grids))


def ideal_lowpass_mask(
    shape: Sequence[int], radius: float, device: torch.device | str | None = None, rfft: bool = False
) -> torch.Tensor:
    """Boolean mask of the DFT bins kept by an ideal low-pass of ``radius`` bins (circle in 2D, sphere in 3D).

    Args:
        shape: spatial shape.
        radius: cut-off in frequency bins; bins at distance ``<= radius`` are kept.
        device: device of the result.
        rfft: mask for an rFFT layout (last axis halved).

    Returns:
        Boolean tensor, True where the frequency is kept.

    Raises:
        ValueError: if ``radius`` is not a positive finite number.
    """
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"the low-pass radius must be a positive number of frequency bins, got {radius!r}.")
    return frequency_radius(shape, device=device, dtype=torch.float64, rfft=rfft) <= radius


def ideal_lowpass(x: torch.Tensor, radius: float, spatial_dims: int | None = None) -> torch.Tensor:
    """Ideal low-pass of the trailing ``spatial_dims`` axes of ``x``: zero every frequency farther than ``radius``.

    ``radius`` is in frequency bins (cycles per field of view). A radius at least the largest spatial
    size keeps every bin and returns the input unchanged (a copy). The mask depends only on
    ``|k|``, so it is Hermitian-symmetric and the result of a real input is real.

    Args:
        x: real tensor ``(*leading, *spatial)``, e.g. ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        radius: cut-off in frequency bins (FORGrad's sigma), > 0.
        spatial_dims: number of trailing axes to filter; default ``x.ndim - 2`` (batch and channel first).

    Returns:
        Filtered tensor of the same shape and dtype (float16 / bfloat16 are filtered in float32).

    Raises:
        TypeError: if ``x`` is not floating point.
        ValueError: if ``radius`` is not positive or ``spatial_dims`` does not fit ``x``.
    """
    if not x.is_floating_point():
        raise TypeError(f"ideal_lowpass needs a floating-point tensor, got {x.dtype}.")
    nd = x.ndim - 2 if spatial_dims is None else spatial_dims
    if not 1 <= nd <= x.ndim:
        raise ValueError(f"spatial_dims={spatial_dims} does not fit a tensor of rank {x.ndim}.")
    shape = tuple(x.shape[-nd:])
    mask = ideal_lowpass_mask(shape, radius, device=x.device, rfft=True)
    # the farthest bin is n // 2 from zero on every axis: decided on the host, not by a device-to-host mask.all()
    if math.sqrt(sum((n // 2) ** 2 for n in shape)) <= radius:
        return x.clone()
    dims = tuple(range(-nd, 0))
    spectrum = torch.fft.rfftn(upcast(x), dim=dims)  # CPU FFTs have no half precision: float32 there
    spectrum = spectrum * mask.to(spectrum.real.dtype)
    return torch.fft.irfftn(spectrum, s=shape, dim=dims).to(x.dtype)


def check_cutoff(sigma: float) -> float:
    """Validate an ideal low-pass cut-off radius (frequency bins).

    Args:
        sigma: the radius.

    Returns:
        ``sigma`` as a float.

    Raises:
        ValueError: unless ``sigma`` is a finite number > 0.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(
            f"sigma must be a positive number of frequency bins, got {sigma!r}; use a value >= the largest spatial "
            "size for no filtering."
        )
    return float(sigma)
