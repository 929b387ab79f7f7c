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
        from benchmarks.experiments import _verdicts as V
        from benchmarks.experiments import exp_sanity as S

        assert "2 seeds (each: its own model seed" in table and "n=2)" in table
        for control in S.CONTROLS:  # model-free controls: 1 by construction, and said so
            assert f"| {control} (1 by construction) | 1.00 (range [1.00, 1.00], n=2) |" in table
        assert "## Sensitivity to the cut-off" in table and "Run time " in table
        records = V.read_verdicts(tmp_path / "verdicts.json", "sanity")  # the schema of to_record, checked
        methods = {r["method"] for r in records}
        assert {r["reference"] for r in records} == {*S.CONTROLS, "cut-off 0.5"}
        assert len(records) == len(methods) * 3 * 2 and not methods & set(S.CONTROLS)


def test_schema_keys_are_those_of_to_record():
    import numpy as np

    from benchmarks.experiments import _verdicts as V

    c = V.adjust([V.compare("A", "B", np.arange(5.0), np.zeros(5))])[0]
    assert set(V.to_record(c, "t", "f")) == set(V.RECORD_KEYS)


def test_read_verdicts_rejects_a_broken_file(tmp_path):
    import numpy as np

    from benchmarks.experiments import _verdicts as V

    c = V.adjust([V.compare("A", "ctrl", np.zeros(6), np.arange(1.0, 7.0), control=True)])[0]
    good = V.to_record(c, "t", "f")
    V.write_verdicts(tmp_path, [good], "demo")
    assert V.read_verdicts(tmp_path / "verdicts.json", "demo") == [good] and good["summary"] == "control wins"
    for bad, match in (
        ({k: v for k, v in good.items() if k != "p_holm"}, "lacks"),
        (good | {"summary": "win"}, "disagrees"),
        (good | {"summary": "draw"}, "summary 'draw'"),
        (good | {"p_holm": good["p"] / 2}, "p_holm"),
    ):
        V.write_verdicts(tmp_path, [good, bad], "demo")
        with pytest.raises(ValueError, match=match):
            V.read_verdicts(tmp_path / "verdicts.json")
    with pytest.raises(ValueError, match="experiment 'demo'"):
        V.read_verdicts(tmp_path / "verdicts.json", "other")


def test_sanity_verdict_from_the_spread_over_seeds():
    from benchmarks.experiments.exp_sanity import DEFAULT_SEEDS, spread_verdict

    assert DEFAULT_SEEDS >= 5
    assert spread_verdict([True] * 5) == "pass in 5 of 5 seeds"
    assert spread_verdict([False] * 5) == "FAIL: pass in 0 of 5 seeds"
    assert spread_verdict([True, False, True, True, False]) == "unstable: pass in 3 of 5 seeds"


def test_sanity_model_free_controls_and_cutoff_verdicts():
    """The edge map is scipy's Sobel magnitude; a model-free map is the same for any model (similarity 1); the
    verdict against the cut-off follows the per-unit values' side of it."""
    import numpy as np
    import torch
    from scipy import ndimage

    from benchmarks.experiments import exp_sanity as S
    from benchmarks.experiments._verdicts import outcome

    x = torch.rand(3, 1, 12, 10, generator=torch.Generator().manual_seed(0))
    imgs = x[:, 0].double().numpy()  # the reference: scipy's Sobel on each image alone
    ref = np.stack([np.hypot(ndimage.sobel(im, 0), ndimage.sobel(im, 1)) for im in imgs])
    np.testing.assert_allclose(S.edge_map(x)[:, 0].numpy(), ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(S.ModelFree(S.edge_map)(x, 1), S.ModelFree(S.edge_map)(x, 0))

    class R:  # a stand-in for SanityResult: (stages, images) similarities
        def __init__(self, v):
            self.spearman = torch.as_tensor(v, dtype=torch.float64)

    def run(v):
        return {m: R(v) for m in S.MODES}

    rng = np.random.default_rng(0)
    per_seed = [
        {"low": run(rng.uniform(0.0, 0.3, (2, 12))), "high": run(rng.uniform(0.6, 0.9, (2, 12)))}
        | {c: run(np.ones((2, 12))) for c in S.CONTROLS}
        for _ in range(2)
    ]
    comps = S.comparisons(per_seed, ["low", "high"], 0.5, 200)
    assert outcome(comps[("cascading", "low", "cut-off 0.5")]) == "better"
    assert outcome(comps[("cascading", "high", "cut-off 0.5")]) == "worse"
    assert outcome(comps[("independent", "high", S.EDGE)]) == "better"
    assert S.unit_values(per_seed, "low", "cascading").shape == (24,)
    np.testing.assert_allclose(
        S.seed_scores(per_seed, "low", "cascading"), [p["low"]["cascading"].spearman[-1].mean() for p in per_seed]
    )


@pytest.mark.parametrize("experiment", ["sanity", "angiogram_study"])
def test_committed_verdicts_have_the_schema(experiment):
    """The committed full runs wrote verdicts.json with the schema of to_record (the README summary's source)."""
    from benchmarks.experiments import _verdicts as V
    from benchmarks.experiments._output import RESULTS

    records = V.read_verdicts(RESULTS / experiment / "verdicts.json", experiment)
    assert all(r["n"] >= 20 for r in records)  # full runs: effect CIs from >= 20 units


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
