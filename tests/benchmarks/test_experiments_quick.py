"""Smoke runs of the issue-5 experiment scripts with --quick (tiny sizes): they run end to end and write outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.parametrize("script", ["exp_seed000_structured", "exp_sanity", "exp_forgrad"])
def test_quick_run_writes_table_and_figure(script, tmp_path):
    _load(script).main(["--quick", "--output-dir", str(tmp_path)])
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("# ") and "nan" not in table.lower()
    assert (tmp_path / "figure.png").stat().st_size > 1000
