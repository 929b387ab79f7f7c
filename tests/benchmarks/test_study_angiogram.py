"""benchmarks.experiments.study_angiogram: the quick run end to end, and verdicts that follow the numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.experiments import _angiogram_measures as M
from benchmarks.experiments import _angiogram_report as R
from benchmarks.experiments import study_angiogram as S


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("angio")
    S.main(["--quick", "--output-dir", str(out)])
    return out


def test_quick_run_has_controls_and_computed_verdicts(quick_run):
    table = (quick_run / "table.md").read_text()
    assert "nan" not in table.lower() and (quick_run / "figure.png").stat().st_size > 1000
    for control in M.CONTROLS:  # the model-free maps and every method on the random model
        assert f"| {control} |" in table
    assert len(M.CONTROLS) == 2 + len(M.METHODS)
    assert "(range [" in table and "95% CI" not in table  # 8 cines: ranges, never a CI
    res = json.loads((quick_run / "results.json").read_text())
    assert len(res["seconds_per_cine"][M.REFERENCE]) == 8 and len(set(res["seconds_per_cine"][M.REFERENCE])) > 1
    for fam in res["comparisons"].values():
        for c in fam:  # a "better" verdict always has an effect on the better side of the metric
            if c["verdict"].startswith("better"):
                higher = dict(S.LOCALISATION | S.FAITHFULNESS | S.SEED_RULES).get(c["key"][0], ("", True))[1]
                assert (c["effect"] > 0) == higher
    # verdicts.json: the schema of to_record, every family, and each method against its own random-model map
    records = R.V.read_verdicts(quick_run / "verdicts.json", "angiogram_study")
    tables = {r["table"] for r in records}
    assert {"faithfulness", "seed_rules", "mechanism"} <= tables and sum(
        t.startswith("localisation") for t in tables
    ) == 3
    n_json = sum(len(f) for f in res["comparisons"].values())
    assert len(records) == n_json
    for m in M.METHODS:
        own = {(r["table"], r["metric"]) for r in records if r["method"] == m and r["reference"] == M.random_control(m)}
        assert len(own) == len(S.LOCALISATION | S.FAITHFULNESS | S.SEED_RULES)
        assert not any(
            r["method"] == m and r["reference"] == M.random_control(o) for r in records for o in M.METHODS if o != m
        )


def _results(control_wins: bool, n=24, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.5, n)
    res = {m: {"score": base + 0.2 + rng.normal(0, 0.01, n), "hit": np.ones(n)} for m in (M.REFERENCE, "GradCAM")}
    res["GradCAM"]["score"] = base + rng.normal(0, 0.01, n)  # clearly worse than the reference
    res[M.UNIFORM] = {"score": base - 0.2 + rng.normal(0, 0.01, n), "hit": np.zeros(n)}
    res[M.INTENSITY] = {"score": base + (0.5 if control_wins else -0.2) + rng.normal(0, 0.01, n), "hit": np.ones(n)}
    res[M.RANDOM] = {"score": base - 0.2 + rng.normal(0, 0.01, n), "hit": np.zeros(n)}
    res[M.random_control("GradCAM")] = {"score": base + 0.4 + rng.normal(0, 0.01, n), "hit": np.zeros(n)}
    return res


METRICS = {"score": ("score", True, "wilcoxon"), "hit": ("hit", True, "mcnemar")}


@pytest.mark.parametrize("control_wins", [True, False])
def test_verdicts_follow_the_numbers(control_wins):
    comps = R.family(_results(control_wins), METRICS, 200)
    c = comps[("score", M.REFERENCE, M.INTENSITY)]
    cells = "\n".join(R.verdict_table(comps, METRICS))
    summary = "\n".join(R.summary(comps, METRICS))
    if control_wins:
        assert R.V.verdict(c).startswith("a control wins: not a win")
        assert "**score**: beats every control: none" in summary and "1 - intensity wins" in summary
    else:
        assert R.V.verdict(c).startswith("better")
        assert f"**score**: beats every control: {M.REFERENCE};" in summary
    assert "worse than SignatureActivation-spatial: GradCAM." in summary.split("\n")[0]
    # yes/no outcome: McNemar; 1 - intensity hits as often as the methods: a tie with a control, never a win
    assert comps[("hit", M.REFERENCE, M.INTENSITY)].test == "mcnemar"
    assert R.V.verdict(comps[("hit", M.REFERENCE, M.INTENSITY)]).startswith("a control ties: not a win")
    assert R.V.verdict(comps[("hit", M.REFERENCE, M.UNIFORM)]).startswith("better")
    # each method against its own random-model map (Grad-CAM's scores higher than Grad-CAM: a control win)
    assert ("score", "GradCAM", M.RANDOM) not in comps
    assert R.V.verdict(comps[("score", "GradCAM", M.random_control("GradCAM"))]).startswith("a control wins")
    assert "its random model wins" in summary.split("\n")[0]
    assert "| vs control: the method on the random model |" in cells.split("\n")[0]
    assert "ties 1 - intensity" in summary.split("\n")[1]
    note = R.note(list(comps.values()), "test family")
    assert f"over the {len(comps)} tests" in note and "family: test family" in note
    assert cells.count("\n") == 2 + 2 * 2 - 1


def test_mechanism_text_follows_the_numbers():
    rng = np.random.default_rng(0)
    n = 24
    mech = {"lesion": rng.uniform(2, 3, n), "vessel": rng.uniform(0, 0.1, n), "background": rng.uniform(1, 2, n)}
    mech.update({f"signed_{k}": -v for k, v in mech.items()})
    mech["k"] = np.full(n, 50)
    text = "\n".join(S.mechanism_text(mech, 200)[0])
    assert "is contradicted" in text and "| vessel pixels vs background pixels | a control wins: not a win" in text
    assert "Deleting vessel lowers the lesion score" in text
    mech["vessel"], mech["background"] = mech["background"], mech["vessel"]
    mech["signed_vessel"] = rng.normal(0, 1, n)
    text = "\n".join(S.mechanism_text(mech, 200)[0])
    assert "is supported" in text and "no shift shown" in text


def test_readme_summary_matches_the_committed_results():
    """The README's angiogram bullet quotes the committed run: its numbers and each direction it states."""
    root = S.ROOT
    readme = (root / "README.md").read_text()
    start = readme.index("- [Angiogram study](benchmarks/experiments/results/angiogram_study/table.md)")
    bullet = " ".join(readme[start : readme.index("\n- ", start)].split())
    res = json.loads((root / "benchmarks/experiments/results/angiogram_study/results.json").read_text())
    est = {m: {k: v["estimate"] for k, v in d.items()} for m, d in res["stats"].items()}
    verdict = {tuple(c["key"]): c["verdict"] for fam in res["comparisons"].values() for c in fam}
    methods = [m for m in est if m not in M.CONTROLS]
    sa, inten, uni = M.REFERENCE, M.INTENSITY, M.UNIFORM
    assert f"({est[inten]['vessel_iou']:.2f} vs {est[sa]['vessel_iou']:.2f}" in bullet
    assert max(methods, key=lambda m: est[m]["vessel_iou"]) == sa
    assert verdict[("vessel_iou", sa, inten)].startswith("a control wins")
    assert f"top-2 % hit {est[inten]['mild_hit']:.2f} vs {est[sa]['mild_hit']:.2f}" in bullet
    assert verdict[("mild_hit", sa, inten)].startswith("a control wins")
    assert f"{est[sa]['topk_hit']:.2f} vs {est[inten]['topk_hit']:.2f}: a tie" in bullet
    for key in ("topk_hit", "insertion_auc", "deletion_auc"):  # "no method beats it"
        assert not any(verdict[(key, m, inten)].startswith("better") for m in methods)
    for m in (sa, "GradCAM"):  # "beat every control on the lesion pointing game"
        assert all(verdict[("pointing", m, c)].startswith("better") for c in M.controls_of(m))
    assert f"({est[sa]['pointing']:.2f} each vs {est[inten]['pointing']:.2f}" in bullet
    assert est["GradCAM"]["pointing"] == est[sa]["pointing"]
    assert max(est, key=lambda m: est[m]["vessel_energy"]) == "EigenCAM"
    assert f"most vessel energy ({est['EigenCAM']['vessel_energy']:.2f})" in bullet
    assert f"WSOL box error is {est[uni]['wsol_error']:.2f} for the uniform map" in bullet
    assert f"({est[uni]['both_recall']:.2f} vs {est[sa]['both_recall']:.2f})" in bullet
    mech = {k: np.mean(v) for k, v in res["mechanism"].items()}
    assert f"|Δ logit| {mech['vessel']:.2f} vs {mech['background']:.2f}" in bullet
    assert f"more still ({mech['lesion']:.2f})" in bullet and mech["signed_vessel"] > 0
    assert verdict[("vessel", "background")].startswith("better")
    assert verdict[("lesion", "vessel")].startswith("better")
