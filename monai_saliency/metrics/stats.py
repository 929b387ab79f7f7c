"""Statistics for metric tables: tests, multiplicity correction, effect sizes and intervals (scipy).

Values are per-unit (per-run, per-item, per-study) metric values; no NaN is ever returned: degenerate inputs
either have a documented exact answer (all values equal -> a zero-width interval; all paired differences zero
-> p = 1) or raise a clear error.

Which test: :func:`mcnemar_exact` for paired yes/no outcomes (hit / miss per unit), :func:`paired_wilcoxon`
for paired continuous outcomes; :func:`holm` adjusts the p-values of one table (the family) together.
Effect sizes with intervals: :func:`paired_mean_difference`, :func:`rank_biserial` (goes with Wilcoxon),
:func:`paired_proportion_difference` (goes with McNemar). No confidence interval is computed from fewer than
:data:`MIN_CI_UNITS` units: :func:`ci_or_range` then reports the range of the values instead, with the unit
count, so a table prints ``range [a, b], n=8``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as sps

__all__ = [
    "MIN_CI_UNITS",
    "BootstrapCI",
    "EffectSize",
    "Interval",
    "McNemarResult",
    "WilcoxonResult",
    "bootstrap_ci",
    "ci_or_range",
    "holm",
    "mcnemar_exact",
    "paired_bootstrap_ci",
    "paired_mean_difference",
    "paired_proportion_difference",
    "paired_wilcoxon",
    "rank_biserial",
    "significance_stars",
]

MIN_CI_UNITS = 20
"""Fewest units from which a confidence interval is reported; below it :func:`ci_or_range` gives the range."""


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
    for m in (method, "percentile"):  # percentile if e.g. BCa fails on a degenerate bootstrap distribution
        res = sps.bootstrap(
            (v,),
            fn,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method=m,
            rng=np.random.default_rng(seed),
            vectorized=True,
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            break
    return BootstrapCI(est, low, high, confidence)


def paired_bootstrap_ci(a, b, **kwargs) -> BootstrapCI:
    """Bootstrap CI of the mean paired difference ``a - b`` (same runs/items in the same order).

    Raises:
        ValueError: for different lengths (see also :func:`bootstrap_ci`).
    """
    va, vb = _paired(a, b, 2)
    return bootstrap_ci(va - vb, **kwargs)


def paired_wilcoxon(a, b, alternative: str = "greater", zero_method: str = "wilcox") -> WilcoxonResult:
    """Paired Wilcoxon signed-rank test (``scipy.stats.wilcoxon(a, b)``), one-sided by default.

    ``alternative="greater"`` tests H1: the differences ``a - b`` are shifted above 0 (method A scores higher);
    for "lower is better" metrics such as deletion AUC pass the arguments so that the hypothesis reads right
    (e.g. ``paired_wilcoxon(baseline, method)``). Seed 000 reports "one-tailed: structured > baseline".
    With every difference zero there is no evidence either way: ``statistic = 0, pvalue = 1`` (scipy would
    raise or return NaN). For a two-sided test (what :mod:`benchmarks.experiments._verdicts` uses) pass
    ``alternative="two-sided"`` and read the direction from the effect size.

    Statistic: ``T+``, the sum of the ranks of ``|a - b|`` over the positive differences. Zero differences
    (``zero_method="wilcox"``) are dropped before ranking; tied ``|a - b|`` get mid-ranks. scipy (>= 1.13) then
    computes the exact null distribution of ``T+`` for small samples, ties and zeros included (checked
    against a brute-force enumeration of all sign flips in the tests), else the normal approximation with the
    tie correction. Differences equal only up to rounding are not ties: round the metric first if that matters.

    Args:
        a, b: paired values (equal length >= 2, finite).
        alternative: ``"greater"``, ``"less"`` or ``"two-sided"``.
        zero_method: scipy's handling of zero differences (``"wilcox"`` drops them).

    Returns:
        :class:`WilcoxonResult`.

    Raises:
        ValueError: different lengths, NaN, fewer than 2 pairs, unknown alternative.
    """
    va, vb = _paired(a, b, 2)
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


def _paired(a, b, min_n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    va, vb = _values(a, "a", min_n), _values(b, "b", min_n)
    if va.shape != vb.shape:
        raise ValueError(f"paired values need equal lengths, got {va.size} and {vb.size}.")
    return va, vb


def _binary(values, name: str) -> np.ndarray:
    v = _values(values, name, 1)
    if not np.isin(v, (0.0, 1.0)).all():
        raise ValueError(f"{name} must hold yes/no outcomes (bool or 0/1), got other values.")
    return v.astype(bool)


def _paired_binary(a, b) -> tuple[np.ndarray, np.ndarray]:
    va, vb = _binary(a, "a"), _binary(b, "b")
    if va.shape != vb.shape:
        raise ValueError(f"paired values need equal lengths, got {va.size} and {vb.size}.")
    return va, vb


@dataclass
class McNemarResult:
    """McNemar's exact test of paired yes/no outcomes.

    ``n10``: units where A says yes and B no; ``n01``: A no and B yes; ``n``: all units (concordant included).
    """

    n10: int
    n01: int
    n: int
    pvalue: float
    alternative: str


def mcnemar_exact(a, b, alternative: str = "two-sided") -> McNemarResult:
    """McNemar's exact (binomial) test for paired yes/no outcomes, e.g. "the map hits the lesion" per unit.

    Definition: only the discordant units carry information. Under H0 (A and B succeed equally often) a
    discordant unit is "A yes, B no" with probability 1/2, so ``n10 ~ Binomial(n10 + n01, 1/2)`` and the p-value
    is ``scipy.stats.binomtest(n10, n10 + n01, 0.5, alternative)``. Two-sided, this equals
    ``min(1, 2 * P(X <= min(n10, n01)))`` (statsmodels' ``mcnemar(exact=True)``). Direction:
    ``alternative="greater"`` tests H1: A succeeds more often than B (``n10 > n01``).
    The exact test (not the chi-squared approximation, not the mid-p variant) is used because the tables here
    have few discordant units, where the chi-squared approximation is poor; the exact test is conservative,
    which errs on the side of "not shown" for a claimed win.

    Degenerate case: no discordant unit (``n10 + n01 == 0``, including all outcomes equal) -> ``pvalue = 1``.

    Args:
        a, b: paired outcomes (bool or 0/1), same units in the same order, at least 1.
        alternative: ``"two-sided"``, ``"greater"`` or ``"less"``.

    Returns:
        :class:`McNemarResult`.

    Raises:
        ValueError: different lengths, values other than 0/1, NaN, unknown alternative.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}.")
    va, vb = _paired_binary(a, b)
    n10, n01 = int(np.sum(va & ~vb)), int(np.sum(~va & vb))
    p = 1.0 if n10 + n01 == 0 else float(sps.binomtest(n10, n10 + n01, 0.5, alternative=alternative).pvalue)
    return McNemarResult(n10, n01, int(va.size), min(p, 1.0), alternative)


def holm(pvalues) -> np.ndarray:
    """Holm(-Bonferroni) step-down adjusted p-values for one family of tests (e.g. every test of one table).

    Definition: sort the ``m`` p-values ascending, ``p_(1) <= ... <= p_(m)``; the adjusted value of ``p_(i)`` is
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))``, returned in the input order. Rejecting where the adjusted value
    is ``< alpha`` controls the family-wise error rate at ``alpha`` (Holm 1979). Same as statsmodels'
    ``multipletests(p, method="holm")[1]``. Adjusted values are never below the raw ones.

    Degenerate cases: an empty family -> an empty array; one p-value -> itself.

    Args:
        pvalues: p-values in [0, 1] (1-D).

    Returns:
        float64 array of adjusted p-values, input order.

    Raises:
        ValueError: NaN or values outside [0, 1].
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return p
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must be finite and in [0, 1], got {p.tolist()}.")
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(stepped)
    return out


@dataclass
class Interval:
    """An estimate with either a confidence interval (``kind="CI"``) or the range of the values (``"range"``).

    ``n`` is the number of units it comes from; ``confidence`` is ``None`` for a range.
    """

    estimate: float
    low: float
    high: float
    n: int
    kind: str
    confidence: float | None = None

    def format(self, fmt: str = "{:.3f}") -> str:
        """``"0.512 [0.401, 0.603] (95% CI, n=25)"`` or ``"0.512 (range [0.301, 0.700], n=8)"``."""
        est, low, high = fmt.format(self.estimate), fmt.format(self.low), fmt.format(self.high)
        if self.kind == "CI":
            return f"{est} [{low}, {high}] ({100 * self.confidence:g}% CI, n={self.n})"
        return f"{est} (range [{low}, {high}], n={self.n})"

    def __str__(self) -> str:
        return self.format()


def ci_or_range(values, min_units: int = MIN_CI_UNITS, estimate: float | None = None, **bootstrap_kwargs) -> Interval:
    """A bootstrap CI of a statistic from at least ``min_units`` units, else the range of the values.

    Rule: no confidence interval from fewer than :data:`MIN_CI_UNITS` (20) units: a bootstrap over 5-8 studies
    has too few distinct resamples to mean anything, so the table shows ``range [min, max], n=k`` instead.
    All values equal gives a zero-width interval either way (see :func:`bootstrap_ci`).

    Args:
        values: per-unit values (1-D, finite, at least 1).
        min_units: fewest units for a CI.
        estimate: the point estimate to report (default: the bootstrap statistic, the mean unless
            ``statistic=`` says otherwise).
        bootstrap_kwargs: passed to :func:`bootstrap_ci` (``confidence``, ``statistic``, ``n_resamples``, ...).

    Returns:
        :class:`Interval` of kind ``"CI"`` or ``"range"``.

    Raises:
        ValueError: no value, NaN (see also :func:`bootstrap_ci`).
    """
    v = _values(values, "ci_or_range", 1)
    if v.size < max(min_units, 2):
        fn = bootstrap_kwargs.get("statistic", "mean")
        fn = _STATISTICS.get(fn) if isinstance(fn, str) else fn
        if fn is None:
            raise ValueError(
                f"unknown statistic {bootstrap_kwargs['statistic']!r}; use 'mean', 'median' or a callable."
            )
        est = float(fn(v, axis=-1)) if estimate is None else float(estimate)
        return Interval(est, float(v.min()), float(v.max()), int(v.size), "range")
    ci = bootstrap_ci(v, **bootstrap_kwargs)
    est = ci.estimate if estimate is None else float(estimate)
    return Interval(est, ci.low, ci.high, int(v.size), "CI", ci.confidence)


@dataclass
class EffectSize:
    """A named effect size; ``interval`` is its CI (>= :data:`MIN_CI_UNITS` units) or else the range of the
    per-unit differences ``a - b`` (then ``interval.estimate`` is still the effect size)."""

    name: str
    interval: Interval

    @property
    def estimate(self) -> float:
        return self.interval.estimate

    def format(self, fmt: str = "{:.3f}") -> str:
        if self.interval.kind == "CI":
            return f"{self.name} = {self.interval.format(fmt)}"
        i = self.interval
        low, high = fmt.format(i.low), fmt.format(i.high)
        return f"{self.name} = {fmt.format(i.estimate)} (differences range [{low}, {high}], n={i.n})"

    def __str__(self) -> str:
        return self.format()


def _range_of_differences(name: str, estimate: float, d: np.ndarray) -> EffectSize:
    return EffectSize(name, Interval(float(estimate), float(d.min()), float(d.max()), int(d.size), "range"))


def paired_mean_difference(a, b, min_units: int = MIN_CI_UNITS, **bootstrap_kwargs) -> EffectSize:
    """Mean paired difference ``mean(a - b)`` with a bootstrap CI over units (BCa by default).

    Direction: positive when A scores higher than B. Below ``min_units`` units the interval is the range of the
    differences (see :func:`ci_or_range`).

    Raises:
        ValueError: different lengths, NaN, no pair.
    """
    va, vb = _paired(a, b)
    d = va - vb
    return EffectSize("mean difference", ci_or_range(d, min_units, **bootstrap_kwargs))


def _rank_biserial(d: np.ndarray, axis: int = -1) -> np.ndarray:
    """Matched-pairs rank-biserial of differences along ``axis`` (vectorised for ``scipy.stats.bootstrap``)."""
    d = np.moveaxis(np.asarray(d, dtype=np.float64), axis, -1)
    zeros = (d == 0).sum(-1, keepdims=True)
    # zeros are the smallest |d|, so a non-zero difference's rank among the non-zero ones is its rank minus #zeros
    ranks = sps.rankdata(np.abs(d), axis=-1) - zeros
    t_plus = np.where(d > 0, ranks, 0.0).sum(-1)
    t_minus = np.where(d < 0, ranks, 0.0).sum(-1)
    total = t_plus + t_minus
    return np.where(total > 0, (t_plus - t_minus) / np.where(total > 0, total, 1.0), 0.0)


def rank_biserial(
    a, b, min_units: int = MIN_CI_UNITS, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0
) -> EffectSize:
    """Matched-pairs rank-biserial correlation, the effect size of the Wilcoxon signed-rank test (Kerby 2014).

    Definition: drop zero differences ``d = a - b``, rank ``|d|`` (mid-ranks for ties), ``T+`` / ``T-`` = rank
    sums of the positive / negative differences; ``r = (T+ - T-) / (T+ + T-)``, equivalently
    ``4 T+ / (m (m + 1)) - 1`` for ``m`` non-zero pairs. In [-1, 1]; positive when A tends to score higher
    (1: every non-zero difference positive). All differences zero -> ``r = 0``.
    CI: percentile bootstrap over pairs from at least ``min_units`` pairs, else the range of the differences.

    Raises:
        ValueError: different lengths, NaN, no pair.
    """
    va, vb = _paired(a, b)
    d = va - vb
    r = float(_rank_biserial(d))
    interval = ci_or_range(
        d,
        min_units,
        estimate=r,
        statistic=_rank_biserial,
        method="percentile",
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
    )
    return EffectSize("rank-biserial r", interval)


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def paired_proportion_difference(a, b, min_units: int = MIN_CI_UNITS, confidence: float = 0.95) -> EffectSize:
    """Difference of paired proportions ``mean(a) - mean(b) = (n10 - n01) / n`` with Newcombe's CI.

    Goes with :func:`mcnemar_exact`. The CI is Newcombe's (1998) square-and-add interval for paired data
    ("method 10"): Wilson score limits ``[l1, u1]``, ``[l2, u2]`` of the two proportions combined with the
    correlation estimate ``phi`` of the 2x2 table ``[[n11, n10], [n01, n00]]``: with ``A = n11 n00 - n10 n01``,
    ``phi = (A - n/2) / sqrt(row and column sums product)`` if ``A > n/2``, ``0`` if ``0 <= A <= n/2``, ``A / sqrt(.)``
    if ``A < 0`` (0 when a margin is empty); ``low = D - sqrt((p1-l1)^2 - 2 phi (p1-l1)(u2-p2) + (u2-p2)^2)``,
    ``high = D + sqrt((p2-l2)^2 - 2 phi (p2-l2)(u1-p1) + (u1-p1)^2)``. Direction: positive when A says yes
    more often. Below ``min_units`` units the interval is the range of the per-unit differences (in {-1, 0, 1}).

    Raises:
        ValueError: different lengths, values other than 0/1, NaN, confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    va, vb = _paired_binary(a, b)
    n = int(va.size)
    n11, n10 = int(np.sum(va & vb)), int(np.sum(va & ~vb))
    n01, n00 = int(np.sum(~va & vb)), int(np.sum(~va & ~vb))
    est = (n10 - n01) / n
    name = "difference in proportions"
    if n < max(min_units, 2):
        return _range_of_differences(name, est, va.astype(float) - vb.astype(float))
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    p1, p2 = (n11 + n10) / n, (n11 + n01) / n
    (l1, u1), (l2, u2) = _wilson(n11 + n10, n, z), _wilson(n11 + n01, n, z)
    margins = float(n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    cross = float(n11 * n00 - n10 * n01)
    if margins == 0:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > n / 2 else 0.0 if cross >= 0 else cross) / np.sqrt(margins)
    low = est - np.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = est + np.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0))
    return EffectSize(name, Interval(est, float(low), float(high), n, "CI", confidence))
