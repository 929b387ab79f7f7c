"""benchmarks.experiments.exp_morch: its helpers against independent references, and a --quick smoke run (slow)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def exp():
    from benchmarks.experiments import exp_morch

    return exp_morch


def test_roc_auc_matches_pairwise_count(exp):
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)  # rounding creates ties
    labels = rng.random(60) < 0.3
    pos, neg = scores[labels], scores[~labels]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert exp.roc_auc(scores, labels) == pytest.approx(brute, abs=1e-12)
    assert exp.roc_auc(labels.astype(float), labels) == 1.0
    assert exp.roc_auc(-labels.astype(float), labels) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        exp.roc_auc(scores, np.zeros(60, bool))


def test_nmse_definition(exp):
    ref = np.array([1.0, -2.0, 3.0])
    assert exp.nmse(ref, ref) == 0.0
    assert exp.nmse(ref, np.zeros(3)) == pytest.approx(1.0)
    assert exp.nmse(ref, 2 * ref) == pytest.approx(1.0)
    assert exp.nmse(ref, ref + np.array([0.0, 0.0, 1.0])) == pytest.approx(1 / 14)


def test_correlation_map_matches_numpy(exp):
    from monai_saliency.models.pca import PCAProjection

    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, 6, generator=g, dtype=torch.float64)
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[0, :3] = False
    y = torch.randn(12, generator=g, dtype=torch.float64)
    pca = PCAProjection().fit(x, mask=mask)
    got = exp.correlation_map(pca, x, y)
    xm = x[:, mask].numpy()
    ref = np.array([abs(np.corrcoef(xm[:, i], y.numpy())[0, 1]) for i in range(xm.shape[1])])
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_quick_merge_keeps_unlisted_keys(exp):
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    merged = exp._merge(base, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}, "d": 3} and base["a"]["b"] == 1


RECORD_KEYS = {
    "table", "family", "method", "reference", "metric", "test", "higher_is_better", "control", "n", "p", "p_holm",
    "effect", "effect_interval", "margin", "outcome", "summary", "verdict",
}  # fmt: skip


@pytest.mark.slow
def test_quick_run_writes_table_figures_and_verdicts(exp, tmp_path):
    import json

    threads = torch.get_num_threads()
    exp.main(["--quick", "--output-dir", str(tmp_path)])
    assert torch.get_num_threads() == threads  # the thread setting is restored
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("# ") and not re.search(r"\b(nan|inf)\b", table.lower())
    for section in (
        "## Localisation, synthetic phantom",
        "## Localisation, MNI152 anatomy, real fMRI noise",
        "## Fig. 4",
        "## Ridge sweep",
        "## Beside the seed",
        "## Notes",
    ):
        assert section in table
    assert re.search(r"Run time \(one thread.*budget 360 s", table)
    for name in ("figure.png", "fig2.png", "fig2_mni152_real_noise.png", "fig4.png"):
        assert (tmp_path / name).stat().st_size > 1000
    data = json.loads((tmp_path / "verdicts.json").read_text())
    assert data["experiment"] == "morch" and data["verdicts"]
    for rec in data["verdicts"]:
        assert RECORD_KEYS <= set(rec), RECORD_KEYS - set(rec)
    tables = {r["table"] for r in data["verdicts"]}
    assert tables == {"localisation_synthetic", "localisation_mni152_real_noise", "fig4", "seed_claims"}
    refs = {r["reference"] for r in data["verdicts"] if r["control"]}
    assert {"uniform map", "mean input image (model-free)", "dE_c of the untrained net"} <= refs
    assert any("abs. corr" in r for r in refs)


def _fake_results(exp, nmse_first, n=12, seed=0, corr_gap=-0.1):
    """Per-study results as run_localization / run_fig4 return them, with a chosen 1st-order NMSE level and a chosen
    AUC gap of the correlation control to dE_c (negative: dE_c beats it; 0: the control ties it)."""
    rng = np.random.default_rng(seed)
    paradigms = ("graded", "rest_task")
    maps = ("exact", "first", "second_gauss_newton_diag", "second_gauss_newton", "second_exact")
    per_run = {}
    for cond in ("synthetic", "mni152_real_noise"):
        per_run[cond] = {}
        for p in paradigms:
            auc = rng.uniform(0.8, 0.9, n)
            rec = {f"auc:{m}": list(auc + rng.normal(0, 1e-3, n) * (m != "exact")) for m in maps}
            rec["auc:corr"] = list(auc + corr_gap + rng.normal(0, 1e-2, n) * (corr_gap != 0))
            rec["auc:uniform"] = [0.5] * n
            rec["auc:mean_image"] = list(rng.uniform(0.55, 0.65, n))
            rec["auc:untrained"] = list(rng.uniform(0.4, 0.6, n))
            for m in maps[1:5]:
                rec[f"nmse:{m}"] = list(nmse_first * rng.uniform(0.5, 1.5, n) / (1 if m == "first" else 10))
            rec.update(
                second_over_first=list(rng.uniform(0.2, 0.3, n)),
                corr_first_exact=list(rng.uniform(0.995, 1, n)),
                neg_exact=list(rng.uniform(0, 0.1, n)),
                rel_cost=list(rng.uniform(0.1, 0.2, n)),
                seconds=[1.0] * n,
                n_iter=[10.0] * n,
                converged=[True] * n,
                n_voxels=[1000] * n,
                n_truth=[50] * n,
            )
            per_run[cond][p] = rec
    ridge = {
        (p, wd): {
            "info": {"rel_cost": 0.1, "converged": True},
            "nmse": {
                "first": nmse_first if wd == 0.1 else 0.9,
                "second_gauss_newton_diag": 0.5,
                "second_gauss_newton": 1e-3,
            },
            "auc": {"exact": 0.8, "first": 0.8, "second_gauss_newton_diag": 0.8},
        }
        for p in paradigms
        for wd in (0.1, 0.01, 0.001)
    }
    strides = list(range(1, 10))
    keys = ("first", "second_gauss_newton_diag", "second_gauss_newton", "second_exact")
    fig4 = {
        "I": {s: [9000 // s**2] * n for s in strides},
        "converged": 9 * n,
        "fits": 9 * n,
        "nmse": {k: {s: list(nmse_first * s * rng.uniform(0.9, 1.1, n)) for s in strides} for k in keys},
        # at the fixed ridge the 1st-order error does not move with I (the fit quality hides it)
        "nmse_fixed": {k: {s: list(nmse_first * rng.uniform(0.9, 1.1, n)) for s in strides} for k in keys},
        "rel_cost": {s: list(0.01 * rng.uniform(0.97, 1.03, n)) for s in strides},
        "rel_cost_fixed": {s: list(0.01 * s * rng.uniform(0.9, 1.1, n)) for s in strides},
        "ridge": {s: list(0.1 / s * rng.uniform(0.9, 1.1, n)) for s in strides},
        "on_target": {s: [True] * n for s in strides},
        "n_fits": {s: [3] * n for s in strides},
    }
    loc = {"per_run": per_run, "fig2": {}, "ridge": ridge, "seconds": {}}
    return loc, fig4


TIMING = {"cpu": {"localisation + Fig. 2": 1.0, "Fig. 4": 1.0, "total": 2.0}, "wall": {"total": 3.0}}


def _cfg():
    import yaml

    from benchmarks.experiments._output import ROOT

    cfg = yaml.safe_load((ROOT / "configs" / "morch.yaml").read_text())
    cfg["localization"]["runs"] = cfg["fig4"]["seeds"] = 12
    cfg["bootstrap_resamples"] = 200
    return cfg


@pytest.mark.parametrize("nmse_first, word", [(0.01, "yes"), (0.5, "no")])
def test_agrees_cells_follow_the_numbers(exp, tmp_path, nmse_first, word):
    loc, fig4 = _fake_results(exp, nmse_first)
    text, records = exp.write_table(loc, fig4, _cfg(), tmp_path, TIMING)
    row = next(line for line in text.splitlines() if line.startswith("| Fig. 2, I = 34,863"))
    assert f"NMSE 1st < 0.05: synthetic: {word} (p_holm=" in row  # the seed's claim, decided by the run's numbers
    row4 = next(line for line in text.splitlines() if "for large I the 1st order" in line)
    assert f"NMSE 1st < 0.05 at I = 9000 (equal fit quality): {word} (p_holm=" in row4
    # the fake NMSE grows with the stride at equal fit quality only: rho < 0 shown there, not at the fixed ridge
    assert "rho < 0 at equal fit quality: yes (p_holm=" in text
    assert "at the fixed ridge: not shown (p_holm=" in text
    loc_row = next(line for line in text.splitlines() if line.startswith("| control: abs. corr"))
    assert "dE_c vs it: better (p_holm=" in loc_row
    better = next(line for line in text.splitlines() if line.startswith("Verdicts:")).split("Better: ", 1)[1]
    for stop in ("Worse: ", "Ties (", "A control wins"):  # the first table note's "better" group
        better = better.split(stop)[0]
    assert "dE_c vs abs. corr(x_i, y) (model-free, SPM-like) (AUC graded), p_holm=" in better
    summaries = {(r["table"], r["reference"], r.get("paradigm")): r["summary"] for r in records}
    assert summaries[("localisation_synthetic", "uniform map", "graded")] == "win"
    assert "within budget" in text


def test_a_control_that_ties_is_not_a_win(exp, tmp_path):
    """|corr(x_i, y)| with the same AUC as dE_c: 'a control ties: not a win', and 'control ties' in verdicts.json."""
    loc, fig4 = _fake_results(exp, 0.01, corr_gap=0.0)
    text, records = exp.write_table(loc, fig4, _cfg(), tmp_path, TIMING)
    loc_row = next(line for line in text.splitlines() if line.startswith("| control: abs. corr"))
    assert loc_row.count("a control ties: not a win") == 2  # both paradigms
    corr = [r for r in records if r["reference"].startswith("abs. corr")]
    assert len(corr) == 4 and {r["summary"] for r in corr} == {"control ties"}
    import json

    from benchmarks.experiments._verdicts import write_verdicts

    data = json.loads(write_verdicts(tmp_path, records, experiment="morch").read_text())
    assert data["experiment"] == "morch" and all(RECORD_KEYS <= set(r) for r in data["verdicts"])


def test_auc_margin_turns_a_tiny_significant_shift_into_a_tie(exp):
    """A consistent ΔAUC of 1e-4 over 12 studies is 'significant' but below the stated margin: a tie."""
    from benchmarks.experiments._morch_report import AUC_MARGIN, localisation_family

    rng = np.random.default_rng(1)
    auc = rng.uniform(0.8, 0.9, 12)
    rec = {"auc:exact": list(auc)}
    for m in ("first", "second_gauss_newton_diag", "second_gauss_newton", "second_exact"):
        rec[f"auc:{m}"] = list(auc + 1e-4 * rng.uniform(1, 2, 12))
    fam = localisation_family({"graded": rec})
    c = fam[("first", "graded")]
    assert c.pvalue < 0.001 and c.p_holm < 0.05 and AUC_MARGIN > 1e-4
    assert c.side == 1 and exp.write_table is not None
    from benchmarks.experiments import _verdicts as V

    assert V.outcome(c) == "tie" and "|effect| < 0.005" in V.verdict(c)


def test_fit_to_quality_reaches_the_target(exp):
    """The ridge is tuned until E / var(y) is on target, from a fixed-ridge fit that is far from it."""
    from monai_saliency.data.synthetic.pet_phantom import make_pet_study

    st = make_pet_study("graded", shape=(16, 16, 8), n_subjects=3, n_scans=4, seed=5)
    cfg = {"hidden": 2, "n_components": None, "weight_decay": 0.1, "optimizer": "newton", "tol": 1e-7, "max_iter": 200}
    first, (pca, net, y, info) = exp.fit_to_quality(st.images, st.mask, st.targets, cfg, 0, 0.01, 0.05, 8)
    assert abs(first[3]["rel_cost"] / 0.01 - 1) > 0.05  # the fixed ridge is off target ...
    assert info["on_target"] and abs(info["rel_cost"] / 0.01 - 1) <= 0.05  # ... the tuned one on it
    assert info["fits"] > 1 and info["weight_decay"] != 0.1
    with torch.no_grad():
        cost = float((y - net(pca(st.images))).pow(2).mean()) / float(y.var(unbiased=False))
    assert cost == pytest.approx(info["rel_cost"], rel=1e-9)  # the returned net is the tuned one
