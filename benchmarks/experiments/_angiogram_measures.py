"""Measurements of the angiogram study (study-specific; the report is in ``study_angiogram.py``).

Controls: a uniform map, the model-free map ``1 - intensity`` (vessels are dark, so it is a vessel detector with no
model) and, for every method, the same method on a randomised model (the architecture re-initialised under one fixed
seed, shared by all methods). Every map is ``(B, 1, T, H, W)`` and min-max normalised per cine; 2D metrics use the
mean over the opacified second half of the frames.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from monai_saliency.data.synthetic.angiogram import AngiogramBatch
from monai_saliency.methods import SignatureActivation
from monai_saliency.methods.cam import EigenCAM, GradCAM, GradCAMpp
from monai_saliency.metrics.localization import mask_energy, pointing_game, top_k_overlap, wsol_box_error
from monai_saliency.metrics.perturbation import deletion_curve, gaussian_blur_nd, insertion_curve
from monai_saliency.models.video import VideoLesionNet
from monai_saliency.ops.normalize import minmax_normalize

LAYER = VideoLesionNet.cam_layer
REFERENCE = "SignatureActivation-spatial"
METHODS = (REFERENCE, "SignatureActivation-frames", "GradCAM", "GradCAM++", "EigenCAM")
UNIFORM, INTENSITY = "control: uniform", "control: 1 - intensity"
MODEL_FREE = (UNIFORM, INTENSITY)


def random_control(method: str) -> str:
    """The name of the control "``method`` on the randomised model"."""
    return f"control: {method.replace('SignatureActivation', 'SigAct')}, random model"


RANDOM = random_control(REFERENCE)  # "control: SigAct-spatial, random model"
CONTROLS = (*MODEL_FREE, *(random_control(m) for m in METHODS))


def controls_of(method: str) -> tuple[str, str, str]:
    """The controls a method is compared with: the two model-free maps and the method itself on the random model."""
    return (*MODEL_FREE, random_control(method))


TOP_FRACTION = 0.02  # equal area per map: the top 2 % of the pixels (82 of 64 x 64)
MIN_PRECISION = 0.5  # a hit: at least half of those pixels inside the target
BOX_IOU = 0.5  # vessel-tree box test: IoU of the thresholded map's box with the vessel tree's box
BOX_THRESHOLDS = np.round(np.arange(1, 20) / 20, 2)  # 0.05 ... 0.95 of the map's maximum
RANDOM_MODEL_SEED = 12345


def explainers(model: torch.nn.Module) -> dict[str, Any]:
    """The five methods of the study (``METHODS``), all on the layer ``features.stage3``."""
    out = {
        REFERENCE: SignatureActivation(model, LAYER, dct_axes="spatial"),
        "SignatureActivation-frames": SignatureActivation(model, LAYER, dct_axes="frames"),
        "GradCAM": GradCAM(model, LAYER),
        "GradCAM++": GradCAMpp(model, LAYER),
        "EigenCAM": EigenCAM(model, LAYER),
    }
    return out


def random_model() -> VideoLesionNet:
    """The same architecture with re-initialised weights (fixed seed; the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_MODEL_SEED)
        return VideoLesionNet().eval()


def _plain(t: torch.Tensor) -> torch.Tensor:
    return (t.as_tensor() if hasattr(t, "as_tensor") else t).detach().float()


def control_maps(cine: torch.Tensor, rand_explainers: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The control maps of cines ``(B, T, H, W)``: uniform, ``1 - intensity`` and every method of
    ``rand_explainers`` (``method -> explainer on the random model``)."""
    x = cine[:, None]
    out = {UNIFORM: torch.ones_like(x), INTENSITY: minmax_normalize(1.0 - x)}
    return out | {random_control(name): _plain(ex(x)) for name, ex in rand_explainers.items()}


def late_mean(maps: torch.Tensor) -> torch.Tensor:
    """``(B, 1, T, H, W)`` -> ``(B, 1, H, W)``: mean over the opacified second half of the frames."""
    return maps[:, :, maps.shape[2] // 2 :].mean(2)


def per_cine_seconds(fns: dict[str, Any], cine: torch.Tensor) -> dict[str, np.ndarray]:
    """Wall time of each ``fn`` on each cine alone (batch of one), interleaved per cine so that every cine's
    times share the machine's load: one measured time per cine and function."""
    out = {name: np.empty(len(cine)) for name in fns}
    for i in range(len(cine)):  # timing is per unit by design: one call per cine
        x = cine[i : i + 1, None]
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(x)
            out[name][i] = time.perf_counter() - t0
    return out


def _boxes_of(sets: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)`` bool -> ``(..., 4)`` half-open bounding boxes ``(y0, x0, y1, x1)`` (zeros when empty)."""
    h, w = sets.shape[-2:]
    rows, cols = sets.any(-1), sets.any(-2)
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    y0 = torch.where(rows, ar_h, h).amin(-1)
    y1 = torch.where(rows, ar_h + 1, 0).amax(-1)
    x0 = torch.where(cols, ar_w, w).amin(-1)
    x1 = torch.where(cols, ar_w + 1, 0).amax(-1)
    empty = ~rows.any(-1)
    box = torch.stack([y0, x0, y1, x1], -1)
    return torch.where(empty[..., None], torch.zeros_like(box), box)


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter_h = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    inter_w = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = (inter_h * inter_w).double()
    area = lambda z: ((z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])).double()
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def vessel_box_iou(map2d: torch.Tensor, vessel: torch.Tensor) -> torch.Tensor:
    """``(B, n_thresholds)`` IoU of the box of ``map >= t * max(map)`` with the vessel tree's box, per threshold.

    A uniform map keeps every pixel at every threshold: its box is the whole frame."""
    m = map2d[:, 0]
    above = (
        m[:, None]
        >= torch.as_tensor(BOX_THRESHOLDS, dtype=m.dtype)[None, :, None, None] * m.amax((1, 2))[:, None, None, None]
    )
    return _box_iou(_boxes_of(above), _boxes_of(vessel)[:, None])


def split_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``n`` cines into a calibration half and a test half."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def box_test(iou: np.ndarray, calib: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, float]:
    """The threshold with the most hits (IoU > ``BOX_IOU``; ties: the higher mean IoU, then the lower threshold) on
    the calibration half, and the test half's hits at that threshold."""
    hits = iou[calib] > BOX_IOU
    score = hits.mean(0) + 1e-6 * iou[calib].mean(0)
    j = int(np.argmax(score))
    return (iou[test, j] > BOX_IOU).astype(float), float(BOX_THRESHOLDS[j])


def localisation(
    maps: torch.Tensor, data: AngiogramBatch, maps_pair: torch.Tensor, pair: AngiogramBatch, halves: tuple
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-unit localisation values of one map (keys of ``LOC_METRICS`` in the report) and details."""
    m2, p2 = late_mean(maps), late_mean(maps_pair)
    vessel = data.vessel_mask
    out: dict[str, np.ndarray] = {
        "vessel_energy": mask_energy(m2, vessel).numpy(),
        "vessel_iou": top_k_overlap(m2, vessel, k=vessel.reshape(len(data), -1).sum(1)).iou.numpy(),
    }
    iou = vessel_box_iou(m2, vessel).numpy()
    out["vessel_box"], thr = box_test(iou, *halves)
    pos = data.labels == 1
    target = (data.lesion_masks() & (data.grades >= 1).view(*data.grades.shape, 1, 1)).any(1)
    out["pointing"] = pointing_game(m2[pos], target[pos]).double().numpy()
    top = top_k_overlap(m2[pos], target[pos], fraction=TOP_FRACTION, min_precision=MIN_PRECISION)
    out["topk_hit"], out["topk_fp"] = top.hit.double().numpy(), top.false_positive.numpy()
    pm = pair.lesion_masks()  # slot 0 mild, slot 1 moderate
    for slot, grade in ((0, "mild"), (1, "moderate")):
        res = top_k_overlap(p2, pm[:, slot], fraction=TOP_FRACTION, min_precision=MIN_PRECISION)
        out[f"{grade}_hit"] = res.hit.double().numpy()
    out["mild_pointing"] = pointing_game(p2, pm[:, 0]).double().numpy()
    return out, {"box_threshold": thr}


def seed_rules(
    maps: torch.Tensor, data: AngiogramBatch, maps_pair: torch.Tensor, pair: AngiogramBatch
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The seed's rules (WSOL box error, seed 001 §7.1; "lesion recalled" = box maximum >= half the map's maximum)
    and what explains their scores: where the WSOL sweep stops and how large its predicted boxes are."""
    m2 = late_mean(maps)
    has = (data.grades >= 0).any(1)
    gt = [data.boxes[i][data.grades[i] >= 0].numpy() for i in has.nonzero().flatten().tolist()]
    wsol = wsol_box_error(m2[has], gt)
    p2 = late_mean(maps_pair)[:, 0]
    p2 = p2 / p2.amax((1, 2), keepdim=True).clamp(min=1e-12)
    recalled = (p2[:, None] * pair.lesion_masks()).amax((2, 3)) >= 0.5
    out = {
        "wsol_error": wsol.errors / wsol.n_boxes,
        "both_recall": recalled.all(1).double().numpy(),
        "mild_recall": recalled[:, 0].double().numpy(),
    }
    frame = float(np.prod(m2.shape[-2:]))
    boxes = [b for b in wsol.boxes if len(b)]
    pred_area = np.prod(np.diff(np.concatenate(boxes).reshape(-1, 2, 2), axis=1), -1) / frame if boxes else []
    gt_area = np.prod(np.diff(np.concatenate(gt).reshape(-1, 2, 2), axis=1), -1) / frame
    info = {
        "wsol_cines": int(has.sum()),
        "wsol_one_box": int(sum(len(g) == 1 for g in gt)),
        "wsol_matched": float((wsol.threshold >= 0).mean()),
        "wsol_pred_area": float(np.mean(pred_area)) if len(pred_area) else float("nan"),
        "wsol_gt_area": float(np.mean(gt_area)),
    }
    return out, info


def faithfulness(
    model: torch.nn.Module,
    cine: torch.Tensor,
    maps: torch.Tensor,
    steps: int,
    blurred: torch.Tensor | None = None,
    predicted: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Deletion (to the cine's mean grey) and insertion AUC (from the blurred cine, sigma 5 voxels, Petsiuk et
    al.), class = the model's prediction. For several maps of the same cines, pass ``blurred =
    gaussian_blur_nd(x, 5.0)`` and ``predicted`` (the model's argmax per cine) to compute them once."""
    x = cine[:, None]
    baseline = x.mean((2, 3, 4), keepdim=True).expand_as(x)
    start = gaussian_blur_nd(x, 5.0) if blurred is None else blurred
    if predicted is None:
        with torch.no_grad():
            predicted = model(x).argmax(1)
    kw = {"class_idx": predicted, "steps": steps, "batch_size": 32}
    return {
        "deletion_auc": deletion_curve(model, x, maps, baseline=baseline, **kw).auc.numpy(),
        "insertion_auc": insertion_curve(model, x, maps, start=start, **kw).auc.numpy(),
    }


def _nearest_k(candidates: torch.Tensor, k: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per item, the ``k`` candidate pixels nearest a random candidate pixel: one contiguous piece (bool
    ``(B, H, W)``); ``candidates`` must hold at least ``k`` pixels."""
    b, h, w = candidates.shape
    flat = candidates.reshape(b, -1)
    u = torch.rand(b, h * w, generator=g).masked_fill(~flat, -1.0)
    seed = u.argmax(1)  # a uniformly drawn candidate
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([yy.reshape(-1), xx.reshape(-1)], -1).double()
    d = ((coords[None] - coords[seed][:, None]) ** 2).sum(-1) + 1e-6 * torch.rand(b, h * w, generator=g)
    d = d.masked_fill(~flat, float("inf"))
    rank = d.argsort(1).argsort(1)
    return (rank < k[:, None]).reshape(b, h, w) & candidates


def lesion_margin(model: torch.nn.Module, cine: torch.Tensor) -> torch.Tensor:
    """The model's lesion score: logit(lesion) - logit(no lesion) (does not saturate like the probability)."""
    with torch.no_grad():
        z = model(cine[:, None])
    return (z[:, 1] - z[:, 0]).double()


def deletion_mechanism(
    model: torch.nn.Module, sets: list[AngiogramBatch], draws: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Seed 001's claim that the model uses the whole vessel, tested by deleting equal pixel counts.

    Units: every cine with a moderate or severe lesion. Per cine, ``k`` = the vessel pixels inside its
    moderate/severe lesion boxes; three sets of ``k`` pixels are deleted in every frame (set to the frame's mean
    background grey): the lesion's vessel pixels, a contiguous piece of vessel away from every lesion box, and a
    contiguous piece of background (``draws`` seeded draws of the last two). The effect is the change of the lesion
    score (logit margin); ``|change|`` (mean over draws) per set is what the tests compare.

    Returns:
        ``{"lesion", "vessel", "background"}`` -> ``|change|`` per cine, the signed changes under ``"signed_*"``,
        and ``"k"``.
    """
    g = torch.Generator().manual_seed(seed)
    cine = torch.cat([s.cine[s.labels == 1] for s in sets])
    vessel = torch.cat([s.vessel_mask[s.labels == 1] for s in sets])
    masks = torch.cat([s.lesion_masks()[s.labels == 1] for s in sets])
    grades = torch.cat([s.grades[s.labels == 1] for s in sets])
    lesion = (masks & (grades >= 1).view(*grades.shape, 1, 1)).any(1) & vessel
    any_box = masks.any(1)
    k = lesion.reshape(len(cine), -1).sum(1)
    base = lesion_margin(model, cine)
    grey = (cine * ~vessel[:, None]).sum((2, 3)) / (~vessel).sum((1, 2))[:, None]  # (N, T) background grey

    def change(pixels: torch.Tensor) -> torch.Tensor:
        x = torch.where(pixels[:, None], grey[..., None, None].expand_as(cine), cine)
        return lesion_margin(model, x) - base

    d = change(lesion)
    res = {"lesion": d.abs().numpy(), "signed_lesion": d.numpy()}
    for name, cand in (("vessel", vessel & ~any_box), ("background", ~vessel & ~any_box)):
        short = (cand.reshape(len(cine), -1).sum(1) < k).nonzero().flatten().tolist()
        if short:
            raise ValueError(f"cines {short} have fewer {name} pixels than lesion pixels.")
        d = torch.stack([change(_nearest_k(cand, k, g)) for _ in range(draws)])
        res[name], res[f"signed_{name}"] = d.abs().mean(0).numpy(), d.mean(0).numpy()
    res["k"] = k.numpy()
    return res
