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


@pytest.mark.slow
def test_quick_run_writes_table_and_figures(exp, tmp_path):
    threads = torch.get_num_threads()
    exp.main(["--quick", "--output-dir", str(tmp_path)])
    assert torch.get_num_threads() == threads  # the thread setting is restored
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("# ") and not re.search(r"\b(nan|inf)\b", table.lower())
    for section in ("## Localisation", "## Fig. 4", "## Ridge sweep", "## Beside the seed", "## Notes"):
        assert section in table
    for name in ("figure.png", "fig2.png", "fig4.png"):
        assert (tmp_path / name).stat().st_size > 1000


def _fake_results(exp, nmse_first, n=10, seed=0):
    """Per-study results as run_localization / run_fig4 return them, with a chosen 1st-order NMSE level."""
    rng = np.random.default_rng(seed)
    paradigms = ("graded", "rest_task")
    maps = ("exact", "first", "second_gauss_newton_diag", "second_gauss_newton", "second_exact", "corr")
    per_run = {}
    for p in paradigms:
        auc = rng.uniform(0.8, 0.9, n)
        rec = {f"auc:{m}": list(auc + rng.normal(0, 1e-3, n) * (m != "exact")) for m in maps}
        rec["auc:corr"] = list(auc - 0.1 + rng.normal(0, 1e-2, n))  # dE_c beats the correlation control
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
        )
        per_run[p] = rec
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
    fig4 = {
        "I": {s: [9000 // s**2] * n for s in strides},
        "converged": 9 * n,
        "fits": 9 * n,
        "nmse": {
            k: {s: list(nmse_first * s * rng.uniform(0.9, 1.1, n)) for s in strides}
            for k in ("first", "second_gauss_newton_diag", "second_gauss_newton", "second_exact")
        },
    }
    return {"per_run": per_run, "fig2": None, "ridge": ridge}, fig4


@pytest.mark.parametrize("nmse_first, word", [(0.01, "yes"), (0.5, "no")])
def test_agrees_cells_follow_the_numbers(exp, tmp_path, nmse_first, word):
    import yaml

    from benchmarks.experiments._output import ROOT

    cfg = yaml.safe_load((ROOT / "configs" / "morch.yaml").read_text())
    cfg["localization"]["runs"] = cfg["fig4"]["seeds"] = 10
    cfg["bootstrap_resamples"] = 200
    loc, fig4 = _fake_results(exp, nmse_first)
    text = exp.write_table(loc, fig4, cfg, tmp_path, 1.0)
    row = next(line for line in text.splitlines() if line.startswith("| Fig. 2, I = 34,863"))
    assert f"NMSE 1st < 0.05: {word} (p_holm=" in row  # the seed's claim, decided by the run's numbers
    row4 = next(line for line in text.splitlines() if "for large I the 1st order" in line)
    assert f"NMSE 1st < 0.05 at I = 9000: {word} (p_holm=" in row4
    assert "rho < 0: yes (p_holm=" in text  # the fake NMSE grows with the stride, i.e. falls as I grows
    loc_row = next(line for line in text.splitlines() if line.startswith("| baseline: abs. corr"))
    assert "dE_c vs it: better (p_holm=" in loc_row and "Better: dE_c vs abs. corr(x_i, y) (AUC graded)" in text
