"""N-d axis-aligned boxes: IoU, boxes of masks and of connected components.

Box format (all functions): ``(start_0, ..., start_{D-1}, end_0, ..., end_{D-1})`` in array-axis order
(axis 0 first, *not* MONAI's x-first ``xyxy``), voxel indices, half-open: a box covers
``start_d <= i_d < end_d``. A single voxel at index ``p`` is ``(p, p + 1)`` per axis.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = ["box_iou", "box_volume", "boxes_to_mask", "component_boxes", "mask_to_box"]


def _as_boxes(boxes, name: str) -> np.ndarray:
    arr = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size:
        arr = arr[None]
    if arr.size == 0:
        return arr.reshape(0, arr.shape[-1] if arr.ndim == 2 else 0)
    if arr.ndim != 2 or arr.shape[1] % 2 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, 2 * D) = (starts..., ends...), got {arr.shape}.")
    d = arr.shape[1] // 2
    if not np.isfinite(arr).all() or (arr[:, d:] < arr[:, :d]).any():
        raise ValueError(f"{name} must be finite with end >= start on every axis (half-open boxes).")
    return arr


def box_volume(boxes) -> np.ndarray:
    """Volume (area in 2D) of each box ``(n, 2D)`` -> ``(n,)``."""
    b = _as_boxes(boxes, "boxes")
    d = b.shape[1] // 2
    return np.prod(b[:, d:] - b[:, :d], axis=1)


def box_iou(a, b) -> np.ndarray:
    """Pairwise intersection over union of N-d boxes ``(n, 2D)`` and ``(m, 2D)`` -> ``(n, m)``.

    Empty unions (two zero-volume boxes) give IoU 0.

    Raises:
        ValueError: for malformed boxes or different dimensions.
    """
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"boxes of different dimensions: {a.shape[1] // 2}-d vs {b.shape[1] // 2}-d.")
    d = a.shape[1] // 2
    lo = np.maximum(a[:, None, :d], b[None, :, :d])
    hi = np.minimum(a[:, None, d:], b[None, :, d:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    union = box_volume(a)[:, None] + box_volume(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def mask_to_box(mask) -> np.ndarray:
    """Tight box ``(2D,)`` around the True voxels of an N-d mask.

    Raises:
        ValueError: if the mask is empty.
    """
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    idx = np.argwhere(m)
    if idx.size == 0:
        raise ValueError("the mask is empty: it has no box.")
    return np.concatenate([idx.min(0), idx.max(0) + 1]).astype(np.float64)


def component_boxes(masks, connectivity: int | None = None, batch_axes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the connected components of a stack of N-d masks, labelled in one call.

    Components never connect across the leading ``batch_axes`` axes (a structuring element of width 1
    along them), so a ``(T, B, *spatial)`` stack of thresholded maps is labelled at once.

    Args:
        masks: boolean array ``(*batch, *spatial)``.
        connectivity: neighbourhood of ``scipy.ndimage.generate_binary_structure`` over the spatial axes
            (1 = faces; default = spatial rank, full connectivity such as 8-neighbours in 2D).
        batch_axes: number of leading axes that index separate masks.

    Returns:
        ``(owner, boxes)``: ``owner`` ``(n, batch_axes)`` index of the mask each component belongs to,
        ``boxes`` ``(n, 2D)`` in the module's half-open format. Components are in label (raster) order.
    """
    m = np.asarray(masks.detach().cpu() if isinstance(masks, torch.Tensor) else masks).astype(bool)
    nsp = m.ndim - batch_axes
    if nsp < 1:
        raise ValueError(f"masks of shape {m.shape} have no spatial axis after {batch_axes} batch axes.")
    conn = nsp if connectivity is None else int(connectivity)
    if not 1 <= conn <= nsp:
        raise ValueError(f"connectivity must be in [1, {nsp}], got {connectivity!r}.")
    spatial = ndimage.generate_binary_structure(nsp, conn)
    structure = np.zeros((3,) * batch_axes + spatial.shape, dtype=bool)
    structure[(1,) * batch_axes] = spatial
    labels, n = ndimage.label(m, structure=structure)
    if n == 0:
        return np.zeros((0, batch_axes), dtype=np.int64), np.zeros((0, 2 * nsp))
    slices = ndimage.find_objects(labels)
    owner = np.array([[s.start for s in sl[:batch_axes]] for sl in slices], dtype=np.int64)
    boxes = np.array(
        [[s.start for s in sl[batch_axes:]] + [s.stop for s in sl[batch_axes:]] for sl in slices], dtype=np.float64
    )
    return owner, boxes


def boxes_to_mask(boxes, shape) -> np.ndarray:
    """Boolean mask of ``shape`` that is True inside any of the boxes ``(n, 2D)``."""
    b = _as_boxes(boxes, "boxes")
    d = len(shape)
    if b.shape[0] and b.shape[1] != 2 * d:
        raise ValueError(f"boxes are {b.shape[1] // 2}-d but the shape {tuple(shape)} is {d}-d.")
    grids = np.indices(shape).reshape(d, -1).T  # (N, D)
    inside = np.zeros(grids.shape[0], dtype=bool)
    if b.shape[0]:
        inside = ((grids[:, None] >= b[None, :, :d]) & (grids[:, None] < b[None, :, d:])).all(-1).any(-1)
    return inside.reshape(shape)
