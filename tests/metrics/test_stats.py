from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from monai_saliency.metrics.stats import (
    bootstrap_ci,
    paired_bootstrap_ci,
    paired_wilcoxon,
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
