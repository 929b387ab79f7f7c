"""Seed 001 §5-§7 on synthetic angiogram cines: Signature Activation vs Grad-CAM, Grad-CAM++ and Eigen-CAM, with
controls, localisation that can fail, and the seed's mechanism tested.

The classifier is the bundle's :class:`~monai_saliency.models.video.VideoLesionNet` (weights from
``bundles/angiogram_signature_activation/models/model.pt``; trained on generator seeds 0-2). The study uses fresh
held-out cines (seed 777) plus a set where every case holds a mild and a moderate lesion in different branches
(seed 778, the paper's §5 scenario). All maps come from the layer ``features.stage3`` and are min-max normalised
per cine. Every table holds the controls (``_angiogram_measures``): a uniform map, the model-free map
``1 - intensity`` and every method on a randomised model (one re-initialisation shared by all methods).

Tables (each its own Holm family: every method against the uniform map, ``1 - intensity``, itself on the random
model, and against the reference; every verdict,
summary line and note is computed from the run's numbers by ``_verdicts``: two-sided paired Wilcoxon tests for
continuous values, exact McNemar tests for yes/no values, effect sizes with a 95 % CI from >= 20 units, else the
range of the differences):

1. localisation, three tables: (a) vessel mask energy; vessel IoU at equal area (top-|vessel| pixels, ties
   broken against the ground truth); a vessel-tree box test (box of ``map >= t max``, IoU > 0.5 with the vessel
   tree's box; ``t`` chosen per map on a seeded calibration half, hits counted on the other half). (b) On the
   positive cines: lesion pointing game; lesion hit at equal area (top 2 % of pixels, a hit when at least half
   lie in a moderate/severe lesion box) and its false-positive fraction. (c) The mild and the moderate lesion of
   the mild+moderate cines, reported separately.
2. faithfulness: deletion and insertion AUC.
3. the seed's rules (WSOL box error of seed 001 §7.1, "lesion recalled" at half the map's maximum) with the
   controls beside and the computed reason they cannot separate methods here.
4. time per cine, measured on each cine alone, interleaved with its forward pass (descriptive, untested).
5. mechanism (seed 001's "the model uses the whole vessel"): deletion of equal pixel counts of the lesion, of
   vessel away from the lesions and of background; the change of the model's lesion score.

Usage::

    python -m benchmarks.experiments.study_angiogram --quick   # tiny smoke run (outputs/quick/angiogram_study)
    python -m benchmarks.experiments.study_angiogram           # benchmarks/experiments/results/angiogram_study
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.experiments import _angiogram_measures as M
from benchmarks.experiments import _verdicts as V
from benchmarks.experiments._angiogram_report import effect_text, family, note, summary, values_table, verdict_table
from benchmarks.experiments._output import OUTPUT_DIR_HELP, ROOT, output_dir
from monai_saliency.data.synthetic.angiogram import AngiogramBatch, make_angiogram_dataset
from monai_saliency.metrics.stats import ci_or_range
from monai_saliency.models.training import QUICK, train_video_classifier
from monai_saliency.models.video import VideoLesionNet
from monai_saliency.visualize.cine import cine_strip_png, save_cine_gif

WEIGHTS = ROOT / "bundles" / "angiogram_signature_activation" / "models" / "model.pt"
REFERENCE = M.REFERENCE
_TOP = f"top {100 * M.TOP_FRACTION:g} %"
# metric -> (title, higher is better, test)
VESSEL: dict[str, tuple[str, bool, str]] = {
    "vessel_energy": ("vessel mask energy", True, "wilcoxon"),
    "vessel_iou": ("vessel IoU at equal area", True, "wilcoxon"),
    "vessel_box": ("vessel-tree box hit (test half)", True, "mcnemar"),
}
LESION = {
    "pointing": ("lesion pointing game", True, "mcnemar"),
    "topk_hit": (f"lesion hit, {_TOP}", True, "mcnemar"),
    "topk_fp": (f"false-positive fraction, {_TOP}", False, "wilcoxon"),
}
MILD = {
    "mild_hit": (f"mild lesion hit, {_TOP}", True, "mcnemar"),
    "moderate_hit": (f"moderate lesion hit, {_TOP}", True, "mcnemar"),
    "mild_pointing": ("mild lesion pointing game", True, "mcnemar"),
}
LOCALISATION = VESSEL | LESION | MILD
FAITHFULNESS = {
    "deletion_auc": ("deletion AUC", False, "wilcoxon"),
    "insertion_auc": ("insertion AUC", True, "wilcoxon"),
}
SEED_RULES = {
    "wsol_error": ("WSOL box error per cine (seed 001 §7.1)", False, "wilcoxon"),
    "both_recall": ("both lesions recalled (box max >= 1/2 map max)", True, "mcnemar"),
    "mild_recall": ("mild lesion recalled (box max >= 1/2 map max)", True, "mcnemar"),
}


MECHANISM_FAMILY = "the three contrasts of the deletion sets and the signed vessel effect"


def load_model(quick: bool) -> tuple[VideoLesionNet, str]:
    """The shipped classifier, or (when the weights are missing) a quickly trained stand-in."""
    if WEIGHTS.exists():
        net = VideoLesionNet()
        net.load_state_dict(torch.load(WEIGHTS, weights_only=True))
        return net.eval(), str(WEIGHTS.relative_to(ROOT))
    if not quick:
        raise FileNotFoundError(
            f"{WEIGHTS} is missing; train it with python -m monai_saliency.models.train_video --out {WEIGHTS}"
        )
    net, _ = train_video_classifier(QUICK, log=None)
    return net.eval(), "untrained quick stand-in (weights missing)"


def section(
    title: str, results: dict, metrics: dict, fam: str, n_resamples: int, intervals: dict | None = None
) -> tuple[list[str], dict]:
    comps = family(results, metrics, n_resamples)
    values = values_table(results, metrics, n_resamples, intervals)
    lines = [f"## {title}", "", *values, "", *summary(comps, metrics), ""]
    lines += [*verdict_table(comps, metrics), "", note(list(comps.values()), fam), ""]
    return lines, comps


def seed_rules_text(info: dict[str, dict[str, float]], results: dict) -> list[str]:
    """Why the seed's rules cannot separate methods here, from the run's numbers (the uniform map beside)."""
    u, ref = info[M.UNIFORM], info[REFERENCE]
    uw, rw = results[M.UNIFORM]["wsol_error"].mean(), results[REFERENCE]["wsol_error"].mean()
    ub = results[M.UNIFORM]["both_recall"].mean()
    return [
        (
            f"WSOL: {ref['wsol_one_box']} of {ref['wsol_cines']} cines with a lesion have one lesion box; a lesion box "
            f"covers {100 * ref['wsol_gt_area']:.1f} % of the frame on average. The rising threshold stops at the "
            f"first threshold with as many components as boxes; for {REFERENCE} (count matched on "
            f"{100 * ref['wsol_matched']:.0f} % of the cines) a predicted box there covers "
            f"{100 * ref['wsol_pred_area']:.1f} % of the frame on average (a smooth map is still one or two large "
            f"components), so an IoU > 0.5 with a lesion box is out of reach and its box error is {rw:.3f}; the "
            f"uniform map (normalised to zeros: no component, count matched on {100 * u['wsol_matched']:.0f} %) "
            f"scores {uw:.3f}. "
            f"'Both lesions recalled' at half the map's maximum: the uniform map scores {ub:.3f} (a flat map reaches its "
            "maximum in every box). These rules are the seed's; the equal-area hits above are the ones that can fail."
        ),
        "",
    ]


def mechanism_text(mech: dict[str, np.ndarray], n_resamples: int) -> tuple[list[str], dict]:
    """The deletion test of the seed's mechanism, its verdicts and the generated conclusion."""
    pairs = [("vessel", "background", True), ("lesion", "background", True), ("lesion", "vessel", False)]
    comps = {
        (a, b): V.compare(
            f"{a} pixels",
            f"{b} pixels",
            mech[a],
            mech[b],
            True,
            metric="|Δ lesion score|",
            control=ctrl,
            n_resamples=n_resamples,
        )
        for a, b, ctrl in pairs
    }
    zero = np.zeros_like(mech["signed_vessel"])
    comps[("signed vessel", "0")] = V.compare(
        "signed change, vessel deleted",
        "0",
        mech["signed_vessel"],
        zero,
        True,
        metric="Δ lesion score",
        n_resamples=n_resamples,
    )
    V.adjust(list(comps.values()))
    k = mech["k"]
    lines = [
        (
            f"## 5. Mechanism: deleting {int(np.median(k))} (median; range {int(k.min())}-{int(k.max())}) lesion, vessel "
            "or background pixels"
        ),
        "",
        "| pixels deleted | mean abs change of the lesion score (logit margin) | mean signed change |",
        "|---|---|---|",
    ]
    for name in ("lesion", "vessel", "background"):
        lines.append(
            f"| {name} | {ci_or_range(mech[name], n_resamples=n_resamples).format()} | "
            f"{ci_or_range(mech['signed_' + name], n_resamples=n_resamples).format()} |"
        )
    lines += [
        "",
        "| comparison (abs change unless signed; higher = the model uses those pixels more) | verdict |",
        "|---|---|",
    ]
    lines += [f"| {c.method} vs {c.reference} | {V.verdict(c)}; {effect_text(c)} |" for c in comps.values()]
    word = {"better": "more than", "worse": "less than", "tie": "no differently (shown) from"}
    vb, lv = V.outcome(comps[("vessel", "background")]), V.outcome(comps[("lesion", "vessel")])
    rise = {
        "better": "raises the lesion score (a deleted piece of vessel can look like an occlusion, i.e. a new lesion, "
        "so part of the vessel effect may be that rather than context)",
        "worse": "lowers the lesion score",
        "tie": "leaves the lesion score's sign unchanged on average (no shift shown)",
    }[V.outcome(comps[("signed vessel", "0")])]
    claim = {
        "better": "supported: the model uses vessel pixels away from the lesion",
        "worse": "contradicted: vessel pixels away from the lesion matter less than background",
        "tie": "not shown: vessel pixels away from the lesion matter no more than background",
    }[vb]
    lines += [
        "",
        (
            f"Deleting vessel away from the lesions changes the lesion score {word[vb]} deleting as much background, and "
            f"deleting the lesion's own vessel pixels changes it {word[lv]} deleting as much vessel elsewhere. The seed's "
            f"claim that the model uses the whole vessel is {claim}. Deleting vessel {rise}."
        ),
        "",
        V.table_note(list(comps.values()), MECHANISM_FAMILY),
        "",
    ]
    return lines, comps


def timing_lines(times: dict[str, np.ndarray], forward: np.ndarray, n_resamples: int) -> list[str]:
    lines = [
        "## 4. Time per cine (each cine explained alone; descriptive, untested)",
        "",
        "| method | ms per cine | ratio to that cine's forward pass |",
        "|---|---|---|",
    ]
    lines.append(f"| forward pass | {ci_or_range(1e3 * forward, n_resamples=n_resamples).format()} | 1 |")
    for name, t in times.items():
        lines.append(
            f"| {name} | {ci_or_range(1e3 * t, n_resamples=n_resamples).format()} | "
            f"{ci_or_range(t / forward, n_resamples=n_resamples).format()} |"
        )
    return [*lines, ""]


def _comp_json(comps: dict) -> list[dict[str, Any]]:
    return [
        {
            "key": list(k),
            "method": c.method,
            "reference": c.reference,
            "test": c.test,
            "n": c.n,
            "p": c.pvalue,
            "p_holm": c.p_holm,
            "verdict": V.verdict(c),
            "effect": c.effect.estimate,
            "effect_interval": [c.effect.interval.low, c.effect.interval.high, c.effect.interval.kind],
        }
        for k, c in comps.items()
    ]


def save_figure(data: AngiogramBatch, maps: dict[str, torch.Tensor], idx: list[int], path: Path) -> None:
    """Rows = cases; columns = late frame, vessel mask with lesion boxes, each map (methods and controls)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patches

    from monai_saliency.data.atomic import atomic_output

    cols = 2 + len(maps)
    fig, axes = plt.subplots(len(idx), cols, figsize=(2.0 * cols, 2.2 * len(idx)), squeeze=False)
    t_show = data.cine.shape[1] * 3 // 4
    for r, i in enumerate(idx):
        frame = data.cine[i, t_show].numpy()
        axes[r, 0].imshow(frame, cmap="gray", vmin=0, vmax=1)
        axes[r, 1].imshow(data.vessel_mask[i].numpy(), cmap="gray")
        case = data.case(i)
        for les in case["lesions"]:
            y0, x0, y1, x1 = les["box"]
            color = {"mild": "yellow", "moderate": "orange", "severe": "red"}[les["grade"]]
            axes[r, 1].add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=color))
        for c, (name, m) in enumerate(maps.items()):
            axes[r, 2 + c].imshow(frame, cmap="gray", vmin=0, vmax=1)
            axes[r, 2 + c].imshow(m[i, 0, t_show].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if r == 0:
                short = name.replace("SignatureActivation", "SigAct").replace("control: ", "ctrl: ")
                axes[r, 2 + c].set_title(short.replace(", ", "\n"), fontsize=7)
        if r == 0:
            axes[r, 0].set_title(f"frame {t_show}", fontsize=7)
            axes[r, 1].set_title("vessel + lesions", fontsize=7)
        axes[r, 0].set_ylabel(", ".join(les["grade"] for les in case["lesions"]) or "no lesion", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _subset(a: AngiogramBatch, idx: list[int]) -> dict[str, torch.Tensor]:
    keys = ("cine", "vessel_mask", "labels", "grades", "stenosis", "boxes", "centers", "reference_radius", "segment")
    return {k: getattr(a, k)[idx] for k in keys}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--n", type=int, default=64, help="held-out cines")
    p.add_argument("--n-pair", type=int, default=32, help="mild+moderate cines")
    p.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    p.add_argument("--draws", type=int, default=4, help="seeded draws of the vessel/background deletion sets")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output-dir", default=None, help=OUTPUT_DIR_HELP)
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.n_pair, a.steps, a.draws, a.resamples = 8, 4, 3, 1, 200
    torch.set_num_threads(a.threads)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    out = output_dir("angiogram_study", a.output_dir, a.quick)
    model, source = load_model(a.quick)
    data = make_angiogram_dataset(a.n, seed=777)
    if data.labels.min() == data.labels.max():
        raise SystemExit("the held-out set needs both classes; increase --n.")
    pair = make_angiogram_dataset(a.n_pair, seed=778, grades=("mild", "moderate"))
    halves = M.split_halves(a.n)
    maps, pair_maps = {}, {}
    exs = M.explainers(model)
    for name, ex in exs.items():
        maps[name], pair_maps[name] = M._plain(ex(data.cine[:, None])), M._plain(ex(pair.cine[:, None]))

    def fwd(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    M.per_cine_seconds({"forward": fwd, **exs}, data.cine[:1])  # warm-up, not reported
    times = M.per_cine_seconds({"forward": fwd, **exs}, data.cine)
    forward = times.pop("forward")
    rand_exs = M.explainers(M.random_model())  # every method on the same randomised model
    maps.update(M.control_maps(data.cine, rand_exs))
    pair_maps.update(M.control_maps(pair.cine, rand_exs))
    results: dict[str, dict[str, np.ndarray]] = {}
    info: dict[str, dict[str, Any]] = {}
    blurred = M.gaussian_blur_nd(data.cine[:, None], 5.0)  # insertion's start, shared by every map
    predicted = fwd(data.cine[:, None]).argmax(1)  # the explained class of the faithfulness curves, once
    for name, mp in maps.items():
        results[name], info[name] = M.localisation(mp, data, pair_maps[name], pair, halves)
        rules, info_rules = M.seed_rules(mp, data, pair_maps[name], pair)
        results[name].update(rules)
        info[name].update(info_rules)
        results[name].update(M.faithfulness(model, data.cine, mp, a.steps, blurred, predicted))
        print(f"{name}: done", flush=True)
    mech = M.deletion_mechanism(model, [data, pair], a.draws)
    pos = int(data.labels.sum())
    lines = [
        "# Angiogram study: Signature Activation vs CAMs, with controls (seed 001 §5-§7)",
        "",
        (
            f"{a.n} held-out cines (seed 777, {pos} positive), {a.n_pair} mild+moderate cines (seed 778); model "
            f"{source}; layer {M.LAYER}. Controls: a uniform map, `1 - intensity` (no model), and every method on "
            f"one re-initialised model (seed {M.RANDOM_MODEL_SEED}; rows 'control: <method>, random model'; each method "
            "is compared with its own). Cells: mean [95 % bootstrap CI] from >= 20 units, "
            "else mean (range). Verdict cells: the method against the column's map, Holm-adjusted within the table, "
            "with the paired effect (method - column) and its CI or range."
        ),
        "",
    ]
    thr = ", ".join(f"{k.removeprefix('control: ')} {v['box_threshold']:g}" for k, v in info.items())
    every = f"every method vs the uniform map, 1 - intensity, itself on the random model and vs {REFERENCE}"
    intervals = {
        name: {k: ci_or_range(v, n_resamples=a.resamples) for k, v in res.items()} for name, res in results.items()
    }
    families: list[tuple[str, str, dict]] = []  # (table, Holm family, comparisons) for verdicts.json
    for table, title, metrics, fam in (
        ("localisation: vessel", "1a. Vessel localisation (held-out cines)", VESSEL, "the vessel metrics"),
        (
            "localisation: lesion",
            "1b. Lesion localisation (positive held-out cines, moderate/severe lesion boxes)",
            LESION,
            "the lesion metrics",
        ),
        (
            "localisation: mild+moderate",
            "1c. Mild and moderate lesion of the mild+moderate cines, reported separately",
            MILD,
            "the mild+moderate set",
        ),
        ("faithfulness", "2. Faithfulness", FAITHFULNESS, "deletion and insertion"),
        ("seed_rules", "3. The seed's rules", SEED_RULES, "the seed's rules"),
    ):
        sec, comps = section(title, results, metrics, f"{every}, {fam}", a.resamples, intervals)
        families.append((table, f"{every}, {fam}", comps))
        lines += sec
        if metrics is VESSEL:
            lines += [
                (
                    f"Vessel-tree box thresholds (x map maximum) chosen on the calibration half "
                    f"({len(halves[0])} cines), hits counted on the test half ({len(halves[1])}): {thr}."
                ),
                "",
            ]
        if metrics is SEED_RULES:
            lines += seed_rules_text(info, results)
    mech_lines, c5 = mechanism_text(mech, a.resamples)
    families.append(("mechanism", MECHANISM_FAMILY, c5))
    lines += timing_lines(times, forward, a.resamples) + mech_lines
    elapsed, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    lines.append(
        f"Run time {elapsed:.0f} s wall, {cpu:.0f} s CPU ({torch.get_num_threads()} thread(s); the figures not "
        "included; wall > CPU means a loaded machine)."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "table.md").write_text(text)
    records = [V.to_record(c, table, fam) for table, fam, comps in families for c in comps.values()]
    V.write_verdicts(out, records, experiment="angiogram_study")
    c1 = {k: c for _, _, comps in families[:3] for k, c in comps.items()}
    c2, c3 = families[3][2], families[4][2]
    stats = {name: {k: v.__dict__ for k, v in res.items()} for name, res in intervals.items()}
    payload = {
        "stats": stats,
        "info": info,
        "comparisons": {
            "localisation": _comp_json(c1),
            "faithfulness": _comp_json(c2),
            "seed_rules": _comp_json(c3),
            "mechanism": _comp_json(c5),
        },
        "mechanism": {k: v.tolist() for k, v in mech.items()},
        "seconds_per_cine": {k: v.tolist() for k, v in times.items()},
        "forward_seconds": forward.tolist(),
        "run_seconds": elapsed,
        "cpu_seconds": cpu,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    pos_i, neg_i = int((data.labels == 1).nonzero()[0]), int((data.labels == 0).nonzero()[0])
    fig_data = AngiogramBatch(
        **{
            k: torch.cat([v1, v2])
            for (k, v1), v2 in zip(_subset(pair, [0]).items(), _subset(data, [pos_i, neg_i]).values())
        },
        frame_time_ms=data.frame_time_ms,
        seed=-1,
    )
    shown = [k for k in maps if k == M.RANDOM or k not in M.CONTROLS[len(M.MODEL_FREE) :]]  # one random-model map
    fig_maps = {k: torch.cat([pair_maps[k][:1], maps[k][[pos_i, neg_i]]]) for k in shown}
    save_figure(fig_data, fig_maps, [0, 1, 2], out / "figure.png")
    if not a.quick:  # the cine GIF and strip only in a full run (matplotlib costs seconds)
        save_cine_gif(
            pair.cine[0], pair_maps[REFERENCE][0, 0], out / "cine.gif", frame_time_ms=pair.frame_time_ms, scale=4
        )
        cine_strip_png(
            pair.cine[0],
            pair_maps[REFERENCE][0, 0],
            out / "cine_strip.png",
            frames=6,
            frame_time_ms=pair.frame_time_ms,
            title=f"{REFERENCE}, mild + moderate case",
        )
    print(f"wrote {out}/table.md, results.json, figure.png" + ("" if a.quick else ", cine.gif, cine_strip.png"))
    return {"stats": stats, "out": str(out), "comparisons": {"localisation": c1, "mechanism": c5}}


if __name__ == "__main__":
    main()
