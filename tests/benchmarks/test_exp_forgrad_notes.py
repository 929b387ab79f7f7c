"""exp_forgrad: verdicts, notes, credited cells and verdicts.json follow the run's numbers (issue 20 §1, §5, §7)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks.experiments import _forgrad_measures as M
from benchmarks.experiments import _verdicts as V
from benchmarks.experiments import exp_forgrad as E

N_IMAGES, SEEDS = 24, (0, 1, 2, 3, 4)


def _run(seed: int, deletion_shift: float, control_stability: float, hf_max_minus_avg: float) -> dict:
    rng = np.random.default_rng(seed)
    n = N_IMAGES
    values = {}
    for name in ("Gradient", "SmoothGrad"):
        raw = {k: rng.uniform(0.3, 0.6, n) for k, _, _ in M.METRICS}
        values[(name, M.RAW)] = raw
        fg = {k: v + rng.normal(0, 0.05, n) for k, v in raw.items()}  # noise only: ties
        fg["deletion"] = raw["deletion"] + deletion_shift + rng.normal(0, 1e-3, n)
        values[(name, M.FORGRAD)] = fg
        for variant in (M.LOWPASS, M.RANDOM):
            values[(name, variant)] = {k: v + rng.normal(0, 0.05, n) for k, v in raw.items()}
    for control in M.CONTROLS:
        values[(M.CONTROL_ROW, control)] = {k: rng.uniform(0.3, 0.6, n) for k, _, _ in M.METRICS}
    # the uniform map is perfectly stable: it must win stability against FORGrad, whatever FORGrad does
    values[(M.CONTROL_ROW, "Uniform map")]["stability"] = np.full(n, control_stability)
    cal = SimpleNamespace(sigmas=[1.0, 32.0], scores=[0.1, 0.0], best_sigma=1.0, best_score=0.1)
    hf_avg = rng.uniform(0.2, 0.3, n)
    mech = {
        "hf": {
            ("Gradient", "max"): hf_avg + hf_max_minus_avg + rng.normal(0, 1e-3, n),
            ("Gradient", "avg"): hf_avg,
            ("Occlusion", "max"): rng.uniform(0.0, 0.01, n),
            ("Occlusion", "avg"): rng.uniform(0.0, 0.01, n),
        },
        "avg_accuracy": 0.99,
    }
    return {
        "info": {"seed": seed, "test_accuracy": 0.9},
        "sigma": {"Gradient": 3.0 + seed, "SmoothGrad": 17.0},
        "calibration": {"Gradient": cal, "SmoothGrad": cal},
        "values": values,
        "ms": {k: 1.0 for k in values},
        "n": n,
        "p_positive": 0.99,
        "mechanism": mech,
    }


CFG = {
    "bootstrap_resamples": 200,
    "dims": {"2d": {"model": {"size": 32}}},
    "perturbation": {"blur_sigma_fraction": 0.25},
    "hf_cutoff": 0.25,
    "mechanism": {"occlusion_patch": 4, "occlusion_stride": 2},
}


@pytest.mark.parametrize("shift, outcome, hf_gap, agrees", [(-0.05, "better", 0.1, "yes"), (0.05, "worse", -0.1, "no")])
def test_verdicts_follow_the_numbers(tmp_path, shift, outcome, hf_gap, agrees):
    results = {"2d": [_run(s, shift, 0.0, hf_gap) for s in SEEDS]}
    text, records = E.write(results, CFG, tmp_path, seconds=(12.0, 11.0))
    # deletion: lower is better, so a negative shift is a FORGrad win and a positive one a loss, in every seed
    row = next(line for line in text.splitlines() if line.startswith("| Gradient | Deletion AUC |"))
    assert f"| {outcome} (p_holm=" in row
    assert "| 5 / 0 / 0 |" in row if outcome == "better" else "| 0 / 5 / 0 |" in row
    if outcome == "worse":  # losses are named in the note, wins only in the cells
        assert "Worse: Gradient FORGrad vs Gradient raw (Deletion AUC" in text
        assert "; Gradient FORGrad, seed 3 vs Gradient raw, seed 3 (Deletion AUC" in text
    else:
        assert "Gradient FORGrad vs Gradient raw (Deletion AUC" not in text
    # the uniform map's stability (0) beats FORGrad's: reported as a control win, never credited
    row = next(line for line in text.splitlines() if line.startswith("| Gradient | Stability |"))
    assert "a control wins: not a win" in row and "| no (" in row
    assert "Holm-adjusted over the 72 tests of this table" in text  # 2 methods x 6 references x 6 metrics
    assert "Run time: 12 s wall, 11 s CPU" in text and "class-1 probability" in text.lower()
    assert "| sigma* Gradient | 3 | 4 | 5 | 6 | 7 | 3-7 |" in text
    # mechanism: the agrees? cell of "max-pool gradient maps have more HF power" comes from the numbers
    row = next(line for line in text.splitlines() if line.startswith("| gradient maps of the max-pool CNN"))
    assert f"| {agrees} (p_holm=" in row
    # verdicts.json: one record per comparison (pooled, per seed, mechanism pooled and over seeds), to_record's keys
    doc = json.loads((tmp_path / "verdicts.json").read_text())
    assert doc["experiment"] == "forgrad" and doc["verdicts"] == json.loads(json.dumps(records))
    assert len(records) == 72 + 5 * 2 * 6 + 4 + 4
    probe = V.compare("a", "b", [1.0, 2.0], [0.0, 1.0])
    V.adjust([probe])
    keys = set(V.to_record(probe, table="t", family="f"))
    assert all(keys <= set(r) for r in records)
    win = next(r for r in records if r["table"] == "2d_pooled" and r["metric"] == "Deletion AUC")
    assert win["summary"] == ("win" if outcome == "better" else "loss") and win["reference"] == "Gradient raw"
    ctl = next(r for r in records if r["reference"] == "Uniform map" and r["metric"] == "Stability")
    assert ctl["summary"] == "control wins" and ctl["control"]


def test_gaussian_lowpass_half_power_at_sigma_and_edge_map():
    # a cosine at radius k bins keeps amplitude 2 ** (-k**2 / (2 sigma**2)): 1/sqrt(2) at k = sigma
    n, k = 32, 4
    grid = torch.arange(n, dtype=torch.float64)
    wave = torch.cos(2 * np.pi * k * grid / n)[None, None, :, None].expand(1, 1, n, n).clone()
    out = M.gaussian_lowpass(wave, sigma=float(k))
    assert torch.allclose(out, wave / np.sqrt(2), atol=1e-10)
    # the edge map of a linear ramp is its constant slope (central differences), checked against numpy
    ramp = (3.0 * grid)[None, None, :, None].expand(1, 1, n, n).float()
    assert torch.allclose(
        M.edge_map(ramp), torch.from_numpy(np.abs(np.gradient(ramp[0, 0].numpy(), axis=0)))[None, None]
    )


def test_occlusion_map_brute_force():
    # a linear "model": the occlusion map of patch p, stride p is the patch's summed weighted input, spread evenly
    class Linear(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = w

        def forward(self, x):
            s = (x * self.w).flatten(1).sum(1)
            return torch.stack([-s, s], 1)

    g = torch.Generator().manual_seed(0)
    x, w = torch.rand(2, 1, 8, 8, generator=g), torch.rand(1, 1, 8, 8, generator=g)
    got = M.occlusion_map(Linear(w), x, torch.ones(2, dtype=torch.long), patch=4, stride=4)
    contrib = (x * w)[:, 0].double()
    expected = torch.zeros(2, 8, 8, dtype=torch.float64)
    for i in range(0, 8, 4):
        for j in range(0, 8, 4):
            expected[:, i : i + 4, j : j + 4] = contrib[:, i : i + 4, j : j + 4].sum((1, 2))[:, None, None]
    assert torch.allclose(got[:, 0].double(), expected, atol=1e-5)
