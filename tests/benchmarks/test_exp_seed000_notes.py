"""exp_seed000_structured (and its report module): verdicts and notes follow the run's numbers (issue 20 §7), controls and noise levels are in
every table, and verdicts.json holds every comparison with its setting."""

from __future__ import annotations

import re

import numpy as np
import pytest

from benchmarks.experiments import _seed000_report as R
from benchmarks.experiments import _verdicts as V
from benchmarks.experiments import exp_seed000_structured as exp

CONTROLS = [R.UNIFORM, R.INPUT] + [R.random_control(m) for m in R.METHODS]


def _per_run(rng, n: int, input_deletion: float) -> dict:
    per_run = {}
    for name in [*R.METHODS, *CONTROLS]:
        dele = rng.uniform(0.25, 0.35, n) + (0.15 if name == R.REFERENCE else 0.0)
        if name == R.INPUT:
            dele = np.full(n, input_deletion) + rng.uniform(0, 0.01, n)
        per_run[name] = {
            "deletion": list(dele),
            "insertion": list(1 - dele),
            "gini": list(rng.uniform(0.2, 0.3, n)),
            "below_median": [0.5] * n,
            "fidelity": list(rng.uniform(0.8, 1.0, n)),
            "time": [1e-3] * n,
        }
    return per_run


def _fake(n: int, seed_gini_slope: float, seed_objective: float, input_deletion: float = 0.6):
    rng = np.random.default_rng(0)
    results = {}
    for noise in (0.0, 0.3):
        obj = {
            R.REFERENCE: list(seed_objective + rng.uniform(0, 1, n)),
            R.EXACT: list(60 + rng.uniform(0, 1, n)),
        }
        extra = {"objectives": obj, "identity_gap": 0.0, "below_median_tie_free": [0.5] * 4}
        results[noise] = {"per_run": _per_run(rng, n, input_deletion), "extra": extra}
    lams = [0.0, 0.02, 0.05, 0.1, 0.2]
    sweep = {}
    for solver, slope in (("seed", seed_gini_slope), ("exact", 1.0)):
        for lam in lams:
            sweep[(solver, lam)] = {
                "gini": list(0.2 + slope * lam + rng.normal(0, 1e-3, n)),
                "fidelity": list(rng.uniform(0.8, 0.9, n)),
            }
    return results, sweep


CFG = {
    "runs": 12,
    "inputs_per_run": 2,
    "channels": 4,
    "size": [24, 24],
    "bootstrap_resamples": 200,
    "effect_resamples": 200,
    "lambda_grp_sweep": [0.0, 0.02, 0.05, 0.1, 0.2],
    "sweep_noise": 0.3,
    "auc_margin": 0.01,
    "gini_margin": 0.01,
}


@pytest.mark.parametrize(
    "slope, objective, trend, cycle", [(-1.0, 300.0, "falls", "worse"), (1.0, 10.0, "rises", "better")]
)
def test_notes_follow_the_numbers(tmp_path, slope, objective, trend, cycle):
    text, _ = R.write_table(*_fake(12, slope, objective), CFG, tmp_path)
    assert f"Gini {trend} with lambda_grp for the seed solver ({'better' if slope > 0 else 'worse'} (p_holm=" in text
    assert f"seed cycle vs exact: {cycle} (p_holm=" in text
    raw = next(line for line in text.splitlines() if line.startswith("| Raw gradient |"))
    # the fake seed solver deletes 0.15 worse on every run: "structured (seed solver) vs this row" is "worse"
    assert "| worse (p_holm=" in raw
    assert "(range [" in raw and "n=12)" in raw  # 12 runs: a range, not a CI
    assert "0.5 by construction" in text and "Seed sparsity" not in text  # the metric that cannot fail is dropped


@pytest.mark.parametrize("input_deletion, word", [(0.1, "a control wins: not a win"), (0.6, "better")])
def test_control_verdicts_follow_the_numbers(tmp_path, input_deletion, word):
    """A model-free input map that deletes faster than every method is reported as a control win, never a win."""
    text, records = R.write_table(*_fake(12, -1.0, 300.0, input_deletion), CFG, tmp_path)
    ig = next(line for line in text.splitlines() if line.startswith("| Integrated Gradients |"))
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", ig)]  # cells split on unescaped pipes
    assert cells[-3].startswith(word)  # "this row vs input map"
    rec = next(
        r for r in records if r["method"] == "Integrated Gradients" and r["reference"] == R.INPUT
        and r["setting"] == "noise 0.3"
    )  # fmt: skip
    assert rec["control"] and rec["summary"] == ("control wins" if input_deletion < 0.2 else "win")


def test_verdicts_json_has_every_comparison_per_setting(tmp_path):
    results, sweep = _fake(12, -1.0, 300.0)
    _, records = R.write_table(results, sweep, CFG, tmp_path)
    records_read = V.read_verdicts(tmp_path / "verdicts.json", "seed000")
    assert records_read == records
    main = [r for r in records if r["table"] == R.TABLE]
    assert {r["setting"] for r in main} == {"noise 0", "noise 0.3"}
    per_setting = len(main) // 2
    assert per_setting == 6 + 3 * len(R.METHODS) + 2  # solvers vs baselines, methods vs controls, Gini
    for setting in ("noise 0", "noise 0.3"):  # IG vs each structured solver is a recorded comparison
        pairs = {(r["method"], r["reference"]) for r in main if r["setting"] == setting}
        assert {(R.EXACT, "Integrated Gradients"), (R.REFERENCE, "Integrated Gradients")} <= pairs
        assert {(m, c) for m in R.METHODS for c in R.controls_of(m)} <= pairs
    p = np.array([r["p"] for r in main if r["setting"] == "noise 0"])
    p_holm = np.array([r["p_holm"] for r in main if r["setting"] == "noise 0"])
    assert np.all(p_holm >= p) and np.any(p_holm > p)  # Holm within each setting's table


def test_quick_run_writes_verdicts(tmp_path):
    exp.main(["--quick", "--output-dir", str(tmp_path)])
    records_read = V.read_verdicts(tmp_path / "verdicts.json", "seed000")
    assert {r["setting"] for r in records_read if r["table"] == R.TABLE} == {"noise 0", "noise 0.1", "noise 0.3"}
    table = (tmp_path / "table.md").read_text()
    assert "## Noise 0 " in table and "## Noise 0.3 " in table and "Run time:" in table
    V.check_markdown_tables(table)  # a verdict's "|effect|" escaped in its cell


def test_check_markdown_tables_catches_an_unescaped_pipe():
    V.check_markdown_tables("| a | b |\n|---|---|\n| " + V.md_cell("tie (|effect| < 0.01)") + " | x |\n")
    with pytest.raises(ValueError, match="4 cells"):
        V.check_markdown_tables("| a | b |\n|---|---|\n| tie (|effect| < 0.01) | x |\n")


def test_record_keys_match_to_record():
    c = V.adjust([V.compare("a", "b", [1.0, 2.0, 3.0], [0.0, 1.0, 1.5])])[0]
    assert set(V.RECORD_KEYS) == set(V.to_record(c, "t", "f"))
