"""Seed 000's synthetic experiment, reproduced: structured gradients vs raw, SmoothGrad and IG on a linear score.

Setup (configs/seed000_structured.yaml): per run, a weight field ``w`` (C, H, W) = smooth blobs + speckle and a
batch of input fields ``x`` (sums of smooth blobs); the model is the linear score ``S(x) = <w, x>`` whose exact
gradient is ``w``. For every method we measure, per run (mean over the run's inputs):

* deletion AUC (lower is better) and insertion AUC from a blank input (higher is better), on the score
  normalised by ``S(x)`` so that curves run between 0 and 1; locations ranked by the channel L2 norm of the map
  (the seed's scalar saliency ``||s||_2``);
* sparsity: Gini index (ours) and the seed's "fraction below the median";
* fidelity to the true gradient: cosine similarity of the (C, H, W) map with ``w``.

Then the mean over runs with a 95 % bootstrap CI from 20 runs on (the range below), paired two-sided Wilcoxon tests
against structured gradients, Holm-adjusted within the table, with verdicts and notes generated from them
(``_verdicts``), the lambda_grp sweep of the seed's Fig. 2, and the seed's Table 2 printed beside ours.

Usage::

    python -m benchmarks.experiments.exp_seed000_structured [--config configs/seed000_structured.yaml] [--quick]
        [--output-dir DIR]

Writes ``table.md`` and ``figure.png`` to the output directory.
"""

from __future__ import annotations

import argparse
import math
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

#: seed 000, Table 2 (mean [95 % CI]); its "Deletion AUC" is declared "higher is better".
SEED_TABLE2 = {
    "Raw gradient": ("0.758 [0.740, 0.776]", "0.758 [0.740, 0.776]", "del: ns, ins: ns"),
    "Structured (seed solver)": ("0.492 [0.437, 0.546]", "0.492 [0.435, 0.549]", "-"),
    "SmoothGrad": ("0.758 [0.741, 0.776]", "0.758 [0.740, 0.775]", "del: ns, ins: ns"),
    "Integrated Gradients": ("0.759 [0.742, 0.779]", "0.759 [0.741, 0.777]", "del: ns, ins: ns"),
}
REFERENCE = "Structured (seed solver)"
EXACT = "Structured (exact solver)"


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


def make_run(cfg: dict, run: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(int(cfg["seed"]) * 1000 + run)
    c, size = int(cfg["channels"]), tuple(cfg["size"])
    w = blob_fields(1, c, size, int(cfg["weight_blobs"]), cfg["blob_sigma"], g)[0]
    w = w / w.max()
    w = w + float(cfg["speckle"]) * torch.randn(w.shape, generator=g)
    x = blob_fields(int(cfg["inputs_per_run"]), c, size, int(cfg["input_blobs"]), cfg["blob_sigma"], g)
    x = x + 0.02 * torch.randn(x.shape, generator=g)
    return LinearScore(w).eval(), x, w


def methods(model: nn.Module, cfg: dict, run: int) -> dict[str, StructuredGradient | nn.Module]:
    st = cfg["structured"]
    common = {
        "lambda_grp": st["lambda_grp"],
        "lambda_l1": st["lambda_l1"],
        "lambda_tv": st["lambda_tv"],
        "output": "structured",
    }
    return {
        "Raw gradient": VanillaGrad(model),
        REFERENCE: StructuredGradient(
            VanillaGrad(model),
            solver="seed",
            tv_iters=st["tv_iters"],
            tv_step=st["tv_step"],
            steps=st["steps"],
            **common,
        ),
        EXACT: StructuredGradient(
            VanillaGrad(model), solver="exact", tol=st["exact_tol"], max_iter=st["exact_max_iter"], **common
        ),
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


def evaluate(cfg: dict) -> tuple[dict, dict, dict]:
    per_run: dict[str, dict[str, list[float]]] = {}
    objectives: dict[str, list[float]] = {}
    identity_gap = 0.0
    sweep: dict[tuple[str, float], dict[str, list[float]]] = {
        (solver, lam): {"gini": [], "below_median": [], "fidelity": []}
        for solver in ("seed", "exact")
        for lam in cfg["lambda_grp_sweep"]
    }
    for run in range(int(cfg["runs"])):
        model, x, w = make_run(cfg, run)
        with torch.no_grad():
            clean = model(x)[:, 0]
        for name, explainer in methods(model, cfg, run).items():
            t0 = time.perf_counter()
            maps = explainer(x, 0).detach()
            elapsed = (time.perf_counter() - t0) / x.shape[0]
            kw = {"class_idx": 0, "steps": int(cfg["steps"]), "score": "logit", "reduce": "l2", "batch_size": 256}
            dele = normalised_auc(deletion_curve(model, x, maps, baseline=float(cfg["baseline"]), **kw), clean)
            ins = normalised_auc(insertion_curve(model, x, maps, start=float(cfg["insertion_start"]), **kw), clean)
            identity_gap = max(identity_gap, float(np.abs(ins - (1 - dele)).max()))
            rec = per_run.setdefault(
                name, {k: [] for k in ("deletion", "insertion", "gini", "below_median", "fidelity", "time")}
            )
            rec["deletion"].append(float(dele.mean()))
            rec["insertion"].append(float(ins.mean()))
            rec["gini"].append(float(gini_index(maps, reduce="l2").mean()))
            rec["below_median"].append(float(fraction_below_median(maps, reduce="l2").mean()))
            rec["fidelity"].append(float(cosine(maps, w).mean()))
            rec["time"].append(elapsed)
            if isinstance(explainer, StructuredGradient):
                objectives.setdefault(name, []).append(float(explainer.last_info["objective"].mean()))
        st = cfg["structured"]
        # the linear score's gradient (so every structured map) is the same for all inputs of a run: the sweep
        # explains the first input only
        for (solver, lam), rec in sweep.items():
            sg = StructuredGradient(
                VanillaGrad(model),
                lambda_grp=float(lam),
                lambda_l1=st["lambda_l1"],
                lambda_tv=st["lambda_tv"],
                tv_iters=st["tv_iters"],
                tv_step=st["tv_step"],
                steps=st["steps"],
                solver=solver,
                tol=st["exact_tol"],
                max_iter=st["exact_max_iter"],
                output="structured",
            )
            maps = sg(x[:1], 0).detach()
            rec["gini"].append(float(gini_index(maps, reduce="l2").mean()))
            rec["below_median"].append(float(fraction_below_median(maps, reduce="l2").mean()))
            rec["fidelity"].append(float(cosine(maps, w).mean()))
    return per_run, sweep, {"objectives": objectives, "identity_gap": identity_gap}


def ci(values, cfg) -> str:
    """Mean [95 % bootstrap CI] from 20 runs on, else mean (range [min, max], n=runs)."""
    return str(ci_or_range(values, n_resamples=int(cfg["bootstrap_resamples"])))


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


def write_table(per_run: dict, sweep: dict, extra: dict, cfg: dict, out: Path) -> str:
    lines = [
        "# Seed 000 synthetic experiment (structured gradients), reproduced",
        "",
        (
            f"{cfg['runs']} runs x {cfg['inputs_per_run']} input fields, (C, H, W) = ({cfg['channels']}, "
            f"{cfg['size'][0]}, {cfg['size'][1]}), linear score S(x) = <w, x>; mean [95 % bootstrap CI] over runs (the range below 20 runs). "
            "Scores normalised by S(x). Config: `configs/seed000_structured.yaml`."
        ),
        "",
        (
            "| Method | Deletion AUC (lower better) | Insertion AUC (higher better) | Gini (higher = sparser) | "
            "Seed sparsity: fraction below median | Fidelity cos(s, w) | ms / input | "
            "vs structured (seed solver) | vs structured (exact solver) |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    family = {}
    for against in (REFERENCE, EXACT):
        for name in per_run:
            if name != against:
                for key, hib in (("deletion", False), ("insertion", True)):
                    family[(name, against, key)] = V.compare(
                        name,
                        against,
                        per_run[name][key],
                        per_run[against][key],
                        higher_is_better=hib,
                        metric=f"{key} AUC",
                    )
    V.adjust(list(family.values()))

    def test(name: str, against: str) -> str:
        if name == against:
            return "-"
        return "; ".join(f"{key[:3]}: {V.verdict(family[(name, against, key)])}" for key in ("deletion", "insertion"))

    for name, rec in per_run.items():
        lines.append(
            f"| {name} | {ci(rec['deletion'], cfg)} | {ci(rec['insertion'], cfg)} | {ci(rec['gini'], cfg)} | "
            f"{ci(rec['below_median'], cfg)} | {ci(rec['fidelity'], cfg)} | {1e3 * np.mean(rec['time']):.2f} | "
            f"{test(name, REFERENCE)} | {test(name, EXACT)} |"
        )
    lines += [
        "",
        V.table_note(
            list(family.values()),
            family="every method vs each structured solver, deletion "
            "and insertion AUC (per run, the mean over its inputs)",
        ),
    ]
    lines += [
        "",
        "## Beside the seed's Table 2",
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
    obj = extra["objectives"]
    notes_family = {
        "objective": V.compare(
            REFERENCE, EXACT, obj[REFERENCE], obj[EXACT], higher_is_better=False, metric="objective"
        ),
    }
    for solver in ("seed", "exact"):
        rhos = _trend_rhos(sweep, solver, "gini")
        notes_family[f"gini_{solver}"] = V.compare(
            f"rho(lambda_grp, Gini) {solver} solver", "0", rhos, np.zeros_like(rhos), metric="trend"
        )
    V.adjust(list(notes_family.values()))
    exact_fid = [float(np.mean(rec["fidelity"])) for (sol, _), rec in sweep.items() if sol == "exact"]
    lines += [
        "",
        "## lambda_grp sweep (seed Fig. 2)",
        "",
        "| solver | lambda_grp | Gini | Seed sparsity: fraction below median | Fidelity cos(s, w) |",
        "|---|---|---|---|---|",
    ]
    for (solver, lam), rec in sweep.items():
        lines.append(
            f"| {solver} | {lam:.2f} | {ci(rec['gini'], cfg)} | {ci(rec['below_median'], cfg)} | "
            f"{ci(rec['fidelity'], cfg)} |"
        )
    lines += [
        "",
        "## Notes",
        "",
        "- Objective of the stated problem (normalised units, mean over runs): "
        + ", ".join(f"{k}: {np.mean(v):.4f}" for k, v in obj.items())
        + f". The seed's cycle vs the exact solver on it (lower is better): {V.verdict(notes_family['objective'])}"
        + (
            ": the seed's cycle does not minimise its own objective as well as the exact solver."
            if V.outcome(notes_family["objective"]) == "worse"
            else "."
        ),
        (
            f"- With a linear score, a zero deletion baseline and a blank insertion start, insertion AUC = "
            f"1 - deletion AUC exactly (max deviation here {extra['identity_gap']:.1e}). The seed's identical deletion "
            'and insertion columns are what one gets when "deletion AUC" is reported as 1 - AUC.'
        ),
        (
            f"- Sweep (Spearman rho of Gini vs lambda_grp per run, tested against 0): Gini "
            f"{_trend_word(notes_family['gini_seed'])} with lambda_grp for the seed solver "
            f"({V.verdict(notes_family['gini_seed'])}) and {_trend_word(notes_family['gini_exact'])} for the exact solver "
            f"({V.verdict(notes_family['gini_exact'])}); the exact solver's mean fidelity spans "
            f"{min(exact_fid):.3f} to {max(exact_fid):.3f} over the sweep. The seed says maps get sparser as lambda_grp "
            "grows. Why the seed solver can run the other way: its cycle re-applies the shrinkage 12 times (12 x 0.2 = "
            "2.4 > max|g| = 1, so without the TV steps lambda_grp = 0.2 zeroes the whole map), and its explicit TV-flow "
            "steps with eps = 1e-8 move a voxel by up to about tv_step per neighbour whatever the size of the "
            "differences, which refills the shrunk zeros with a flat field."
        ),
        "- "
        + V.table_note(
            list(notes_family.values()),
            family="the tests of these notes: objective, seed-solver and exact-solver sweep trends",
        ),
        (
            "- The seed's sparsity (fraction below the median) is 0.5 by construction for maps without ties; it cannot "
            'show a "40 % sparsity gain". We report the Gini index beside it.'
        ),
        (
            "- For a linear model the gradient is constant: SmoothGrad equals the raw gradient, and IG equals "
            "gradient x input (it ranks by w * x, the true contribution of each location to S)."
        ),
        (
            "- The raw gradient *is* the true gradient (fidelity 1); any regularisation can only lower fidelity "
            'to w; the seed\'s "fidelity loss" axis measures exactly that.'
        ),
    ]
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def write_figure(per_run: dict, sweep: dict, cfg: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for (solver, lam), rec in sweep.items():
        gx = bootstrap_ci(rec["gini"], n_resamples=int(cfg["bootstrap_resamples"]))
        fy = bootstrap_ci(rec["fidelity"], n_resamples=int(cfg["bootstrap_resamples"]))
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
    ax.set_title("lambda_grp sweep (95% CI); o seed solver, s exact solver", fontsize=9)
    ax = axes[1]
    names = list(per_run)
    pos = np.arange(len(names))
    for off, key, label in (
        (-0.2, "deletion", "deletion AUC (lower better)"),
        (0.2, "insertion", "insertion AUC (higher better)"),
    ):
        cis = [bootstrap_ci(per_run[n][key], n_resamples=int(cfg["bootstrap_resamples"])) for n in names]
        est = np.array([c.estimate for c in cis])
        err = np.array([[c.estimate - c.low for c in cis], [c.high - c.estimate for c in cis]])
        ax.bar(pos + off, est, width=0.4, yerr=err, capsize=3, label=label)
    ax.set_xticks(pos, [n.replace(" (", "\n(") for n in names], fontsize=7)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("perturbation tests (mean, 95% CI over runs)")
    fig.tight_layout()
    fig.savefig(out / "figure.png", dpi=120)
    plt.close(fig)


QUICK = {
    "runs": 3,
    "inputs_per_run": 2,
    "size": [24, 24],
    "steps": 10,
    "bootstrap_resamples": 999,
    "smoothgrad": {"n_samples": 4, "stdev_spread": 0.15},
    "ig": {"n_steps": 8},
}


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
    out = output_dir("seed000", args.output_dir, args.quick)
    torch.manual_seed(int(cfg["seed"]))
    t0 = time.perf_counter()
    per_run, sweep, extra = evaluate(cfg)
    print(write_table(per_run, sweep, extra, cfg, out))
    write_figure(per_run, sweep, cfg, out)
    print(f"wrote {out / 'table.md'} and {out / 'figure.png'} in {time.perf_counter() - t0:.1f} s")
    if not math.isfinite(extra["identity_gap"]):
        raise SystemExit("non-finite metric values")


if __name__ == "__main__":
    main()
