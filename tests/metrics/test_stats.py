from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from monai_saliency.metrics.stats import (
    bootstrap_ci,
    ci_or_range,
    holm,
    mcnemar_exact,
    paired_bootstrap_ci,
    paired_mean_difference,
    paired_proportion_difference,
    paired_wilcoxon,
    rank_biserial,
    significance_stars,
)


@pytest.mark.parametrize("method, statistic", [("BCa", "mean"), ("percentile", "median")])
def test_bootstrap_matches_scipy(method, statistic):
    v = np.random.default_rng(0).normal(0.5, 0.1, size=15)
    ci = bootstrap_ci(torch.from_numpy(v), statistic=statistic, method=method, n_resamples=2000, seed=3)
    fn = np.mean if statistic == "mean" else np.median
    ref = stats.bootstrap((v,), fn, n_resamples=2000, method=method, rng=np.random.default_rng(3), vectorized=True)
    assert ci.low == pytest.approx(ref.confidence_interval.low)
    assert ci.high == pytest.approx(ref.confidence_interval.high)
    assert ci.estimate == pytest.approx(fn(v)) and ci.low < ci.estimate < ci.high


def test_bootstrap_degenerate_and_errors():
    ci = bootstrap_ci([0.3] * 5)
    assert (ci.estimate, ci.low, ci.high) == (0.3, 0.3, 0.3)
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci([1.0])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=95)
    a, b = np.arange(10.0), np.arange(10.0) * 0.5
    d = paired_bootstrap_ci(a, b, n_resamples=500)
    assert d.estimate == pytest.approx(np.mean(a - b))
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap_ci(a, b[:5])


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_wilcoxon_matches_scipy(alternative):
    rng = np.random.default_rng(1)
    a = rng.normal(0.6, 0.1, 15)
    b = a - rng.normal(0.1, 0.03, 15)
    res = paired_wilcoxon(a, b, alternative=alternative)
    ref = stats.wilcoxon(a, b, alternative=alternative)
    assert res.statistic == pytest.approx(ref.statistic) and res.pvalue == pytest.approx(ref.pvalue)
    if alternative == "greater":
        assert res.pvalue < 0.01  # a is clearly larger
    if alternative == "less":
        assert res.pvalue > 0.9


def test_wilcoxon_degenerate_and_errors():
    r = paired_wilcoxon([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (r.statistic, r.pvalue) == (0.0, 1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_wilcoxon([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="alternative"):
        paired_wilcoxon([1.0, 2.0], [2.0, 1.0], alternative="bigger")
    assert [significance_stars(p) for p in (1e-4, 5e-3, 0.02, 0.2)] == ["***", "**", "*", "ns"]


def test_wilcoxon_exact_small_case():
    # 5 pairs, all differences positive with distinct sizes: exact one-sided p = 1 / 2^5
    r = paired_wilcoxon([1.1, 2.2, 3.3, 4.4, 5.5], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert r.statistic == 15 and r.pvalue == pytest.approx(1 / 32)


# ----------------------------------------------------------------------------------------------------------------------
# issue 20 §3: McNemar, Holm, effect sizes, no CI from fewer than 20 units
# ----------------------------------------------------------------------------------------------------------------------
def _brute_wilcoxon_p(d, alternative):
    """Exact p of T+ by enumerating all 2^m sign flips of the mid-ranks of the non-zero |d|."""
    d = np.asarray(d, float)
    d = d[d != 0]
    r = stats.rankdata(np.abs(d))
    t = r[d > 0].sum()
    signs = np.array(list(itertools.product([0, 1], repeat=d.size)), bool)
    null = (signs * r).sum(1)
    ge, le = np.mean(null >= t - 1e-9), np.mean(null <= t + 1e-9)
    return {"greater": ge, "less": le, "two-sided": min(1.0, 2 * min(ge, le))}[alternative]


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
@pytest.mark.parametrize(
    "d",
    [
        [0.25, 0.5, 0.5, 0.75, 1.25, -0.25, 1.0, 1.5, 0.5],  # tied |d| (0.25 and -0.25, three 0.5)
        [0.0, 0.0, 0.25, 0.75, -0.125, 1.0, 1.25, -1.5],  # zero differences are dropped
        [0.25, 0.25, 0.25, 0.25, 0.25, 0.25],  # all tied
    ],
)
def test_wilcoxon_ties_and_zeros_match_brute_force(d, alternative):
    b = np.arange(len(d), dtype=float)  # dyadic d and integer b: a - b == d exactly, so the ties stay ties
    r = paired_wilcoxon(b + np.asarray(d), b, alternative=alternative)
    assert r.pvalue == pytest.approx(_brute_wilcoxon_p(d, alternative), abs=1e-12)


def _mcnemar_table(n11, n10, n01, n00):
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, bool)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, bool)
    return a, b


@pytest.mark.parametrize("cells", [(10, 3, 9, 5), (4, 0, 6, 2), (30, 12, 2, 6), (5, 1, 1, 5)])
def test_mcnemar_exact_matches_statsmodels_and_binomial_sum(cells):
    from math import comb

    from statsmodels.stats.contingency_tables import mcnemar

    n11, n10, n01, n00 = cells
    a, b = _mcnemar_table(*cells)
    r = mcnemar_exact(torch.from_numpy(a), b)
    ref = mcnemar([[n11, n10], [n01, n00]], exact=True).pvalue
    m = n10 + n01
    brute = min(1.0, 2 * sum(comb(m, k) for k in range(min(n10, n01) + 1)) / 2**m)
    assert (r.n10, r.n01, r.n) == (n10, n01, sum(cells))
    assert r.pvalue == pytest.approx(ref, abs=1e-12) and r.pvalue == pytest.approx(brute, abs=1e-12)
    # one-sided: P(X >= n10) for "A succeeds more often"
    g = mcnemar_exact(a, b, alternative="greater").pvalue
    assert g == pytest.approx(sum(comb(m, k) for k in range(n10, m + 1)) / 2**m, abs=1e-12)


def test_mcnemar_degenerate_and_errors():
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]).pvalue == 1.0  # no discordant unit
    assert mcnemar_exact([True] * 6, [False] * 6).pvalue == pytest.approx(2 / 2**6)
    with pytest.raises(ValueError, match="yes/no"):
        mcnemar_exact([0.5, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar_exact([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="alternative"):
        mcnemar_exact([1, 0], [0, 1], alternative="bigger")


def _holm_brute(p):
    """Holm 1979 transcribed literally: step down, reject while p_(i) <= alpha / (m - i + 1); the adjusted p is
    the smallest alpha at which each hypothesis is rejected (scanned over all candidate alphas)."""
    p = np.asarray(p, float)
    m = p.size
    order = np.argsort(p)
    candidates = np.unique(np.concatenate([np.minimum(1.0, p * k) for k in range(1, m + 1)] + [[1.0]]))
    out = np.ones(m)
    for alpha in candidates[::-1]:
        rejected = np.zeros(m, bool)
        for i, idx in enumerate(order):
            if p[idx] * (m - i) <= alpha:
                rejected[idx] = True
            else:
                break
        out[rejected] = alpha
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holm_matches_statsmodels_and_brute_force(seed):
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.05, 5), rng.uniform(0, 1, 7), [0.01, 0.01]])  # includes a tie
    got = holm(p)
    np.testing.assert_allclose(got, multipletests(p, method="holm")[1], rtol=1e-12)
    np.testing.assert_allclose(got, _holm_brute(p), rtol=1e-12)
    assert (got >= p).all()


def test_holm_small_cases():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.2]), [0.2])
    assert holm([]).size == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


def test_ci_or_range_rule():
    small = np.arange(8.0) / 10
    r = ci_or_range(small)
    assert (r.kind, r.low, r.high, r.n, r.confidence) == ("range", 0.0, 0.7, 8, None)
    assert r.estimate == pytest.approx(0.35) and str(r) == "0.350 (range [0.000, 0.700], n=8)"
    big = np.random.default_rng(0).normal(size=25)
    c = ci_or_range(big, n_resamples=500, seed=1)
    ref = bootstrap_ci(big, n_resamples=500, seed=1)
    assert (c.kind, c.n, c.low, c.high) == ("CI", 25, ref.low, ref.high)
    assert str(c).endswith("(95% CI, n=25)")
    assert ci_or_range([0.4]).format("{:.1f}") == "0.4 (range [0.4, 0.4], n=1)"
    assert ci_or_range(small, min_units=5, n_resamples=200).kind == "CI"
    assert ci_or_range(small, statistic="median").estimate == pytest.approx(0.35)


def test_paired_mean_difference():
    rng = np.random.default_rng(3)
    a = rng.normal(1.0, 0.2, 30)
    b = a - 0.3 + rng.normal(0, 0.05, 30)
    e = paired_mean_difference(a, b, n_resamples=1000)
    ref = stats.bootstrap((a - b,), np.mean, n_resamples=1000, rng=np.random.default_rng(0), vectorized=True)
    assert e.estimate == pytest.approx(0.3 + np.mean(a - 0.3 - b))
    assert (e.interval.low, e.interval.high) == pytest.approx(tuple(ref.confidence_interval))
    assert e.interval.low < 0.3 < e.interval.high
    s = paired_mean_difference(a[:6], b[:6])
    d = a[:6] - b[:6]
    assert s.interval.kind == "range" and (s.interval.low, s.interval.high) == (d.min(), d.max())
    assert "differences range" in str(s) and "n=6" in str(s)


def test_rank_biserial_matches_wilcoxon_statistic():
    rng = np.random.default_rng(4)
    a = np.round(rng.normal(0.5, 0.2, 24), 1)  # rounding makes ties and zero differences
    b = np.round(a - rng.normal(0.1, 0.2, 24), 1)
    d = a - b
    m = int(np.sum(d != 0))
    t_plus = stats.wilcoxon(a, b, alternative="greater", zero_method="wilcox").statistic
    e = rank_biserial(a, b, n_resamples=500)
    assert e.estimate == pytest.approx(4 * t_plus / (m * (m + 1)) - 1, abs=1e-12)
    assert e.interval.kind == "CI" and e.interval.low <= e.estimate <= e.interval.high
    assert rank_biserial([1.0, 2.0, 3.0], [0.0, 1.0, 2.0]).estimate == 1.0
    assert rank_biserial([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]).estimate == -1.0
    assert rank_biserial([1.0, 2.0], [1.0, 2.0]).estimate == 0.0
    assert rank_biserial(a[:5], b[:5]).interval.kind == "range"


def test_paired_proportion_difference_newcombe():
    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), ch. 8, Cavo et al. (2012):
    # table [[59, 6], [16, 80]], Newcombe square-and-add: estimate -0.0621, 95% CI -0.1186 to -0.0046
    a, b = _mcnemar_table(59, 6, 16, 80)
    e = paired_proportion_difference(a, b)
    assert e.estimate == pytest.approx(-10 / 161)
    assert (round(e.interval.low, 4), round(e.interval.high, 4)) == (-0.1186, -0.0046)
    assert paired_proportion_difference(b, a).interval.high == pytest.approx(-e.interval.low)
    # Wilson limits against scipy's own implementation, through the phi = 0 case (independent margins)
    a, b = _mcnemar_table(5, 5, 5, 5)
    e = paired_proportion_difference(a, b)
    w = stats.binomtest(10, 20).proportion_ci(method="wilson")
    assert e.interval.high == pytest.approx(np.hypot(0.5 - w.low, w.high - 0.5))
    s = paired_proportion_difference([1, 1, 0], [0, 1, 0])
    assert s.interval.kind == "range" and (s.interval.low, s.interval.high, s.estimate) == (
        0.0,
        1.0,
        pytest.approx(1 / 3),
    )
