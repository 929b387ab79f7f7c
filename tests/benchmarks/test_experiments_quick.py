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
