"""Gaussian blur of N-d tensors: separable, batched, device-agnostic, pure torch.

One function, :func:`gaussian_blur`, with the boundary modes and the kernel-radius rule of
``scipy.ndimage.gaussian_filter`` (sampled kernel ``exp(-t^2 / 2 sigma^2)``, normalised to sum 1, radius
``int(truncate * sigma + 0.5)`` or given per axis), so its result equals scipy's over the blurred axes for any
axis size (pads longer than the axis extend the way scipy does). Used for the blurred start of the insertion
metrics, FORGrad's internal insertion/deletion score and the image-signature smoothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["BLUR_MODES", "gaussian_blur", "gaussian_kernel1d"]

#: scipy.ndimage boundary modes supported (scipy's names): ``"reflect"`` (d c b a | a b c d | d c b a),
#: ``"mirror"`` (d c b | a b c d | c b a; torch's ``"reflect"`` padding), ``"nearest"`` (a a a | a b c d | d d d;
#: torch's ``"replicate"``), ``"wrap"`` (b c d | a b c d | a b c; torch's ``"circular"``).
BLUR_MODES = ("reflect", "mirror", "nearest", "wrap")


def gaussian_kernel1d(
    sigma: float, radius: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Sampled Gaussian ``exp(-t^2 / (2 sigma^2))`` for ``t = -radius..radius``, normalised to sum 1.

    Computed in float64 and then cast, as ``scipy.ndimage``'s ``_gaussian_kernel1d``.

    Args:
        sigma: standard deviation in samples, > 0.
        radius: half-width in samples, >= 0.
        dtype: dtype of the result.
        device: device of the result.

    Returns:
        Kernel of length ``2 * radius + 1``.
    """
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def _padded_index(n: int, radius: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source index of every sample of an axis of length ``n`` padded by ``radius`` on each side (scipy modes)."""
    i = torch.arange(-radius, n + radius, device=device)
    if mode == "nearest" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return i.remainder(n)
    period = 2 * n if mode == "reflect" else 2 * n - 2
    j = i.remainder(period)
    return torch.where(j < n, j, period - 1 - j if mode == "reflect" else period - j)


def _per_axis(value, nsp: int, name: str) -> list:
    if isinstance(value, (str, int, float)):
        return [value] * nsp
    values = list(value)
    if len(values) != nsp:
        raise ValueError(f"{name} needs one value or one per blurred axis ({nsp}), got {value!r}.")
    return values


def gaussian_blur(
    x: torch.Tensor,
    sigma: float | Sequence[float],
    spatial_dims: int | None = None,
    truncate: float = 4.0,
    mode: str | Sequence[str] = "reflect",
    radius: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Separable Gaussian blur of the trailing ``spatial_dims`` axes of ``x``, as ``scipy.ndimage.gaussian_filter``.

    Equals ``gaussian_filter(x, sigma=(0,) * lead + sigma, mode=mode, truncate=truncate, radius=radius)``
    restricted to the blurred axes (leading axes are batch/channel axes, never mixed), within float round-off.

    Args:
        x: floating tensor ``(*leading, *spatial)``.
        sigma: standard deviation in samples, one value or one per blurred axis; 0 leaves an axis unchanged.
        spatial_dims: number of trailing axes to blur; default ``x.ndim - 2`` (``(B, C, *spatial)``).
        truncate: kernel radius in standard deviations, ``int(truncate * sigma + 0.5)`` (scipy's rule).
        mode: boundary mode, one of :data:`BLUR_MODES` (scipy's names) or one per blurred axis.
        radius: kernel half-width in samples, one value or one per axis, overriding ``truncate`` (scipy's
            ``radius``); 0 leaves an axis unchanged.

    Returns:
        The blurred tensor, same shape, dtype and device.

    Raises:
        ValueError: for a non-floating ``x``, a bad ``spatial_dims``, a negative or non-finite sigma, an unknown
            mode, a negative radius, or a per-axis option of the wrong length.
    """
    if not x.is_floating_point():
        raise ValueError(f"gaussian_blur needs a floating-point tensor, got {x.dtype}.")
    nsp = x.ndim - 2 if spatial_dims is None else spatial_dims
    if isinstance(nsp, bool) or not isinstance(nsp, int) or not 1 <= nsp <= x.ndim:
        raise ValueError(f"spatial_dims must be between 1 and x.ndim ({x.ndim}), got {spatial_dims!r}.")
    sigmas = [float(s) for s in _per_axis(sigma, nsp, "sigma")]
    if any(not math.isfinite(s) or s < 0 for s in sigmas):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}.")
    modes = _per_axis(mode, nsp, "mode")
    if any(m not in BLUR_MODES for m in modes):
        raise ValueError(f"mode must be one of {BLUR_MODES} (or one per axis), got {mode!r}.")
    if radius is None:
        radii = [int(truncate * s + 0.5) for s in sigmas]
    else:
        radii = _per_axis(radius, nsp, "radius")
        if any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in radii):
            raise ValueError(f"radius must be an integer >= 0 (or one per axis), got {radius!r}.")
    out = x
    for k, (s, r, m) in enumerate(zip(sigmas, radii, modes)):
        if s == 0 or r == 0:
            continue
        axis = x.ndim - nsp + k
        moved = out.movedim(axis, -1)
        shape = moved.shape
        idx = _padded_index(shape[-1], r, m, x.device)
        flat = moved.reshape(-1, 1, shape[-1])[..., idx]
        kernel = gaussian_kernel1d(s, r, dtype=x.dtype, device=x.device)
        out = F.conv1d(flat, kernel.view(1, 1, -1)).reshape(shape).movedim(-1, axis)
    return out
