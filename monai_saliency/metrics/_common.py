"""Shared input checks and helpers of the metrics (private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from scipy import stats as sps
from torch import nn

from monai_saliency.core import (
    Target,
    TargetLike,
    check_input,
    evaluation_mode,
    explainer_target,
    model_output,
    resolve_target,
)
from monai_saliency.ops.checks import all_finite
from monai_saliency.ops.normalize import reduce_channels
from monai_saliency.ops.precision import model_input_dtype, upcast, working_tensor

__all__ = [
    "check_map_for_input",
    "check_maps",
    "check_model_input",
    "check_positive_int",
    "location_map",
    "model_scores",
    "plain",
    "resolve_maps",
    "rowwise_corr",
    "safe_ratio",
]

LOCATION_REDUCTIONS = ("auto", "abs_sum", "l2", "mean", "max_abs", "sum")


def plain(x: Any) -> torch.Tensor:
    """Return a plain tensor (MetaTensor metadata dropped, no copy)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """Validate an integer option ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_model_input(x: Any) -> torch.Tensor:
    """:func:`~monai_saliency.core.check_input`, then the tensor a metric computes on: float16 / bfloat16 in
    float32 (a half-precision model gets its own dtype at its input, see :func:`model_scores`), an inference tensor
    copied to an ordinary one."""
    return working_tensor(check_input(x))


def check_maps(maps: Any, name: str = "maps", min_ndim: int = 3) -> torch.Tensor:
    """Validate a batch of saliency maps ``(B, C, *spatial)``: floating (float16 / bfloat16 read as float32),
    finite, non-empty.

    Raises:
        TypeError: if not a tensor.
        ValueError: wrong rank, empty, NaN or Inf.
    """
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(maps)
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, *spatial), got {type(maps).__name__}.")
    maps = plain(maps)
    if maps.ndim < min_ndim:
        raise ValueError(
            f"{name} must have shape (B, C, *spatial) with at least one spatial axis, got {tuple(maps.shape)}; "
            "add the batch/channel axes with maps[None] or maps[:, None]."
        )
    if maps.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(maps.shape)}.")
    maps = upcast(maps) if maps.is_floating_point() else maps.float()
    if not all_finite(maps):
        raise ValueError(f"{name} contains NaN or Inf; fix the explainer or clean the map (e.g. torch.nan_to_num).")
    return maps


def check_map_for_input(maps: torch.Tensor, x: torch.Tensor, name: str = "saliency") -> torch.Tensor:
    """Check that maps ``(B, 1|C, *spatial)`` match the input ``(B, C, *spatial)``."""
    maps = check_maps(maps, name)
    if maps.shape[0] != x.shape[0] or maps.shape[2:] != x.shape[2:] or maps.shape[1] not in (1, x.shape[1]):
        raise ValueError(
            f"{name} shape {tuple(maps.shape)} does not match the input shape {tuple(x.shape)}: expected "
            f"({x.shape[0]}, 1 or {x.shape[1]}, {', '.join(map(str, x.shape[2:]))}); resize the map to the input "
            "(e.g. monai.transforms.Resize) or explain the same batch."
        )
    return maps.to(x.device)


def location_map(maps: torch.Tensor, reduce: str = "auto") -> torch.Tensor:
    """One value per spatial location ``(B, *spatial)`` from maps ``(B, C, *spatial)``.

    ``"auto"``: a single-channel map is used as it is (signed); a multi-channel map is reduced by
    ``"abs_sum"``. ``"sum"`` is the signed sum over channels; other modes are those of
    :func:`monai_saliency.ops.normalize.reduce_channels`.

    Raises:
        ValueError: for an unknown mode.
    """
    if reduce not in LOCATION_REDUCTIONS:
        raise ValueError(f"unknown channel reduction {reduce!r}; choose one of {LOCATION_REDUCTIONS}.")
    if reduce == "auto":
        return maps[:, 0] if maps.shape[1] == 1 else reduce_channels(maps, "abs_sum", keepdim=False)
    if reduce == "sum":
        return maps.sum(dim=1)
    return reduce_channels(maps, reduce, keepdim=False)


def model_scores(model: nn.Module, x: torch.Tensor, target: Target, score: str) -> torch.Tensor:
    """The bound target's score per item, on probabilities (``"prob"``: the class's softmax probability, a region's
    mean / summed probability) or on the raw output (``"logit"``), with the model in eval mode
    (:func:`~monai_saliency.core.evaluation_mode`).

    Raises:
        ValueError: for ``"prob"`` with a target that has no probability version (a regression unit, a callable).
    """
    with evaluation_mode(model), model_input_dtype(model):
        output = model_output(model(x)).float()
    return (target.probabilities() if score == "prob" else target)(output)


def check_score(score: str) -> str:
    """Validate the score option (``"prob"`` or ``"logit"``)."""
    if score not in ("prob", "logit"):
        raise ValueError(f"score must be 'prob' (softmax probability) or 'logit', got {score!r}.")
    return score


def resolve_class(model: nn.Module, x: torch.Tensor, class_idx: TargetLike, target: TargetLike = None) -> Target:
    """The target bound to the batch ``x`` (:func:`~monai_saliency.core.resolve_target`): ``class_idx`` (None -> the
    model's argmax on ``x``) or ``target`` (a :mod:`~monai_saliency.core.targets` target or callable).

    Raises:
        ValueError: if both are given.
    """
    if target is not None and class_idx is not None:
        raise ValueError("give class_idx or target, not both.")
    with evaluation_mode(model), model_input_dtype(model):
        return resolve_target(model, x, target if target is not None else class_idx)


def resolve_maps(saliency: torch.Tensor | Callable[..., torch.Tensor], x: torch.Tensor, target: Any) -> torch.Tensor:
    """Precomputed maps, or the maps of an explainer called as ``explainer(x, class_idx)``, checked against ``x``
    (a bound class target is passed as its ``(B,)`` class indices, any other target as it is)."""
    if callable(saliency) and not isinstance(saliency, torch.Tensor):
        saliency = saliency(x, explainer_target(target) if isinstance(target, Target) else target)
    return check_map_for_input(plain(saliency).detach(), x)


def rowwise_corr(a: np.ndarray, b: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Correlation of each row of ``a`` with the same row of ``b`` (shape ``(B, n)`` each).

    ``"spearman"`` uses average ranks of ties (as ``scipy.stats.spearmanr``). A row where either side is
    constant has no defined correlation: it is returned as 0 if only one side is constant and 1 if both
    are (identical up to an offset), never NaN.

    Raises:
        ValueError: for an unknown method or fewer than 2 columns.
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"correlation must be 'pearson' or 'spearman', got {method!r}.")
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[-1] < 2:
        raise ValueError("a correlation needs at least 2 values per item.")
    if method == "spearman":
        a = sps.rankdata(a, axis=-1)
        b = sps.rankdata(b, axis=-1)
    n = a.shape[-1]
    tol_a = 1e-12 * np.abs(a).max(-1) * np.sqrt(n)
    tol_b = 1e-12 * np.abs(b).max(-1) * np.sqrt(n)
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    na = np.sqrt((a * a).sum(-1))
    nb = np.sqrt((b * b).sum(-1))
    ca = na <= tol_a
    cb = nb <= tol_b
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / (na * nb)
    r = np.where(ca & cb, 1.0, np.where(ca | cb, 0.0, r))
    return np.clip(r, -1.0, 1.0)


def safe_ratio(num: torch.Tensor, den: torch.Tensor, fallback: float) -> torch.Tensor:
    """``num / den`` where ``den > 0``, ``fallback`` elsewhere (never NaN)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.full_like(num, fallback))
