"""Result rows of the cohort throughput benchmark (:mod:`benchmarks.speed.bench_cohort_throughput`): merging rounds,
the bound on the model fraction that a path's work allows on idle cores, and the printed lines."""

from __future__ import annotations


def merge_rows(rows: list[dict], name: str) -> dict:
    """One result row from the rounds of a path (studies, times and CPU summed)."""
    keys = ("n", "wall", "model", "finish", "cpu", "model_cpu")
    return {"name": name, **{k: sum(r[k] for r in rows) for k in keys}}


def seq_model_cpu(r: dict) -> float:
    """The model's CPU seconds per study of a result row."""
    return r["model_cpu"] / r["n"]


def work_bound(seq: dict, cores: int) -> tuple[float, str]:
    """Upper bound on the model fraction of any overlap of a sequential row's work on ``cores`` idle cores: a study
    takes at least its CPU time / cores, the model (one thread) at most its own CPU time of that."""
    model, cpu = seq_model_cpu(seq), seq["cpu"] / seq["n"]
    bound = min(1.0, model / max(model, cpu / cores))
    text = (
        f"the sequential loop spends {1000 * cpu:.0f} CPU ms per study, {1000 * model:.0f} of them in the model; on "
        f"{cores} otherwise idle cores no overlap makes a study take less than {1000 * cpu / cores:.0f} ms, so the "
        f"model fraction is at most {100 * bound:.0f} % with this work"
    )
    return bound, text


def pair_lines(rows: list[dict], key: str, bound_label: str, name: str, cores: int) -> list[str]:
    """The bound and the comparison of the sequential and evaluator rows whose names contain ``key`` (none if the
    pair was not run)."""
    pair = {r["name"].split()[0]: r for r in rows if key in r["name"]}
    if set(pair) != {"sequential", "evaluator"}:
        return []
    seq, ev = pair["sequential"], pair["evaluator"]
    return [
        f"bound {bound_label}: {work_bound(seq, cores)[1]}",
        (
            f"{name}: model fraction {100 * seq['model'] / seq['wall']:.1f} % sequential, "
            f"{100 * ev['model'] / ev['wall']:.1f} % evaluator; speed-up x{seq['wall'] / ev['wall']:.2f}"
        ),
    ]


def row_line(r: dict) -> str:
    per_min = 60.0 * r["n"] / r["wall"]
    frac = r["model"] / r["wall"]
    return (
        f"{r['name']:<44} {r['n']:>4} studies  {r['wall']:7.2f} s  {per_min:7.1f} studies/min  "
        f"model {1000 * r['model'] / r['n']:6.1f} ms/study (its CPU {1000 * r['model_cpu'] / r['n']:5.1f})  "
        f"CPU {1000 * r['cpu'] / r['n']:6.1f} ms/study  "
        f"model fraction {100 * frac:5.1f} % (by its CPU {100 * cpu_fraction(r):5.1f} %)"
        + (f"  (finish {r['finish']:.2f} s)" if r["finish"] else "")
        + (
            f"  steady {r['steady'][0]:.1f} studies/min, model fraction {100 * r['steady'][2]:.1f} % after {r['steady'][1]}"
            if r.get("steady")
            else ""
        )
    )


def cpu_fraction(r: dict) -> float:
    """The model's own CPU seconds over the path's wall time: the share of the wall time in which the model ran on a
    core (one torch thread). Unlike the wall time inside the inferer, it does not grow when other threads or
    processes take the model's core."""
    return r["model_cpu"] / r["wall"]


def goal_lines(pairs: list[tuple[str, dict, dict]], goal: float, cores: int) -> tuple[list[str], bool]:
    """The goal where the work allows it: for each ``(label, sequential row, evaluator row)`` of the same studies, the
    bound of :func:`work_bound`; where it is at least ``goal`` the evaluator's model fraction must reach ``goal``
    (the smaller of the wall-time and CPU fractions, :func:`cpu_fraction`), elsewhere the goal cannot be met with
    that work and is reported as such.

    Returns:
        The lines, and whether every pair whose bound allows the goal met it (False if none allows it).
    """
    lines, met, applicable = [], True, 0
    for label, seq, ev in pairs:
        bound = work_bound(seq, cores)[0]
        frac = min(ev["model"], ev["model_cpu"]) / ev["wall"]
        speed = seq["wall"] / seq["n"] / (ev["wall"] / ev["n"])
        head = (
            f"{label}: bound {100 * bound:.0f} %, evaluator {100 * frac:.1f} % ({100 * frac / bound:.0f} % of the "
            f"bound), speed-up x{speed:.2f} over the sequential loop"
        )
        if bound < goal:
            lines.append(f"{head} -> the goal cannot be met with this work on {cores} cores")
            continue
        applicable += 1
        met = met and frac >= goal
        lines.append(f"{head} -> {'PASS' if frac >= goal else 'FAIL'}")
    return lines, met and applicable > 0


def variant_pairs(pairs: list[tuple[str, dict, dict]], variants: list[dict]) -> list[tuple[str, dict, dict]]:
    """``pairs`` plus the variant rows run both as ``sequential loop (<options>)`` and ``evaluator (..., <options>)``
    (the options after the last comma of the evaluator's label), labelled by the evaluator's label."""
    seqs = {r["name"][len("sequential loop (") : -1]: r for r in variants if r["name"].startswith("sequential loop (")}
    out = list(pairs)
    for r in variants:
        if r["name"].startswith("evaluator ("):
            label = r["name"][len("evaluator (") : -1]
            options = label.rsplit(", ", 1)[-1]
            if options in seqs:
                out.append((label, seqs[options], r))
    return out
