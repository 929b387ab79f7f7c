"""Statistics for metric tables: bootstrap confidence intervals and paired one-sided Wilcoxon tests (scipy).

Values are per-run (or per-item) metric values; no NaN is ever returned: degenerate inputs either have a
documented exact answer (all values equal -> a zero-width interval; all paired differences zero -> p = 1)
or raise a clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as sps

__all__ = [
    "BootstrapCI",
    "WilcoxonResult",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "paired_wilcoxon",
    "significance_stars",
]


@dataclass
class BootstrapCI:
    """Point estimate and confidence interval of a statistic."""

    estimate: float
    low: float
    high: float
    confidence: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass
class WilcoxonResult:
    """Paired Wilcoxon signed-rank test of ``a - b`` (``alternative`` as in scipy)."""

    statistic: float
    pvalue: float
    n: int
    alternative: str


def _values(values, name: str, min_n: int = 2) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        v = v.reshape(-1)
    if v.size < min_n:
        raise ValueError(f"{name} needs at least {min_n} values, got {v.size}.")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or Inf; drop or fix those runs first.")
    return v


_STATISTICS = {"mean": np.mean, "median": np.median}


def bootstrap_ci(
    values: Sequence[float] | np.ndarray | torch.Tensor,
    confidence: float = 0.95,
    statistic: str | Callable = "mean",
    n_resamples: int = 9999,
    method: str = "BCa",
    seed: int = 0,
) -> BootstrapCI:
    """Bootstrap confidence interval of a statistic of 1-D values via ``scipy.stats.bootstrap``.

    Args:
        values: metric values (one per run or item), at least 2, finite.
        confidence: confidence level (default 95 %).
        statistic: ``"mean"``, ``"median"`` or a callable ``f(sample, axis=...)``.
        n_resamples: bootstrap resamples.
        method: ``"BCa"`` (default), ``"percentile"`` or ``"basic"`` (scipy's methods).
        seed: seed of scipy's resampling.

    Returns:
        :class:`BootstrapCI` with the statistic on the full sample as ``estimate``. All values equal ->
        ``low == high == estimate`` (scipy would return NaN for BCa).

    Raises:
        ValueError: fewer than 2 values, NaN, a confidence outside (0, 1), an unknown statistic.
    """
    v = _values(values, "bootstrap_ci")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    fn = _STATISTICS.get(statistic) if isinstance(statistic, str) else statistic
    if fn is None:
        raise ValueError(f"unknown statistic {statistic!r}; use 'mean', 'median' or a callable.")
    est = float(fn(v, axis=-1))
    if np.ptp(v) == 0:
        return BootstrapCI(est, est, est, confidence)
    res = sps.bootstrap(
        (v,), fn, confidence_level=confidence, n_resamples=n_resamples, method=method,
        rng=np.random.default_rng(seed), vectorized=True,
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):  # e.g. BCa on a degenerate bootstrap distribution
        res = sps.bootstrap(
            (v,), fn, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
            rng=np.random.default_rng(seed), vectorized=True,
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return BootstrapCI(est, low, high, confidence)


def paired_bootstrap_ci(a, b, **kwargs) -> BootstrapCI:
    """Bootstrap CI of the mean paired difference ``a - b`` (same runs/items in the same order).

    Raises:
        ValueError: for different lengths (see also :func:`bootstrap_ci`).
    """
    va, vb = _values(a, "a"), _values(b, "b")
    if va.shape != vb.shape:
        raise ValueError(f"paired values need equal lengths, got {va.size} and {vb.size}.")
    return bootstrap_ci(va - vb, **kwargs)


def paired_wilcoxon(a, b, alternative: str = "greater", zero_method: str = "wilcox") -> WilcoxonResult:
    """Paired Wilcoxon signed-rank test (``scipy.stats.wilcoxon(a, b)``), one-sided by default.

    ``alternative="greater"`` tests H1: the differences ``a - b`` are shifted above 0 (method A scores higher);
    for "lower is better" metrics such as deletion AUC pass the arguments so that the hypothesis reads right
    (e.g. ``paired_wilcoxon(baseline, method)``). Seed 000 reports "one-tailed: structured > baseline".
    With every difference zero there is no evidence either way: ``statistic = 0, pvalue = 1`` (scipy would
    raise or return NaN).

    Args:
        a, b: paired values (equal length >= 2, finite).
        alternative: ``"greater"``, ``"less"`` or ``"two-sided"``.
        zero_method: scipy's handling of zero differences (``"wilcox"`` drops them).

    Returns:
        :class:`WilcoxonResult`.

    Raises:
        ValueError: different lengths, NaN, fewer than 2 pairs, unknown alternative.
    """
    va, vb = _values(a, "a"), _values(b, "b")
    if va.shape != vb.shape:
        raise ValueError(f"paired values need equal lengths, got {va.size} and {vb.size}.")
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}.")
    if np.all(va == vb):
        return WilcoxonResult(0.0, 1.0, int(va.size), alternative)
    res = sps.wilcoxon(va, vb, alternative=alternative, zero_method=zero_method)
    return WilcoxonResult(float(res.statistic), float(res.pvalue), int(va.size), alternative)


def significance_stars(pvalue: float) -> str:
    """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, else ``ns`` (seed 000's table legend)."""
    if not np.isfinite(pvalue):
        raise ValueError(f"p-value must be finite, got {pvalue!r}.")
    return "***" if pvalue < 1e-3 else "**" if pvalue < 1e-2 else "*" if pvalue < 0.05 else "ns"
