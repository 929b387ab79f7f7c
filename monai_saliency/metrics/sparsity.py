"""Sparsity / concentration of saliency maps: Gini index, top-k % mass, and seed 000's "fraction below median".

Maps ``(B, 1 | C, *spatial)``, any number of spatial axes. Channels are reduced to one magnitude per
location (``reduce``; default ``"auto"``: ``|map|`` of a single-channel map, sum of ``|map|`` over channels
otherwise; seed 000 uses the channel L2 norm, ``reduce="l2"``). A zero map is treated as a constant map.

Direction: for Gini and top-k mass **higher = sparser / more concentrated**. Whether sparser is *better*
depends on the use; the metrics only measure it.
"""

from __future__ import annotations

import torch

from monai_saliency.metrics._common import check_maps, location_map, safe_ratio

__all__ = ["SPARSITY_METHODS", "fraction_below_median", "gini_index", "sparsity", "top_k_mass"]

SPARSITY_METHODS = ("gini", "top_k_mass", "below_median")


def _magnitudes(maps: torch.Tensor, reduce: str) -> torch.Tensor:
    maps = check_maps(maps)
    return location_map(maps, reduce).abs().reshape(maps.shape[0], -1).double()


def gini_index(maps: torch.Tensor, reduce: str = "auto") -> torch.Tensor:
    """Gini index of the location magnitudes (Hurley & Rickard 2009). **Higher = sparser.**

    ``G = 1 - 2 Σ_k (c_(k) / ||c||_1) (N - k + 1/2) / N`` over the magnitudes sorted ascending; equal to the
    mean absolute difference ``Σ_ij |c_i - c_j| / (2 N Σ_i c_i)``. 0 for a constant (or zero) map,
    ``1 - 1/N`` for a single non-zero location.

    Returns:
        ``(B,)`` float64 tensor in ``[0, 1 - 1/N]``.
    """
    c = torch.sort(_magnitudes(maps, reduce), dim=1).values
    n = c.shape[1]
    total = c.sum(1, keepdim=True)
    k = torch.arange(1, n + 1, dtype=torch.float64, device=c.device)
    g = 1.0 - 2.0 * ((c / torch.where(total > 0, total, torch.ones_like(total))) * ((n - k + 0.5) / n)).sum(1)
    return torch.where(total[:, 0] > 0, g, torch.zeros_like(g))


def top_k_mass(maps: torch.Tensor, fraction: float = 0.1, reduce: str = "auto") -> torch.Tensor:
    """Fraction of the total magnitude held by the top ``fraction`` of locations. **Higher = more concentrated.**

    ``k = max(1, round(fraction * N))`` locations; a constant (or zero) map gives ``k / N``.

    Raises:
        ValueError: if ``fraction`` is not in (0, 1].
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    c = _magnitudes(maps, reduce)
    n = c.shape[1]
    k = max(1, round(float(fraction) * n))
    total = c.sum(1)
    top = torch.topk(c, k, dim=1).values.sum(1)
    return safe_ratio(top, total, k / n)


def fraction_below_median(maps: torch.Tensor, reduce: str = "auto") -> torch.Tensor:
    """Seed 000's "sparsity": fraction of locations whose magnitude is strictly below the median magnitude.

    Kept for comparison with seed 000 only: it is about 0.5 for any map with distinct values (by definition of
    the median), and it *drops* towards 0 as more locations tie at zero (a sparse map with > 50 % zeros has
    median 0 and scores 0). Prefer :func:`gini_index` or :func:`top_k_mass`. The median is numpy's (mean of
    the two middle values for even N).

    Returns:
        ``(B,)`` float64 tensor in [0, 0.5].
    """
    c = _magnitudes(maps, reduce)
    s = torch.sort(c, dim=1).values
    n = s.shape[1]
    med = 0.5 * (s[:, (n - 1) // 2] + s[:, n // 2])
    return (c < med[:, None]).double().mean(1)


def sparsity(maps: torch.Tensor, method: str = "gini", reduce: str = "auto", fraction: float = 0.1) -> torch.Tensor:
    """Dispatch to :func:`gini_index` (default), :func:`top_k_mass` or seed 000's :func:`fraction_below_median`.

    Raises:
        ValueError: for an unknown method.
    """
    if method == "gini":
        return gini_index(maps, reduce)
    if method == "top_k_mass":
        return top_k_mass(maps, fraction, reduce)
    if method == "below_median":
        return fraction_below_median(maps, reduce)
    raise ValueError(f"unknown sparsity method {method!r}; choose one of {SPARSITY_METHODS}.")
