"""Figures of :mod:`benchmarks.experiments.exp_morch` (seed 002): ``figure.png`` (Fig. 4 and the localisation
AUCs), ``fig4.png`` (NMSE and fit quality vs input size) and ``fig2.png`` (dE_c vs the 1st and 2nd order on three
slices)."""

from pathlib import Path

import numpy as np
import torch

from benchmarks.experiments._morch_report import CONTROLS, LABELS, _cond_label, nmse
from monai_saliency.metrics.stats import ci_or_range


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fig4(ax, fig4: dict, cfg: dict, annotate: bool = True) -> None:
    """NMSE vs I at equal fit quality (mean and bootstrap CI / range band over studies), the 1st order at the fixed
    ridge dashed, and the achieved E / var(y) written next to each 1st-order point."""
    strides = sorted(fig4["I"])
    i_vals = np.array([np.mean(fig4["I"][s]) for s in strides])
    styles = {
        "first": ("C0", "-"),
        "second_gauss_newton_diag": ("C1", ":"),
        "second_gauss_newton": ("C2", "--"),
        "second_exact": ("C3", "-."),
    }
    for key, vals in fig4["nmse"].items():
        cis = [ci_or_range(vals[s], n_resamples=int(cfg["bootstrap_resamples"])) for s in strides]
        est = np.array([c.estimate for c in cis])
        lo = np.maximum(np.array([c.low for c in cis]), 1e-300)
        hi = np.array([c.high for c in cis])
        color, ls = styles.get(key, ("k", "-"))
        ax.plot(i_vals, est, ls, color=color, marker="o", ms=3, label=LABELS[key])
        ax.fill_between(i_vals, lo, hi, color=color, alpha=0.2)
        if key == "first" and annotate:
            for x, yv, s in zip(i_vals, est, strides):
                ax.annotate(
                    f"E/var {np.mean(fig4['rel_cost'][s]):.3f}",
                    (x, yv),
                    fontsize=5,
                    xytext=(2, 3),
                    textcoords="offset points",
                    color=color,
                )
    fixed = np.array([np.mean(fig4["nmse_fixed"]["first"][s]) for s in strides])
    ax.plot(i_vals, fixed, "--", color="grey", marker="x", ms=3, label="1st order, fixed ridge (fit varies)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input size I (voxels)")
    ax.set_ylabel("normalised MSE vs dE_c")
    ax.set_title(
        f"Fig. 4: NMSE vs I at E/var(y) = {float(cfg['fig4']['target_rel_cost']):g} ({len(fig4['I'][strides[0]])} "
        "studies; band: range)",
        fontsize=8,
    )
    ax.legend(fontsize=6)


def plot_fit_quality(ax, fig4: dict) -> None:
    """E / var(y) vs I: tuned ridge (equal fit quality) and fixed ridge, per study."""
    strides = sorted(fig4["I"])
    i_vals = np.array([np.mean(fig4["I"][s]) for s in strides])
    for key, label, style in (("rel_cost", "tuned ridge", "o-"), ("rel_cost_fixed", "fixed ridge", "x--")):
        ax.plot(i_vals, [np.mean(fig4[key][s]) for s in strides], style, ms=3, label=label)
        for s, x in zip(strides, i_vals):
            ax.plot([x] * len(fig4[key][s]), fig4[key][s], ".", color="k", ms=1.5, alpha=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input size I (voxels)")
    ax.set_ylabel("training cost E / var(y)")
    ax.legend(fontsize=7)


def plot_auc(ax, per_p: dict, cfg: dict, title: str) -> None:
    paradigms = list(per_p)
    names = [n for n in ("exact", "first", "second_gauss_newton", *CONTROLS) if f"auc:{n}" in per_p[paradigms[0]]]
    width = 0.8 / len(names)
    for n_idx, name in enumerate(names):
        cis = [ci_or_range(per_p[p][f"auc:{name}"], n_resamples=int(cfg["bootstrap_resamples"])) for p in paradigms]
        est = np.array([c.estimate for c in cis])
        err = np.array([[c.estimate - c.low for c in cis], [c.high - c.estimate for c in cis]])
        ax.bar(
            np.arange(len(paradigms)) + (n_idx - (len(names) - 1) / 2) * width,
            est,
            width=width,
            yerr=err,
            capsize=2,
            label=LABELS[name],
        )
    ax.set_xticks(np.arange(len(paradigms)), paradigms)
    ax.set_ylim(0.0, 1.0)
    ax.axhline(0.5, color="k", lw=0.5)
    ax.set_ylabel("ROC AUC vs true region")
    ax.set_title(f"{title} ({len(per_p[paradigms[0]]['auc:exact'])} studies; bars: range)", fontsize=8)
    ax.legend(fontsize=5, loc="lower right")


def write_figures(loc: dict, fig4: dict, cfg: dict, out: Path) -> None:
    plt = _plt()
    conds = list(loc["per_run"])
    fig, axes = plt.subplots(1, 1 + len(conds), figsize=(6 * (1 + len(conds)), 4.2))
    plot_fig4(axes[0], fig4, cfg, annotate=False)
    for ax, c in zip(axes[1:], conds):
        plot_auc(ax, loc["per_run"][c], cfg, _cond_label(c))
    fig.tight_layout()
    fig.savefig(out / "figure.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(2, 1, figsize=(6.5, 7.5), height_ratios=[2, 1], sharex=True)
    plot_fig4(axes[0], fig4, cfg)
    plot_fit_quality(axes[1], fig4)
    fig.tight_layout()
    fig.savefig(out / "fig4.png", dpi=120)
    plt.close(fig)

    for c_idx, (cond, f2) in enumerate(loc["fig2"].items()):
        write_fig2(plt, f2, cfg, out / ("fig2.png" if c_idx == 0 else f"fig2_{cond}.png"), _cond_label(cond))


def write_fig2(plt, f2: dict, cfg: dict, path: Path, title: str) -> None:
    """Seed Fig. 2: dE_c vs the 1st and 2nd order on three axial slices (centre of the region and +/- 17 mm)."""
    study, pca, maps = f2["study"], f2["pca"], f2["maps"]
    zc = int(study.truth.sum((0, 1)).argmax())
    dz = float(study.affine[2, 2])
    off = max(1, round(float(cfg["fig2"]["slice_offset_mm"]) / dz))
    nz = study.mask.shape[2]
    slices = [min(max(zc + d, 0), nz - 1) for d in (-off, 0, off)]
    cols = ["exact", "first", "second_gauss_newton", "second_gauss_newton_diag"]
    vols = {k: pca.to_volume(torch.as_tensor(maps[k])).as_tensor().numpy() for k in cols}
    fig, axes = plt.subplots(3, len(cols), figsize=(2.6 * len(cols), 7.6))
    for r, z in enumerate(slices):
        ref = vols["exact"][:, :, z]
        vmax = float(np.abs(ref).max()) or 1.0
        for c, k in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(vols[k][:, :, z].T, origin="lower", cmap="hot", vmin=0, vmax=vmax)
            ax.contour(study.truth[:, :, z].numpy().T.astype(float), levels=[0.5], colors="c", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(LABELS[k].replace(" (", "\n("), fontsize=8)
            if c == 0:
                ax.set_ylabel(f"z = {(z - zc) * dz:+.0f} mm", fontsize=8)
            if k != "exact":
                m = study.mask[:, :, z].numpy()
                err = nmse(ref[m], vols[k][:, :, z][m])
                ax.text(0.02, 0.02, f"NMSE {err:.1e}", transform=ax.transAxes, fontsize=6, color="w")
    fig.suptitle(
        f"Fig. 2 (graded paradigm, {title}): computed dE_c vs 1st vs 2nd order; cyan: true region; same colour "
        "scale per row",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
