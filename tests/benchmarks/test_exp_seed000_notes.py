"""exp_seed000_structured.write_table: verdicts and notes follow the run's numbers (issue 20 §7)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.experiments import exp_seed000_structured as exp


def _fake(n: int, seed_gini_slope: float, seed_objective: float):
    rng = np.random.default_rng(0)
    names = ["Raw gradient", exp.REFERENCE, exp.EXACT, "SmoothGrad", "Integrated Gradients"]
    per_run = {}
    for k, name in enumerate(names):
        dele = rng.uniform(0.25, 0.35, n) + (0.15 if name == exp.REFERENCE else 0.0)
        per_run[name] = {
            "deletion": list(dele),
            "insertion": list(1 - dele),
            "gini": list(rng.uniform(0.2, 0.3, n)),
            "below_median": [0.5] * n,
            "fidelity": list(rng.uniform(0.8, 1.0, n)),
            "time": [1e-3] * n,
        }
    lams = [0.0, 0.02, 0.05, 0.1, 0.2]
    sweep = {}
    for solver, slope in (("seed", seed_gini_slope), ("exact", 1.0)):
        for lam in lams:
            sweep[(solver, lam)] = {
                "gini": list(0.2 + slope * lam + rng.normal(0, 1e-3, n)),
                "below_median": [0.5] * n,
                "fidelity": list(rng.uniform(0.8, 0.9, n)),
            }
    obj = {exp.REFERENCE: list(seed_objective + rng.uniform(0, 1, n)), exp.EXACT: list(60 + rng.uniform(0, 1, n))}
    return per_run, sweep, {"objectives": obj, "identity_gap": 0.0}


@pytest.mark.parametrize(
    "slope, objective, trend, cycle", [(-1.0, 300.0, "falls", "worse"), (1.0, 10.0, "rises", "better")]
)
def test_notes_follow_the_numbers(tmp_path, slope, objective, trend, cycle):
    cfg = {
        "runs": 12,
        "inputs_per_run": 2,
        "channels": 4,
        "size": [24, 24],
        "bootstrap_resamples": 200,
        "lambda_grp_sweep": [0.0, 0.02, 0.05, 0.1, 0.2],
    }
    text = exp.write_table(*_fake(12, slope, objective), cfg, tmp_path)
    assert f"Gini {trend} with lambda_grp for the seed solver ({'better' if slope > 0 else 'worse'} (p_holm=" in text
    assert f"The seed's cycle vs the exact solver on it (lower is better): {cycle} (p_holm=" in text
    assert ("does not minimise its own objective" in text) == (cycle == "worse")
    raw = next(line for line in text.splitlines() if line.startswith("| Raw gradient |"))
    assert "del: better (p_holm=" in raw  # the fake seed solver deletes 0.15 worse on every run
    assert "(range [" in raw and "n=12)" in raw  # 12 runs: a range, not a CI
