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
