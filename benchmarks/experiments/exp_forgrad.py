"""FORGrad table (seed 003 style): white-box methods with and without the Fourier low-pass, 2D and 3D.

For each input-space method (gradient, SmoothGrad, Integrated Gradients) on a small CNN trained here on the blob
task, ``sigma*`` is calibrated on a held-out split (maximising insertion AUC - deletion AUC of
:mod:`monai_saliency.metrics.perturbation`) and the raw and filtered maps are compared on another split:
deletion AUC (lower better), insertion AUC (higher better), mu-fidelity (higher better), stability (lower
better), high-frequency power ratio, mask energy inside the true blob (higher better) and time. Paired two-sided
Wilcoxon tests per image (FORGrad vs raw), Holm-adjusted within each table; the verdicts and the notes under each
table are generated from them (``_verdicts``). Maps are ``sum_c |.|`` of the attribution (after the
low-pass for FORGrad).

Usage::

    python -m benchmarks.experiments.exp_forgrad [--config configs/forgrad.yaml] [--quick] [--output-dir DIR]

Writes ``table.md`` and ``figure.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from benchmarks.experiments import _verdicts as V
from benchmarks.experiments._blobcnn import train_blob_cnn
from benchmarks.experiments._output import OUTPUT_DIR_HELP, ROOT, output_dir
from monai_saliency.data.synthetic.blobs import make_blob_dataset
from monai_saliency.methods.forgrad import FORGrad, default_sigmas
from monai_saliency.methods.gradients import IntegratedGradients, SmoothGrad, VanillaGrad
from monai_saliency.metrics.localization import mask_energy
from monai_saliency.metrics.perturbation import deletion_curve, insertion_curve, mu_fidelity, stability
from monai_saliency.metrics.spectrum import high_frequency_power_ratio
from monai_saliency.metrics.stats import ci_or_range
from monai_saliency.ops.normalize import reduce_channels

METRICS = [  # key, column title, direction (+1 higher is better, -1 lower is better, 0 descriptor)
    ("deletion", "Deletion AUC (lower better)", -1),
    ("insertion", "Insertion AUC (higher better)", 1),
    ("mu_fidelity", "mu-fidelity (higher better)", 1),
    ("stability", "Stability (lower better)", -1),
    ("hf_ratio", "HF power ratio", 0),
    ("mask_energy", "Mask energy (higher better)", 1),
]


def base_explainers(model, cfg):
    return {
        "Gradient": VanillaGrad(model),
        "SmoothGrad": SmoothGrad(model, batch_size=64, generator=torch.Generator().manual_seed(0), **cfg["smoothgrad"]),
        "Integrated Gradients": IntegratedGradients(model, batch_size=64, **cfg["ig"]),
    }


def faithfulness(model, x, sal, idx, cfg, steps):
    p = cfg["perturbation"]
    kw = {"class_idx": idx, "steps": steps, "score": p["score"], "batch_size": 128}
    d = deletion_curve(model, x, sal, baseline=p["baseline"], **kw).auc
    blur = p["blur_sigma_fraction"] * max(x.shape[2:])
    i = insertion_curve(model, x, sal, blur_sigma=blur, **kw).auc
    return d, i


def evaluate_dims(dims: str, cfg: dict, model_cache: Path | None) -> tuple[dict, dict, dict]:
    mcfg = cfg["models"][dims]
    model, info = train_blob_cnn(**mcfg, cache_dir=model_cache)
    shape = (mcfg["size"],) * mcfg["spatial_dims"]

    def positives(split):
        xs, ys, ms = make_blob_dataset(4 * cfg[split]["images"], shape, seed=cfg[split]["data_seed"])
        keep = ys == 1
        return xs[keep][: cfg[split]["images"]], ms[keep][: cfg[split]["images"]]

    x_cal, _ = positives("calibration")
    x_ev, m_ev = positives("evaluation")
    idx_cal = torch.ones(x_cal.shape[0], dtype=torch.long)
    idx = torch.ones(x_ev.shape[0], dtype=torch.long)
    sigmas = cfg["sigmas"] or default_sigmas(shape)

    def calib_metric(model_, x_, sal_, idx_):
        d, i = faithfulness(model_, x_, sal_, idx_, cfg, cfg["perturbation"]["calibration_steps"])
        return i - d

    rows, sig_star, calib = {}, {}, {}
    for name, base in base_explainers(model, cfg).items():
        fg = FORGrad(base, reduce="abs_sum")
        cal = fg.calibrate((x_cal, idx_cal), sigmas=sigmas, metric=calib_metric)
        sig_star[name], calib[name] = cal.best_sigma, cal
        t0 = time.perf_counter()
        raw_full = base(x_ev, idx).detach()
        t_base = (time.perf_counter() - t0) / x_ev.shape[0]
        t0 = time.perf_counter()
        filtered = fg.filter(raw_full)
        t_filter = (time.perf_counter() - t0) / x_ev.shape[0]
        variants = {
            "raw": (
                reduce_channels(raw_full, "abs_sum"),
                lambda xx, c, base=base: reduce_channels(base(xx, c), "abs_sum"),
                t_base,
            ),
            f"FORGrad (sigma*={cal.best_sigma:g})": (filtered, lambda xx, c, fg=fg: fg(xx, c), t_base + t_filter),
        }
        for variant, (sal, fn, t) in variants.items():
            d, i = faithfulness(model, x_ev, sal, idx, cfg, cfg["perturbation"]["steps"])
            mf = cfg["mu_fidelity"]
            st = cfg["stability"]
            rows[(name, variant)] = {
                "deletion": d.numpy(),
                "insertion": i.numpy(),
                "mu_fidelity": mu_fidelity(model, x_ev, sal, class_idx=idx, batch_size=128, **mf).numpy(),
                "stability": stability(fn, x_ev, class_idx=idx, batch_size=64, **st).numpy(),
                "hf_ratio": high_frequency_power_ratio(sal, cutoff=cfg["hf_cutoff"]).numpy(),
                "mask_energy": mask_energy(sal, m_ev).numpy(),
                "ms": 1e3 * t,
            }
    return rows, sig_star, {"info": info, "calibration": calib, "n_eval": x_ev.shape[0]}


def write(results: dict, cfg: dict, out: Path) -> str:
    nb = int(cfg["bootstrap_resamples"])
    lines = [
        "# FORGrad: white-box attributions with and without the Fourier low-pass (seed 003 style)",
        "",
        (
            "Small CNNs trained here on the blob task; sigma* (frequency bins) chosen on a calibration split by "
            "insertion - deletion AUC, all numbers on a separate evaluation split (positive images, class 1); "
            "mean [95 % bootstrap CI over images] (the range instead below 20 images). Verdict of FORGrad vs raw: "
            "two-sided paired Wilcoxon per image, Holm-adjusted within each table (descriptor columns untested). "
            "Config: `configs/forgrad.yaml`."
        ),
        "",
    ]
    for dims, (rows, sig_star, extra) in results.items():
        info = extra["info"]
        lines += [
            f"## {dims.upper()} (model test accuracy {info['test_accuracy']:.3f}, {extra['n_eval']} images)",
            "",
            "| Method | Variant | " + " | ".join(t for _, t, _ in METRICS) + " | ms / image |",
            "|---|---|" + "---|" * (len(METRICS) + 1),
        ]
        comps = {}
        for (name, variant), rec in rows.items():
            if variant != "raw":
                for key, title, direction in METRICS:
                    if direction != 0:
                        comps[(name, key)] = V.compare(
                            f"{name} FORGrad",
                            f"{name} raw",
                            rec[key],
                            rows[(name, "raw")][key],
                            higher_is_better=direction > 0,
                            metric=title.split(" (")[0],
                            n_resamples=nb,
                        )
        V.adjust(list(comps.values()))
        for (name, variant), rec in rows.items():
            cells = []
            for key, _, direction in METRICS:
                cell = ci_or_range(rec[key], n_resamples=nb).format()
                if (name, key) in comps and variant != "raw":
                    cell += f"; {V.verdict(comps[(name, key)])}"
                cells.append(cell)
            lines.append(f"| {name} | {variant} | " + " | ".join(cells) + f" | {rec['ms']:.2f} |")
        lines += [
            "",
            V.table_note(
                list(comps.values()), family=f"FORGrad vs raw, every method and tested metric, {dims.upper()}"
            ),
        ]
        size = cfg["models"][dims]["size"]
        stab = []
        for name in sig_star:
            fg_key = next(k for k in rows if k[0] == name and k[1] != "raw")
            raw_s, fg_s = float(rows[(name, "raw")]["stability"].mean()), float(rows[fg_key]["stability"].mean())
            stab.append(f"{name} {raw_s / max(fg_s, 1e-300):.2g}x")
        lines += [
            "",
            "sigma* per method: "
            + ", ".join(f"{n} {s:g}" for n, s in sig_star.items())
            + f" (image size {size}, no filtering at the largest sigma)"
            + ". Mean stability raw / FORGrad (> 1: FORGrad more stable; tested above): "
            + ", ".join(stab)
            + ".",
        ]
        lines += ["", "Calibration curves (mean insertion - deletion AUC per sigma):", ""]
        for name, cal in extra["calibration"].items():
            lines.append(f"- {name}: " + ", ".join(f"{s:g}: {v:.3f}" for s, v in zip(cal.sigmas, cal.scores)))
        lines.append("")
    lines += [
        "## Notes",
        "",
        (
            "- Seed 003 reports FORGrad improving the faithfulness of white-box methods on ImageNet models; here the "
            "models are tiny CNNs on a synthetic blob task, so effect sizes are not comparable. Which differences this run "
            "shows, and in which direction, is in the note under each table, generated from its tests. Stability and the "
            "high-frequency ratio improve under any strong low-pass, so they are not evidence of faithfulness."
        ),
        (
            "- Saturation: the 2D model is confident (p = 1.00 on every positive image), so deletion and insertion "
            "curves sit at their floor / ceiling for every gradient method and the AUC differences there are tiny. "
            "The insertion start is a strong blur (sigma = 0.25 x size); a blur as small as the blob leaves it "
            "detectable and the curve flat."
        ),
        (
            "- The 3D model classifies well (accuracy above) but with small margins (p about 0.55-0.65 on positives, "
            "0.41 on an all-zero volume), which compresses every perturbation AUC."
        ),
        "- A tie (sigma* = image size, no filtering) gives identical maps: p = 1 by our Wilcoxon convention.",
        "- Time per image is the explainer only; FORGrad adds one FFT pair to the base method.",
        "",
    ]
    text = "\n".join(lines)
    (out / "table.md").write_text(text)
    return text


def write_figure(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (dims, (_, _, extra)) in zip(axes[0], results.items()):
        for name, cal in extra["calibration"].items():
            ax.plot(cal.sigmas, cal.scores, "o-", label=f"{name} (sigma*={cal.best_sigma:g})")
        ax.set_xscale("log")
        ax.set_xlabel("low-pass radius sigma (frequency bins; max = no filtering)")
        ax.set_ylabel("insertion - deletion AUC (calibration split)")
        ax.set_title(f"FORGrad calibration, {dims.upper()}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "figure.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "forgrad.yaml"))
    parser.add_argument("--output-dir", default=None, help=OUTPUT_DIR_HELP)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    out = output_dir("forgrad", args.output_dir, args.quick)
    if args.quick:
        cfg["models"] = {k: dict(v, n_train=32, epochs=1) for k, v in cfg["models"].items()}
        cfg["calibration"]["images"], cfg["evaluation"]["images"] = 2, 4
        cfg.update(smoothgrad={"n_samples": 2, "stdev_spread": 0.15}, ig={"n_steps": 4}, bootstrap_resamples=999)
        cfg["perturbation"].update(steps=4, calibration_steps=4)
        cfg["mu_fidelity"]["n_subsets"] = 8
        cfg["stability"]["n_samples"] = 2
    t0 = time.perf_counter()
    results = {dims: evaluate_dims(dims, cfg, (out / "models") if args.quick else None) for dims in cfg["models"]}
    print(write(results, cfg, out))
    write_figure(results, out)
    print(f"wrote {out / 'table.md'} and {out / 'figure.png'} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
