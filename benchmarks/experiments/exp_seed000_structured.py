"""Seed 000's synthetic experiment, reproduced: structured gradients vs raw, SmoothGrad and IG on a linear score.

Setup (configs/seed000_structured.yaml): per run, a weight field ``w`` (C, H, W) = smooth blobs + speckle of standard
deviation ``noise`` and a batch of input fields ``x`` (sums of smooth blobs); the model is the linear score
``S(x) = <w, x>`` whose exact gradient is ``w``. The whole experiment is repeated at every noise level of the config
(0, 0.1 and 0.3: the speckle is what structured gradients are meant to remove, and the verdicts depend on it). The
blobs and the inputs of a run are the same at every noise level (only the speckle changes).

Maps: raw gradient, structured gradients (the seed's proximal cycle and an exact solver of the stated objective),
SmoothGrad and Integrated Gradients; controls: a uniform map (perturbs in raster order), the model-free input map
``x`` itself (locations ranked by ``||x_{:,p}||_2``) and every method run on a random model (an independent ``w'``
drawn with the same recipe). For every map we measure, per run (mean over the run's inputs):

* deletion AUC (lower is better) and insertion AUC from a blank input (higher is better), on the score normalised
  by ``S(x)`` so that curves run between 0 and 1; locations ranked by the channel L2 norm of the map (the seed's
  scalar saliency ``||s||_2``). With a linear score, zero baseline and blank start, insertion = 1 - deletion exactly,
  so only deletion AUC is tested;
* sparsity: Gini index (the seed's "fraction below the median" is 0.5 by construction for any map without ties: it
  cannot fail, so it is only checked, not reported as a result);
* fidelity to the true gradient: cosine similarity of the (C, H, W) map with ``w`` (1 for the raw gradient by
  construction).

Units are runs (independent draws of ``w`` and its inputs; the inputs of a run share ``w``, so they are averaged
rather than counted as independent units). Mean with a 95 % bootstrap CI (the range below 20 runs); paired two-sided
Wilcoxon tests, Holm-adjusted within each noise level's table, verdicts and notes generated from them
(``_verdicts``); the lambda_grp sweep of the seed's Fig. 2 at one noise level; the seed's Table 2 beside ours.

Usage::

    python -m benchmarks.experiments.exp_seed000_structured [--config configs/seed000_structured.yaml] [--quick]
        [--output-dir DIR]

Writes ``table.md``, ``figure.png`` and ``verdicts.json`` to the output directory.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import spearmanr
from torch import nn

from benchmarks.experiments import _verdicts as V
from benchmarks.experiments._output import OUTPUT_DIR_HELP, ROOT, output_dir
from monai_saliency.methods.gradients import IntegratedGradients, SmoothGrad, VanillaGrad
from monai_saliency.methods.structured import StructuredGradient
from monai_saliency.metrics.perturbation import deletion_curve, insertion_curve
from monai_saliency.metrics.sparsity import fraction_below_median, gini_index
from monai_saliency.metrics.stats import bootstrap_ci, ci_or_range

EXPERIMENT = "seed000"
#: seed 000, Table 2 (mean [95 % CI]); its "Deletion AUC" is declared "higher is better".
SEED_TABLE2 = {
    "Raw gradient": ("0.758 [0.740, 0.776]", "0.758 [0.740, 0.776]", "del: ns, ins: ns"),
    "Structured (seed solver)": ("0.492 [0.437, 0.546]", "0.492 [0.435, 0.549]", "-"),
    "SmoothGrad": ("0.758 [0.741, 0.776]", "0.758 [0.740, 0.775]", "del: ns, ins: ns"),
    "Integrated Gradients": ("0.759 [0.742, 0.779]", "0.759 [0.741, 0.777]", "del: ns, ins: ns"),
}
REFERENCE = "Structured (seed solver)"
EXACT = "Structured (exact solver)"
METHODS = ("Raw gradient", REFERENCE, EXACT, "SmoothGrad", "Integrated Gradients")
STRUCTURED = (REFERENCE, EXACT)
BASELINES = ("Raw gradient", "SmoothGrad", "Integrated Gradients")
UNIFORM = "Uniform map (control)"
INPUT = "Input map x (control)"
RANDOM = " on a random model (control)"  # suffix: "<method> on a random model (control)"
KEYS = ("deletion", "insertion", "gini", "below_median", "fidelity", "time")
TABLE = "methods and controls"


def random_control(name: str) -> str:
    """The name of ``name``'s random-model control."""
    return name + RANDOM


def controls_of(name: str) -> tuple[str, str, str]:
    """The three controls a method is compared with: uniform, the input map, the method on a random model."""
    return UNIFORM, INPUT, random_control(name)


class LinearScore(nn.Module):
    """``S(x) = <w, x>`` over all channels and pixels, returned as a single class score ``(B, 1)``."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1, keepdim=True)


def blob_fields(n: int, channels: int, size, n_blobs: int, sigma_range, g: torch.Generator) -> torch.Tensor:
    """``n`` fields ``(channels, *size)``: sums of isotropic Gaussian blobs, per-channel amplitudes in [0.5, 1]."""
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in size], indexing="ij")
    centres = torch.stack([torch.rand(n, n_blobs, generator=g) * s for s in size], -1)  # (n, K, D)
    lo, hi = sigma_range
    sig = lo + (hi - lo) * torch.rand(n, n_blobs, generator=g)
    amp = 0.5 + 0.5 * torch.rand(n, n_blobs, channels, generator=g)
    d2 = sum((grid[None, None] - centres[..., i, None, None]) ** 2 for i, grid in enumerate(grids))  # (n, K, *size)
    bumps = torch.exp(-d2 / (2 * sig[..., None, None] ** 2))
    return torch.einsum("nkc,nk...->nc...", amp, bumps)


def weight_field(cfg: dict, noise: float, g: torch.Generator) -> torch.Tensor:
    """``w``: smooth blobs (peak 1) + i.i.d. speckle of standard deviation ``noise`` (drawn even when 0)."""
    w = blob_fields(1, int(cfg["channels"]), tuple(cfg["size"]), int(cfg["weight_blobs"]), cfg["blob_sigma"], g)[0]
    return w / w.max() + float(noise) * torch.randn(w.shape, generator=g)


def make_run(cfg: dict, run: int, noise: float) -> tuple[nn.Module, torch.Tensor, torch.Tensor, nn.Module]:
    """``(model, x, w, random_model)`` of one run; ``random_model`` has an independent ``w'`` (same recipe)."""
    g = torch.Generator().manual_seed(int(cfg["seed"]) * 1000 + run)
    w = weight_field(cfg, noise, g)
    x = blob_fields(
        int(cfg["inputs_per_run"]), int(cfg["channels"]), tuple(cfg["size"]), int(cfg["input_blobs"]),
        cfg["blob_sigma"], g,
    )  # fmt: skip
    x = x + 0.02 * torch.randn(x.shape, generator=g)
    w_random = weight_field(cfg, noise, torch.Generator().manual_seed(int(cfg["seed"]) * 1000 + run + 500_000))
    return LinearScore(w).eval(), x, w, LinearScore(w_random).eval()


def structured(model: nn.Module, cfg: dict, solver: str, lambda_grp: float | None = None) -> StructuredGradient:
    st = cfg["structured"]
    kw = {"tv_iters": st["tv_iters"], "tv_step": st["tv_step"], "steps": st["steps"]} if solver == "seed" else {}
    if solver == "exact":
        kw = {"tol": st["exact_tol"], "max_iter": st["exact_max_iter"]}
    return StructuredGradient(
        VanillaGrad(model),
        solver=solver,
        lambda_grp=st["lambda_grp"] if lambda_grp is None else float(lambda_grp),
        lambda_l1=st["lambda_l1"],
        lambda_tv=st["lambda_tv"],
        output="structured",
        **kw,
    )


def methods(model: nn.Module, cfg: dict, run: int) -> dict[str, nn.Module]:
    return {
        "Raw gradient": VanillaGrad(model),
        REFERENCE: structured(model, cfg, "seed"),
        EXACT: structured(model, cfg, "exact"),
        "SmoothGrad": SmoothGrad(
            model, generator=torch.Generator().manual_seed(run), batch_size=64, **cfg["smoothgrad"]
        ),
        "Integrated Gradients": IntegratedGradients(model, batch_size=64, **cfg["ig"]),
    }


def normalised_auc(res, clean: torch.Tensor) -> np.ndarray:
    curve = res.curve.double() / clean.double()[:, None]
    return torch.trapezoid(curve, res.fractions, dim=1).numpy()


def cosine(maps: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    a = maps.reshape(maps.shape[0], -1).double()
    b = w.reshape(1, -1).double()
    return (torch.nn.functional.cosine_similarity(a, b, dim=1)).numpy()


def _maps(model: nn.Module, random_model: nn.Module, x: torch.Tensor, cfg: dict, run: int):
    """Yield ``(name, maps, seconds per input, explainer)`` for every method, its random-model control, and the
    uniform and input-map controls."""
    for name, explainer in methods(model, cfg, run).items():
        t0 = time.perf_counter()
        maps = explainer(x, 0).detach()
        yield name, maps, (time.perf_counter() - t0) / x.shape[0], explainer
    for name, explainer in methods(random_model, cfg, run).items():
        t0 = time.perf_counter()
        maps = explainer(x, 0).detach()
        yield random_control(name), maps, (time.perf_counter() - t0) / x.shape[0], None
    yield UNIFORM, torch.ones_like(x), 0.0, None
    yield INPUT, x.clone(), 0.0, None


def evaluate(cfg: dict, noise: float) -> tuple[dict, dict]:
    """Every map's metrics per run at one noise level: ``(per_run, extra)``."""
    per_run: dict[str, dict[str, list[float]]] = {}
    objectives: dict[str, list[float]] = {}
    identity_gap = 0.0
    ties_free_below_median: list[float] = []
    kw = {"class_idx": 0, "steps": int(cfg["steps"]), "score": "logit", "reduce": "l2", "batch_size": 256}
    for run in range(int(cfg["runs"])):
        model, x, w, random_model = make_run(cfg, run, noise)
        with torch.no_grad():
            clean = model(x)[:, 0]
        for name, maps, seconds, explainer in _maps(model, random_model, x, cfg, run):
            dele = normalised_auc(deletion_curve(model, x, maps, baseline=float(cfg["baseline"]), **kw), clean)
            ins = normalised_auc(insertion_curve(model, x, maps, start=float(cfg["insertion_start"]), **kw), clean)
            identity_gap = max(identity_gap, float(np.abs(ins - (1 - dele)).max()))
            below = fraction_below_median(maps, reduce="l2")
            loc = maps.double().pow(2).sum(1).flatten(1)
            distinct = torch.tensor([torch.unique(row).numel() == row.numel() for row in loc])
            ties_free_below_median += below[distinct].tolist()
            rec = per_run.setdefault(name, {k: [] for k in KEYS})
            rec["deletion"].append(float(dele.mean()))
            rec["insertion"].append(float(ins.mean()))
            rec["gini"].append(float(gini_index(maps, reduce="l2").mean()))
            rec["below_median"].append(float(below.mean()))
            rec["fidelity"].append(float(cosine(maps, w).mean()))
            rec["time"].append(seconds)
            if isinstance(explainer, StructuredGradient):
                objectives.setdefault(name, []).append(float(explainer.last_info["objective"].mean()))
    extra = {"objectives": objectives, "identity_gap": identity_gap, "below_median_tie_free": ties_free_below_median}
    return per_run, extra


def evaluate_sweep(cfg: dict, noise: float) -> dict:
    """The lambda_grp sweep (seed Fig. 2) at one noise level: ``{(solver, lambda): {gini, fidelity}}`` per run.

    The linear score's gradient (so every structured map) is the same for all inputs of a run: the sweep explains
    the first input only.
    """
    sweep = {(s, lam): {"gini": [], "fidelity": []} for s in ("seed", "exact") for lam in cfg["lambda_grp_sweep"]}
    for run in range(int(cfg["runs"])):
        model, x, w, _ = make_run(cfg, run, noise)
        for (solver, lam), rec in sweep.items():
            maps = structured(model, cfg, solver, lam)(x[:1], 0).detach()
            rec["gini"].append(float(gini_index(maps, reduce="l2").mean()))
            rec["fidelity"].append(float(cosine(maps, w).mean()))
    return sweep


def ci(values, cfg) -> str:
    """``mean [95 % bootstrap CI]`` from 20 runs on, else ``mean (range [min, max])``."""
    i = ci_or_range(values, n_resamples=int(cfg["bootstrap_resamples"]))
    return f"{i.estimate:.3f} [{i.low:.3f}, {i.high:.3f}]" if i.kind == "CI" else i.format()


def setting_name(noise: float) -> str:
    return f"noise {noise:g}"


def comparisons(per_run: dict, cfg: dict) -> dict[tuple[str, str, str], V.Comparison]:
    """The family of one noise level's table, Holm-adjusted: each structured solver vs each baseline (deletion
    AUC), each method vs its three controls (deletion AUC), each structured solver vs the raw gradient (Gini)."""
    n_boot = int(cfg.get("effect_resamples", 2000))
    am, gm = float(cfg["auc_margin"]), float(cfg["gini_margin"])

    def cmp(method: str, reference: str, key: str, control: bool = False) -> V.Comparison:
        hib, metric, margin = (False, "deletion AUC", am) if key == "deletion" else (True, "Gini", gm)
        return V.compare(
            method, reference, per_run[method][key], per_run[reference][key], higher_is_better=hib,
            metric=metric, control=control, margin=margin, n_resamples=n_boot,
        )  # fmt: skip

    family = {}
    for s in STRUCTURED:
        for b in BASELINES:
            family[(s, b, "deletion")] = cmp(s, b, "deletion")
    for m in METHODS:
        for c in controls_of(m):
            family[(m, c, "deletion")] = cmp(m, c, "deletion", control=True)
    for s in STRUCTURED:
        family[(s, "Raw gradient", "gini")] = cmp(s, "Raw gradient", "gini")
    V.adjust(list(family.values()))
    return family


def _family_name(noise: float) -> str:
    return (
        f"{setting_name(noise)}: each structured solver vs raw gradient, SmoothGrad and IG (deletion AUC); every "
        "method vs the uniform map, the input map and itself on a random model (deletion AUC); each structured "
        "solver vs raw gradient (Gini)"
    )


def setting_table(noise: float, per_run: dict, extra: dict, family: dict, cfg: dict) -> list[str]:
    lines = [
        f"## Noise {noise:g} (speckle std in w, relative to the blobs' peak)",
        "",
        (
            "| Map | Deletion AUC (lower better) | Insertion AUC (higher better) | Gini (higher = sparser) | "
            "Fidelity cos(s, w) | ms / input | structured (seed solver) vs this row | structured (exact solver) vs "
            "this row | this row vs uniform map | this row vs input map | this row vs itself on a random model |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(key) -> str:
        return V.md_cell(V.verdict(family[key])) if key in family else "-"

    for name, rec in per_run.items():
        is_method = name in METHODS
        ms = f"{1e3 * np.mean(rec['time']):.2f}" if name not in (UNIFORM, INPUT) else "-"
        lines.append(
            f"| {name} | {ci(rec['deletion'], cfg)} | {ci(rec['insertion'], cfg)} | {ci(rec['gini'], cfg)} | "
            f"{ci(rec['fidelity'], cfg)} | {ms} | {cell((REFERENCE, name, 'deletion'))} | "
            f"{cell((EXACT, name, 'deletion'))} | "
            + " | ".join(cell((name, c, "deletion")) if is_method else "-" for c in controls_of(name))
            + " |"
        )
    gini = "; ".join(f"{s} vs raw gradient: {V.verdict(family[(s, 'Raw gradient', 'gini')])}" for s in STRUCTURED)
    lines += [
        "",
        (
            f"Sparsity (Gini, higher = sparser, margin {float(cfg['gini_margin']):g}): {gini}. A sparser map is only "
            "a win if it keeps the deletion AUC and the fidelity: any threshold of a map raises its Gini."
        ),
        "",
        V.table_note(list(family.values()), family=_family_name(noise)),
        "",
    ]
    return lines


def summary_table(results: dict, cfg: dict) -> list[str]:
    """Every tested comparison across noise levels: mean difference (method - reference) and verdict."""
    noises = list(results)
    lines = [
        "## Verdicts across noise levels",
        "",
        (
            "Mean paired difference (method - reference; for deletion AUC negative = the method deletes faster = "
            "better) [95 % bootstrap CI over runs] and the verdict (Holm within each noise level's table; margin "
            f"{float(cfg['auc_margin']):g} for deletion AUC, {float(cfg['gini_margin']):g} for Gini)."
        ),
        "",
        "| Comparison | " + " | ".join(setting_name(n) for n in noises) + " |",
        "|---|" + "---|" * len(noises),
    ]
    first = results[noises[0]]["family"]
    for key in first:
        c0 = first[key]
        cells = []
        for n in noises:
            c = results[n]["family"][key]
            i = c.effect.interval
            ci_text = f"[{i.low:+.3f}, {i.high:+.3f}]" if i.kind == "CI" else f"(range [{i.low:+.3f}, {i.high:+.3f}])"
            cells.append(V.md_cell(f"{c.effect.estimate:+.3f} {ci_text}: {V.verdict(c)}"))
        lines.append(f"| {c0.method} vs {c0.reference} ({c0.metric}) | " + " | ".join(cells) + " |")
    return lines + [""]


def seed_table2(per_run: dict, noise: float, cfg: dict) -> list[str]:
    lines = [
        f"## Beside the seed's Table 2 (ours at noise {noise:g})",
        "",
        (
            'The seed calls deletion AUC "higher is better"; its orientation is reproduced here as 1 - deletion AUC '
            "(area above the curve)."
        ),
        "",
        (
            "| Method | seed: Deletion AUC | ours: 1 - deletion AUC | seed: Insertion AUC | ours: insertion AUC | "
            "seed: vs structured |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name, (sd, si, sv) in SEED_TABLE2.items():
        rec = per_run[name]
        lines.append(
            f"| {name} | {sd} | {ci(1 - np.asarray(rec['deletion']), cfg)} | {si} | "
            f"{ci(rec['insertion'], cfg)} | {sv} |"
        )
    return lines + [""]


def _trend_rhos(sweep: dict, solver: str, key: str) -> np.ndarray:
    """Per run: Spearman rho of ``key`` vs lambda_grp over the sweep (0 where undefined, e.g. a constant)."""
    lams = sorted(lam for sol, lam in sweep if sol == solver)
    vals = np.array([sweep[(solver, lam)][key] for lam in lams])  # (lambdas, runs)
    rhos = [
        spearmanr(lams, vals[:, r])[0] if len(lams) > 2 else np.sign(vals[-1, r] - vals[0, r])
        for r in range(vals.shape[1])
    ]
    return np.nan_to_num(np.asarray(rhos, dtype=np.float64))


def _trend_word(c) -> str:
    return {"better": "rises", "worse": "falls", "tie": "shows no trend"}[V.outcome(c)]


def notes_family(results: dict, sweep: dict, cfg: dict) -> dict[str, V.Comparison]:
    """Seed cycle vs exact solver on the stated objective at every noise level; Gini trend over the sweep."""
    fam = {}
    for noise, res in results.items():
        obj = res["extra"]["objectives"]
        fam[f"objective {noise:g}"] = V.compare(
            REFERENCE, EXACT, obj[REFERENCE], obj[EXACT], higher_is_better=False,
            metric=f"objective, {setting_name(noise)}", n_resamples=int(cfg.get("effect_resamples", 2000)),
        )  # fmt: skip
    for solver in ("seed", "exact"):
        rhos = _trend_rhos(sweep, solver, "gini")
        fam[f"gini_{solver}"] = V.compare(
            f"rho(lambda_grp, Gini) {solver} solver", "0", rhos, np.zeros_like(rhos), metric="trend",
            n_resamples=int(cfg.get("effect_resamples", 2000)),
        )  # fmt: skip
    V.adjust(list(fam.values()))
    return fam


NOTES_FAMILY = "the tests of the notes: seed cycle vs exact solver on the objective (every noise level), Gini trends"


def write_table(
    results: dict, sweep: dict, cfg: dict, out: Path, seconds: tuple[float, float] | None = None
) -> tuple[str, list]:
    """Write ``table.md`` and ``verdicts.json``; return the table's text and the verdict records.

    Args:
        results: ``{noise: {"per_run": ..., "extra": ...}}`` from :func:`evaluate` per noise level.
        sweep: the lambda_grp sweep at ``cfg["sweep_noise"]``.
        cfg: the config.
        out: output folder.
        seconds: the run's time so far, ``(wall, CPU)`` seconds (stated in the table).
    """
    records = []
    for noise, res in results.items():
        res["family"] = comparisons(res["per_run"], cfg)
        records += [
            V.to_record(c, TABLE, _family_name(noise), setting=setting_name(noise)) for c in res["family"].values()
        ]
    fam = notes_family(results, sweep, cfg)
    records += [V.to_record(c, "notes", NOTES_FAMILY) for c in fam.values()]
    sweep_noise = float(cfg["sweep_noise"])
    timing = (
        f"Run time: {seconds[0]:.0f} s wall ({seconds[1]:.0f} s CPU) for evaluation and statistics, single thread "
        "(OMP_NUM_THREADS=1, torch.set_num_threads(1)); machine load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall time grows with it, CPU time does not)."
        if seconds is not None
        else ""
    )
    lines = [
        "# Seed 000 synthetic experiment (structured gradients), reproduced",
        "",
        (
            f"{cfg['runs']} runs x {cfg['inputs_per_run']} input fields at each noise level "
            f"({', '.join(f'{n:g}' for n in results)}), (C, H, W) = ({cfg['channels']}, {cfg['size'][0]}, "
            f"{cfg['size'][1]}), linear score S(x) = <w, x>; mean [95 % bootstrap CI] over runs (the range below 20 "
            "runs); units = runs (the inputs of a run share w). Scores normalised by S(x). Controls: a uniform map "
            "(raster order), the model-free input map x, and every method on a random model (independent w' drawn "
            "with the same recipe). Config: `configs/seed000_structured.yaml`. " + timing
        ),
        "",
    ]
    lines += summary_table(results, cfg)
    for noise, res in results.items():
        lines += setting_table(noise, res["per_run"], res["extra"], res["family"], cfg)
    lines += seed_table2(results[sweep_noise]["per_run"], sweep_noise, cfg)
    lines += [
        f"## lambda_grp sweep (seed Fig. 2), noise {sweep_noise:g}",
        "",
        "| solver | lambda_grp | Gini | Fidelity cos(s, w) |",
        "|---|---|---|---|",
    ]
    for (solver, lam), rec in sweep.items():
        lines.append(f"| {solver} | {lam:.2f} | {ci(rec['gini'], cfg)} | {ci(rec['fidelity'], cfg)} |")
    exact_fid = [float(np.mean(rec["fidelity"])) for (sol, _), rec in sweep.items() if sol == "exact"]
    gap = max(res["extra"]["identity_gap"] for res in results.values())
    below = np.concatenate([res["extra"]["below_median_tie_free"] for res in results.values()])
    objective_text = "; ".join(
        f"noise {noise:g}: "
        + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in res["extra"]["objectives"].items())
        + f", seed cycle vs exact: {V.verdict(fam[f'objective {noise:g}'])}"
        for noise, res in results.items()
    )
    lines += [
        "",
        "## Notes",
        "",
        "- Objective of the stated problem (normalised units, mean over runs; lower is better): "
        + objective_text
        + ".",
        (
            f"- With a linear score, a zero deletion baseline and a blank insertion start, insertion AUC = "
            f"1 - deletion AUC exactly (max deviation here {gap:.1e}), so only deletion AUC is tested (the insertion "
            "tests would repeat them). The seed's identical deletion and insertion columns are what one gets when "
            '"deletion AUC" is reported as 1 - AUC.'
        ),
        (
            f"- Sweep (Spearman rho of Gini vs lambda_grp per run, tested against 0): Gini "
            f"{_trend_word(fam['gini_seed'])} with lambda_grp for the seed solver ({V.verdict(fam['gini_seed'])}) and "
            f"{_trend_word(fam['gini_exact'])} for the exact solver ({V.verdict(fam['gini_exact'])}); the exact "
            f"solver's mean fidelity spans {min(exact_fid):.3f} to {max(exact_fid):.3f} over the sweep. The seed says "
            "maps get sparser as lambda_grp grows. Why the seed solver can run the other way: its cycle re-applies the "
            "shrinkage 12 times (12 x 0.2 = 2.4 > max|g| = 1, so without the TV steps lambda_grp = 0.2 zeroes the "
            "whole map), and its explicit TV-flow steps with eps = 1e-8 move a voxel by up to about tv_step per "
            "neighbour whatever the size of the differences, which refills the shrunk zeros with a flat field."
        ),
        "- " + V.table_note(list(fam.values()), family=NOTES_FAMILY),
        (
            "- The seed's sparsity (fraction of locations below the median) cannot fail: for a map without ties it is "
            f"0.5 by construction (measured on the {below.size} tie-free maps of this run: "
            f"{below.min() if below.size else float('nan'):.3f} to {below.max() if below.size else float('nan'):.3f}), "
            'and only ties at zero move it. It cannot show a "40 % sparsity gain", so it is not reported; the Gini '
            "index is."
        ),
        (
            "- For a linear model the gradient is constant: SmoothGrad equals the raw gradient, and IG equals "
            "gradient x input (it ranks by w * x, the true contribution of each location to S). The raw gradient "
            "*is* the true gradient (fidelity 1 by construction); any regularisation can only lower fidelity to w."
        ),
        (
            "- The uniform map perturbs in raster order (ties broken by the raster index); the input map ranks by "
            "||x_{:,p}||_2 (no model); the random-model controls run each method on an independent w' with the same "
            "blobs-and-speckle recipe and are scored on the true model."
        ),
    ]
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    V.write_verdicts(out, records, experiment=EXPERIMENT)
    return text, records


def write_figure(results: dict, sweep: dict, cfg: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_boot = int(cfg["bootstrap_resamples"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    for (solver, lam), rec in sweep.items():
        gx = bootstrap_ci(rec["gini"], n_resamples=n_boot)
        fy = bootstrap_ci(rec["fidelity"], n_resamples=n_boot)
        ax.errorbar(
            gx.estimate,
            fy.estimate,
            xerr=[[gx.estimate - gx.low], [gx.high - gx.estimate]],
            yerr=[[fy.estimate - fy.low], [fy.high - fy.estimate]],
            fmt="o" if solver == "seed" else "s",
            color="C0" if solver == "seed" else "C1",
            capsize=3,
        )
        k = list(cfg["lambda_grp_sweep"]).index(lam)  # stagger labels: the exact solver's points sit close together
        offset = (5, 5) if solver == "seed" else (-10, 8 if k % 2 == 0 else -14)
        ax.annotate(f"{lam:.2f}", (gx.estimate, fy.estimate), textcoords="offset points", xytext=offset, fontsize=7)
    ax.set_xlabel("sparsity (Gini of ||s||_2)")
    ax.set_ylabel("fidelity cos(s, w)")
    ax.set_title(f"lambda_grp sweep, noise {float(cfg['sweep_noise']):g} (95% CI); o seed solver, s exact", fontsize=9)
    ax = axes[1]
    noises = list(results)
    names = [*METHODS, UNIFORM, INPUT, random_control(EXACT), random_control("Integrated Gradients")]
    for k, name in enumerate(names):
        cis = [bootstrap_ci(results[n]["per_run"][name]["deletion"], n_resamples=n_boot) for n in noises]
        est = np.array([c.estimate for c in cis])
        err = np.array([[c.estimate - c.low for c in cis], [c.high - c.estimate for c in cis]])
        style = "--" if "control" in name else "-"
        ax.errorbar(np.arange(len(noises)) + 0.04 * (k - len(names) / 2), est, yerr=err, fmt="o" + style,
                    capsize=2, label=name, color=f"C{k}")  # fmt: skip
    ax.set_xticks(np.arange(len(noises)), [f"noise {n:g}" for n in noises])
    ax.set_ylabel("deletion AUC (lower better)")
    ax.set_title("deletion AUC by noise level (mean, 95% CI over runs); dashed = controls", fontsize=9)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(out / "figure.png", dpi=120)
    plt.close(fig)


QUICK = {
    "runs": 3,
    "inputs_per_run": 2,
    "size": [24, 24],
    "steps": 10,
    "bootstrap_resamples": 999,
    "effect_resamples": 200,
    "smoothgrad": {"n_samples": 4, "stdev_spread": 0.15},
    "ig": {"n_steps": 8},
}


def run(cfg: dict, out: Path) -> tuple[str, list]:
    """The whole experiment: every noise level, the sweep, table, verdicts and figure."""
    if float(cfg["sweep_noise"]) not in [float(n) for n in cfg["noise_levels"]]:
        raise ValueError(f"sweep_noise {cfg['sweep_noise']} must be one of noise_levels {cfg['noise_levels']}.")
    t0, c0 = time.perf_counter(), time.process_time()
    results = {}
    for noise in cfg["noise_levels"]:
        per_run, extra = evaluate(cfg, float(noise))
        results[float(noise)] = {"per_run": per_run, "extra": extra}
    sweep = evaluate_sweep(cfg, float(cfg["sweep_noise"]))
    if not all(math.isfinite(r["extra"]["identity_gap"]) for r in results.values()):
        raise SystemExit("non-finite metric values")
    text, records = write_table(results, sweep, cfg, out, seconds=(time.perf_counter() - t0, time.process_time() - c0))
    write_figure(results, sweep, cfg, out)
    return text, records


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "seed000_structured.yaml"))
    parser.add_argument("--output-dir", default=None, help=OUTPUT_DIR_HELP)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    if args.quick:
        cfg.update(QUICK)
        cfg["structured"] = dict(cfg["structured"], exact_max_iter=50)
    out = output_dir(EXPERIMENT, args.output_dir, args.quick)
    torch.manual_seed(int(cfg["seed"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the stated run time is single-threaded
    try:
        t0 = time.perf_counter()
        text, _ = run(cfg, out)
    finally:
        torch.set_num_threads(threads)
    print(text)
    print(f"wrote table.md, figure.png and verdicts.json to {out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
