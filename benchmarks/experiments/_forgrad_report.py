"""Statistics, tables and figures of :mod:`benchmarks.experiments.exp_forgrad`: the paired comparisons of FORGrad
with the raw map and the controls, ``table.md``, ``verdicts.json``, ``figure.png`` and ``spectrum.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.experiments import _verdicts as V
from benchmarks.experiments._forgrad_measures import (
    CONTROL_ROW,
    CONTROLS,
    EXPERIMENT,
    FORGRAD,
    LOWPASS,
    METRICS,
    RANDOM,
    RAW,
    REFERENCES,
)
from monai_saliency.metrics.stats import ci_or_range

# ----------------------------------------------------------------------------------------------------- statistics


def pooled(per_seed: list) -> np.ndarray:
    """Per-image values of every seed, concatenated (the paired units are (seed, image))."""
    return np.concatenate([np.asarray(v, dtype=np.float64) for v in per_seed])


def collect(seed_runs: list[dict]) -> dict:
    """``{(row, variant): {metric: [per-seed arrays]}}`` from the runs of one dimensionality."""
    out: dict = {}
    for run in seed_runs:
        for key, rec in run["values"].items():
            for metric, v in rec.items():
                out.setdefault(key, {}).setdefault(metric, []).append(v)
    return out


def reference_key(method: str, reference: str) -> tuple[str, str]:
    return (CONTROL_ROW, reference) if reference in CONTROLS else (method, reference)


def comparisons(values: dict, methods: list[str], nb: int) -> dict:
    """FORGrad vs every reference, every metric, pooled over (seed, image); not yet Holm-adjusted."""
    comps = {}
    for name in methods:
        for ref in REFERENCES:
            for key, title, hib in METRICS:
                comps[(name, ref, key)] = V.compare(
                    f"{name} FORGrad",
                    ref if ref in CONTROLS else f"{name} {ref}",
                    pooled(values[(name, FORGRAD)][key]),
                    pooled(values[reference_key(name, ref)][key]),
                    higher_is_better=hib,
                    metric=title.split(" (")[0],
                    control=ref != RAW,
                    n_resamples=nb,
                )
    return comps


def per_seed_comparisons(values: dict, methods: list[str], seeds: list[int], nb: int) -> dict:
    """FORGrad vs raw within each seed (Wilcoxon over that seed's images)."""
    comps = {}
    for k, seed in enumerate(seeds):
        for name in methods:
            for key, title, hib in METRICS:
                comps[(seed, name, key)] = V.compare(
                    f"{name} FORGrad, seed {seed}",
                    f"{name} raw, seed {seed}",
                    values[(name, FORGRAD)][key][k],
                    values[(name, RAW)][key][k],
                    higher_is_better=hib,
                    metric=title.split(" (")[0],
                    n_resamples=nb,
                )
    return comps


def credited(comps: dict, name: str, key: str) -> str:
    """A FORGrad gain counts only if it beats the raw map and every control on that metric."""
    if V.outcome(comps[(name, RAW, key)]) != "better":
        return "no (not better than raw)"
    lost = [ref for ref in REFERENCES[1:] if V.outcome(comps[(name, ref, key)]) != "better"]
    return "yes" if not lost else "no (a control wins or ties: " + ", ".join(lost) + ")"


def cell(per_seed: list, nb: int) -> str:
    """Pooled mean over (seed, image) with the range of the per-seed means."""
    means = [float(np.mean(v)) for v in per_seed]
    r = ci_or_range(means, n_resamples=nb)
    return f"{float(np.mean(pooled(per_seed))):.3f} (seed means {r.low:.3f}-{r.high:.3f})"


def mechanism_comparisons(runs: list[dict], nb: int) -> tuple[list, list]:
    """The seed's mechanism claims as comparisons "more HF power than": pooled over (seed, image) and over seeds."""
    claims = [
        (
            ("Gradient", "max"),
            ("Gradient", "avg"),
            "gradient maps of the max-pool CNN have more HF power than avg-pool",
        ),
        (
            ("Gradient", "max"),
            ("Occlusion", "max"),
            "white-box (gradient) more HF than black-box (occlusion), max-pool",
        ),
        (
            ("Gradient", "avg"),
            ("Occlusion", "avg"),
            "white-box (gradient) more HF than black-box (occlusion), avg-pool",
        ),
        (
            ("Occlusion", "max"),
            ("Occlusion", "avg"),
            "occlusion maps of the max-pool CNN have more HF power than avg-pool",
        ),
    ]
    per_image, per_seed = [], []
    for a, b, claim in claims:
        va = [r["mechanism"]["hf"][a] for r in runs]
        vb = [r["mechanism"]["hf"][b] for r in runs]
        kw = {"higher_is_better": True, "metric": "HF power ratio (higher = claim holds)", "n_resamples": nb}
        ma, mb = f"{a[0]} ({a[1]}-pool)", f"{b[0]} ({b[1]}-pool)"
        per_image.append((claim, V.compare(ma, mb, pooled(va), pooled(vb), **kw), va, vb))
        means_a, means_b = [float(np.mean(v)) for v in va], [float(np.mean(v)) for v in vb]
        per_seed.append((claim, V.compare(ma, mb, means_a, means_b, **kw), means_a, means_b))
    V.adjust([c for _, c, _, _ in per_image])
    V.adjust([c for _, c, _, _ in per_seed])
    return per_image, per_seed


# ------------------------------------------------------------------------------------------------------ the tables


def write(results: dict, cfg: dict, out: Path, seconds: tuple[float, float] | None = None) -> tuple[str, list[dict]]:
    """Write ``table.md`` and ``verdicts.json`` from ``{dims: [per-seed runs]}``; returns the text and the records.

    ``seconds``: the run's (wall, CPU) time and optionally the load average, written into the table.
    """
    nb = int(cfg["bootstrap_resamples"])
    timing = (
        f"Run time: {seconds[0]:.0f} s wall, {seconds[1]:.0f} s CPU, one thread (OMP_NUM_THREADS=1, "
        "torch.set_num_threads(1)), every model trained in the run"
        + (f", machine load average {seconds[2]:.1f} at the end" if len(seconds) > 2 else "")
        + "; the tables and figures add a few seconds."
        if seconds is not None
        else "Run time: not measured (tables written from given results)."
    )
    lines = [
        "# FORGrad: white-box attributions with and without the Fourier low-pass, several model seeds, controls",
        "",
        (
            "Small CNNs trained here on the blob task, one per model seed; per seed, sigma* (frequency bins) is chosen "
            "on that seed's calibration split by insertion - deletion AUC and every number comes from that seed's "
            "evaluation split (positive images, class 1). Values: mean over the pooled (seed, image) units with the "
            "range of the per-seed means. Verdicts of FORGrad vs each reference: two-sided paired Wilcoxon over the "
            "pooled (seed, image) units, Holm-adjusted within each table (family named under it). References: the "
            f"raw map; controls: `{LOWPASS}` (the same signed attribution filtered by a Gaussian whose half-power "
            "radius is sigma*, in the Fourier domain like FORGrad), `" + RANDOM + "` (same sigma*, untrained weights), "
            "a uniform map (ties broken in raster order by the perturbation metrics), the input itself and an edge map "
            "(|central-difference gradient| of the input). A FORGrad gain counts (`credited`) only if it beats the raw "
            "map and every control on that metric. Config: `configs/forgrad.yaml`."
        ),
        "",
        timing,
        "",
    ]
    records: list[dict] = []
    for dims, runs in results.items():
        lines += dims_section(dims, runs, cfg, nb, records)
    if any("mechanism" in r for runs in results.values() for r in runs):
        lines += mechanism_section(results, cfg, nb, records)
    lines += [
        "## Notes",
        "",
        (
            "- Seed 003 reports FORGrad improving the faithfulness of white-box methods on ImageNet models; here the "
            "models are tiny CNNs on a synthetic blob task, so effect sizes are not comparable. Every direction stated "
            "above is generated from this run's tests."
        ),
        (
            "- The pooled units share a model within a seed; the per-seed verdicts (counts in the verdict table, all "
            "in verdicts.json) show whether an effect holds for each model, and the sigma* table shows how the chosen "
            "bandwidth moves between seeds."
        ),
        (
            "- Class-1 probability of the models on the evaluation positives (range of the per-seed means): "
            + ", ".join(
                f"{d.upper()} {min(r['p_positive'] for r in runs):.3f}-{max(r['p_positive'] for r in runs):.3f}"
                for d, runs in results.items()
            )
            + ". Near 1 the deletion and insertion curves sit near their floor / ceiling and their differences are "
            "small; near 0.5 every perturbation AUC is compressed. The insertion start is a strong blur "
            f"(sigma = {cfg['perturbation']['blur_sigma_fraction']} x size)."
        ),
        (
            "- By construction the uniform map has stability 0 and HF power ratio 0 and the model-free maps do not "
            "change with the model: a map that explains nothing wins those two metrics, so no method's gain on them "
            "is credited; the comparison that matters for them is the one with the matched low-pass."
        ),
        "- sigma* at (or above) the image's largest frequency radius means no filtering: FORGrad = raw, a tie.",
        (
            "- Methods per dimensionality are in the config (`dims.<2d|3d>.methods`): SmoothGrad and IG in 3D over "
            "five seeds do not fit the five-minute budget, so 3D has the plain gradient only."
        ),
        (
            "- ms / image: one batch's time divided by its images, mean over seeds (explainer only; FORGrad and the "
            "low-pass add one FFT pair to the base method)."
        ),
        "",
    ]
    text = "\n".join(lines)
    (out / "table.md").write_text(text)
    V.write_verdicts(out, records, experiment=EXPERIMENT)
    return text, records


def dims_section(dims: str, runs: list[dict], cfg: dict, nb: int, records: list[dict]) -> list[str]:
    run_cfg = cfg["dims"][dims]
    seeds = [r["info"]["seed"] for r in runs]
    methods = list(runs[0]["sigma"])
    values = collect(runs)
    accs = [r["info"]["test_accuracy"] for r in runs]
    n_units = sum(r["n"] for r in runs)
    up = dims.upper()
    lines = [
        (
            f"## {up}: {len(seeds)} model seeds ({', '.join(map(str, seeds))}), {runs[0]['n']} evaluation images "
            f"per seed ({n_units} pooled units); model test accuracy {min(accs):.3f}-{max(accs):.3f}"
        ),
        "",
        "### Values",
        "",
        "| Method | Map | " + " | ".join(t for _, t, _ in METRICS) + " | ms / image |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    for key in values:
        ms = np.mean([r["ms"][key] for r in runs])
        row = [cell(values[key][m], nb) for m, _, _ in METRICS]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(row) + f" | {ms:.2f} |")

    comps = comparisons(values, methods, nb)
    V.adjust(list(comps.values()))
    family = f"FORGrad vs raw and vs every control, every method and metric, {up}, pooled over (seed, image)"
    for (name, ref, key), c in comps.items():
        records.append(V.to_record(c, table=f"{dims}_pooled", family=family, dims=dims, seeds=seeds))
    seed_comps = per_seed_comparisons(values, methods, seeds, nb)
    V.adjust(list(seed_comps.values()))
    seed_family = f"FORGrad vs raw within each seed, every seed, method and metric, {up}"
    for (seed, _, _), c in seed_comps.items():
        records.append(V.to_record(c, table=f"{dims}_per_seed", family=seed_family, dims=dims, seed=seed))

    lines += [
        "",
        "### Verdicts of FORGrad",
        "",
        "| Method | Metric | vs raw | "
        + " | ".join(f"vs {r}" for r in REFERENCES[1:])
        + " | per seed vs raw (better / worse / tie) | credited |",
        "|---|---|" + "---|" * (len(REFERENCES) + 2),
    ]
    for name in methods:
        for key, title, _ in METRICS:
            cells = [V.verdict(comps[(name, ref, key)]) for ref in REFERENCES]
            outs = [V.outcome(seed_comps[(s, name, key)]) for s in seeds]
            counts = f"{outs.count('better')} / {outs.count('worse')} / {outs.count('tie')}"
            lines.append(
                f"| {name} | {title.split(' (')[0]} | "
                + " | ".join(cells)
                + f" | {counts} | {credited(comps, name, key)} |"
            )
    lines += [
        "",
        V.count_note(list(comps.values()), family=family),
        "",
        "Per seed (counts above): " + V.count_note(list(seed_comps.values()), family=seed_family),
        "",
        "### sigma* and spread over model seeds",
        "",
        "| | " + " | ".join(f"seed {s}" for s in seeds) + " | range |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    for name in methods:
        sig = [r["sigma"][name] for r in runs]
        lines.append(f"| sigma* {name} | " + " | ".join(f"{s:g}" for s in sig) + f" | {min(sig):g}-{max(sig):g} |")
    lines.append(
        "| model test accuracy | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {min(accs):.3f}-{max(accs):.3f} |"
    )
    for name in methods:
        for key, title, _ in METRICS:
            d = [float(np.mean(f - r)) for f, r in zip(values[(name, FORGRAD)][key], values[(name, RAW)][key])]
            lines.append(
                f"| {name}: FORGrad - raw, {title.split(' (')[0]} | "
                + " | ".join(f"{v:+.4f}" for v in d)
                + f" | {min(d):+.4f} to {max(d):+.4f} |"
            )
    size = run_cfg["model"]["size"]
    lines += [
        "",
        (
            f"Image size {size}; sigma grid {', '.join(f'{s:g}' for s in runs[0]['calibration'][methods[0]].sigmas)} "
            "(the largest = no filtering). Calibration curves per seed: figure.png."
        ),
        "",
    ]
    return lines


def mechanism_section(results: dict, cfg: dict, nb: int, records: list[dict]) -> list[str]:
    mech = cfg["mechanism"]
    lines = []
    for dims, runs in results.items():
        runs = [r for r in runs if "mechanism" in r]
        if not runs:
            continue
        seeds = [r["info"]["seed"] for r in runs]
        per_image, per_seed = mechanism_comparisons(runs, nb)
        up = dims.upper()
        fam_i = f"mechanism claims, {up}, pooled over (seed, image)"
        fam_s = f"mechanism claims, {up}, over model seeds (seed means)"
        for (_, c, _, _), (_, cs, _, _) in zip(per_image, per_seed):
            records.append(V.to_record(c, table=f"{dims}_mechanism", family=fam_i, dims=dims, seeds=seeds))
            records.append(V.to_record(cs, table=f"{dims}_mechanism_over_seeds", family=fam_s, dims=dims, seeds=seeds))
        max_acc = [r["info"]["test_accuracy"] for r in runs]
        avg_acc = [r["mechanism"]["avg_accuracy"] for r in runs]
        lines += [
            f"## Mechanism ({up}): does max-pooling put the high frequencies into gradient maps?",
            "",
            (
                f"The same SmallCNN with its two max-pooling layers replaced by average pooling, trained with the same "
                f"seeds, initial weights and data (test accuracy max-pool {min(max_acc):.3f}-{max(max_acc):.3f}, "
                f"avg-pool {min(avg_acc):.3f}-{max(avg_acc):.3f}). White-box: |gradient| maps; black-box: occlusion "
                f"maps (patch {mech['occlusion_patch']}, stride {mech['occlusion_stride']}, logit drop averaged over "
                f"covering patches). HF power ratio = power above {cfg['hf_cutoff']} cycles/voxel. Each claim is tested "
                "as 'A has more HF power than B': paired two-sided Wilcoxon over the pooled (seed, image) units (Holm "
                "over the claims) and over the per-seed means (Holm over the claims)."
            ),
            "",
            "| Map | max-pool HF ratio | avg-pool HF ratio |",
            "|---|---|---|",
        ]
        for kind in ("Gradient", "Occlusion"):
            c_max = cell([r["mechanism"]["hf"][(kind, "max")] for r in runs], nb)
            c_avg = cell([r["mechanism"]["hf"][(kind, "avg")] for r in runs], nb)
            lines.append(f"| {kind} | {c_max} | {c_avg} |")
        lines += [
            "",
            "| Claim | A - B (pooled) | agrees? (pooled over seed, image) | seeds with A > B | agrees? (over seeds) |",
            "|---|---|---|---|---|",
        ]
        for (claim, c, _, _), (_, cs, ma, mb) in zip(per_image, per_seed):
            k = sum(a > b for a, b in zip(ma, mb))
            lines.append(f"| {claim} | {c.effect.format()} | {V.agrees(c)} | {k}/{len(ma)} | {V.agrees(cs)} |")
        lines += [
            "",
            V.table_note([c for _, c, _, _ in per_image], family=fam_i),
            "",
            "Over seeds: " + V.table_note([c for _, c, _, _ in per_seed], family=fam_s),
            "",
            (
                "Occlusion maps are smooth partly by construction (each value is averaged over the patches covering "
                "it), so the white- vs black-box contrast alone does not isolate max-pooling; the max- vs avg-pool "
                "rows of the same map type do. Radial power spectra (mean over every seed and image): spectrum.png."
            ),
            "",
        ]
    return lines


def write_figures(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (dims, runs) in zip(axes[0], results.items()):
        for j, name in enumerate(runs[0]["calibration"]):
            for k, r in enumerate(runs):
                cal = r["calibration"][name]
                ax.plot(cal.sigmas, cal.scores, "o-", ms=2, lw=0.8, color=colours[j], label=name if k == 0 else None)
                ax.plot([cal.best_sigma], [cal.best_score], "*", ms=8, color=colours[j])
        ax.set_xscale("log")
        _label(
            ax,
            "low-pass radius sigma (frequency bins; max = no filtering)",
            "insertion - deletion AUC (calibration split)",
            f"FORGrad calibration, {dims.upper()}, one line per model seed (* = sigma*)",
        )
    _save(fig, out / "figure.png")

    mech = {d: [r for r in runs if "mechanism" in r] for d, runs in results.items()}
    mech = {d: runs for d, runs in mech.items() if runs}
    if not mech:
        return
    fig, axes = plt.subplots(1, len(mech), figsize=(5.5 * len(mech), 4), squeeze=False)
    styles = {("Gradient", "max"): "C3-", ("Gradient", "avg"): "C0-", ("Occlusion", "max"): "C3--"}
    styles[("Occlusion", "avg")] = "C0--"
    for ax, (dims, runs) in zip(axes[0], mech.items()):
        centres = runs[0]["mechanism"]["spectra"]["centres"][1:]  # bin 0 holds only the removed mean
        for key, style in styles.items():
            curves = np.concatenate([r["mechanism"]["spectra"][key][:, 1:] for r in runs])
            mean = curves.mean(0)
            lo, hi = np.percentile(curves, [25, 75], axis=0)
            ax.plot(centres, mean, style, label=f"{key[0]} ({key[1]}-pool)")
            ax.fill_between(centres, lo, hi, color=style[:2], alpha=0.12)
        ax.axvline(0.25, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        _label(
            ax,
            "radial frequency (cycles / voxel)",
            "normalised power per bin (mean; band: 25-75 %)",
            f"Radial power spectra, {dims.upper()}, white- vs black-box, max- vs avg-pool",
        )
    _save(fig, out / "spectrum.png")


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
