"""The README's experiment summary is generated from the committed verdicts and lists losses as plainly as wins."""

from __future__ import annotations

import json

import pytest

from benchmarks.experiments import summary


def _record(method: str, group: str, p: float) -> dict:
    return {
        "table": "t",
        "family": "f",
        "method": method,
        "reference": "ref",
        "metric": "m",
        "test": "wilcoxon",
        "n": 24,
        "p_holm": p,
        "effect": 0.1,
        "summary": group,
        "verdict": group,
    }


def test_committed_readme_and_summary_are_up_to_date():
    assert summary.main(["--check"]) == 0, "run: python -m benchmarks.experiments.summary"


def test_every_committed_verdict_is_counted_once():
    verdicts = summary.load()
    block = summary.readme_block(verdicts)
    for name, records in verdicts.items():
        line = next(x for x in block.splitlines() if f"results/{name}/" in x)
        assert f"{len(records)} comparisons" in line
        counts = ", ".join(summary._count(sum(r["summary"] == g for r in records), g) for g in summary.GROUPS)
        assert f"{len(records)} comparisons): {counts}." in line


def test_losses_ties_and_control_wins_are_listed_like_wins(tmp_path):
    records = [_record(f"win{i}", "win", 1e-3 * (i + 1)) for i in range(10)]
    records += [_record("lossA", "loss", 0.01), _record("tieA", "tie", 0.5), _record("ctrlA", "control wins", 0.02)]
    block = summary.readme_block({"x": records})
    assert "1 loss," in block and "lossA vs ref" in block
    assert "tieA vs ref" in block and "ctrlA vs ref" in block and "A control wins (not a win)" in block
    assert block.count("win") > 0 and "and 4 more" in block  # the cap applies to wins as to every group
    assert "win9 vs ref" not in block and "win0 vs ref" in block  # smallest p_holm first


def test_bad_records_are_refused(tmp_path):
    (tmp_path / "e").mkdir()
    bad = _record("a", "victory", 0.1)
    (tmp_path / "e" / "verdicts.json").write_text(json.dumps({"experiment": "e", "verdicts": [bad]}))
    with pytest.raises(ValueError, match="unknown summary class"):
        summary.load(tmp_path)
    del bad["p_holm"]
    (tmp_path / "e" / "verdicts.json").write_text(json.dumps({"experiment": "e", "verdicts": [bad]}))
    with pytest.raises(ValueError, match="lacks"):
        summary.load(tmp_path)


def test_missing_markers_are_an_error():
    with pytest.raises(ValueError, match="no summary block"):
        summary.replace_block("# README\n", "x")
