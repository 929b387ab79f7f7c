"""exp_forgrad.write: the verdicts and the note under each table follow the run's numbers (issue 20 §7)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.experiments import exp_forgrad


def _results(deletion_shift: float, n: int = 24):
    rng = np.random.default_rng(0)
    rows = {}
    for name in ("Gradient", "SmoothGrad"):
        raw = {k: rng.uniform(0.3, 0.6, n) for k, _, _ in exp_forgrad.METRICS}
        fg = {k: v + rng.normal(0, 0.05, n) for k, v in raw.items()}  # noise only: ties
        fg["deletion"] = raw["deletion"] + deletion_shift + rng.normal(0, 1e-3, n)
        rows[(name, "raw")] = dict(raw, ms=1.0)
        rows[(name, "FORGrad (sigma*=3)")] = dict(fg, ms=1.1)
    cal = SimpleNamespace(sigmas=[1.0, 32.0], scores=[0.1, 0.0])
    extra = {"info": {"test_accuracy": 0.9}, "calibration": {"Gradient": cal, "SmoothGrad": cal}, "n_eval": n}
    return {"2d": (rows, {"Gradient": 3.0, "SmoothGrad": 3.0}, extra)}


@pytest.mark.parametrize("shift, outcome", [(-0.05, "Better"), (0.05, "Worse")])
def test_note_direction_comes_from_the_numbers(tmp_path, shift, outcome):
    cfg = {"bootstrap_resamples": 200, "models": {"2d": {"size": 32}}}
    text = exp_forgrad.write(_results(shift), cfg, tmp_path)
    # deletion: lower is better, so a negative shift is a FORGrad win and a positive one a loss
    assert f"{outcome}: Gradient FORGrad vs Gradient raw (Deletion AUC" in text
    row = next(line for line in text.splitlines() if line.startswith("| Gradient | FORGrad"))
    assert f"; {outcome.lower()} (p_holm=" in row
    assert "Holm-adjusted over the 10 tests of this table" in text
    assert "(95% CI, n=24)" in row  # 24 images: a CI, not a range
