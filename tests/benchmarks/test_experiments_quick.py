"""Smoke runs of the issue-5 experiments (``benchmarks.experiments``) with --quick: they run end to end and write."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("script", ["exp_seed000_structured", "exp_sanity", "exp_forgrad"])
def test_quick_run_writes_table_and_figure(script, tmp_path):
    importlib.import_module(f"benchmarks.experiments.{script}").main(["--quick", "--output-dir", str(tmp_path)])
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("# ") and "nan" not in table.lower()
    assert (tmp_path / "figure.png").stat().st_size > 1000
    if script == "exp_forgrad":
        _check_forgrad_outputs(tmp_path)
    if script == "exp_sanity":  # --quick keeps 2 seeds, and the spread is a range (fewer than 20 seeds)
        assert "2 model/randomisation seeds" in table and "n=2)" in table


def test_sanity_verdict_from_the_spread_over_seeds():
    from benchmarks.experiments.exp_sanity import DEFAULT_SEEDS, spread_verdict

    assert DEFAULT_SEEDS >= 5
    assert spread_verdict([True] * 5) == "pass"
    assert spread_verdict([False] * 5) == "FAIL"
    assert spread_verdict([True, False, True, True, False]) == "unstable (3/5 seeds pass)"


def _check_forgrad_outputs(out):
    """exp_forgrad --quick: verdicts.json holds to_record records (every key), the spectrum figure is written."""
    import json

    import numpy as np

    from benchmarks.experiments import _verdicts as V

    c = V.adjust([V.compare("A", "B", np.arange(5.0), np.zeros(5))])[0]
    keys = set(V.to_record(c, "t", "f"))
    doc = json.loads((out / "verdicts.json").read_text())
    assert doc["experiment"] == "forgrad" and doc["verdicts"]
    assert all(keys <= set(r) for r in doc["verdicts"])
    tables = {r["table"] for r in doc["verdicts"]}
    assert {"2d_pooled", "2d_per_seed", "2d_mechanism", "2d_mechanism_over_seeds", "3d_pooled"} <= tables
    assert (out / "spectrum.png").stat().st_size > 1000
