"""The shared vocabulary of :mod:`benchmarks.experiments.exp_morch` (seed 002): the estimate labels, the thresholds
its verdicts test, the NMSE and CI helpers and the verdict families (Holm-adjusted comparisons) that
:mod:`benchmarks.experiments._morch_tables` writes into ``table.md`` and :mod:`benchmarks.experiments._morch_figures`
draws."""

import numpy as np
from scipy.stats import spearmanr

from benchmarks.experiments import _verdicts as V
from monai_saliency.metrics.stats import ci_or_range

#: estimate names -> (MorchSaliency hessian, order) ; "exact" is dE_c (eq. 11)
LABELS = {
    "exact": "computed dE_c (eq. 11)",
    "first": "1st order",
    "second_gauss_newton_diag": "2nd order, eq. 10 (diagonal GN)",
    "second_gauss_newton": "2nd order, joint GN (default)",
    "second_exact": "2nd order, exact Hessian",
    "corr": "control: abs. corr(x_i, y) (model-free, SPM-like)",
    "uniform": "control: uniform map",
    "mean_image": "control: mean input image (model-free)",
    "untrained": "control: dE_c of the untrained net",
    "permuted": "control: dE_c of a net trained on permuted targets",
}
#: the approximations of dE_c (compared with it) and the controls (dE_c is compared with them)
ESTIMATES = ("first", "second_gauss_newton_diag", "second_gauss_newton", "second_exact")
CONTROLS = ("uniform", "corr", "mean_image", "untrained", "permuted")

#: AUC differences below this count as ties (a consistent 1e-4 shift between near-identical maps is "significant"
#: but no difference in localisation)
AUC_MARGIN = 0.005
#: "a useful approximation" / "suffices": NMSE to dE_c below 5 %; "same pattern": Pearson corr with dE_c above 0.99
USEFUL_NMSE = 0.05
SAME_PATTERN_CORR = 0.99
#: time budget of a full run, single thread (issue 20: `make experiments` runs two streams of one thread)
BUDGET_SECONDS = 360
CONDITION_LABELS = {
    "synthetic": "synthetic phantom, synthetic noise",
    "mni152_real_noise": "MNI152 anatomy, real fMRI noise (functional.nii)",
}


def nmse(ref: np.ndarray, est: np.ndarray) -> float:
    """The seed's normalised MSE ``sum (ref - est)^2 / sum ref^2`` (eq. 11's ``f_1``, ``f_2``)."""
    return float(((ref - est) ** 2).sum() / max(float((ref**2).sum()), 1e-300))


def ci(values, cfg: dict, fmt: str = "{:.3f}") -> str:
    """Mean [95 % bootstrap CI] from 20 studies on, else mean (range [min, max], n=studies)."""
    return ci_or_range(values, n_resamples=int(cfg["bootstrap_resamples"])).format(fmt)


# ---------------------------------------------------------------------------------------------- reporting
def _trend(fig4: dict, key: str, which: str = "nmse") -> tuple[float, float, float]:
    """(f at the largest I, f at the smallest I, log-log slope of the mean f vs I)."""
    strides = sorted(fig4["I"])
    i_vals = np.array([np.mean(fig4["I"][s]) for s in strides])
    f = np.array([np.mean(fig4[which][key][s]) for s in strides])
    slope = float(np.polyfit(np.log(i_vals), np.log(np.maximum(f, 1e-300)), 1)[0])
    return float(f[0]), float(f[-1]), slope


def _factor(before, after) -> str:
    """``"lowers ... 3.2x"`` / ``"raises ... 1.5x"`` / ``"leaves unchanged"`` from the mean values (no fixed direction)."""
    b, a = float(np.mean(before)), float(np.mean(after))
    if a == b:
        return "leaves unchanged"
    ratio = b / max(a, 1e-300) if a < b else a / max(b, 1e-300)
    return f"{'lowers' if a < b else 'raises'} {ratio:.2g}x"


def _cond_label(cond: str) -> str:
    return CONDITION_LABELS.get(cond, cond)


def _rho_per_study(fig4: dict, which: str) -> list[float]:
    """Per study: Spearman rho(I, NMSE of the 1st order) over the sizes (negative: the error falls as I grows)."""
    strides = sorted(fig4["I"])
    rhos = []
    for k in range(len(fig4["I"][strides[0]])):
        i_k = [fig4["I"][s][k] for s in strides]
        f_k = [fig4[which]["first"][s][k] for s in strides]
        r_k = float(spearmanr(i_k, f_k)[0]) if len(strides) > 2 else -float(np.sign(f_k[-1] - f_k[0]))
        rhos.append(0.0 if not np.isfinite(r_k) else r_k)
    return rhos


def _vs(values, threshold: float, higher_is_better: bool, what: str) -> V.Comparison:
    """One-sample Wilcoxon test of per-unit values against a stated threshold."""
    values = np.asarray(values, dtype=np.float64)
    return V.compare(what, f"{threshold:g}", values, np.full(values.shape, threshold), higher_is_better)


def localisation_family(rec_by_paradigm: dict) -> dict[tuple[str, str], V.Comparison]:
    """The comparisons of one condition's localisation table, Holm-adjusted together: every estimate vs dE_c and
    dE_c vs every control present, both paradigms (AUC differences below :data:`AUC_MARGIN` are ties)."""
    fam = {}
    for p, rec in rec_by_paradigm.items():
        for name in ESTIMATES:
            fam[(name, p)] = V.compare(
                LABELS[name], "dE_c", rec[f"auc:{name}"], rec["auc:exact"], metric=f"AUC {p}", margin=AUC_MARGIN
            )
        for name in CONTROLS:
            if f"auc:{name}" in rec:
                fam[(name, p)] = V.compare(
                    "dE_c",
                    LABELS[name].removeprefix("control: "),
                    rec["auc:exact"],
                    rec[f"auc:{name}"],
                    metric=f"AUC {p}",
                    control=True,
                    margin=AUC_MARGIN,
                )
    V.adjust(list(fam.values()))
    return fam


def fig4_family(fig4: dict) -> dict[str, V.Comparison]:
    """The Fig. 4 claims, Holm-adjusted together: the 1st-order NMSE falls with I (per-study Spearman rho < 0) and
    is below :data:`USEFUL_NMSE` at the largest I, at equal fit quality and at the fixed ridge."""
    strides = sorted(fig4["I"])
    i_big = int(np.mean(fig4["I"][strides[0]]))
    fam = {}
    for which, tag in (("nmse", "equal fit quality"), ("nmse_fixed", "fixed ridge")):
        fam[f"decrease:{which}"] = _vs(_rho_per_study(fig4, which), 0.0, False, f"Spearman rho(I, NMSE 1st), {tag}")
        fam[f"suffices:{which}"] = _vs(
            fig4[which]["first"][strides[0]], USEFUL_NMSE, False, f"NMSE 1st at I = {i_big}, {tag}"
        )
    V.adjust(list(fam.values()))
    return fam
