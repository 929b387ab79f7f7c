"""N-d bilateral filter in torch, batched over every leading dimension, and the defaults of Signature Activation's
filter.

Signature Activation's filter (seed 001): the paper gives no parameters. The notebook min-max scales the map to 0..255
and calls ``cv2.bilateralFilter(map, 2, 140, 140)``: OpenCV takes ``radius = d // 2 = 1`` and keeps the window offsets
with Euclidean norm ``<= radius``, i.e. 5 taps (centre and 4-neighbours), mirrored borders (``BORDER_REFLECT_101``);
``sigmaSpace = 140`` makes the spatial weights ``exp(-1 / (2 * 140**2)) = 0.99997``, practically flat. Here the map is
min-max scaled to ``[0, 1]`` before filtering, so the same range sigma is ``140 / 255 = 0.549``;
:data:`BILATERAL_DEFAULTS` is ``radius=1`` (ball window), ``spatial_sigma=140`` voxels, ``range_sigma=140/255``: on a 2D
map, OpenCV's filter of the 0..255 map divided by 255 (float32 input; a uint8 input as well, up to its quantisation;
tested). 3D maps (``dct_axes="spatial"`` over ``(T, H, W)`` or a volume) are filtered in 3D with the same rule, the ball
of radius 1: 7 taps (centre and 6 face neighbours); ``dct_axes="frames"`` filters each frame in 2D with OpenCV's 5 taps
(the range sigma relative to the clip's min-max, which keeps frames comparable). Singleton axes are not filtered (a
``(1, H, W)`` map is filtered as a 2D map); on an axis of length ``<= radius`` the radius is reduced to
``min(size) - 1``; ``bilateral=False`` skips the filter. A dict of options overrides single values (``radius=None``
derives the radius from ``spatial_sigma`` by OpenCV's ``round(1.5 * sigma)``).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from monai_saliency.ops._cache import cached
from monai_saliency.ops.checks import all_finite

__all__ = ["BILATERAL_DEFAULTS", "bilateral_filter", "bilateral_filter_axes", "bilateral_options"]

#: bilateral filter defaults on the ``[0, 1]`` scale: the notebook's ``cv2.bilateralFilter(map, 2, 140, 140)`` on
#: 0..255 (radius ``2 // 2 = 1``: 5 taps in 2D, 7 in 3D; spatial sigma 140 voxels; range sigma 140 / 255).
BILATERAL_DEFAULTS: dict[str, float | int] = {"spatial_sigma": 140.0, "range_sigma": 140.0 / 255.0, "radius": 1}


@functools.lru_cache(maxsize=64)
def _window_offsets(radius: int, ndim: int, window: str) -> tuple[tuple[int, ...], ...]:
    offsets = []
    for off in itertools.product(range(-radius, radius + 1), repeat=ndim):
        if window == "ball" and math.sqrt(sum(o * o for o in off)) > radius:
            continue
        offsets.append(off)
    return tuple(offsets)


@functools.lru_cache(maxsize=64)
def _neighbour_index(spatial: tuple[int, ...], radius: int, window: str) -> torch.Tensor:
    """Flat indices ``(P * K,)`` of the ``K`` window neighbours of each of the ``P`` voxels (voxel-major), borders
    mirrored without repeating the edge voxel (``BORDER_REFLECT_101``; needs ``radius < min(spatial)``)."""
    grids = np.meshgrid(*[np.arange(n) for n in spatial], indexing="ij")
    cols = []
    for off in _window_offsets(radius, len(spatial), window):
        coords = []
        for g, o, n in zip(grids, off, spatial):
            c = np.abs(g + o)  # reflect below 0
            coords.append(np.where(c > n - 1, 2 * (n - 1) - c, c))  # reflect above n - 1
        cols.append(np.ravel_multi_index(coords, spatial).ravel())
    return torch.from_numpy(np.stack(cols, axis=1).reshape(-1))


@functools.lru_cache(maxsize=64)
def _log_spatial_weights(
    radius: int, ndim: int, window: str, spatial_sigma: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``-|o|^2 / (2 spatial_sigma^2)`` for every window offset ``o``, in :func:`_window_offsets` order."""
    offsets = _window_offsets(radius, ndim, window)
    return torch.tensor(
        [-0.5 / spatial_sigma**2 * sum(o * o for o in off) for off in offsets], dtype=dtype, device=device
    )


def bilateral_filter(
    x: torch.Tensor,
    spatial_sigma: float,
    range_sigma: float,
    radius: int | None = None,
    spatial_dims: int | None = None,
    window: str = "ball",
    max_elements: int = 2**24,
    check_finite: bool = True,
) -> torch.Tensor:
    """Edge-preserving bilateral filter over the trailing ``spatial_dims`` axes of ``x``.

    ``out(p) = sum_q w(p, q) x(q) / sum_q w(p, q)`` with
    ``w(p, q) = exp(-|p - q|^2 / (2 spatial_sigma^2)) * exp(-(x(p) - x(q))^2 / (2 range_sigma^2))``
    over the offsets ``q - p`` of the window. Borders are mirrored without repeating the edge voxel
    (OpenCV's ``BORDER_REFLECT_101``). Every leading axis (batch, channel) is filtered independently,
    channel by channel: colour distances are not pooled across channels. The loop runs over window
    offsets only; each step is one vectorised operation on the whole batch.

    With ``window="ball"`` (default) and ``radius=d // 2`` this is OpenCV's ``bilateralFilter`` for a
    single-channel float32 image (OpenCV interpolates the range kernel from a 4096-bin table, so the
    two agree to about 1e-4). As ``range_sigma`` grows the range weight tends to 1 and the filter
    becomes a normalised Gaussian blur truncated to the window (``window="box"`` matches
    ``scipy.ndimage.gaussian_filter(mode="mirror", truncate=radius / spatial_sigma)``).

    Args:
        x: floating-point tensor ``(*leading, *spatial)``.
        spatial_sigma: Gaussian sigma of the spatial kernel, in voxels (> 0).
        range_sigma: Gaussian sigma of the range kernel, in the intensity units of ``x`` (> 0;
            ``math.inf`` disables the range term).
        radius: window radius in voxels; default ``round(1.5 * spatial_sigma)`` (OpenCV's rule), at least 1.
        spatial_dims: number of trailing axes to filter; default ``x.ndim - 2`` (batch and channel first).
        window: ``"ball"`` keeps offsets with Euclidean norm ``<= radius`` (OpenCV), ``"box"`` the whole cube.
        max_elements: when ``window size x x.numel()`` is at most this, all neighbours are gathered and weighted
            in one vectorised pass (fast for small maps); above it, offsets are accumulated one at a time so
            memory stays at a few copies of ``x``.
        check_finite: scan ``x`` for NaN / Inf first (one reduction); False when the caller knows it is finite.

    Returns:
        Filtered tensor, same shape and dtype as ``x``.

    Raises:
        TypeError: if ``x`` is not floating point.
        ValueError: for non-positive sigmas, a negative radius, an unknown window, a radius larger
            than a spatial size minus one (reflection is undefined), or non-finite input.
    """
    if not x.is_floating_point():
        raise TypeError(f"bilateral_filter needs a floating-point tensor, got {x.dtype}.")
    if not spatial_sigma > 0 or not math.isfinite(spatial_sigma):
        raise ValueError(f"spatial_sigma must be a positive finite number of voxels, got {spatial_sigma!r}.")
    if not range_sigma > 0:
        raise ValueError(f"range_sigma must be > 0 (use math.inf to disable the range term), got {range_sigma!r}.")
    if window not in ("ball", "box"):
        raise ValueError(f"window must be 'ball' or 'box', got {window!r}.")
    nd = x.ndim - 2 if spatial_dims is None else spatial_dims
    if not 1 <= nd <= x.ndim:
        raise ValueError(f"spatial_dims={spatial_dims} does not fit a tensor of rank {x.ndim}.")
    if nd > 3:
        raise ValueError(f"bilateral_filter supports 1 to 3 spatial axes, got {nd}.")
    radius = max(round(1.5 * spatial_sigma), 1) if radius is None else int(radius)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}.")
    spatial = tuple(x.shape[-nd:])
    if radius == 0:
        return x.clone()
    if min(spatial) <= radius:
        raise ValueError(
            f"window radius {radius} needs every spatial size > {radius}, got {spatial}; lower the radius."
        )
    if check_finite and not all_finite(x):
        raise ValueError("bilateral_filter input contains NaN or Inf.")
    return _bilateral(x, nd, float(spatial_sigma), float(range_sigma), radius, window, max_elements)


def _bilateral(
    x: torch.Tensor, nd: int, spatial_sigma: float, range_sigma: float, radius: int, window: str, max_elements: int
) -> torch.Tensor:
    """:func:`bilateral_filter` on arguments it has validated (``0 < radius < min(spatial)``, finite ``x``)."""
    spatial = x.shape[-nd:]
    flat = x.reshape(-1, math.prod(spatial))
    # capped so that -inv_var / 2 stays finite in x's dtype: an infinite coefficient times a zero difference is NaN
    inv_var = 0.0 if math.isinf(range_sigma) else 1.0 / max(range_sigma * range_sigma, 1.0 / torch.finfo(x.dtype).max)
    log_w = cached(  # built on the host, uploaded once per device (the small path below only reads it)
        ("bilateral_log_w", radius, nd, window, spatial_sigma, x.dtype, str(x.device)),
        lambda: _log_spatial_weights(radius, nd, window, spatial_sigma, x.dtype, x.device),
    )
    n_off = log_w.shape[0]
    if n_off * flat.numel() <= max_elements:
        # small maps: gather every neighbour at once with a cached reflected index; the normalised weights are a
        # softmax of the log weights (the centre's is 0, the largest), the output one dot product per voxel
        key = ("bilateral_index", tuple(spatial), radius, window, str(x.device))  # uploaded once per device
        idx = cached(key, lambda: _neighbour_index(tuple(spatial), radius, window).to(x.device))
        neighbours = flat.index_select(1, idx).view(flat.shape[0], flat.shape[1], n_off)  # (N, P, K)
        if inv_var:
            diff = neighbours - flat[..., None]
            log_w = torch.addcmul(log_w, diff, diff, value=-0.5 * inv_var)
        return torch.linalg.vecdot(log_w.softmax(-1), neighbours).reshape(x.shape)
    # large maps: one shifted view per offset, accumulated, so memory stays at a few copies of x
    padded = F.pad(x.reshape(1, -1, *spatial), [radius] * (2 * nd), mode="reflect")[0]
    num = torch.zeros_like(flat)
    den = torch.zeros_like(flat)
    host_log_w = _log_spatial_weights(radius, nd, window, spatial_sigma, x.dtype, "cpu").tolist()  # no device read
    for off, log_sw in zip(_window_offsets(radius, nd, window), host_log_w):
        view = padded[(slice(None),) + tuple(slice(radius + o, radius + o + n) for o, n in zip(off, spatial))]
        neighbour = view.reshape(flat.shape)
        w = torch.exp((neighbour - flat) ** 2 * (-0.5 * inv_var) + log_sw)
        num += w * neighbour
        den += w
    return (num / den).reshape(x.shape)


def bilateral_filter_axes(
    m: torch.Tensor,
    n_filter: int,
    spatial_sigma: float,
    range_sigma: float,
    radius: int | None,
    window: str,
    check_finite: bool = True,
) -> torch.Tensor:
    """Bilateral-filter the trailing ``n_filter`` axes of ``m``, skipping singleton axes and shrinking the window
    radius to ``min(size) - 1`` on tiny maps.

    Args:
        m: floating-point tensor ``(*leading, *spatial)``; the leading axes are batched.
        n_filter: number of trailing axes to filter (1 to 3 of them longer than 1).
        spatial_sigma: spatial standard deviation, in voxels.
        range_sigma: range standard deviation, in the units of ``m``.
        radius: window radius in voxels; None for ``max(round(1.5 * spatial_sigma), 1)`` (OpenCV's rule).
        window: ``"ball"`` or ``"box"`` (see :func:`monai_saliency.ops.bilateral_filter`).
        check_finite: reject NaN / Inf in ``m`` (skip only when the caller knows ``m`` is finite).

    Returns:
        The filtered tensor, shaped like ``m`` (``m`` itself when no axis can be filtered).

    Raises:
        ValueError: for bad sigmas or window, or NaN / Inf in ``m`` when ``check_finite``.
    """
    if radius is None:
        radius = max(round(1.5 * spatial_sigma), 1)
    lead, spatial = m.shape[: m.ndim - n_filter], m.shape[m.ndim - n_filter :]
    kept = [n for n in spatial if n > 1]
    if not kept:
        return m
    radius = min(int(radius), min(kept) - 1)
    if radius <= 0:
        return m
    flat = m.reshape(*lead, *kept)
    out = bilateral_filter(
        flat,
        spatial_sigma,
        range_sigma,
        radius=radius,
        spatial_dims=len(kept),
        window=window,
        check_finite=check_finite,
    )
    return out.reshape(m.shape)


def bilateral_options(bilateral: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The complete bilateral filter options of a ``bilateral`` argument.

    Args:
        bilateral: True (:data:`BILATERAL_DEFAULTS`, ball window), False / None (no filter), or a dict overriding
            ``spatial_sigma``, ``range_sigma``, ``radius``, ``window``.

    Returns:
        ``{spatial_sigma, range_sigma, radius, window}``, or None for no filter.

    Raises:
        TypeError: for any other type.
        ValueError: for unknown keys or non-positive sigmas.
    """
    if bilateral is None or bilateral is False:
        return None
    opts: dict[str, Any] = {**BILATERAL_DEFAULTS, "window": "ball"}
    if bilateral is True:
        return opts
    if not isinstance(bilateral, Mapping):
        raise TypeError(f"bilateral must be True, False/None or a dict of options, got {type(bilateral).__name__}.")
    unknown = set(bilateral) - {"spatial_sigma", "range_sigma", "radius", "window"}
    if unknown:
        raise ValueError(
            f"unknown bilateral option(s) {sorted(unknown)}; use spatial_sigma, range_sigma, radius, window."
        )
    opts.update(bilateral)
    if not opts["spatial_sigma"] > 0 or not opts["range_sigma"] > 0:
        raise ValueError(f"bilateral sigmas must be > 0, got {opts}.")
    return opts
