"""Verdicts computed from the numbers of a run (issue 20 §7): no fixed prose about which method wins.

A :class:`Comparison` pairs a method with a reference (a baseline, the seed's estimate, a control such as a uniform
map, or a constant threshold) on the same units. :func:`compare` runs the test that fits the outcome (a two-sided
paired Wilcoxon signed-rank test for continuous values, McNemar's exact test for yes/no values) and an effect size;
:func:`adjust` applies Holm's correction over the comparisons of one table (the family); :func:`verdict` turns one
comparison into ``"better (p_holm=...)"``, ``"worse (...)"``, ``"tie (...)"`` or, when the reference is a control
that does at least as well, ``"a control wins: not a win (...)"`` / ``"a control ties: not a win (...)"``;
:func:`table_note` writes a table's note from the verdicts.

Direction: "better" is judged along ``higher_is_better``; the side is the sign of the test's own statistic
(``T+ - T-`` of the Wilcoxon test, i.e. the rank-biserial r; ``n10 - n01`` of McNemar's), so the verdict never
disagrees with the test that decides it. Tests are two-sided: a "better" verdict rejects "no difference" at
``alpha`` after Holm, and the side is read from the statistic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monai_saliency.metrics.stats import (
    EffectSize,
    holm,
    mcnemar_exact,
    paired_mean_difference,
    paired_proportion_difference,
    paired_wilcoxon,
    rank_biserial,
)

ALPHA = 0.05
TESTS = {"wilcoxon": "paired two-sided Wilcoxon signed-rank", "mcnemar": "two-sided exact McNemar"}


@dataclass
class Comparison:
    """One paired comparison of ``method`` with ``reference`` on the same units.

    Attributes:
        method, reference: names as the table prints them.
        metric: the metric's name (for notes).
        test: ``"wilcoxon"`` or ``"mcnemar"``.
        higher_is_better: direction of the metric.
        control: the reference is a control (uniform map, model-free map, randomised model, ...): a method that
            does not beat it has no win.
        n: number of paired units.
        pvalue: the raw two-sided p-value.
        side: +1 if the method does better than the reference by the test's statistic, -1 worse, 0 neither.
        effect: ``mean(method - reference)`` (Wilcoxon) or the difference of proportions (McNemar), with its CI
            (>= 20 units) or the range of the differences.
        margin: smallest ``|effect|`` that counts; a significant but smaller difference is a tie.
        p_holm: Holm-adjusted p-value within the family (set by :func:`adjust`; ``None`` before).
    """

    method: str
    reference: str
    metric: str
    test: str
    higher_is_better: bool
    control: bool
    n: int
    pvalue: float
    side: int
    effect: EffectSize
    margin: float = 0.0
    p_holm: float | None = None


def compare(
    method: str,
    reference: str,
    method_values,
    reference_values,
    higher_is_better: bool = True,
    test: str = "wilcoxon",
    metric: str = "",
    control: bool = False,
    margin: float = 0.0,
    n_resamples: int = 2000,
) -> Comparison:
    """Test ``method_values`` against ``reference_values`` (paired: the same units in the same order).

    Args:
        method, reference: names for the verdict and the note.
        method_values, reference_values: per-unit values; yes/no (0/1) for ``test="mcnemar"``. A constant
            reference (e.g. ``np.full(n, 0.05)``) makes the Wilcoxon test the one-sample test against it.
        higher_is_better: ``False`` for e.g. deletion AUC, NMSE, error rates.
        test: ``"wilcoxon"`` (continuous outcomes) or ``"mcnemar"`` (paired yes/no outcomes).
        metric: the metric's name.
        control: the reference is a control.
        margin: smallest meaningful ``|effect|`` (in the metric's units); 0 = any significant difference.
        n_resamples: bootstrap resamples of the effect's CI.

    Returns:
        :class:`Comparison` with ``p_holm`` unset.

    Raises:
        ValueError: unknown test, negative margin (and the errors of the statistics functions).
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {sorted(TESTS)}, got {test!r}.")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}.")
    a, b = np.asarray(method_values, dtype=np.float64), np.asarray(reference_values, dtype=np.float64)
    if test == "mcnemar":
        res = mcnemar_exact(a, b)
        p, raw_side = res.pvalue, np.sign(res.n10 - res.n01)
        effect = paired_proportion_difference(a, b)
    else:
        p = paired_wilcoxon(a, b, alternative="two-sided").pvalue
        # the side only needs r's estimate: min_units above n skips its (unused) 9999-resample bootstrap CI
        raw_side = np.sign(rank_biserial(a, b, min_units=a.size + 1).estimate)
        effect = paired_mean_difference(a, b, n_resamples=n_resamples)
    side = int(raw_side) if higher_is_better else -int(raw_side)
    return Comparison(
        method, reference, metric, test, higher_is_better, control, int(a.size), float(p), side, effect, float(margin)
    )


def adjust(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Set ``p_holm`` of every comparison of one family (one table) by Holm's step-down correction; in place.

    Returns:
        the same comparisons, for chaining.
    """
    adjusted = holm([c.pvalue for c in comparisons])
    for c, p in zip(comparisons, adjusted):
        c.p_holm = float(p)
    return list(comparisons)


def outcome(c: Comparison, alpha: float = ALPHA) -> str:
    """``"better"``, ``"worse"`` or ``"tie"`` of the method against the reference, from ``p_holm`` and the side.

    Raises:
        ValueError: ``p_holm`` not set (call :func:`adjust` on the table's family first).
    """
    if c.p_holm is None:
        raise ValueError(f"{c.method} vs {c.reference}: no Holm-adjusted p-value; call adjust() on the family first.")
    if c.p_holm >= alpha or c.side == 0 or abs(c.effect.estimate) < c.margin:
        return "tie"
    return "better" if c.side > 0 else "worse"


def _detail(c: Comparison, alpha: float) -> str:
    small = outcome(c, alpha) == "tie" and c.p_holm < alpha and c.side != 0
    return f"p_holm={c.p_holm:.2g}" + (f", |effect| < {c.margin:g}" if small else "")


def verdict(c: Comparison, alpha: float = ALPHA) -> str:
    """The table cell: ``"better (p_holm=0.012)"``, ``"worse (...)"``, ``"tie (...)"``; against a control that
    does at least as well, ``"a control wins: not a win (...)"`` or ``"a control ties: not a win (...)"``."""
    o = outcome(c, alpha)
    detail = _detail(c, alpha)
    if c.control and o != "better":
        return f"a control {'wins' if o == 'worse' else 'ties'}: not a win ({detail})"
    return f"{o} ({detail})"


def _pair(c: Comparison) -> str:
    return f"{c.method} vs {c.reference}" + (f" ({c.metric})" if c.metric else "")


def table_note(comparisons: Sequence[Comparison], family: str, alpha: float = ALPHA) -> str:
    """A table's note generated from its verdicts: the tests, the family, then who is better, worse, tied.

    Args:
        comparisons: the family, after :func:`adjust`.
        family: what the family is, e.g. ``"every map vs dE_c, both paradigms"``.
        alpha: the family-wise level.

    Returns:
        one paragraph; empty groups are left out, and "no comparison is better" is said when none is.
    """
    if not comparisons:
        return f"No test in this table (family: {family})."
    parts = [_note_head(comparisons, family, alpha)]
    groups = _groups(comparisons, alpha)
    if groups["better"]:
        parts.append("Better: " + "; ".join(groups["better"]) + ".")
    else:
        parts.append("No comparison is better.")
    if groups["worse"]:
        parts.append("Worse: " + "; ".join(groups["worse"]) + ".")
    if groups["tie"]:
        parts.append("Ties (no difference shown): " + "; ".join(groups["tie"]) + ".")
    if groups["control"]:
        parts.append("A control wins or ties, so not a win: " + "; ".join(groups["control"]) + ".")
    return " ".join(parts + _floor_note(comparisons, alpha))


def _note_head(comparisons: Sequence[Comparison], family: str, alpha: float) -> str:
    tests = sorted({c.test for c in comparisons})
    ns = sorted({c.n for c in comparisons})
    return (
        f"Verdicts: {' / '.join(TESTS[t] for t in tests)} tests, Holm-adjusted over the {len(comparisons)} tests of "
        f"this table (family: {family}), alpha = {alpha:g}, n = {', '.join(map(str, ns))} paired units."
    )


def _groups(comparisons: Sequence[Comparison], alpha: float) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"better": [], "worse": [], "tie": [], "control": []}
    for c in comparisons:
        o = outcome(c, alpha)
        key = "control" if c.control and o != "better" else o
        groups[key].append(f"{_pair(c)}, p_holm={c.p_holm:.2g}")
    return groups


def _floor_note(comparisons: Sequence[Comparison], alpha: float) -> list[str]:
    n, m = max(c.n for c in comparisons), len(comparisons)
    floor = min_holm_p(m, n)
    if floor < alpha:
        return []
    return [
        (
            f"With at most {n} units and {m} tests no comparison can reach alpha after Holm "
            f"(smallest possible p_holm = {floor:.2g}): a tie here means too few units, not shown equality."
        )
    ]


def count_note(comparisons: Sequence[Comparison], family: str, alpha: float = ALPHA) -> str:
    """A large table's note: :func:`table_note`'s head, the number of comparisons in each outcome, and the worse ones
    by name (every verdict, win, tie or control win, is in the table's cells and in ``verdicts.json``).

    Args:
        comparisons: the family, after :func:`adjust`.
        family: what the family is.
        alpha: the family-wise level.

    Returns:
        one paragraph.
    """
    if not comparisons:
        return f"No test in this table (family: {family})."
    g = _groups(comparisons, alpha)
    parts = [
        _note_head(comparisons, family, alpha),
        (
            f"{len(g['better'])} better, {len(g['worse'])} worse, {len(g['tie'])} ties, {len(g['control'])} where a "
            "control wins or ties (not a win); every verdict is in the table (or its counts) and in verdicts.json."
        ),
        ("Worse: " + "; ".join(g["worse"]) + ".") if g["worse"] else "No comparison is worse.",
    ]
    return " ".join(parts + _floor_note(comparisons, alpha))


def min_holm_p(m: int, n: int) -> float:
    """Smallest Holm-adjusted p-value any of ``m`` two-sided exact tests on ``n`` paired units can reach.

    The most extreme outcome of a two-sided exact Wilcoxon signed-rank or McNemar test on ``n`` units (all ``n``
    differences, or all ``n`` discordant pairs, on one side) has ``p = 2 / 2**n``; Holm multiplies the smallest
    p-value of the family by ``m``.
    """
    return min(1.0, m * 2.0 / 2.0**n)


def agrees(c: Comparison, alpha: float = ALPHA) -> str:
    """An "agrees?" cell for a claim stated as "method is better than reference": ``"yes"`` if the test shows it,
    ``"no"`` if it shows the opposite, ``"not shown"`` otherwise, with the adjusted p-value:
    ``"yes (p_holm=0.012)"``."""
    word = {"better": "yes", "worse": "no", "tie": "not shown"}[outcome(c, alpha)]
    return f"{word} ({_detail(c, alpha)})"


def summary_class(c: Comparison, alpha: float = ALPHA) -> str:
    """How a comparison counts in the README summary: ``"win"``, ``"loss"``, ``"tie"``, or, when the reference is a
    control that does at least as well, ``"control wins"`` / ``"control ties"``."""
    o = outcome(c, alpha)
    if c.control and o != "better":
        return "control wins" if o == "worse" else "control ties"
    return {"better": "win", "worse": "loss", "tie": "tie"}[o]


def to_record(c: Comparison, table: str, family: str, alpha: float = ALPHA, **extra: Any) -> dict[str, Any]:
    """One comparison as a JSON-ready record (the schema of every experiment's ``verdicts.json``).

    Args:
        c: a comparison after :func:`adjust`.
        table: the table it belongs to (e.g. ``"localisation"``); with the experiment's folder it names the table.
        family: the Holm family it was adjusted in.
        alpha: the family-wise level.
        extra: more JSON-ready fields (e.g. ``seed=3``, ``setting="noise 0.1"``).

    Returns:
        dict with ``table, family, method, reference, metric, test, higher_is_better, control, n, p, p_holm,
        effect, effect_interval [low, high, kind], margin, outcome, summary, verdict`` and the extras.
    """
    i = c.effect.interval
    return {
        "table": table,
        "family": family,
        "method": c.method,
        "reference": c.reference,
        "metric": c.metric,
        "test": c.test,
        "higher_is_better": c.higher_is_better,
        "control": c.control,
        "n": c.n,
        "p": c.pvalue,
        "p_holm": c.p_holm,
        "effect": c.effect.estimate,
        "effect_interval": [i.low, i.high, i.kind],
        "margin": c.margin,
        "outcome": outcome(c, alpha),
        "summary": summary_class(c, alpha),
        "verdict": verdict(c, alpha),
        **extra,
    }


def write_verdicts(out_dir: str | Path, records: Sequence[dict[str, Any]], experiment: str) -> Path:
    """Write ``out_dir/verdicts.json``: ``{"experiment": name, "verdicts": [records...]}`` (see :func:`to_record`).

    Every experiment writes one; the README summary is generated from (and checked against) these files.
    """
    path = Path(out_dir) / "verdicts.json"
    path.write_text(json.dumps({"experiment": experiment, "verdicts": list(records)}, indent=1) + "\n")
    return path


RECORD_KEYS = (
    "table", "family", "method", "reference", "metric", "test", "higher_is_better", "control", "n", "p", "p_holm",
    "effect", "effect_interval", "margin", "outcome", "summary", "verdict",
)  # fmt: skip
"""The keys every :func:`to_record` record has (extras may follow)."""
SUMMARY_CLASSES = ("win", "loss", "tie", "control wins", "control ties")
"""The values of a record's ``summary`` (:func:`summary_class`)."""


def read_verdicts(path: str | Path, experiment: str | None = None) -> list[dict[str, Any]]:
    """Read and check a ``verdicts.json`` (see :func:`write_verdicts`): its records, after checking the schema.

    Checks: the experiment's name (when given), at least one record, every :data:`RECORD_KEYS` key, a known test,
    outcome and summary class, ``0 <= p <= p_holm <= 1``, and a summary class that agrees with ``control`` and
    ``outcome`` (a control's record is "control wins/ties" exactly when the method is not better).

    Raises:
        ValueError: naming the first record (by index) that breaks a rule.
    """
    doc = json.loads(Path(path).read_text())
    if experiment is not None and doc.get("experiment") != experiment:
        raise ValueError(f"{path}: experiment {doc.get('experiment')!r}, expected {experiment!r}.")
    records = doc.get("verdicts") or []
    if not records:
        raise ValueError(f"{path}: no verdict records.")
    for i, r in enumerate(records):
        missing = [k for k in RECORD_KEYS if k not in r]
        if missing:
            raise ValueError(f"{path}: record {i} lacks {missing}.")
        if r["test"] not in TESTS or r["outcome"] not in ("better", "worse", "tie"):
            raise ValueError(f"{path}: record {i} has test {r['test']!r}, outcome {r['outcome']!r}.")
        if r["summary"] not in SUMMARY_CLASSES:
            raise ValueError(f"{path}: record {i} has summary {r['summary']!r}, not one of {SUMMARY_CLASSES}.")
        if not 0.0 <= r["p"] <= r["p_holm"] <= 1.0:
            raise ValueError(f"{path}: record {i} has p={r['p']!r}, p_holm={r['p_holm']!r}.")
        if (r["summary"] in ("control wins", "control ties")) != (r["control"] and r["outcome"] != "better"):
            raise ValueError(f"{path}: record {i}: summary {r['summary']!r} disagrees with control/outcome.")
    return records


def md_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell: its pipes (e.g. the ``|effect| < margin`` of a tie) escaped."""
    return str(text).replace("|", "\\|")


def check_markdown_tables(text: str) -> None:
    """Check that every row of every Markdown table in ``text`` has as many cells as its header.

    Cells are split on unescaped pipes, so an unescaped ``|`` inside a cell (see :func:`md_cell`) is caught.

    Raises:
        ValueError: naming the first row whose cell count differs from its table's header.
    """
    width = None
    for k, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            width = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line)) - 1
        if width is None:
            width = cells
        elif cells != width:
            raise ValueError(f"line {k}: {cells} cells where the table's header has {width}: {line[:80]!r}...")
