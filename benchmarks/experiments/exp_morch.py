"""Seed 002 (Mørch et al. 1995) reproduced on synthetic PET studies: Fig. 2, Fig. 4 and the localisation.

Setup (configs/morch.yaml): synthetic PET activation studies
(:func:`~monai_saliency.data.synthetic.pet_phantom.make_pet_study`, 8 subjects x 8 scans, J = 64), a PCA basis of
all ``K = rank`` components inside the brain mask (:class:`~monai_saliency.models.pca.PCAProjection`), the
two-layer tanh net of eq. 1 trained on eq. 2 with a ridge penalty (:class:`~monai_saliency.models.tanh_net.TanhNet`),
and the per-voxel cost changes of
:class:`~monai_saliency.analysis.MorchSaliency`:

* ``exact``: ``dE_c`` (eq. 11), the change of training cost when the voxel's basis row is zeroed, no retraining
  (the seed's "computed" saliency, footnote 10);
* ``first``: first-order term (eq. 8/10);
* ``second``: first + second-order term, with the seed's eq. 10 (``hessian="gauss_newton_diag"``: only the
  ``k = k'`` Gauss-Newton terms), the joint Gauss-Newton term (``"gauss_newton"``, the library default), and the
  true second derivative (``"exact"``: the full second-order Taylor term of ``dE_c``).

Three experiments:

1. **Fig. 2**: exact vs first vs second order on three axial slices (through the centre of the "visual" region and
   +/- 17 mm, as the seed's AC-PC -17 / 0 / +17 mm), graded paradigm, run 0.
2. **Fig. 4**: normalised MSE ``f_q(I) = sum_i (dE_c,i - dE_q,i)^2 / sum_i dE_c,i^2`` of each estimate as the input
   size ``I`` grows: one slice of a graded study, decimated in-plane (``x[::s, ::s]``, ``Q = 9`` strides), the whole
   modelling procedure (PCA + training + saliency) repeated per size; mean and 95 % bootstrap CI over studies.
3. **Localisation**: ROC AUC of each saliency (and of a voxel-wise ``|corr(x_i, y)|`` baseline) against the true
   activation mask inside the brain, both paradigms (graded: occipital region; rest/task: motor region), ``N`` studies
   each, mean and 95 % bootstrap CI, paired two-sided Wilcoxon tests against ``dE_c``, Holm-adjusted within the
   table, verdicts and the table note generated from them (``_verdicts``). Plus a ridge sweep on run 0
   that shows the interpolation caveat (with little ridge the residuals vanish and the first order fails).

Usage::

    python -m benchmarks.experiments.exp_morch [--config configs/morch.yaml] [--quick] [--output-dir DIR]

Writes ``table.md``, ``figure.png`` (Fig. 4 + localisation), ``fig2.png`` (the slices) and ``fig4.png`` to the
output directory. Runs single-threaded by default (``threads`` in the config): the problems are tiny (64 examples,
~500 parameters) and torch's thread pool only adds overhead to them.
"""

from __future__ import annotations

import argparse
import copy
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.experiments._morch_report import (
    nmse,
    write_figures,
    write_table,
)
from benchmarks.experiments._output import OUTPUT_DIR_HELP, ROOT, output_dir
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
def run_localization(cfg: dict) -> dict:
    """N studies per paradigm: AUC of every map vs the true region, NMSE of every estimate, fit statistics."""
    st_cfg, model_cfg = cfg["study"], cfg["model"]
    res: dict = {"per_run": {}, "fig2": None, "ridge": {}}
    for p_idx, paradigm in enumerate(cfg["localization"]["paradigms"]):
        rec: dict[str, list] = {}
        for run in range(int(cfg["localization"]["runs"])):
            seed = int(cfg["seed"]) * 10000 + 100 * p_idx + run
            study = make_pet_study(
                paradigm,
                shape=tuple(st_cfg["shape"]),
                n_subjects=int(st_cfg["n_subjects"]),
                n_scans=int(st_cfg["n_scans"]),
                seed=seed,
            )
            pca, net, y, info = fit_model(study.images, study.mask, study.targets, model_cfg, seed)
            maps = saliencies(pca, net, study.images, y, hessians=("gauss_newton_diag", "gauss_newton", "exact"))
            maps["corr"] = correlation_map(pca, study.images, y)
            truth = study.truth[study.mask].numpy()
            for name, m in maps.items():
                rec.setdefault(f"auc:{name}", []).append(roc_auc(m, truth))
                if name not in ("exact", "corr"):
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
            if run == 0:
                if paradigm == "graded":
                    res["fig2"] = {"study": study, "pca": pca, "maps": maps, "info": info}
                for wd in cfg["ridge_sweep"]:  # the interpolation caveat, on the same study
                    pca2, net2, y2, info2 = fit_model(
                        study.images, study.mask, study.targets, model_cfg, seed, weight_decay=float(wd)
                    )
                    m2 = saliencies(pca2, net2, study.images, y2, hessians=("gauss_newton_diag", "gauss_newton"))
                    res["ridge"][(paradigm, float(wd))] = {
                        "info": info2,
                        "nmse": {k: nmse(m2["exact"], v) for k, v in m2.items() if k != "exact"},
                        "auc": {k: roc_auc(v, truth) for k, v in m2.items()},
                    }
                res["ridge"][(paradigm, float(model_cfg["weight_decay"]))] = {
                    "info": info,
                    "nmse": {k: nmse(maps["exact"], v) for k, v in maps.items() if k not in ("exact", "corr")},
                    "auc": {k: roc_auc(v, truth) for k, v in maps.items() if k != "corr"},
                }
        res["per_run"][paradigm] = rec
    return res


def run_fig4(cfg: dict) -> dict:
    """Normalised MSE of the estimates vs dE_c as a function of I (one slice, decimated), per study seed."""
    f4, model_cfg, st_cfg = cfg["fig4"], cfg["model"], cfg["study"]
    hess = tuple(f4["hessians"])
    strides = [int(s) for s in f4["strides"]]
    out: dict = {"I": {s: [] for s in strides}, "nmse": {}, "converged": 0, "fits": 0}
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
            pca, net, y, info = fit_model(sub, m, study.targets, model_cfg, seed)
            maps = saliencies(pca, net, sub, y, hessians=hess)
            out["I"][s].append(pca.n_voxels)
            out["fits"] += 1
            out["converged"] += int(info["converged"])
            for k, v in maps.items():
                if k != "exact":
                    out["nmse"].setdefault(k, {t: [] for t in strides})[s].append(nmse(maps["exact"], v))
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
        t0 = time.perf_counter()
        loc = run_localization(cfg)
        t1 = time.perf_counter()
        fig4 = run_fig4(cfg)
        t2 = time.perf_counter()
        text = write_table(loc, fig4, cfg, out, t2 - t0)
        write_figures(loc, fig4, cfg, out)
    finally:
        torch.set_num_threads(threads)
    print(text)
    print(
        f"localisation + Fig. 2: {t1 - t0:.1f} s, Fig. 4: {t2 - t1:.1f} s; wrote {out}/table.md, figure.png, "
        f"fig2.png, fig4.png"
    )
    if re.search(r"\b(nan|inf)\b", text.lower()):
        raise SystemExit("non-finite values in the table")


if __name__ == "__main__":
    main()
