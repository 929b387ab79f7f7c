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
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from benchmarks.experiments._output import OUTPUT_DIR_HELP, ROOT, output_dir
from benchmarks.experiments._seed000_report import (
    EXACT,
    EXPERIMENT,
    INPUT,
    REFERENCE,
    UNIFORM,
    random_control,
    write_figure,
    write_table,
)
from monai_saliency.methods.gradients import IntegratedGradients, SmoothGrad, VanillaGrad
from monai_saliency.methods.structured import StructuredGradient
from monai_saliency.metrics.perturbation import deletion_curve, insertion_curve
from monai_saliency.metrics.sparsity import fraction_below_median, gini_index

KEYS = ("deletion", "insertion", "gini", "below_median", "fidelity", "time")


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
