"""Seed 001 §5-§7 on synthetic angiogram cines: Signature Activation vs Grad-CAM, Grad-CAM++ and Eigen-CAM.

The classifier is the bundle's :class:`~monai_saliency.models.video.VideoLesionNet` (weights from
``bundles/angiogram_signature_activation/models/model.pt``; trained by ``monai_saliency.models.train_video`` on
generator seeds 0-2). The study uses fresh held-out cines (seed 777) plus a set where every case holds a mild
and a moderate lesion in different branches (seed 778, the paper's §5 scenario). All maps come from the layer
``features.stage3`` (time axis kept, ``T/4``), are ``(B, 1, T, H, W)`` and min-max normalised per cine.

Metrics (per cine; 2D metrics use the map averaged over the opacified second half of the frames):

* vessel mask energy (fraction of map mass on the vessel lumen; higher = the map "looks at the whole vessel")
* vessel IoU (map's top-|vessel| pixels vs the vessel mask; higher)
* lesion pointing game on positive cases (map maximum inside a moderate/severe lesion box; higher)
* recall of *both* lesions in mild+moderate cases (each lesion box reaches >= 0.5 of the map's maximum; higher),
  and recall of the mild lesion alone
* WSOL box error rate (seed 001 §7.1 threshold sweep, boxes of all lesions; lower)
* deletion AUC (lower) and insertion AUC (higher) on the full cine, class = the model's prediction
* time per cine, and its ratio to one forward pass

Every metric gets a bootstrap 95 % CI; each method is compared with Signature Activation ("spatial") by a paired
two-sided Wilcoxon test. Outputs: ``table.md``, ``results.json``, ``figure.png`` (frame, vessel mask + lesion
boxes, one map per method: like the paper's Fig. 3/4), ``cine.gif`` (a cine with its Signature Activation map,
:func:`monai_saliency.visualize.cine.save_cine_gif`) and ``cine_strip.png`` (six of its frames with their maps).

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

from benchmarks.experiments._output import OUTPUT_DIR_HELP, ROOT, output_dir
from monai_saliency.data.synthetic.angiogram import AngiogramBatch, make_angiogram_dataset
from monai_saliency.methods import SignatureActivation
from monai_saliency.methods.cam import EigenCAM, GradCAM, GradCAMpp
from monai_saliency.metrics.localization import mask_energy, pointing_game, wsol_box_error
from monai_saliency.metrics.perturbation import deletion_curve, insertion_curve
from monai_saliency.metrics.stats import bootstrap_ci, paired_wilcoxon
from monai_saliency.models.training import QUICK, train_video_classifier
from monai_saliency.models.video import VideoLesionNet
from monai_saliency.visualize.cine import cine_strip_png, save_cine_gif

WEIGHTS = ROOT / "bundles" / "angiogram_signature_activation" / "models" / "model.pt"
LAYER = VideoLesionNet.cam_layer
REFERENCE = "SignatureActivation-spatial"

# metric name -> (higher is better, description)
METRICS: dict[str, tuple[bool, str]] = {
    "vessel_energy": (True, "vessel mask energy"),
    "vessel_iou": (True, "vessel IoU (top-k, k = vessel area)"),
    "pointing": (True, "lesion pointing game (positives)"),
    "both_recall": (True, "both lesions recalled (mild+moderate)"),
    "mild_recall": (True, "mild lesion recalled (mild+moderate)"),
    "wsol_error": (False, "WSOL box error (per lesion)"),
    "deletion_auc": (False, "deletion AUC"),
    "insertion_auc": (True, "insertion AUC"),
    "seconds": (False, "seconds per cine (batch time / n)"),
}


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


def explainers(model: torch.nn.Module) -> dict[str, Any]:
    return {
        "SignatureActivation-spatial": SignatureActivation(model, LAYER, dct_axes="spatial"),
        "SignatureActivation-frames": SignatureActivation(model, LAYER, dct_axes="frames"),
        "GradCAM": GradCAM(model, LAYER),
        "GradCAM++": GradCAMpp(model, LAYER),
        "EigenCAM": EigenCAM(model, LAYER),
    }


def _plain(t: torch.Tensor) -> torch.Tensor:
    return (t.as_tensor() if hasattr(t, "as_tensor") else t).detach()


def late_mean(maps: torch.Tensor) -> torch.Tensor:
    """``(B, 1, T, H, W)`` -> ``(B, 1, H, W)``: mean over the opacified second half of the frames."""
    t = maps.shape[2]
    return maps[:, :, t // 2 :].mean(2)


def vessel_iou(map2d: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """IoU between each map's top-``|mask|`` pixels and the mask (ties broken by sort order)."""
    b = map2d.shape[0]
    flat = map2d.reshape(b, -1)
    m = masks.reshape(b, -1)
    k = m.sum(1)
    order = flat.argsort(1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1]).expand(b, -1))
    top = rank < k[:, None]
    return (top & m).sum(1).double() / (top | m).sum(1).double()


def run_method(
    name: str, explainer: Any, model: torch.nn.Module, data: AngiogramBatch, pair: AngiogramBatch, steps: int
) -> tuple[dict[str, np.ndarray], torch.Tensor, torch.Tensor]:
    """All metrics of one method; returns per-cine values and the maps of ``data`` and of ``pair``."""
    x = data.cine[:, None]
    t0 = time.perf_counter()
    maps = _plain(explainer(x))
    seconds = (time.perf_counter() - t0) / len(data)
    maps_pair = _plain(explainer(pair.cine[:, None]))
    m2 = late_mean(maps)
    out: dict[str, np.ndarray] = {"seconds": np.full(len(data), seconds)}
    out["vessel_energy"] = mask_energy(m2, data.vessel_mask).numpy()
    out["vessel_iou"] = vessel_iou(m2[:, 0], data.vessel_mask).numpy()
    lesion_masks = data.lesion_masks()
    pos = data.labels == 1
    target = (lesion_masks & (data.grades >= 1).view(*data.grades.shape, 1, 1)).any(1)
    out["pointing"] = pointing_game(m2[pos], target[pos]).float().numpy()
    has = (data.grades >= 0).any(1)
    gt = [data.boxes[i][data.grades[i] >= 0].numpy() for i in has.nonzero().flatten().tolist()]
    wsol = wsol_box_error(m2[has], gt)
    out["wsol_error"] = wsol.errors / wsol.n_boxes
    # both lesions of the mild+moderate cases: box maximum >= half the (late-mean) map's maximum
    p2 = late_mean(maps_pair)[:, 0]
    p2 = p2 / p2.amax((1, 2), keepdim=True).clamp(min=1e-12)
    box_max = (p2[:, None] * pair.lesion_masks()).amax((2, 3))  # (N, 2): slot 0 mild, slot 1 moderate
    recalled = box_max >= 0.5
    out["both_recall"] = recalled.all(1).float().numpy()
    out["mild_recall"] = recalled[:, 0].float().numpy()
    baseline = x.mean((2, 3, 4), keepdim=True).expand_as(x)  # delete to the cine's mean grey, not black
    out["deletion_auc"] = deletion_curve(model, x, maps, steps=steps, baseline=baseline, batch_size=32).auc.numpy()
    out["insertion_auc"] = insertion_curve(model, x, maps, steps=steps, batch_size=32).auc.numpy()
    return out, maps, maps_pair


def summarize(results: dict[str, dict[str, np.ndarray]], n_resamples: int) -> tuple[str, dict[str, Any]]:
    """Markdown table with bootstrap CIs, Wilcoxon tests against the reference and a plain verdict per metric."""
    methods = list(results)
    stats: dict[str, Any] = {}
    lines = ["| metric | " + " | ".join(methods) + " | best |", "|---" * (len(methods) + 2) + "|"]
    verdicts = []
    for key, (higher, desc) in METRICS.items():
        row, means = [], {}
        for mth in methods:
            v = results[mth][key]
            ci = bootstrap_ci(v, n_resamples=n_resamples) if v.size >= 2 else None
            means[mth] = float(v.mean())
            stats.setdefault(mth, {})[key] = {
                "mean": float(v.mean()),
                "ci": None if ci is None else [ci.low, ci.high],
                "n": int(v.size),
            }
            row.append(f"{v.mean():.3f}" + ("" if ci is None else f" [{ci.low:.3f}, {ci.high:.3f}]"))
        top = max(means.values()) if higher else min(means.values())
        winners = [m for m in methods if abs(means[m] - top) <= 1e-12]
        best = (
            winners[0]
            if len(winners) == 1
            else ("tie (all)" if len(winners) == len(methods) else "tie: " + ", ".join(winners))
        )
        lines.append(f"| {desc} ({'↑' if higher else '↓'}) | " + " | ".join(row) + f" | {best} |")
        if key == "seconds":
            continue
        for mth in methods:
            if mth == REFERENCE or results[mth][key].size < 2:
                continue
            w = paired_wilcoxon(results[REFERENCE][key], results[mth][key], alternative="two-sided")
            stats[mth][key]["wilcoxon_vs_reference_p"] = w.pvalue
            ref_better = (means[REFERENCE] > means[mth]) == higher and means[REFERENCE] != means[mth]
            if w.pvalue < 0.05:
                who = REFERENCE if ref_better else mth
                loser = mth if who == REFERENCE else REFERENCE
                verdicts.append(f"- {desc}: {who} beats {loser} (Wilcoxon p={w.pvalue:.2g})")
            else:
                verdicts.append(f"- {desc}: {REFERENCE} vs {mth}: no significant difference (p={w.pvalue:.2g})")
    text = "\n".join(lines) + "\n\nPaired two-sided Wilcoxon tests against " + REFERENCE + ":\n" + "\n".join(verdicts)
    return text, stats


def save_figure(data: AngiogramBatch, maps: dict[str, torch.Tensor], idx: list[int], path: Path) -> None:
    """Rows = cases; columns = late frame, vessel mask with lesion boxes, each method's map over the frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patches

    cols = 2 + len(maps)
    fig, axes = plt.subplots(len(idx), cols, figsize=(2.2 * cols, 2.3 * len(idx)), squeeze=False)
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
                axes[r, 2 + c].set_title(name.replace("SignatureActivation", "SigAct"), fontsize=8)
        if r == 0:
            axes[r, 0].set_title(f"frame {t_show}", fontsize=8)
            axes[r, 1].set_title("vessel + lesions", fontsize=8)
        grades = ", ".join(les["grade"] for les in case["lesions"]) or "no lesion"
        axes[r, 0].set_ylabel(grades, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    from monai_saliency.data.atomic import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--n", type=int, default=64, help="held-out cines")
    p.add_argument("--n-pair", type=int, default=32, help="mild+moderate cines")
    p.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output-dir", default=None, help=OUTPUT_DIR_HELP)
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.n_pair, a.steps, a.resamples = 8, 4, 4, 200
    torch.set_num_threads(a.threads)
    out = output_dir("angiogram_study", a.output_dir, a.quick)
    model, source = load_model(a.quick)
    data = make_angiogram_dataset(a.n, seed=777)
    if data.labels.min() == data.labels.max():
        raise SystemExit("the held-out set needs both classes; increase --n.")
    pair = make_angiogram_dataset(a.n_pair, seed=778, grades=("mild", "moderate"))
    with torch.no_grad():
        t0 = time.perf_counter()
        model(data.cine[:, None])
        forward_s = (time.perf_counter() - t0) / len(data)
    results, all_maps, pair_maps = {}, {}, {}
    for name, ex in explainers(model).items():  # five methods
        results[name], all_maps[name], pair_maps[name] = run_method(name, ex, model, data, pair, a.steps)
        print(f"{name}: done", flush=True)
    table, stats = summarize(results, a.resamples)
    ratio = "\n".join(f"- {k}: {results[k]['seconds'][0] / forward_s:.2f} x one forward pass" for k in results)
    header = (
        f"Angiogram study: {a.n} held-out cines (seed 777, {int(data.labels.sum())} positive), "
        f"{a.n_pair} mild+moderate cines (seed 778); model {source}; layer {LAYER}.\n"
        "Means with bootstrap 95 % CIs.\n\n"
    )
    text = header + table + "\n\nTime relative to one forward pass (" + f"{forward_s * 1e3:.1f} ms per cine):\n" + ratio
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"stats": stats, "forward_seconds": forward_s}, indent=1))
    # figure rows: a mild+moderate case, a positive and a negative held-out case
    pos, neg = int((data.labels == 1).nonzero()[0]), int((data.labels == 0).nonzero()[0])
    fig_data = AngiogramBatch(
        **{
            k: torch.cat([getattr(pair, k)[:1], getattr(data, k)[[pos, neg]]])
            for k in (
                "cine",
                "vessel_mask",
                "labels",
                "grades",
                "stenosis",
                "boxes",
                "centers",
                "reference_radius",
                "segment",
            )
        },
        frame_time_ms=data.frame_time_ms,
        seed=-1,
    )
    fig_maps = {k: torch.cat([pair_maps[k][:1], all_maps[k][[pos, neg]]]) for k in all_maps}
    save_figure(fig_data, fig_maps, [0, 1, 2], out / "figure.png")
    save_cine_gif(pair.cine[0], pair_maps[REFERENCE][0, 0], out / "cine.gif", frame_time_ms=pair.frame_time_ms, scale=4)
    cine_strip_png(
        pair.cine[0],
        pair_maps[REFERENCE][0, 0],
        out / "cine_strip.png",
        frames=6,
        frame_time_ms=pair.frame_time_ms,
        title=f"{REFERENCE}, mild + moderate case",
    )
    print(f"wrote {out}/table.md, results.json, figure.png, cine.gif, cine_strip.png")
    return {"stats": stats, "out": str(out)}


if __name__ == "__main__":
    main()
