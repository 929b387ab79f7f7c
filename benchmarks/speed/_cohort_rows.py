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
        f"model fraction {100 * frac:5.1f} %"
        + (f"  (finish {r['finish']:.2f} s)" if r["finish"] else "")
        + (
            f"  steady {r['steady'][0]:.1f} studies/min, model fraction {100 * r['steady'][2]:.1f} % after {r['steady'][1]}"
            if r.get("steady")
            else ""
        )
    )
