"""Seed 002 (Mørch et al. 1995) reproduced on synthetic and MNI152 PET studies: Fig. 2, Fig. 4 and the localisation.

Setup (configs/morch.yaml): PET activation studies
(:func:`~monai_saliency.data.synthetic.pet_phantom.make_pet_study`, 8 subjects x 8 scans, J = 64) in two conditions:
``synthetic`` (the ellipsoid phantom with synthetic correlated noise) and ``mni152_real_noise`` (nilearn's shipped
MNI152 template and tissue maps as the anatomy, real scanner noise from the residuals of nibabel's ``functional.nii``;
:mod:`benchmarks.experiments._morch_data`, offline); a PCA basis of all ``K = rank`` components inside the brain mask
(:class:`~monai_saliency.models.pca.PCAProjection`), the two-layer tanh net of eq. 1 trained on eq. 2 with a ridge
penalty (:class:`~monai_saliency.models.tanh_net.TanhNet`), and the per-voxel cost changes of
:class:`~monai_saliency.analysis.MorchSaliency`:

* ``exact``: ``dE_c`` (eq. 11), the change of training cost when the voxel's basis row is zeroed, no retraining
  (the seed's "computed" saliency, footnote 10);
* ``first``: first-order term (eq. 8/10);
* ``second``: first + second-order term, with the seed's eq. 10 (``hessian="gauss_newton_diag"``: only the
  ``k = k'`` Gauss-Newton terms), the joint Gauss-Newton term (``"gauss_newton"``, the library default), and the
  true second derivative (``"exact"``: the full second-order Taylor term of ``dE_c``).

Three experiments:

1. **Fig. 2**: exact vs first vs second order on three axial slices (through the centre of the "visual" region and
   +/- 17 mm, as the seed's AC-PC -17 / 0 / +17 mm), graded paradigm, run 0, per condition.
2. **Fig. 4**: normalised MSE ``f_q(I) = sum_i (dE_c,i - dE_q,i)^2 / sum_i dE_c,i^2`` of each estimate as the input
   size ``I`` grows: one slice of a graded study, decimated in-plane (``x[::s, ::s]``, ``Q = 9`` strides), the whole
   modelling procedure repeated per size, **at equal fit quality**: the ridge is tuned per size
   (:func:`fit_to_quality`) until ``E / var(y)`` is the same at every ``I``; the fixed-ridge fit is reported beside it.
3. **Localisation**: ROC AUC of each estimate and of the controls (a uniform map, the voxel-wise ``|corr(x_i, y)|``,
   the mean input image, dE_c of the untrained net, optionally of a net trained on permuted targets) against the
   true activation mask inside the brain, both paradigms and conditions, ``N = 12`` studies each; paired two-sided
   Wilcoxon tests (estimates vs dE_c, dE_c vs each control) Holm-adjusted per condition table, AUC differences
   below a stated margin counted as ties; verdicts, notes and ``verdicts.json`` generated from them
   (:mod:`benchmarks.experiments._verdicts`). Plus a ridge sweep on run 0 (the interpolation caveat).

Usage::

    python -m benchmarks.experiments.exp_morch [--config configs/morch.yaml] [--quick] [--output-dir DIR]

Writes ``table.md``, ``verdicts.json``, ``figure.png`` (Fig. 4 + localisation), ``fig2.png`` /
``fig2_<condition>.png`` (the slices) and ``fig4.png`` (with the fit quality per size) to the output directory. Runs
single-threaded (``threads`` in the config); the table states the run's CPU and wall time against the budget.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.experiments._morch_data import MNI_REGIONS, functional_noise_bank, mni152_anatomy, normalised_centre
from benchmarks.experiments._morch_figures import write_figures
from benchmarks.experiments._morch_report import ESTIMATES, nmse
from benchmarks.experiments._morch_tables import write_table
from benchmarks.experiments._output import OUTPUT_DIR_HELP, ROOT, output_dir
from benchmarks.experiments._verdicts import write_verdicts
from monai_saliency.analysis import MorchSaliency
from monai_saliency.data.synthetic.pet_phantom import make_pet_study
from monai_saliency.metrics.roc_auc import roc_auc
from monai_saliency.models.pca import PCAProjection
from monai_saliency.models.tanh_net import TanhNet


# ---------------------------------------------------------------------------------------------- building blocks
def fit_model(
    images: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    model_cfg: dict,
    seed: int,
    weight_decay: float | None = None,
) -> tuple[PCAProjection, TanhNet, torch.Tensor, dict]:
    """PCA on the masked volumes + eq. 1 trained on the centred targets (eq. 1 has no output bias).

    Returns:
        ``(pca, net, centred targets, info)`` with ``info`` = final cost, iterations, converged flag, seconds.
    """
    t0 = time.perf_counter()
    pca = PCAProjection(n_components=model_cfg.get("n_components")).fit(images, mask=mask)
    y = targets.double() - targets.double().mean()
    net = TanhNet(pca.k, hidden=int(model_cfg["hidden"]), seed=seed)
    wd = float(model_cfg["weight_decay"] if weight_decay is None else weight_decay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # non-convergence is recorded in info instead
        res = net.fit(
            pca(images),
            y,
            weight_decay=wd,
            optimizer=model_cfg["optimizer"],
            tol=float(model_cfg["tol"]),
            max_iter=int(model_cfg["max_iter"]),
        )
    info = {
        "cost": res.cost,
        "n_iter": res.n_iter,
        "converged": res.converged,
        "seconds": time.perf_counter() - t0,
        "weight_decay": wd,
        "rel_cost": res.cost / float(y.var(unbiased=False)),
    }
    return pca, net, y, info


def saliencies(
    pca: PCAProjection,
    net: TanhNet,
    images: torch.Tensor,
    y: torch.Tensor,
    hessians=("gauss_newton_diag", "gauss_newton"),
) -> dict[str, np.ndarray]:
    """Per-voxel cost changes ``(I,)`` in mask order: exact dE_c, first order, second order per Hessian model."""
    base = MorchSaliency(net, pca, hessian="gauss_newton").cost_changes(images, y, orders=("first", "second", "exact"))
    out = {"exact": base["exact"], "first": base["first"], "second_gauss_newton": base["second"]}
    for h in hessians:
        if h != "gauss_newton":
            out[f"second_{h}"] = MorchSaliency(net, pca, hessian=h).cost_changes(images, y, orders=("second",))[
                "second"
            ]
    return {k: v.double().numpy() for k, v in out.items() if k == "exact" or k == "first" or k[7:] in hessians}


def correlation_map(pca: PCAProjection, images: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Voxel-wise ``|Pearson corr(x_i, y)|`` over the scans (a mass-univariate, SPM-like baseline)."""
    xc = pca.centred(images)  # (J, I), centred over scans
    yc = y.double() - y.double().mean()
    num = yc @ xc
    den = xc.norm(dim=0) * yc.norm()
    return (num / den.clamp_min(1e-300)).abs().numpy()


# ---------------------------------------------------------------------------------------------- experiments
def make_study(cfg: dict, condition: str, paradigm: str, seed: int, resources: dict):
    """One study of ``condition`` (``cfg["conditions"]``): the synthetic phantom, or the MNI152 anatomy with the
    real noise of ``functional.nii`` (loaded once into ``resources``)."""
    st_cfg, cond = cfg["study"], dict(cfg["conditions"][condition] or {})
    kwargs = {
        "n_subjects": int(st_cfg["n_subjects"]),
        "n_scans": int(st_cfg["n_scans"]),
        "seed": seed,
        **{k: float(v) for k, v in cond.items() if k not in ("anatomy", "noise_source")},
    }
    if cond.get("anatomy") == "mni152":
        if "mni152" not in resources:
            resources["mni152"] = mni152_anatomy()
        anatomy, affine = resources["mni152"]
        kwargs.update(anatomy=anatomy, region_centre=normalised_centre(MNI_REGIONS[paradigm], affine, anatomy.shape))
    else:
        kwargs["shape"] = tuple(st_cfg["shape"])
    if cond.get("noise_source") == "functional":
        if "functional" not in resources:
            resources["functional"] = functional_noise_bank()
        kwargs["noise_bank"] = resources["functional"][0]
    return make_pet_study(paradigm, **kwargs)


def localisation_maps(pca, net, images, y, model_cfg: dict, seed: int, permuted: bool) -> dict[str, np.ndarray]:
    """Every map of the localisation table for one study: the estimates of dE_c and the controls (a uniform map,
    ``|corr(x_i, y)|``, the mean input image, dE_c of the untrained net and of a net trained on permuted targets)."""
    maps = saliencies(pca, net, images, y, hessians=("gauss_newton_diag", "gauss_newton", "exact"))
    maps["corr"] = correlation_map(pca, images, y)
    maps["uniform"] = np.zeros_like(maps["exact"])
    maps["mean_image"] = pca.flatten(images).double().mean(0).numpy()
    untrained = TanhNet(pca.k, hidden=int(model_cfg["hidden"]), seed=seed)  # its seeded random initial weights
    maps["untrained"] = (
        MorchSaliency(untrained, pca).cost_changes(images, y, orders=("exact",))["exact"].double().numpy()
    )
    if permuted:
        perm = torch.as_tensor(np.random.default_rng(seed).permutation(y.numel()))
        net_p = TanhNet(pca.k, hidden=int(model_cfg["hidden"]), seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            net_p.fit(
                pca(images),
                y[perm],
                weight_decay=float(model_cfg["weight_decay"]),
                optimizer=model_cfg["optimizer"],
                tol=float(model_cfg["tol"]),
                max_iter=int(model_cfg["max_iter"]),
            )
        maps["permuted"] = (
            MorchSaliency(net_p, pca).cost_changes(images, y[perm], orders=("exact",))["exact"].double().numpy()
        )
    return maps


def run_localization(cfg: dict) -> dict:
    """N studies per condition and paradigm: AUC of every map vs the true region, NMSE of every estimate, fits.

    Returns:
        ``{"per_run": {condition: {paradigm: {key: [per study]}}}, "fig2": {condition: run 0 of the graded
        paradigm}, "ridge": {(paradigm, ridge): run 0 of the first condition}, "noise_info": ..., "seconds": ...}``.
    """
    model_cfg = cfg["model"]
    permuted = bool(cfg["localization"].get("permuted_control", True))
    res: dict = {"per_run": {}, "fig2": {}, "ridge": {}, "seconds": {}}
    resources: dict = {}
    for c_idx, condition in enumerate(cfg["conditions"]):
        t0 = time.perf_counter()
        res["per_run"][condition] = {}
        for p_idx, paradigm in enumerate(cfg["localization"]["paradigms"]):
            rec: dict[str, list] = {}
            for run in range(int(cfg["localization"]["runs"])):
                seed = int(cfg["seed"]) * 10000 + 1000 * c_idx + 100 * p_idx + run
                study = make_study(cfg, condition, paradigm, seed, resources)
                pca, net, y, info = fit_model(study.images, study.mask, study.targets, model_cfg, seed)
                maps = localisation_maps(pca, net, study.images, y, model_cfg, seed, permuted)
                truth = study.truth[study.mask].numpy()
                for name, m in maps.items():
                    rec.setdefault(f"auc:{name}", []).append(roc_auc(m, truth))
                    if name in ESTIMATES:
                        rec.setdefault(f"nmse:{name}", []).append(nmse(maps["exact"], m))
                second_term = maps["second_gauss_newton"] - maps["first"]
                rec.setdefault("second_over_first", []).append(
                    float(np.linalg.norm(second_term) / max(np.linalg.norm(maps["first"]), 1e-300))
                )
                rec.setdefault("neg_exact", []).append(float((maps["exact"] < 0).mean()))
                rec.setdefault("corr_first_exact", []).append(float(np.corrcoef(maps["first"], maps["exact"])[0, 1]))
                for key in ("rel_cost", "seconds", "n_iter"):
                    rec.setdefault(key, []).append(float(info[key]))
                rec.setdefault("converged", []).append(bool(info["converged"]))
                rec.setdefault("n_voxels", []).append(pca.n_voxels)
                rec.setdefault("n_truth", []).append(int(truth.sum()))
                if run == 0 and paradigm == "graded":
                    res["fig2"][condition] = {"study": study, "pca": pca, "maps": maps, "info": info}
                if run == 0 and c_idx == 0:
                    run_ridge_sweep(res["ridge"], cfg, study, paradigm, seed, maps, info, truth)
            res["per_run"][condition][paradigm] = rec
        res["seconds"][condition] = time.perf_counter() - t0
    if "functional" in resources:
        res["noise_info"] = resources["functional"][1]
    if "mni152" in resources:
        res["mni_shape"] = resources["mni152"][0].shape
    return res


def run_ridge_sweep(out: dict, cfg: dict, study, paradigm: str, seed: int, maps: dict, info: dict, truth) -> None:
    """The interpolation caveat on one study: the fit and the estimates at every ridge of ``cfg["ridge_sweep"]``."""
    model_cfg = cfg["model"]
    for wd in cfg["ridge_sweep"]:
        pca2, net2, y2, info2 = fit_model(
            study.images, study.mask, study.targets, model_cfg, seed, weight_decay=float(wd)
        )
        m2 = saliencies(pca2, net2, study.images, y2, hessians=("gauss_newton_diag", "gauss_newton"))
        out[(paradigm, float(wd))] = {
            "info": info2,
            "nmse": {k: nmse(m2["exact"], v) for k, v in m2.items() if k != "exact"},
            "auc": {k: roc_auc(v, truth) for k, v in m2.items()},
        }
    out[(paradigm, float(model_cfg["weight_decay"]))] = {
        "info": info,
        "nmse": {k: nmse(maps["exact"], v) for k, v in maps.items() if k in ESTIMATES},
        "auc": {k: roc_auc(v, truth) for k, v in maps.items() if k == "exact" or k in ESTIMATES},
    }


def fit_to_quality(images, mask, targets, model_cfg: dict, seed: int, target: float, rtol: float, max_fits: int):
    """Fit at ``model.weight_decay``, then re-fit (warm start) with the ridge moved by a secant step in log-log
    until the relative training cost ``E / var(y)`` is within ``rtol`` (relative) of ``target``.

    Returns:
        ``(first, final)``: ``(pca, net_state, y, info)`` of the first fit (the fixed ridge) and of the last one;
        ``final[3]`` has ``fits`` (number of fits) and ``on_target``.
    """
    pca, net, y, info = fit_model(images, mask, targets, model_cfg, seed)
    first = (pca, {k: v.clone() for k, v in net.state_dict().items()}, y, info)
    v = pca(images)
    log_t = math.log(target)
    pts = [(math.log(info["weight_decay"]), math.log(max(info["rel_cost"], 1e-300)))]
    fits = 1
    while abs(pts[-1][1] - log_t) > math.log1p(rtol) and fits < max_fits:
        if len(pts) == 1:
            slope = 2.0  # E/var(y) ~ ridge^2 in this regime (ridge sweep), refined by the secant below
        else:
            (a0, b0), (a1, b1) = pts[-2], pts[-1]
            slope = (b1 - b0) / (a1 - a0) if abs(a1 - a0) > 1e-12 and abs(b1 - b0) > 1e-12 else 2.0
            slope = min(max(slope, 0.25), 4.0)
        wd = math.exp(pts[-1][0] + (log_t - pts[-1][1]) / slope)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = net.fit(
                v,
                y,
                weight_decay=wd,
                optimizer=model_cfg["optimizer"],
                tol=float(model_cfg["tol"]),
                max_iter=int(model_cfg["max_iter"]),
                reinit=False,
            )
        fits += 1
        info = {
            "cost": res.cost,
            "n_iter": res.n_iter,
            "converged": res.converged,
            "seconds": info["seconds"] + time.perf_counter() - t0,
            "weight_decay": wd,
            "rel_cost": res.cost / float(y.var(unbiased=False)),
        }
        pts.append((math.log(wd), math.log(max(info["rel_cost"], 1e-300))))
    info["fits"] = fits
    info["on_target"] = abs(pts[-1][1] - log_t) <= math.log1p(rtol)
    return first, (pca, net, y, info)


def run_fig4(cfg: dict) -> dict:
    """Normalised MSE of the estimates vs dE_c as a function of I (one slice, decimated), per study seed: at the
    fixed ridge (fit quality varies with I) and with the ridge tuned so that E / var(y) is the same at every I."""
    f4, model_cfg, st_cfg = cfg["fig4"], cfg["model"], cfg["study"]
    hess = tuple(f4["hessians"])
    strides = [int(s) for s in f4["strides"]]
    out: dict = {"I": {s: [] for s in strides}, "nmse": {}, "nmse_fixed": {}, "converged": 0, "fits": 0}
    for key in ("rel_cost", "rel_cost_fixed", "ridge", "on_target", "n_fits"):
        out[key] = {s: [] for s in strides}
    target, rtol = float(f4["target_rel_cost"]), float(f4["rel_cost_rtol"])
    for sd in range(int(f4["seeds"])):
        seed = int(cfg["seed"]) * 10000 + 5000 + sd
        study = make_pet_study(
            "graded",
            shape=tuple(f4["shape"]),
            n_subjects=int(st_cfg["n_subjects"]),
            n_scans=int(st_cfg["n_scans"]),
            seed=seed,
            noise_fwhm=float(f4["noise_fwhm"]),
            resolution_fwhm=float(f4["resolution_fwhm"]),
            anatomy_shift=float(f4["anatomy_shift"]),
        )
        z = int(study.truth.sum((0, 1)).argmax())  # the slice through the centre of the activated region
        imgs = study.images.as_tensor()[..., z]  # (J, X, Y)
        mask = study.mask[..., z]
        for s in strides:
            sub, m = imgs[:, ::s, ::s].contiguous(), mask[::s, ::s].contiguous()
            first, (pca, net, y, info) = fit_to_quality(
                sub, m, study.targets, model_cfg, seed, target, rtol, int(f4["max_fits"])
            )
            net_fixed = TanhNet(pca.k, hidden=int(model_cfg["hidden"]), seed=seed)
            net_fixed.load_state_dict(first[1])
            fixed = saliencies(pca, net_fixed, sub, y, hessians=hess)
            maps = saliencies(pca, net, sub, y, hessians=hess)
            out["I"][s].append(pca.n_voxels)
            out["fits"] += 1
            out["converged"] += int(info["converged"])
            out["rel_cost"][s].append(info["rel_cost"])
            out["rel_cost_fixed"][s].append(first[3]["rel_cost"])
            out["ridge"][s].append(info["weight_decay"])
            out["on_target"][s].append(bool(info["on_target"]))
            out["n_fits"][s].append(info["fits"])
            for k in maps:
                if k != "exact":
                    out["nmse"].setdefault(k, {t: [] for t in strides})[s].append(nmse(maps["exact"], maps[k]))
                    out["nmse_fixed"].setdefault(k, {t: [] for t in strides})[s].append(nmse(fixed["exact"], fixed[k]))
    return out


QUICK = {
    "study": {"shape": [24, 28, 20], "n_subjects": 4, "n_scans": 8},
    "model": {"hidden": 3, "max_iter": 100},
    "localization": {"runs": 3},
    "ridge_sweep": [0.001],
    "fig4": {
        "seeds": 2,
        "shape": [48, 48, 8],
        "noise_fwhm": 3.0,
        "resolution_fwhm": 1.8,
        "anatomy_shift": 1.0,
        "strides": [1, 2, 3],
        "max_fits": 3,
    },
    "bootstrap_resamples": 999,
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "morch.yaml"))
    parser.add_argument("--output-dir", default=None, help=OUTPUT_DIR_HELP)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    if args.quick:
        cfg = _merge(cfg, QUICK)
    out = output_dir("morch", args.output_dir, args.quick)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg.get("threads", 1)))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        loc = run_localization(cfg)
        t1, c1 = time.perf_counter(), time.process_time()
        fig4 = run_fig4(cfg)
        t2, c2 = time.perf_counter(), time.process_time()
        timing = {
            "cpu": {"localisation + Fig. 2": c1 - c0, "Fig. 4": c2 - c1, "total": c2 - c0},
            "wall": {"localisation + Fig. 2": t1 - t0, "Fig. 4": t2 - t1, "total": t2 - t0},
        }
        text, records = write_table(loc, fig4, cfg, out, timing)
        write_verdicts(out, records, experiment="morch")
        write_figures(loc, fig4, cfg, out)
    finally:
        torch.set_num_threads(threads)
    print(text)
    print(
        f"localisation + Fig. 2: {t1 - t0:.1f} s, Fig. 4: {t2 - t1:.1f} s (wall; CPU {c2 - c0:.1f} s); wrote {out}/table.md, verdicts.json, "
        f"figure.png, fig2*.png, fig4.png"
    )
    if re.search(r"\b(nan|inf)\b", text.lower()):
        raise SystemExit("non-finite values in the table")


if __name__ == "__main__":
    main()
