"""Localisation metrics of saliency maps against ground truth: WSOL box error, mask energy, pointing game, top-k
overlap at equal area.

All work on maps ``(B, 1 | C, *spatial)`` with any number of spatial axes (2D, 3D, video ``(T, H, W)``).
Multi-channel maps are first reduced to one value per location (``reduce``, see
:func:`monai_saliency.metrics._common.location_map`).

Direction: WSOL error rate **lower is better**; mask energy, pointing-game and top-k hit rates **higher is better**
(the top-k false-positive fraction: lower is better).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from monai_saliency.metrics._common import check_maps, location_map, plain, safe_ratio
from monai_saliency.ops.boxes import _as_boxes, box_iou, component_boxes
from monai_saliency.ops.checks import host_all
from monai_saliency.ops.normalize import minmax_normalize

__all__ = [
    "DEFAULT_THRESHOLDS",
    "TopKResult",
    "WSOLResult",
    "mask_energy",
    "pointing_game",
    "top_k_overlap",
    "wsol_box_error",
]

#: the threshold sweep of seed 001 §7.1: 0.01, 0.02, ..., 1.00.
DEFAULT_THRESHOLDS = np.round(np.arange(1, 101) / 100.0, 2)


@dataclass
class WSOLResult:
    """Result of :func:`wsol_box_error`.

    Attributes:
        error_rate: total wrong predicted boxes / total ground-truth boxes (lower is better).
        errors: ``(B,)`` wrong boxes per item (a ground-truth box without a predicted box of IoU > threshold).
        n_boxes: ``(B,)`` ground-truth boxes per item.
        threshold: ``(B,)`` first threshold whose component count matched, ``-1`` when none did.
        boxes: per item, the predicted boxes ``(n, 2D)`` at that threshold (empty when none matched).
    """

    error_rate: float
    errors: np.ndarray
    n_boxes: np.ndarray
    threshold: np.ndarray
    boxes: list[np.ndarray]


def _check_masks(masks, maps: torch.Tensor) -> torch.Tensor:
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(masks)
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a tensor (B, [1,] *spatial), got {type(masks).__name__}.")
    masks = plain(masks).to(maps.device)
    if masks.ndim == maps.ndim and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.shape != (maps.shape[0], *maps.shape[2:]):
        raise ValueError(
            f"mask shape {tuple(masks.shape)} does not match the maps {tuple(maps.shape)}: expected "
            f"({maps.shape[0]}, [1,] {', '.join(map(str, maps.shape[2:]))})."
        )
    masks = masks != 0
    filled = masks.reshape(masks.shape[0], -1).any(1)
    if not host_all(filled):  # one boolean read on the host; the item list only to word the error
        empty = (~filled).nonzero().flatten().tolist()
        raise ValueError(f"ground-truth masks of items {empty} are empty; drop those items (the metric is undefined).")
    return masks


def wsol_box_error(
    maps: torch.Tensor,
    gt_boxes: Sequence,
    thresholds: Sequence[float] | np.ndarray | None = None,
    iou_threshold: float = 0.5,
    normalize: bool = True,
    connectivity: int | None = None,
    reduce: str = "auto",
    max_voxels: int = 2**25,
) -> WSOLResult:
    """Weakly supervised object localisation error rate (seed 001 §7.1). **Lower is better.**

    For each map (min-max normalised to [0, 1] when ``normalize``), thresholds are swept in increasing order
    (default 0.01, 0.02, ..., 1.00); at each threshold the connected components of ``map >= t`` are found and
    the sweep stops at the first threshold whose component count equals the number of ground-truth boxes.
    The components' bounding boxes are matched one-to-one to the ground-truth boxes (Hungarian assignment
    maximising IoU); a ground-truth box counts as correct when its matched IoU is > ``iou_threshold``.
    When no threshold gives the right count, every box of the item is an error. The error rate is the total
    number of errors over the total number of boxes (seed 001: "Error Rate for the number of total
    predictions"). The seed does not say how boxes are matched; one-to-one maximal-IoU matching is our reading.

    Args:
        maps: ``(B, 1 | C, *spatial)``.
        gt_boxes: length-B sequence of ``(n_i, 2D)`` boxes in :mod:`monai_saliency.ops.boxes` format
            (array-axis order, half-open), ``n_i >= 1``.
        thresholds: increasing thresholds on the [0, 1] map.
        iou_threshold: a match counts when IoU > this.
        normalize: min-max normalise each map first (a constant map becomes zeros and matches nothing).
            Without it, maps must already lie in [0, 1].
        connectivity: component connectivity (1 = faces; default full, e.g. 8-neighbours in 2D).
        reduce: channel reduction of multi-channel maps.
        max_voxels: memory bound of the thresholded stack labelled at once (thresholds are chunked).

    Returns:
        :class:`WSOLResult`.

    Raises:
        ValueError: NaN maps, wrong number of box sets, empty ground truth, malformed boxes, bad thresholds.
    """
    maps = check_maps(maps)
    loc = location_map(maps, reduce)
    b, spatial = loc.shape[0], tuple(loc.shape[1:])
    d = len(spatial)
    if normalize:
        loc = minmax_normalize(loc)
    elif loc.min() < 0 or loc.max() > 1:
        raise ValueError("maps must lie in [0, 1] with normalize=False; pass normalize=True.")
    if len(gt_boxes) != b:
        raise ValueError(f"got {len(gt_boxes)} ground-truth box sets for {b} maps.")
    gts = [_as_boxes(g, f"gt_boxes[{i}]") for i, g in enumerate(gt_boxes)]
    for i, g in enumerate(gts):
        if g.shape[0] == 0:
            raise ValueError(f"gt_boxes[{i}] is empty; the box error needs at least one box per item.")
        if g.shape[1] != 2 * d:
            raise ValueError(f"gt_boxes[{i}] are {g.shape[1] // 2}-d boxes, but the maps are {d}-d.")
    thr = np.asarray(DEFAULT_THRESHOLDS if thresholds is None else thresholds, dtype=np.float64).reshape(-1)
    if thr.size == 0 or not np.isfinite(thr).all() or (np.diff(thr) <= 0).any():
        raise ValueError("thresholds must be a non-empty, finite, strictly increasing sequence.")
    n_gt = np.array([g.shape[0] for g in gts])

    arr = loc.detach().cpu().numpy()
    chosen = np.full(b, -1.0)
    pred: list[np.ndarray] = [np.zeros((0, 2 * d)) for _ in range(b)]
    chunk = max(1, int(max_voxels // max(1, arr.size)))
    for lo in range(0, thr.size, chunk):
        todo = chosen < 0
        if not todo.any():
            break
        t = thr[lo : lo + chunk]
        stack = arr[None] >= t.reshape(-1, *([1] * (d + 1)))  # (T, B, *spatial)
        owner, boxes = component_boxes(stack, connectivity=connectivity, batch_axes=2)
        counts = np.zeros((t.size, b), dtype=np.int64)
        np.add.at(counts, (owner[:, 0], owner[:, 1]), 1)
        hit = (counts == n_gt[None]) & todo[None]
        found = hit.any(0)
        first = hit.argmax(0)
        keep = found[owner[:, 1]] & (owner[:, 0] == first[owner[:, 1]])
        for i in np.flatnonzero(found):  # per-item bookkeeping only; labelling above is batched
            pred[i] = boxes[keep & (owner[:, 1] == i)]
            chosen[i] = t[first[i]]
    errors = n_gt.copy()
    for i in np.flatnonzero(chosen >= 0):  # one Hungarian assignment per item (boxes differ in number)
        iou = box_iou(gts[i], pred[i])
        rows, cols = linear_sum_assignment(iou, maximize=True)
        errors[i] = n_gt[i] - int((iou[rows, cols] > iou_threshold).sum())
    return WSOLResult(
        error_rate=float(errors.sum() / n_gt.sum()), errors=errors, n_boxes=n_gt, threshold=chosen, boxes=pred
    )


def _energy_map(maps: torch.Tensor, reduce: str, mode: str) -> torch.Tensor:
    loc = location_map(maps, reduce)
    if mode == "abs":
        return loc.abs()
    if mode == "positive":
        return loc.clamp(min=0)
    raise ValueError(f"mode must be 'abs' or 'positive', got {mode!r}.")


def mask_energy(maps: torch.Tensor, masks: torch.Tensor, reduce: str = "auto", mode: str = "abs") -> torch.Tensor:
    """Fraction of a map's energy inside the ground-truth mask (energy-based pointing game). **Higher is better.**

    ``E = Σ_{i∈M} e_i / Σ_i e_i`` with ``e = |map|`` (``mode="abs"``) or ``max(map, 0)`` (``"positive"``),
    after reducing channels. A random map scores about ``|M| / N``. A map with zero energy scores 0.

    Args:
        maps: ``(B, 1 | C, *spatial)``. masks: ``(B, [1,] *spatial)``, nonzero = inside.
        reduce: channel reduction. mode: ``"abs"`` or ``"positive"``.

    Returns:
        ``(B,)`` float64 tensor in [0, 1].

    Raises:
        ValueError: NaN maps, mask/map shape mismatch, empty masks.
    """
    maps = check_maps(maps)
    masks = _check_masks(masks, maps)
    e = _energy_map(maps, reduce, mode).double().reshape(maps.shape[0], -1)
    inside = (e * masks.reshape(maps.shape[0], -1)).sum(1)
    total = e.sum(1)
    return safe_ratio(inside, total, 0.0)


def pointing_game(
    maps: torch.Tensor, masks: torch.Tensor, tolerance: float = 0.0, reduce: str = "auto"
) -> torch.Tensor:
    """Pointing game (Zhang et al. 2016): is the map's maximum inside the mask? **Higher hit rate is better.**

    A hit when the (first, in raster order) maximum of the location map lies within Euclidean distance
    ``tolerance`` voxels of a mask voxel (Zhang et al. use 15 pixels at 224²; default 0 = inside).
    A constant map points nowhere and counts as a miss.

    Args:
        maps: ``(B, 1 | C, *spatial)``. masks: ``(B, [1,] *spatial)``.
        tolerance: distance in voxels. reduce: channel reduction (single-channel maps stay signed).

    Returns:
        ``(B,)`` boolean tensor of hits; ``.float().mean()`` is the hit rate.

    Raises:
        ValueError: NaN maps, mask/map shape mismatch, empty masks, negative tolerance.
    """
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative distance in voxels, got {tolerance!r}.")
    maps = check_maps(maps)
    masks = _check_masks(masks, maps)
    b = maps.shape[0]
    loc = location_map(maps, reduce).reshape(b, -1)
    am = loc.argmax(1)
    constant = loc.amax(1) == loc.amin(1)
    spatial = maps.shape[2:]
    coords = torch.stack(torch.meshgrid(*[torch.arange(s, device=maps.device) for s in spatial], indexing="ij"), -1)
    coords = coords.reshape(-1, len(spatial)).double()  # (N, D)
    d2 = ((coords[None] - coords[am][:, None]) ** 2).sum(-1)  # (B, N)
    hit = (masks.reshape(b, -1) & (d2 <= tolerance**2 + 1e-9)).any(1)
    return hit & ~constant


@dataclass
class TopKResult:
    """Result of :func:`top_k_overlap` (all ``(B,)`` tensors).

    Attributes:
        k: pixels selected per map.
        true_positives: selected pixels inside the mask.
        precision: ``true_positives / k`` (higher is better).
        false_positive: ``1 - precision``, the fraction of the selected pixels outside the mask (lower is better).
        recall: ``true_positives / |mask|`` (higher is better).
        iou: ``true_positives / (k + |mask| - true_positives)`` (higher is better).
        hit: ``precision >= min_precision`` (bool).
    """

    k: torch.Tensor
    true_positives: torch.Tensor
    precision: torch.Tensor
    false_positive: torch.Tensor
    recall: torch.Tensor
    iou: torch.Tensor
    hit: torch.Tensor


def top_k_overlap(
    maps: torch.Tensor,
    masks: torch.Tensor,
    fraction: float | None = None,
    k: int | torch.Tensor | None = None,
    min_precision: float = 0.5,
    reduce: str = "auto",
) -> TopKResult:
    """Overlap of each map's top-``k`` locations with a mask: every map gets the same area. **Hits: higher is better.**

    The ``k`` highest locations of each (channel-reduced) map are selected; ties at the cut-off are broken
    *against* the ground truth (locations outside the mask are taken first), so a flat map, or the flat part of a
    map, cannot score by ties: a uniform map selects ``k`` locations outside the mask whenever there are that
    many. A hit is a selection of which at least ``min_precision`` lies inside the mask; ``false_positive`` is the
    fraction that does not. With ``k = |mask|`` the IoU is the equal-area IoU.

    Args:
        maps: ``(B, 1 | C, *spatial)``. masks: ``(B, [1,] *spatial)``, nonzero = inside.
        fraction: ``k`` as a fraction of the locations, ``ceil(fraction * N)`` (in (0, 1]).
        k: locations per map: an int, or a ``(B,)`` integer tensor (e.g. each mask's size). Exactly one of
            ``fraction`` and ``k``.
        min_precision: in (0, 1]: fraction of the selection inside the mask that makes a hit.
        reduce: channel reduction of multi-channel maps.

    Returns:
        :class:`TopKResult`.

    Raises:
        ValueError: NaN maps, mask/map shape mismatch, empty masks, neither or both of ``fraction``/``k``,
            ``k`` outside ``[1, N]``, ``fraction`` or ``min_precision`` outside (0, 1].
    """
    if (fraction is None) == (k is None):
        raise ValueError("pass exactly one of fraction and k.")
    if not 0.0 < min_precision <= 1.0:
        raise ValueError(f"min_precision must be in (0, 1], got {min_precision!r}.")
    maps = check_maps(maps)
    masks = _check_masks(masks, maps)
    b = maps.shape[0]
    loc = location_map(maps, reduce).reshape(b, -1)
    inside = masks.reshape(b, -1)
    n = loc.shape[1]
    if fraction is not None:
        if not (np.isfinite(fraction) and 0.0 < fraction <= 1.0):
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
        kk = torch.full((b,), int(np.ceil(fraction * n - 1e-9)), dtype=torch.long, device=loc.device)
    else:
        kk = torch.as_tensor(k, device=loc.device).long().expand(b).clone()
        if kk.min() < 1 or kk.max() > n:
            raise ValueError(f"k must lie in [1, {n}] (the locations per map), got {kk.tolist()}.")
    # ties against the ground truth: order by mask (outside first), then stably by value (descending)
    first = torch.sort(inside.to(torch.uint8), dim=1, stable=True).indices
    second = torch.sort(loc.gather(1, first), dim=1, descending=True, stable=True).indices
    order = first.gather(1, second)
    selected_inside = inside.gather(1, order)
    rank = torch.arange(n, device=loc.device).expand(b, -1)
    tp = (selected_inside & (rank < kk[:, None])).sum(1)
    kd, tpd, md = kk.double(), tp.double(), inside.sum(1).double()
    precision = tpd / kd
    return TopKResult(
        k=kk,
        true_positives=tp,
        precision=precision,
        false_positive=1.0 - precision,
        recall=tpd / md,
        iou=tpd / (kd + md - tpd),
        hit=precision >= min_precision,
    )
