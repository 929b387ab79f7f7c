"""demo_image_signature: the fundus part's AUC and tiling against brute force, verdicts from the numbers (issue 20),
and a quick run writing table.md, verdicts.json and the figure."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.experiments import _retina_signature as RS
from benchmarks.experiments import _verdicts as V
from benchmarks.experiments import demo_image_signature as demo


def _brute_auc(s: np.ndarray, pos: np.ndarray) -> float:
    p, n = s[pos], s[~pos]
    return float(((p[:, None] > n[None]) + 0.5 * (p[:, None] == n[None])).mean())


def test_roc_auc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=(5, 40)), 1)  # rounded: ties
    pos = rng.random((5, 40)) < 0.3
    pos[:, 0], pos[:, 1] = True, False
    expected = [_brute_auc(s[k], pos[k]) for k in range(5)]
    np.testing.assert_allclose(RS.roc_auc(s, pos), expected, atol=1e-12)
    np.testing.assert_allclose(RS.roc_auc(np.ones((5, 40)), pos), 0.5)  # a uniform map: no ranking


def test_tiles_raster_order_and_round_trip():
    a = np.arange(6 * 9).reshape(6, 9)
    t = RS.tiles(a, 3)
    assert t.shape == (6, 9)
    np.testing.assert_array_equal(t[1], a[0:3, 3:6].reshape(-1))  # second tile = first row of tiles, second column
    np.testing.assert_array_equal(t[3], a[3:6, 0:3].reshape(-1))
    np.testing.assert_array_equal(RS.untile(t, a.shape, 3), a)


def _fake_metrics(n: int, signature_auc: float) -> dict:
    rng = np.random.default_rng(1)
    base = {RS.UNIFORM: 0.5, RS.INVERTED: 0.7, RS.SOBEL: 0.7}
    metrics = {}
    for name in (*RS.SIGNATURES, *RS.RETINA_CONTROLS):
        centre = signature_auc if name in RS.SIGNATURES else base[name]
        metrics[name] = {"auc": centre + rng.uniform(-0.02, 0.02, n), "mass_on_vessels": rng.uniform(0.1, 0.2, n)}
    metrics[RS.UNIFORM]["auc"] = np.full(n, 0.5)
    return metrics


@pytest.mark.parametrize("signature_auc, vs_sobel", [(0.9, "better"), (0.6, "a control wins: not a win")])
def test_retina_verdicts_follow_the_numbers(signature_auc, vs_sobel):
    fam = RS.retina_comparisons(_fake_metrics(25, signature_auc))
    assert len(fam) == len(RS.SIGNATURES) * len(RS.RETINA_CONTROLS) * 2
    assert all(c.control and c.p_holm is not None for c in fam.values())
    assert V.verdict(fam[(RS.SIG_NONE, RS.SOBEL, "auc")]).startswith(vs_sobel)
    assert V.verdict(fam[(RS.SIG_NONE, RS.UNIFORM, "auc")]).startswith("better")


def test_quick_run_writes_table_verdicts_and_figure(tmp_path):
    demo.main(["--quick", "--output-dir", str(tmp_path)])
    records_read = V.read_verdicts(tmp_path / "verdicts.json", "image_signature_demo")
    tables = {r["table"] for r in records_read}
    assert tables == {"synthetic sweep", "retina"}
    retina = [r for r in records_read if r["table"] == "retina"]
    assert len(retina) == 18 and all(r["control"] and r["n"] >= 20 for r in retina)  # >= 20 tiles
    assert all("setting" in r for r in records_read)
    text = (tmp_path / "table.md").read_text()
    assert text.startswith("# ") and "nan" not in text.lower() and "Run time:" in text
    assert "Verdicts: paired two-sided Wilcoxon" in text
    V.check_markdown_tables(text)
    for name in ("figure.png", "example.png", "results.json"):
        assert (tmp_path / name).stat().st_size > 500
