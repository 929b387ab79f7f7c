"""Tables of :mod:`benchmarks.experiments.study_angiogram`: the Holm family of a table, its values, verdicts,
per-metric summary and note, every word computed from the run's numbers (``_verdicts``)."""

from __future__ import annotations

import numpy as np

from benchmarks.experiments import _angiogram_measures as M
from benchmarks.experiments import _verdicts as V
from monai_saliency.metrics.stats import ci_or_range

REFERENCE = M.REFERENCE


def family(
    results: dict[str, dict[str, np.ndarray]], metrics: dict[str, tuple[str, bool, str]], n_resamples: int
) -> dict[tuple[str, str, str], V.Comparison]:
    """Every method against its controls (uniform, ``1 - intensity``, itself on the random model) and (the other
    methods) against the reference, for each metric: one Holm family, adjusted."""
    methods = [m for m in results if m not in M.CONTROLS]
    comps = {}
    for key, (title, higher, test) in metrics.items():
        for mth in methods:
            for ref in (*M.controls_of(mth), REFERENCE):
                if ref != mth:
                    comps[(key, mth, ref)] = V.compare(
                        mth,
                        ref,
                        results[mth][key],
                        results[ref][key],
                        higher,
                        test,
                        metric=title,
                        control=ref in M.CONTROLS,
                        n_resamples=n_resamples,
                    )
    V.adjust(list(comps.values()))
    return comps


def effect_text(c: V.Comparison) -> str:
    i = c.effect.interval
    what = "CI" if i.kind == "CI" else "range"
    return f"Δ {i.estimate:+.3f} ({what} {i.low:+.3f}, {i.high:+.3f})"


def values_table(
    results: dict[str, dict[str, np.ndarray]], metrics: dict, n_resamples: int, intervals: dict | None = None
) -> list[str]:
    """Rows = methods and controls, columns = metrics: mean [95 % CI] (n >= 20) or mean (range, n < 20).

    ``intervals`` (``map -> metric -> Interval``) are used when given, so a run computes each interval once."""
    head = "| map | " + " | ".join(f"{t} ({'↑' if h else '↓'})" for t, h, _ in metrics.values()) + " |"
    lines = [head, "|---" * (len(metrics) + 1) + "|"]
    for name, res in results.items():
        cells = [
            (intervals[name][k] if intervals else ci_or_range(res[k], n_resamples=n_resamples)).format()
            for k in metrics
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


RANDOM_COLUMN = "control: the method on the random model"


def verdict_table(comps: dict, metrics: dict) -> list[str]:
    """Rows = (metric, method); columns = the controls and the reference: the verdict with the effect size."""
    refs = (*M.MODEL_FREE, RANDOM_COLUMN, REFERENCE)
    lines = ["| metric | method | " + " | ".join(f"vs {r}" for r in refs) + " |", "|---" * (len(refs) + 2) + "|"]
    for key, (title, _, _) in metrics.items():
        for mth in dict.fromkeys(m for (k, m, _) in comps if k == key):
            cols = (*M.controls_of(mth), REFERENCE)
            cells = [
                f"{V.verdict(comps[(key, mth, r)])}; {effect_text(comps[(key, mth, r)])}"
                if (key, mth, r) in comps
                else "—"
                for r in cols
            ]
            lines.append(f"| {title} | {mth} | " + " | ".join(cells) + " |")
    return lines


def _short(name: str) -> str:
    return "its random model" if name.endswith(", random model") else name.removeprefix("control: ")


def summary(comps: dict, metrics: dict) -> list[str]:
    """Per metric, from the verdicts: which methods beat every control, which a control wins or ties, and how the
    others compare with the reference."""
    lines = []
    for key, (title, _, _) in metrics.items():
        methods = list(dict.fromkeys(m for (k, m, _) in comps if k == key))
        beat, lost = [], []
        for m in methods:
            out = {c: V.outcome(comps[(key, m, c)]) for c in M.controls_of(m)}
            wins = [_short(c) for c, o in out.items() if o == "worse"]
            ties = [_short(c) for c, o in out.items() if o == "tie"]
            if not wins and not ties:
                beat.append(m)
            else:
                lost.append(
                    m
                    + " ("
                    + "; ".join(
                        ([f"{', '.join(wins)} wins"] if wins else []) + ([f"ties {', '.join(ties)}"] if ties else [])
                    )
                    + ")"
                )
        vs_ref = {
            o: [m for m in methods if m != REFERENCE and V.outcome(comps[(key, m, REFERENCE)]) == o]
            for o in ("better", "worse")
        }
        parts = [f"**{title}**: beats every control: {', '.join(beat) or 'none'}"]
        if lost:
            parts.append("a control wins or ties (not a win): " + ", ".join(lost))
        parts.append(f"better than {REFERENCE}: {', '.join(vs_ref['better']) or 'none'}")
        parts.append(f"worse than {REFERENCE}: {', '.join(vs_ref['worse']) or 'none'}")
        lines.append("- " + "; ".join(parts) + ".")
    return lines


def note(comparisons: list[V.Comparison], fam: str) -> str:
    """The table's note, computed: tests, the Holm family, the counts of each verdict (listed above per metric)."""
    tests = " / ".join(V.TESTS[t] for t in sorted({c.test for c in comparisons}))
    ns = sorted({c.n for c in comparisons})
    count = {"better": 0, "worse": 0, "tie": 0, "control": 0}
    for c in comparisons:
        o = V.outcome(c)
        count["control" if c.control and o != "better" else o] += 1
    text = (
        f"Verdicts: {tests} tests, Holm-adjusted over the {len(comparisons)} tests of this table (family: {fam}), "
        f"alpha = {V.ALPHA:g}, n = {', '.join(map(str, ns))} paired units: {count['better']} better, "
        f"{count['worse']} worse, {count['tie']} ties, {count['control']} where a control wins or ties (not a win)."
    )
    floor = V.min_holm_p(len(comparisons), max(ns))
    if floor >= V.ALPHA:
        text += (
            f" With at most {max(ns)} units and {len(comparisons)} tests no comparison can reach alpha after Holm "
            f"(smallest possible p_holm = {floor:.2g}): a tie here means too few units, not shown equality."
        )
    return text
