"""Perturbation faithfulness metrics: deletion / insertion curves and AUCs, μ-fidelity, stability.

All metrics work on inputs ``(B, C, *spatial)`` with any number of spatial axes (2D, 3D, video
``(B, C, T, H, W)``), take either precomputed maps or an explainer called through the public protocol
``explainer(x, class_idx)``, and batch the perturbed inputs: one forward pass per chunk of at most
``batch_size`` perturbed inputs (the memory bound), never one per step.

Direction summary:
    * deletion AUC: **lower is better** (the score should fall fast when the most salient locations go);
    * insertion AUC: **higher is better**;
    * μ-fidelity: **higher is better** (correlation in [-1, 1]);
    * stability (average relative sensitivity): **lower is better**.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from monai_saliency.core import Target, TargetLike
from monai_saliency.metrics._common import (
    check_model_input,
    check_positive_int,
    check_score,
    location_map,
    model_scores,
    plain,
    resolve_class,
    resolve_maps,
    rowwise_corr,
)
from monai_saliency.ops.blur import gaussian_blur
from monai_saliency.ops.item_noise import item_keys, keyed_draws

__all__ = [
    "PerturbationCurve",
    "deletion_curve",
    "gaussian_blur_nd",
    "insertion_curve",
    "mu_fidelity",
    "saliency_ranks",
    "stability",
]

SaliencyLike = torch.Tensor | Callable[..., torch.Tensor]


@dataclass
class PerturbationCurve:
    """Result of a deletion or insertion test.

    Attributes:
        auc: ``(B,)`` trapezoid area under each item's curve over the fraction perturbed (in [0, 1]).
        curve: ``(B, steps + 1)`` class score after each step (step 0 = nothing perturbed / inserted).
        fractions: ``(steps + 1,)`` exact fraction of locations perturbed at each step (0 ... 1).
        class_idx: ``(B,)`` the explained class (or output unit) of each item; None for a callable target.
    """

    auc: torch.Tensor
    curve: torch.Tensor
    fractions: torch.Tensor
    class_idx: torch.Tensor | None


def gaussian_blur_nd(x: torch.Tensor, sigma: float | Sequence[float], truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur over every spatial axis of ``(B, C, *spatial)``, replicate padding.

    :func:`monai_saliency.ops.blur.gaussian_blur` with ``mode="nearest"``.

    Args:
        x: floating tensor ``(B, C, *spatial)``.
        sigma: standard deviation in voxels, one value or one per spatial axis; 0 leaves an axis as is.
        truncate: kernel radius in standard deviations (as ``scipy.ndimage.gaussian_filter``).

    Returns:
        Blurred tensor of the same shape. Equals ``scipy.ndimage.gaussian_filter(..., mode="nearest")``
        over the spatial axes.

    Raises:
        ValueError: for a negative or non-finite sigma or a wrong number of sigmas.
    """
    return gaussian_blur(x, sigma, truncate=truncate, mode="nearest")


def saliency_ranks(maps: torch.Tensor, reduce: str = "auto") -> torch.Tensor:
    """Rank of every spatial location by saliency, 0 = most salient, as ``(B, N)`` (N = number of locations).

    All channels of a location share one rank (see ``reduce``: ``"auto"`` keeps a single-channel map signed and
    sums absolute values over channels otherwise). Ties are broken by the location's raster index (stable sort),
    so a constant map perturbs in raster order.
    """
    loc = location_map(maps, reduce).reshape(maps.shape[0], -1)
    order = torch.sort(loc, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order).contiguous())
    return ranks


def _prepare(model: nn.Module, x: torch.Tensor, saliency: SaliencyLike, class_idx, target, steps: int, batch_size: int):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    x = check_model_input(x)
    steps = check_positive_int(steps, "steps")
    check_positive_int(batch_size, "batch_size")
    bound = resolve_class(model, x, class_idx, target)
    maps = resolve_maps(saliency, x, bound)
    return x, maps, bound, steps


def _as_like(value: float | torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(value, (int, float)):
        return torch.full_like(x, float(value))
    value = plain(torch.as_tensor(value, dtype=x.dtype, device=x.device))
    try:
        value = value.expand_as(x)
    except RuntimeError as err:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast to the input {tuple(x.shape)}."
        ) from err
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or Inf.")
    return value


def _run_curve(
    model: nn.Module,
    x: torch.Tensor,
    ranks: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    target: Target,
    steps: int,
    score: str,
    batch_size: int,
) -> PerturbationCurve:
    """Scores of ``where(rank < n_k, end, start)`` for every item and step, ``batch_size`` inputs per forward."""
    b, n = ranks.shape
    counts = (torch.arange(steps + 1, device=x.device) * n + steps // 2) // steps  # rounded k * N / steps
    pairs = b * (steps + 1)
    scores = torch.empty(pairs, dtype=torch.float32, device=x.device)
    loc_shape = (1, *x.shape[2:])
    with torch.no_grad():
        for lo in range(0, pairs, batch_size):
            p = torch.arange(lo, min(lo + batch_size, pairs), device=x.device)
            item, step = p // (steps + 1), p % (steps + 1)
            mask = (ranks[item] < counts[step][:, None]).reshape(-1, *loc_shape)
            xin = torch.where(mask, end[item], start[item])
            scores[lo : lo + len(p)] = model_scores(model, xin, target.rows(item), score)
    curve = scores.reshape(b, steps + 1).cpu()
    fractions = counts.cpu().double() / n
    auc = torch.trapezoid(curve.double(), fractions, dim=1)
    idx = target.class_indices
    return PerturbationCurve(auc=auc, curve=curve, fractions=fractions, class_idx=None if idx is None else idx.cpu())


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: SaliencyLike,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    steps: int = 100,
    baseline: float | torch.Tensor = 0.0,
    score: str = "prob",
    batch_size: int = 64,
    reduce: str = "auto",
    higher_is_better: bool = False,
    target: TargetLike = None,
) -> PerturbationCurve:
    """Deletion test (Petsiuk et al. 2018). **Lower AUC is better.**

    Locations (all channels of a voxel together) are ranked by saliency; at step ``k`` of ``steps`` the top
    ``round(k N / steps)`` locations of the input are replaced by ``baseline`` and the class score is
    recorded. The AUC is the trapezoid integral of the score over the fraction deleted (0..1). A faithful map
    makes the score drop early, hence a small AUC.

    Seed 000 calls deletion AUC "higher is better", which contradicts the definition above; its variant is
    kept as ``higher_is_better=True``, which returns the area *above* the curve, ``max_score - AUC`` with
    ``max_score = 1`` (only meaningful for ``score="prob"``). Default: the standard definition.

    Args:
        model: classifier returning ``(B, K)`` scores; put it in eval mode first.
        x: input ``(B, C, *spatial)``.
        saliency: maps ``(B, 1 | C, *spatial)`` or an explainer called as ``saliency(x, class_idx)``.
        class_idx: explained class; None -> the model's argmax on the unperturbed ``x``.
        steps: number of perturbation steps (the curve has ``steps + 1`` points).
        baseline: replacement value, a float or a tensor broadcastable to ``x``.
        score: ``"prob"`` (softmax probability of the class, default) or ``"logit"``.
        batch_size: perturbed inputs per forward pass (memory bound: ``batch_size`` input copies plus masks).
        reduce: channel aggregation for ranking (see :func:`saliency_ranks`).
        higher_is_better: seed 000's orientation (``1 - AUC``); requires ``score="prob"``.
        target: instead of ``class_idx``, a target (:mod:`monai_saliency.core.targets`), e.g. ``RegionTarget(k)``
            for a segmentation network (deletion of the region score; the predicted region is fixed on ``x``);
            ``score="prob"`` scores its probability version, ``"logit"`` the target itself.

    Returns:
        :class:`PerturbationCurve` with ``auc`` (B,), ``curve`` (B, steps+1), ``fractions``, ``class_idx``.

    Raises:
        ValueError: mismatched map/input shapes, ``steps < 1``, NaN maps or inputs, bad options.
    """
    check_score(score)
    if higher_is_better and score != "prob":
        raise ValueError("higher_is_better=True (seed 000's 1 - AUC) is only defined for score='prob'.")
    x, maps, bound, steps = _prepare(model, x, saliency, class_idx, target, steps, batch_size)
    ranks = saliency_ranks(maps, reduce)
    res = _run_curve(model, x, ranks, x, _as_like(baseline, x, "baseline"), bound, steps, score, batch_size)
    if higher_is_better:
        res.auc = 1.0 - res.auc
    return res


def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: SaliencyLike,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    steps: int = 100,
    start: str | float | torch.Tensor = "blur",
    blur_sigma: float | Sequence[float] = 5.0,
    score: str = "prob",
    batch_size: int = 64,
    reduce: str = "auto",
    target: TargetLike = None,
) -> PerturbationCurve:
    """Insertion test (Petsiuk et al. 2018). **Higher AUC is better.**

    Starts from a blurred copy of the input (N-d Gaussian, ``blur_sigma`` voxels, as Petsiuk et al.) and, at
    step ``k``, puts back the original values of the top ``round(k N / steps)`` locations (all channels of a
    location together). The AUC is the trapezoid integral of the class score over the fraction inserted.

    Seed 000 inserts "into a blank input": use ``start=0.0`` (or any float / tensor start image).

    Args:
        model: classifier returning ``(B, K)`` scores; put it in eval mode first.
        x: input ``(B, C, *spatial)``.
        saliency: maps ``(B, 1 | C, *spatial)`` or an explainer called as ``saliency(x, class_idx)``.
        class_idx: explained class; None -> the model's argmax on ``x``.
        steps: number of steps (``steps + 1`` curve points).
        start: ``"blur"`` (default), a float (constant image) or a tensor broadcastable to ``x``.
        blur_sigma: Gaussian standard deviation in voxels (one or per spatial axis) for ``start="blur"``.
        score: ``"prob"`` (default) or ``"logit"``.
        batch_size: perturbed inputs per forward pass (memory bound).
        reduce: channel aggregation for ranking (see :func:`saliency_ranks`).
        target: instead of ``class_idx``, a target (see :func:`deletion_curve`).

    Returns:
        :class:`PerturbationCurve`.

    Raises:
        ValueError: mismatched shapes, ``steps < 1``, NaN maps, bad options.
    """
    check_score(score)
    x, maps, bound, steps = _prepare(model, x, saliency, class_idx, target, steps, batch_size)
    if isinstance(start, str):
        if start != "blur":
            raise ValueError(f"start must be 'blur', a float or a tensor, got {start!r}.")
        start_img = gaussian_blur_nd(x, blur_sigma)
    else:
        start_img = _as_like(start, x, "start")
    ranks = saliency_ranks(maps, reduce)
    return _run_curve(model, x, ranks, start_img, x, bound, steps, score, batch_size)


def _cell_ids(spatial: Sequence[int], cell_size: int | Sequence[int], device) -> tuple[torch.Tensor, int]:
    cs = [int(cell_size)] * len(spatial) if isinstance(cell_size, int) else [int(c) for c in cell_size]
    if len(cs) != len(spatial) or any(c < 1 for c in cs):
        raise ValueError(
            f"cell_size must be >= 1, one value or one per spatial axis ({len(spatial)}), got {cell_size!r}."
        )
    ncell = [math.ceil(s / c) for s, c in zip(spatial, cs)]
    grids = torch.meshgrid(*[torch.arange(s, device=device) // c for s, c in zip(spatial, cs)], indexing="ij")
    ids = torch.zeros(tuple(spatial), dtype=torch.long, device=device)
    for g, nc in zip(grids, ncell):
        ids = ids * nc + g
    return ids.reshape(-1), int(np.prod(ncell))


def mu_fidelity(
    model: nn.Module,
    x: torch.Tensor,
    saliency: SaliencyLike,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    n_subsets: int = 128,
    subset_fraction: float = 0.2,
    cell_size: int | Sequence[int] = 4,
    baseline: float | torch.Tensor = 0.0,
    correlation: str = "pearson",
    score: str = "logit",
    batch_size: int = 64,
    seed: int = 0,
    target: TargetLike = None,
) -> torch.Tensor:
    """μ-fidelity (Bhatt et al. 2020). **Higher is better** (a correlation in [-1, 1]).

    The spatial grid is split into cells of ``cell_size`` voxels per axis; ``n_subsets`` random subsets S of
    ``round(subset_fraction * n_cells)`` cells are drawn per item. For each S the attribution mass
    ``Σ_{i∈S} g_i`` (signed sum over the cells' voxels and all channels) is correlated with the score drop
    ``f(x) - f(x with S set to baseline)``. Bhatt et al. use Pearson (the default); ``correlation="spearman"``
    is the rank variant. The score defaults to the logit (an attribution explains a score, not a softmax).
    Items whose attribution sums or drops are constant get 0 (no defined correlation), never NaN.

    Args:
        model: classifier; x: input ``(B, C, *spatial)``; saliency: maps or explainer (signed maps expected).
        class_idx: explained class (None -> argmax).
        n_subsets: subsets per item (>= 2). subset_fraction: fraction of cells per subset, in (0, 1).
        cell_size: cell edge in voxels (one or per axis). baseline: replacement value.
        correlation: ``"pearson"`` or ``"spearman"``. score: ``"logit"`` or ``"prob"``.
        batch_size: perturbed inputs per forward pass. seed: seed of the subset draw; an item's subsets come from
            ``(seed, a digest of the item's values)`` (:mod:`monai_saliency.ops.item_noise`), so its score does not
            depend on its batch-mates or position.
        target: instead of ``class_idx``, a target (see :func:`deletion_curve`).

    Returns:
        ``(B,)`` float64 tensor of correlations.

    Raises:
        ValueError: mismatched shapes, NaN maps, bad options.
    """
    check_score(score)
    n_subsets = check_positive_int(n_subsets, "n_subsets", 2)
    if not 0.0 < float(subset_fraction) < 1.0:
        raise ValueError(f"subset_fraction must be in (0, 1), got {subset_fraction!r}.")
    x, maps, bound, _ = _prepare(model, x, saliency, class_idx, target, 1, batch_size)
    b = x.shape[0]
    ids, n_cells = _cell_ids(x.shape[2:], cell_size, x.device)
    if n_cells < 2:
        raise ValueError(f"the grid has {n_cells} cell(s); use a smaller cell_size.")
    k = min(max(1, round(subset_fraction * n_cells)), n_cells - 1)
    # per-item draws (CPU, device-independent): an item's subsets do not depend on its batch-mates
    draws = keyed_draws(torch.rand, int(seed), item_keys(x), [0] * b, (n_subsets, n_cells), torch.float32, "cpu")
    chosen = draws.argsort(dim=2)[..., :k].to(x.device)
    in_s = torch.zeros(b, n_subsets, n_cells, dtype=torch.bool, device=x.device).scatter_(2, chosen, True)
    loc_attr = maps.sum(dim=1).reshape(b, -1).double()
    cell_attr = torch.zeros(b, n_cells, dtype=torch.float64, device=x.device).index_add_(1, ids, loc_attr)
    attr_sums = (in_s.double() * cell_attr[:, None]).sum(-1)  # (B, S)

    base = _as_like(baseline, x, "baseline")
    pairs = b * n_subsets
    drops = torch.empty(pairs, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        full = model_scores(model, x, bound, score).double()
        for lo in range(0, pairs, batch_size):
            p = torch.arange(lo, min(lo + batch_size, pairs), device=x.device)
            item, sub = p // n_subsets, p % n_subsets
            mask = in_s[item, sub][:, ids].reshape(-1, 1, *x.shape[2:])
            xin = torch.where(mask, base[item], x[item])
            drops[lo : lo + len(p)] = full[item] - model_scores(model, xin, bound.rows(item), score).double()
    r = rowwise_corr(attr_sums.cpu().numpy(), drops.reshape(b, n_subsets).cpu().numpy(), correlation)
    return torch.from_numpy(r)


def stability(
    explainer: Callable[..., torch.Tensor],
    x: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    n_samples: int = 8,
    noise_std: float = 0.02,
    relative_to_range: bool = True,
    batch_size: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """Average relative sensitivity of an explainer to small input noise. **Lower is better** (0 = stable).

    ``stability = mean_j ||g(x + δ_j) - g(x)||_2 / ||g(x)||_2`` with ``δ_j ~ N(0, σ²)`` i.i.d. per voxel and
    ``σ = noise_std * (max(x_b) - min(x_b))`` per item (or ``σ = noise_std`` when ``relative_to_range=False``).
    This is the average sensitivity of Bhatt et al. 2020 / Yeh et al. 2019, normalised by the map's norm so
    methods with different map scales compare. The explained class is the one of the clean input
    (``class_idx``, or the explainer's argmax when the class is resolved elsewhere); pass ``class_idx``
    explicitly for class-discriminative methods. The noisy copies of the batch are explained in chunks of
    at most ``batch_size`` inputs. A zero map ``g(x)`` gives ``||g(x+δ)||`` divided by 1 (documented, not NaN).

    Args:
        explainer: callable ``explainer(x, class_idx) -> maps``.
        x: input ``(B, C, *spatial)``.
        class_idx: None, int or ``(B,)`` tensor, or a target (a bound one is split over the noisy copies; one that
            needs the output, e.g. a predicted region, is bound by the explainer on each copy).
        n_samples: noise draws per item. noise_std: noise level. relative_to_range: scale σ by the item's range.
        batch_size: inputs per explainer call (memory bound). seed: seed of the noise; draw ``j`` of an item comes
            from ``(seed, a digest of the item's values, j)``, so its score does not depend on its batch-mates,
            position or ``batch_size``.

    Returns:
        ``(B,)`` float64 tensor.

    Raises:
        ValueError: bad options, NaN maps, maps whose shape does not match the input.
    """
    x = check_model_input(x)
    n_samples = check_positive_int(n_samples, "n_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not (math.isfinite(noise_std) and noise_std > 0):
        raise ValueError(f"noise_std must be a positive number, got {noise_std!r}.")
    b = x.shape[0]
    cls = class_idx
    if isinstance(class_idx, Target):
        cls = class_idx.bind(None, b) if not class_idx.needs_output else class_idx
    elif isinstance(class_idx, (Sequence, torch.Tensor)) and not isinstance(class_idx, str):
        cls = torch.as_tensor(class_idx).reshape(-1)
        cls = cls.expand(b) if cls.numel() == 1 else cls
    ref = resolve_maps(explainer, x, cls).double()
    ref_norm = torch.linalg.vector_norm(ref.reshape(b, -1), dim=1)
    ref_norm = torch.where(ref_norm > 0, ref_norm, torch.ones_like(ref_norm))
    flat = x.reshape(b, -1)
    sigma = noise_std * ((flat.amax(1) - flat.amin(1)) if relative_to_range else torch.ones(b, device=x.device))
    sigma = sigma.reshape(b, *([1] * (x.ndim - 1)))
    keys = item_keys(x)
    total = b * n_samples
    out = torch.empty(total, dtype=torch.float64)
    for lo in range(0, total, batch_size):
        p = torch.arange(lo, min(lo + batch_size, total))
        item = p // n_samples
        # per (item, draw), on the CPU: independent of the batch-mates, the chunking and the device
        rows = [keys[i] for i in item.tolist()]
        noise = keyed_draws(torch.randn, int(seed), rows, p % n_samples, x.shape[1:], x.dtype, "cpu").to(x.device)
        xn = x[item] + noise * sigma[item]
        c = cls.rows(item) if isinstance(cls, Target) else cls[item] if isinstance(cls, torch.Tensor) else cls
        maps = resolve_maps(explainer, xn, c).double()
        diff = torch.linalg.vector_norm((maps - ref[item]).reshape(len(p), -1), dim=1)
        out[lo : lo + len(p)] = (diff / ref_norm[item]).cpu()
    return out.reshape(b, n_samples).mean(dim=1)
