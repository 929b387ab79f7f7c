"""benchmarks.experiments._verdicts: verdicts and table notes follow the numbers (issue 20 §7)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from benchmarks.experiments import _verdicts as V


def _shifted(shift, n=12, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.6, n)
    return base + shift + rng.normal(0, 0.01, n), base


def test_direction_follows_numbers_and_metric_direction():
    a, b = _shifted(0.1)
    hi = V.adjust([V.compare("A", "B", a, b, higher_is_better=True)])[0]
    lo = V.adjust([V.compare("A", "B", a, b, higher_is_better=False)])[0]
    rev = V.adjust([V.compare("A", "B", b, a, higher_is_better=True)])[0]
    p = stats.wilcoxon(a, b).pvalue
    assert hi.pvalue == pytest.approx(p) and hi.p_holm == pytest.approx(p)
    assert V.verdict(hi) == f"better (p_holm={p:.2g})"
    assert V.verdict(lo).startswith("worse") and V.verdict(rev).startswith("worse")
    assert V.agrees(hi) == f"yes (p_holm={p:.2g})" and V.agrees(lo).startswith("no (p_holm=")
    assert hi.effect.estimate == pytest.approx(np.mean(a - b))


def test_tie_when_not_significant_or_below_margin():
    rng = np.random.default_rng(1)
    b = rng.uniform(size=10)
    a = b + rng.normal(0, 0.1, 10)
    c = V.adjust([V.compare("A", "B", a, b)])[0]
    assert c.p_holm >= 0.05 and V.verdict(c).startswith("tie (") and V.agrees(c).startswith("not shown (p_holm=")
    # a consistent but tiny shift: significant, yet below a margin of 0.01
    d = V.adjust([V.compare("A", "B", np.round(b, 6) + 1e-4, np.round(b, 6))])[0]
    assert d.p_holm < 0.05 and V.verdict(d).startswith("better")
    e = V.adjust([V.compare("A", "B", np.round(b, 6) + 1e-4, np.round(b, 6), margin=0.01)])[0]
    assert V.verdict(e).startswith("tie (") and "|effect| < 0.01" in V.verdict(e)
    same = V.adjust([V.compare("A", "B", b, b)])[0]
    assert same.pvalue == 1.0 and V.verdict(same) == "tie (p_holm=1)"


def test_control_that_does_at_least_as_well_is_not_a_win():
    a, b = _shifted(-0.1)  # the method is worse than the control
    worse = V.adjust([V.compare("Grad-CAM", "1 - intensity", a, b, control=True)])[0]
    assert V.verdict(worse).startswith("a control wins: not a win (p_holm=")
    rng = np.random.default_rng(2)
    x = rng.uniform(size=10)
    tie = V.adjust([V.compare("Grad-CAM", "uniform map", x + rng.normal(0, 0.1, 10), x, control=True)])[0]
    assert V.verdict(tie).startswith("a control ties: not a win")
    a, b = _shifted(0.1)
    win = V.adjust([V.compare("Grad-CAM", "uniform map", a, b, control=True)])[0]
    assert V.verdict(win).startswith("better")


def test_holm_within_the_family_changes_the_verdict():
    # 8 units all in favour: two-sided exact p = 2 / 2^8 = 0.0078 alone, x 10 tests after Holm = 0.078
    a, b = _shifted(0.1, n=8)
    alone = V.adjust([V.compare("A", "B", a, b)])
    family = V.adjust([V.compare("A", "B", a, b)] + [V.compare(f"C{i}", "B", b, b) for i in range(9)])
    assert alone[0].p_holm == pytest.approx(2 / 256) and V.outcome(alone[0]) == "better"
    assert family[0].p_holm == pytest.approx(10 * 2 / 256) and V.outcome(family[0]) == "tie"


def test_mcnemar_comparison():
    a = np.array([1] * 10 + [0] * 2 + [1] * 8, bool)  # 10 discordant for A, 0 for B... plus 8 both-hit
    b = np.array([0] * 10 + [0] * 2 + [1] * 8, bool)
    c = V.adjust([V.compare("A", "B", a, b, test="mcnemar", metric="hit")])[0]
    assert c.pvalue == pytest.approx(2 / 2**10) and c.side == 1
    assert c.effect.estimate == pytest.approx(10 / 20)
    assert V.verdict(c).startswith("better") and c.effect.interval.kind == "CI"
    with pytest.raises(ValueError, match="test must be"):
        V.compare("A", "B", a, b, test="t")


def test_table_note_is_generated_from_verdicts():
    a, b = _shifted(0.1)
    comps = V.adjust(
        [
            V.compare("A", "B", a, b, metric="AUC"),
            V.compare("C", "B", b, a, metric="AUC"),
            V.compare("D", "B", b, b, metric="AUC"),
            V.compare("A", "uniform", b, a, metric="AUC", control=True),
        ]
    )
    note = V.table_note(comps, family="every map vs B")
    assert "Holm-adjusted over the 4 tests of this table (family: every map vs B)" in note
    assert "Better: A vs B (AUC" in note and "Worse: C vs B (AUC" in note
    assert "Ties (no difference shown): D vs B" in note and "not a win: A vs uniform" in note
    flipped = V.adjust([V.compare("A", "B", b, a, metric="AUC")])
    note2 = V.table_note(flipped, family="f")
    assert "No comparison is better." in note2 and "Worse: A vs B" in note2
    with pytest.raises(ValueError, match="adjust"):
        V.verdict(V.compare("A", "B", a, b))


def test_note_says_when_too_few_units_to_decide():
    a, b = _shifted(0.1, n=8)
    family = V.adjust([V.compare("A", "B", a, b)] + [V.compare(f"C{i}", "B", b, b) for i in range(9)])
    note = V.table_note(family, family="f")
    assert "smallest possible p_holm = 0.078" in note and "too few units" in note
    assert V.min_holm_p(10, 8) == pytest.approx(family[0].p_holm)  # reached by the all-one-side outcome
    assert "too few units" not in V.table_note(V.adjust([V.compare("A", "B", *_shifted(0.1, n=12))]), family="f")
