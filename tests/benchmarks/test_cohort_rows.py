"""The cohort benchmark's goal verdicts (:mod:`benchmarks.speed._cohort_rows`) are computed from the numbers: the
bound a path's work allows, PASS/FAIL only where the bound allows the goal, and a model fraction that cannot be
raised by starving the model of its core (the smaller of the wall-time and CPU fractions)."""

from __future__ import annotations

import pytest

from benchmarks.speed._cohort_rows import cpu_fraction, goal_lines, variant_pairs, work_bound


def _row(name: str, n: int, wall: float, model: float, cpu: float, model_cpu: float | None = None) -> dict:
    model_cpu = model if model_cpu is None else model_cpu
    return {"name": name, "n": n, "wall": wall, "model": model, "cpu": cpu, "model_cpu": model_cpu, "finish": 0.0}


def test_work_bound_by_hand():
    # 81 CPU ms per study, 21 in the model, 2 cores: a study takes >= 40.5 ms, the model 21 of it
    assert work_bound(_row("s", 100, 8.1, 2.1, 8.1), 2)[0] == pytest.approx(21 / 40.5)
    # model-heavy work: the model alone bounds the study time
    assert work_bound(_row("s", 10, 1.0, 0.72, 0.99), 2)[0] == 1.0


def test_goal_lines_verdicts_follow_the_numbers():
    light_seq = _row("sequential loop (--light)", 24, 2.4, 1.73, 2.38)
    heavy_seq = _row("sequential loop (--heavy)", 24, 2.4, 1.73, 2.38)
    variants = [
        light_seq,
        _row("evaluator (workers=1, --light)", 24, 2.0, 1.70, 3.0),  # 85 % -> PASS
        heavy_seq,
        _row("evaluator (workers=1, --heavy)", 24, 2.0, 1.90, 3.0, model_cpu=1.5),  # wall 95 %, CPU 75 % -> FAIL
        _row("evaluator (workers=2)", 24, 2.0, 1.0, 3.0),  # no sequential twin: not a pair
    ]
    default_seq, default_ev = _row("sequential", 100, 8.1, 2.1, 8.1), _row("evaluator", 100, 8.3, 3.2, 12.4, 2.4)
    pairs = variant_pairs([("default path", default_seq, default_ev)], variants)
    assert [p[0] for p in pairs] == ["default path", "workers=1, --light", "workers=1, --heavy"]
    lines, met = goal_lines(pairs, 0.8, 2)
    assert lines[0].endswith("the goal cannot be met with this work on 2 cores") and "bound 52 %" in lines[0]
    assert lines[1].endswith("-> PASS") and "evaluator 85.0 %" in lines[1] and "x1.20" in lines[1]
    assert lines[2].endswith("-> FAIL") and "evaluator 75.0 %" in lines[2]
    assert not met
    assert goal_lines(pairs[:2], 0.8, 2)[1]
    assert not goal_lines(pairs[:1], 0.8, 2)[1]  # nowhere applicable: not "met"
    assert cpu_fraction(variants[3]) == pytest.approx(0.75)
