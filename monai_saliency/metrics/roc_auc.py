"""Scores of one map against a reference: ROC AUC against a binary truth, normalised MSE against a reference map."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["nmse", "roc_auc"]


def _flat(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().reshape(-1).cpu()
    if t.is_floating_point() or t.is_complex():
        t = t.to(torch.float64)
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN/Inf.")
    return t


def roc_auc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (e.g. a saliency map against a truth mask).

    Computed as the Mann-Whitney U statistic from average ranks, so ties get half credit (equal to
    ``sklearn.metrics.roc_auc_score(labels, scores)``), in ``O(N log N)`` (MONAI's ``compute_roc_auc`` loops in
    Python over the elements, too slow for voxel maps).

    Args:
        scores: real scores, any shape (flattened).
        labels: bool or 0/1 labels, the same number of elements.

    Returns:
        The AUC in [0, 1].

    Raises:
        ValueError: different sizes, non-binary labels, NaN/Inf scores, or only one class present.
    """
    s, lab = _flat(scores, "scores"), _flat(labels, "labels")
    if s.numel() != lab.numel():
        raise ValueError(f"scores ({s.numel()} elements) and labels ({lab.numel()}) differ in size.")
    if s.is_complex():
        raise ValueError("scores must be real.")
    if not ((lab == 0) | (lab == 1)).all():
        raise ValueError("labels must be binary (bool or 0/1).")
    lab = lab.bool()
    n_pos = int(lab.sum())
    n_neg = lab.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC AUC needs both classes; got {n_pos} positive and {n_neg} negative labels.")
    _, inverse, counts = torch.unique(s, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based average rank of each element
    return float((ranks[lab].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def nmse(estimate: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> float:
    """Normalised mean squared error ``sum (estimate - reference)^2 / sum reference^2``.

    Args:
        estimate: real values, any shape.
        reference: real values, the same number of elements.

    Returns:
        The NMSE (0 for equal inputs; ``inf`` for a zero reference and a non-zero estimate).

    Raises:
        ValueError: different sizes or NaN/Inf values.
    """
    e, r = _flat(estimate, "estimate"), _flat(reference, "reference")
    if e.numel() != r.numel():
        raise ValueError(f"estimate ({e.numel()} elements) and reference ({r.numel()}) differ in size.")
    num, den = float(((e - r) ** 2).sum()), float((r**2).sum())
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return num / den
