"""Measures of :mod:`benchmarks.experiments.exp_forgrad`: the metrics, map variants and controls of its table,
the base explainers, the model-free and occlusion control maps, the scoring of one set of maps, and the evaluation
of one model seed (every map scored, and the max- vs avg-pool mechanism ablation)."""

from __future__ import annotations

import hashlib
import itertools
import time
from pathlib import Path

import torch

from benchmarks.experiments._blobcnn import train_blob_cnn
from monai_saliency.data.synthetic.blobs import make_blob_dataset
from monai_saliency.methods.forgrad import FORGrad, default_sigmas
from monai_saliency.methods.gradients import IntegratedGradients, SmoothGrad, VanillaGrad
from monai_saliency.metrics.localization import mask_energy
from monai_saliency.metrics.perturbation import deletion_curve, insertion_curve, mu_fidelity, stability
from monai_saliency.metrics.spectrum import high_frequency_power_ratio, radial_power_spectrum
from monai_saliency.models.small_cnn import SmallCNN
from monai_saliency.ops.fourier import frequency_radius
from monai_saliency.ops.normalize import reduce_channels

EXPERIMENT = "forgrad"
METRICS = [  # key, column title, higher is better
    ("deletion", "Deletion AUC (lower better)", False),
    ("insertion", "Insertion AUC (higher better)", True),
    ("mu_fidelity", "mu-fidelity (higher better)", True),
    ("stability", "Stability (lower better)", False),
    ("hf_ratio", "HF power ratio (lower = smoother)", False),
    ("mask_energy", "Mask energy (higher better)", True),
]
RAW, FORGRAD = "raw", "FORGrad"
LOWPASS = "Gaussian low-pass (matched)"
RANDOM = "FORGrad, randomised model"
VARIANTS = (RAW, FORGRAD, LOWPASS, RANDOM)
CONTROLS = ("Uniform map", "Input map", "Edge map")  # model-free, the same for every method
CONTROL_ROW = "Control"
REFERENCES = (RAW, LOWPASS, RANDOM, *CONTROLS)  # what FORGrad is compared with; all but RAW are controls
ALL_METHODS = ("Gradient", "SmoothGrad", "Integrated Gradients")


def base_explainers(model, cfg, methods):
    make = {
        "Gradient": lambda: VanillaGrad(model),
        "SmoothGrad": lambda: SmoothGrad(
            model, batch_size=64, generator=torch.Generator().manual_seed(0), **cfg["smoothgrad"]
        ),
        "Integrated Gradients": lambda: IntegratedGradients(model, batch_size=64, **cfg["ig"]),
    }
    return {name: make[name]() for name in methods}


def gaussian_lowpass(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian low-pass of ``(B, C, *sp)`` in the Fourier domain (periodic, like FORGrad's ideal low-pass) whose
    half-power radius is ``sigma`` frequency bins: transfer ``H(r) = 2 ** (-r**2 / (2 sigma**2))``, so
    ``H(sigma)**2 = 1/2``. The bandwidth-matched control of FORGrad's hard cut-off at ``sigma``."""
    sp = tuple(maps.shape[2:])
    dims = tuple(range(2, maps.ndim))
    r = frequency_radius(sp, dtype=torch.float64, rfft=True)
    h = torch.pow(2.0, -(r**2) / (2 * sigma**2))
    spec = torch.fft.rfftn(maps.double(), dim=dims) * h
    return torch.fft.irfftn(spec, s=sp, dim=dims).to(maps.dtype)


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """Model-free edge map: magnitude of the central-difference gradient of the input, ``(B, 1, *sp)``."""
    grads = torch.gradient(x, dim=tuple(range(2, x.ndim)))
    return torch.sqrt(sum(g**2 for g in grads)).sum(1, keepdim=True)


def control_maps(name: str, x: torch.Tensor) -> torch.Tensor:
    """The model-free control maps of the inputs ``x``."""
    if name == "Uniform map":
        return torch.ones_like(x[:, :1])
    if name == "Input map":
        return x.sum(1, keepdim=True)
    return edge_map(x)


def occlusion_map(model, x: torch.Tensor, idx: torch.Tensor, patch: int, stride: int, batch_size: int = 512):
    """Black-box occlusion map (Zeiler & Fergus): the drop of the class logit when a ``patch``-wide cube is set to
    0, averaged over the patches covering each voxel (captum's Occlusion rule); ``(B, 1, *sp)``, no gradient."""
    sp = tuple(x.shape[2:])
    starts = [range(0, n - patch + 1, stride) for n in sp]
    masks = []
    for corner in itertools.product(*starts):
        m = torch.zeros(sp, dtype=torch.bool)
        m[tuple(slice(c, c + patch) for c in corner)] = True
        masks.append(m)
    masks = torch.stack(masks)  # (P, *sp)
    n_p = masks.shape[0]
    drops = torch.empty(x.shape[0], n_p, dtype=torch.float64)
    with torch.no_grad():
        full = model(x).gather(1, idx[:, None])[:, 0].double()
        total = x.shape[0] * n_p
        for lo in range(0, total, batch_size):
            flat = torch.arange(lo, min(lo + batch_size, total))
            item, p = flat // n_p, flat % n_p
            xin = torch.where(masks[p][:, None], torch.zeros(()), x[item])
            out = model(xin).gather(1, idx[item][:, None])[:, 0].double()
            drops[item, p] = full[item] - out
    cover = masks.double().sum(0).clamp(min=1)
    return (torch.einsum("bp,p...->b...", drops, masks.double()) / cover)[:, None].float()


class _MemoBase:
    """The base explainer's signed maps, memoised by the input's bytes: the stability test of the raw map, FORGrad
    and the low-pass control explains the same noisy copies, so the base method runs once for the three."""

    def __init__(self, base):
        self.base, self.cache = base, {}

    def __call__(self, x, c):
        key = hashlib.sha1(x.detach().numpy().tobytes() + torch.as_tensor(c).numpy().tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.base(x, c).detach()
        return self.cache[key]


def positives(n: int, shape, data_seed: int):
    xs, ys, ms = make_blob_dataset(4 * n, shape, seed=data_seed)
    keep = ys == 1
    return xs[keep][:n], ms[keep][:n]


def faithfulness(model, x, sal, idx, cfg, steps):
    p = cfg["perturbation"]
    kw = {"class_idx": idx, "steps": steps, "score": p["score"], "batch_size": 256}
    d = deletion_curve(model, x, sal, baseline=p["baseline"], **kw).auc
    blur = p["blur_sigma_fraction"] * max(x.shape[2:])
    i = insertion_curve(model, x, sal, blur_sigma=blur, **kw).auc
    return d, i


def score_maps(model, x, sal, fn, idx, masks, cfg, steps) -> dict:
    d, i = faithfulness(model, x, sal, idx, cfg, steps)
    return {
        "deletion": d.numpy(),
        "insertion": i.numpy(),
        "mu_fidelity": mu_fidelity(model, x, sal, class_idx=idx, batch_size=256, **cfg["mu_fidelity"]).numpy(),
        "stability": stability(fn, x, class_idx=idx, batch_size=64, **cfg["stability"]).numpy(),
        "hf_ratio": high_frequency_power_ratio(sal, cutoff=cfg["hf_cutoff"]).numpy(),
        "mask_energy": mask_energy(sal, masks).numpy(),
    }


def evaluate_seed(dims: str, cfg: dict, seed: int, model_cache: Path | None) -> dict:
    """Every map of one model seed scored on that seed's evaluation split (see the module docstring)."""
    run = cfg["dims"][dims]
    mcfg = run["model"]
    model, info = train_blob_cnn(**mcfg, seed=seed, cache_dir=model_cache)
    torch.manual_seed(cfg["random_model_seed_offset"] + seed)
    random_model = SmallCNN(spatial_dims=mcfg["spatial_dims"], in_channels=1, num_classes=2, width=mcfg["width"])
    random_model.eval()
    shape = (mcfg["size"],) * mcfg["spatial_dims"]
    x_cal, _ = positives(run["calibration_images"], shape, cfg["calibration_data_seed"] + seed)
    x_ev, m_ev = positives(run["evaluation_images"], shape, cfg["evaluation_data_seed"] + seed)
    idx_cal = torch.ones(x_cal.shape[0], dtype=torch.long)
    idx = torch.ones(x_ev.shape[0], dtype=torch.long)
    sigmas = cfg["sigmas"] or default_sigmas(shape)
    steps, cal_steps = run["steps"], run["calibration_steps"]

    def calib_metric(model_, x_, sal_, idx_):
        d, i = faithfulness(model_, x_, sal_, idx_, cfg, cal_steps)
        return i - d

    values, ms, sig_star, calib = {}, {}, {}, {}
    methods = run.get("methods") or list(ALL_METHODS)
    random_bases = base_explainers(random_model, cfg, methods)
    for name, base in base_explainers(model, cfg, methods).items():
        fg = FORGrad(base, reduce="abs_sum")
        cal = fg.calibrate((x_cal, idx_cal), sigmas=sigmas, metric=calib_metric)
        s = cal.best_sigma
        sig_star[name], calib[name] = s, cal
        t0 = time.perf_counter()
        raw_full = base(x_ev, idx).detach()
        t_base = (time.perf_counter() - t0) / x_ev.shape[0]
        memo = _MemoBase(base)
        memo.cache[hashlib.sha1(x_ev.numpy().tobytes() + idx.numpy().tobytes()).hexdigest()] = raw_full
        fg_random = FORGrad(random_bases[name], sigma=s, reduce="abs_sum")
        t0 = time.perf_counter()
        random_maps = fg_random(x_ev, idx).detach()
        t_random = (time.perf_counter() - t0) / x_ev.shape[0]
        variants = {  # (maps, explainer for the stability test); the lambdas bind this iteration's objects
            RAW: (
                reduce_channels(raw_full, "abs_sum"),
                lambda xx, c, memo=memo: reduce_channels(memo(xx, c), "abs_sum"),
            ),
            FORGRAD: (fg.filter(raw_full), lambda xx, c, fg=fg, memo=memo: fg.filter(memo(xx, c))),
            LOWPASS: (
                reduce_channels(gaussian_lowpass(raw_full, s), "abs_sum"),
                lambda xx, c, s=s, memo=memo: reduce_channels(gaussian_lowpass(memo(xx, c), s), "abs_sum"),
            ),
            RANDOM: (random_maps, fg_random),
        }
        for variant, (sal, fn) in variants.items():
            extra = 0.0
            if variant in (FORGRAD, LOWPASS):  # the filter's cost on top of the (memoised) base map
                t0 = time.perf_counter()
                fn(x_ev, idx)
                extra = (time.perf_counter() - t0) / x_ev.shape[0]
            values[(name, variant)] = score_maps(model, x_ev, sal, fn, idx, m_ev, cfg, steps)
            ms[(name, variant)] = 1e3 * (t_random if variant == RANDOM else t_base + extra)
    for control in CONTROLS:
        t0 = time.perf_counter()
        sal = control_maps(control, x_ev)
        ms[(CONTROL_ROW, control)] = 1e3 * (time.perf_counter() - t0) / x_ev.shape[0]
        fn = lambda xx, c, control=control: control_maps(control, xx)
        values[(CONTROL_ROW, control)] = score_maps(model, x_ev, sal, fn, idx, m_ev, cfg, steps)
    with torch.no_grad():
        p_pos = float(model(x_ev).softmax(1)[:, 1].mean())
    out = {"info": info, "sigma": sig_star, "calibration": calib, "values": values, "ms": ms, "n": x_ev.shape[0]}
    out["p_positive"] = p_pos
    if run.get("mechanism"):
        out["mechanism"] = mechanism_seed(model, dims, cfg, seed, x_ev, idx, model_cache)
    return out


def mechanism_seed(model, dims, cfg, seed, x_ev, idx, model_cache) -> dict:
    """HF ratios and radial spectra of gradient (white-box) and occlusion (black-box) maps, max- vs avg-pool."""
    run, mech = cfg["dims"][dims], cfg["mechanism"]
    avg_model, avg_info = train_blob_cnn(**run["model"], seed=seed, cache_dir=model_cache, pool="avg")
    hf, spectra = {}, {}
    for pool, m in (("max", model), ("avg", avg_model)):
        maps = {
            "Gradient": reduce_channels(VanillaGrad(m)(x_ev, idx).detach(), "abs_sum"),
            "Occlusion": occlusion_map(m, x_ev, idx, mech["occlusion_patch"], mech["occlusion_stride"]),
        }
        for kind, sal in maps.items():
            hf[(kind, pool)] = high_frequency_power_ratio(sal, cutoff=cfg["hf_cutoff"]).numpy()
            curves, centres = radial_power_spectrum(sal, n_bins=mech["spectrum_bins"])
            spectra[(kind, pool)] = curves.numpy()
            spectra["centres"] = centres.numpy()
    return {"hf": hf, "spectra": spectra, "avg_accuracy": avg_info["test_accuracy"]}
