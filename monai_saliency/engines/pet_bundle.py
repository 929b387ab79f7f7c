"""Building blocks of the ``pet_morch_saliency`` bundle: read a PET activation study, fit PCA + tanh net, write
Mørch saliency maps.

Mørch saliency (``monai_saliency.methods.morch``) is a property of a trained (PCA + tanh net) model **over a
set of scans** (its training set, or a held-out set for a test-cost saliency): one map per model, not one per
scan. So the bundle's unit of work is a *study folder*, not a file:

* ``train.json``: :func:`load_study` → :func:`fit_model` (PCA basis of the scans inside the brain mask, then
  eq. 1's tanh net by full-batch least squares with a ridge penalty) → :func:`save_model` (``models/model.pt``).
* ``inference.json``: :func:`load_study` + :func:`load_model` → :func:`compute_maps` (first / second / exact
  orders in one pass) → :func:`write_outputs` (NIfTI in the scans' geometry, DICOM Parametric Maps referencing
  a PT series for DICOM studies, a 3D figure, ``summary.csv``/``summary.json``).

Study folder layout::

    <dataset_dir>/
      targets.csv          columns scan,target (a header row; further columns such as subject are kept)
                           (or targets.json: {"<scan>": target, ...} or [{"scan": ..., "target": ...}, ...])
      <scan>               each scan named in the targets file, relative to the folder: either a folder holding
                           one PT DICOM series (one single-frame file per slice) or a 3D NIfTI file
      mask.nii.gz          optional brain mask on the scans' grid (default: mean scan > mask_threshold * its max)
      truth.nii.gz         optional ground-truth activation mask: the summary then reports each order's ROC AUC
      anatomy.nii.gz       optional background for the 3D figure (default: the mean scan)

or the layout written by :func:`monai_saliency.data.pet_study.save_pet_study_nifti` (a 4D ``images.nii.gz``, scans
last, with ``study.json`` holding the targets, beside ``mask``/``truth``/``anatomy.nii.gz``), used when the folder
has no targets file.

Every scan must share one grid (shape and affine). A scan or mask that cannot be read raises :class:`StudyError`
naming the file, before anything is written; outputs are written atomically and a failed run removes what it
had written, so there are never partial outputs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_saliency.data.io import atomic_output, save_nifti
from monai_saliency.analysis import MorchSaliency
from monai_saliency.models.pca import PCAProjection
from monai_saliency.models.tanh_net import TanhNet

__all__ = [
    "MorchModel",
    "PETStudyFolder",
    "StudyError",
    "build_saliency",
    "compute_maps",
    "fit_model",
    "load_model",
    "load_study",
    "roc_auc",
    "save_model",
    "shard_bounds",
    "shard_cost_changes",
    "summarize",
    "write_outputs",
]

logger = logging.getLogger("pet_morch_saliency")
_NIFTI = (".nii", ".nii.gz")
ORDER_NAMES = ("first", "second", "exact")


class StudyError(ValueError):
    """A study folder that cannot be used; the message names the offending file and the fix."""


@dataclass
class PETStudyFolder:
    """A study read from a folder.

    Attributes:
        folder: the study folder.
        images: ``(J, *spatial)`` float32 MetaTensor with the scans' RAS affine.
        targets: ``(J,)`` float64.
        names: scan entries of the targets file, in order.
        sources: resolved series folders / NIfTI files, in order.
        kind: ``"dicom"`` (all scans PT series), ``"nifti"`` or ``"mixed"``.
        affine: ``(4, 4)`` float64 RAS voxel-to-world matrix shared by the scans.
        mask: bool ``(*spatial)`` brain mask, or None (not given in the folder).
        truth: bool ``(*spatial)`` ground-truth activation, or None.
        anatomy: ``(*spatial)`` figure background, or None.
        reference_series: folder of the PT series the parametric maps reference (DICOM studies), else None.
        extra: further columns of the targets file, per scan.
    """

    folder: Path
    images: MetaTensor
    targets: torch.Tensor
    names: list[str]
    sources: list[Path]
    kind: str
    affine: torch.Tensor
    mask: torch.Tensor | None = None
    truth: torch.Tensor | None = None
    anatomy: torch.Tensor | None = None
    reference_series: Path | None = None
    extra: list[dict[str, str]] = field(default_factory=list)

    @property
    def input_files(self) -> list[Path]:
        """Every input file (never to be overwritten)."""
        files = []
        for s in self.sources:
            files += sorted(p.resolve() for p in s.iterdir()) if s.is_dir() else [s.resolve()]
        return files


@dataclass
class MorchModel:
    """A fitted projection + head and what is needed to use them again.

    Attributes:
        pca: fitted :class:`PCAProjection` (its mask is the brain mask used).
        net: the :class:`TanhNet` head.
        target_offset: subtracted from the targets before fitting (eq. 1 has no output bias).
        config: construction/training options (hidden, bias, output_bias, weight_decay, tol, seed, ...).
        train: training summary (cost, grad_max, converged, n_iter, J, K, I).
    """

    pca: PCAProjection
    net: TanhNet
    target_offset: float
    config: dict[str, Any]
    train: dict[str, Any]


# ------------------------------------------------------------------------------------------------ reading
def _read_targets(folder: Path, targets_file: str | None) -> tuple[list[str], list[float], list[dict[str, str]], Path]:
    if targets_file:
        path = Path(targets_file)
        path = path if path.is_absolute() else folder / path
    else:
        found = [folder / n for n in ("targets.csv", "targets.json") if (folder / n).is_file()]
        if not found:
            raise StudyError(
                f"no targets.csv or targets.json in {folder}; add one with a row 'scan,target' per scan "
                "(scan = series folder or NIfTI file relative to the study folder)."
            )
        path = found[0]
    if not path.is_file():
        raise StudyError(f"targets file {path} does not exist.")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            rows = [{"scan": k, "target": v} for k, v in data.items()] if isinstance(data, dict) else list(data)
        else:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise StudyError(f"cannot read the targets file {path}: {exc}") from exc
    if not rows:
        raise StudyError(f"the targets file {path} lists no scans.")
    names, values, extra = [], [], []
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or "scan" not in row or "target" not in row:
            raise StudyError(f"{path}: entry {n + 1} needs 'scan' and 'target' fields, got {row!r}.")
        try:
            value = float(row["target"])
        except (TypeError, ValueError) as exc:
            raise StudyError(f"{path}: target of scan {row['scan']!r} is not a number: {row['target']!r}.") from exc
        if not math.isfinite(value):
            raise StudyError(f"{path}: target of scan {row['scan']!r} is not finite.")
        names.append(str(row["scan"]))
        values.append(value)
        extra.append({k: str(v) for k, v in row.items() if k not in ("scan", "target")})
    if len(set(names)) != len(names):
        raise StudyError(f"{path}: a scan is listed twice.")
    return names, values, extra, path


def _culprit(folder: Path) -> tuple[Path, Exception] | None:
    """The first file of a series folder that pydicom cannot read as a PT image (header, tags or pixels)."""
    import pydicom

    for p in sorted(q for q in folder.iterdir() if q.is_file()):
        try:
            ds = pydicom.dcmread(str(p))
            ds.pixel_array  # noqa: B018
            if ds.Modality != "PT" or not ds.SeriesInstanceUID or len(ds.ImagePositionPatient) != 3:
                raise ValueError(f"not a PT slice with a series and position (Modality {ds.Modality!r})")
        except Exception as exc:  # noqa: BLE001 - any failure identifies the culprit file
            return p, exc
    return None


def _read_scan(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One scan: ``((X, Y, Z) float32, RAS affine)``; raises StudyError naming the file."""
    if path.is_dir():
        from monai_saliency.data.pet_study import read_pet_series

        try:
            vol, _ = read_pet_series(path)
        except Exception as exc:
            bad = _culprit(path)
            if bad is not None:
                raise StudyError(
                    f"cannot read {bad[0]} (a file of the PT series {path}); it looks truncated or corrupt: "
                    f"{type(bad[1]).__name__}: {bad[1]}. Replace or remove it."
                ) from exc
            raise StudyError(f"cannot read the PT series {path}: {type(exc).__name__}: {exc}") from exc
        return vol[0].numpy(), vol.affine.numpy().astype(np.float64)
    if path.name.lower().endswith(_NIFTI):
        try:
            img = nib.load(str(path))
            data = np.asarray(img.get_fdata(dtype=np.float32))
        except Exception as exc:
            raise StudyError(f"cannot read the NIfTI file {path}: {type(exc).__name__}: {exc}") from exc
        data = data.reshape(data.shape[:3]) if data.ndim == 4 and data.shape[3] == 1 else data
        if data.ndim != 3:
            raise StudyError(f"{path} must hold one 3D volume, got shape {data.shape}.")
        return data, np.asarray(img.affine, dtype=np.float64)
    raise StudyError(f"{path} is neither a PT series folder nor a NIfTI file (.nii/.nii.gz).")


def _read_aux(path: Path, shape: tuple[int, ...], affine: np.ndarray, what: str) -> np.ndarray:
    data, aff = _read_scan(path)
    if data.shape != shape or not np.allclose(aff, affine, atol=1e-3):
        raise StudyError(f"{what} {path} is not on the scans' grid (shape {data.shape} vs {shape}); resample it.")
    if not np.isfinite(data).all():
        raise StudyError(f"{what} {path} contains NaN/Inf.")
    return data


def _read_listed(folder: Path, targets_file: str | None, progress: bool):
    """Scans named in a targets file: ``(names, targets, extra, volumes, affine, shape, sources)``."""
    names, values, extra, tpath = _read_targets(folder, targets_file)
    if len(names) < 2:
        raise StudyError(f"{tpath} lists {len(names)} scan; PCA + network need at least 2.")
    sources = []
    for name in names:
        p = (folder / name).resolve()
        if not p.exists():
            raise StudyError(f"scan {name!r} listed in {tpath} does not exist ({p}).")
        sources.append(p)
    it = sources
    if progress:
        from tqdm import tqdm

        it = tqdm(sources, desc="reading scans", unit="scan")
    vols, affine = [], None
    for p in it:  # one file/series per scan: I/O loop
        data, aff = _read_scan(p)
        if not np.isfinite(data).all():
            raise StudyError(f"scan {p} contains NaN/Inf voxels.")
        if affine is None:
            affine, shape = aff, data.shape
        elif data.shape != shape or not np.allclose(aff, affine, atol=1e-3):
            raise StudyError(
                f"scan {p} is not on the grid of {sources[0]} (shape {data.shape} vs {shape}); all scans of a study "
                "must be spatially normalised to one grid."
            )
        vols.append(data)
    return names, values, extra, vols, affine, shape, sources


def _read_packed(folder: Path):
    """The layout of :func:`monai_saliency.data.pet_study.save_pet_study_nifti`: a 4D ``images.nii.gz`` (scans
    last) and ``study.json`` holding ``targets``."""
    path = folder / "images.nii.gz"
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
        info = json.loads((folder / "study.json").read_text())
        values = [float(t) for t in info["targets"]]
    except Exception as exc:
        raise StudyError(f"cannot read the packed study {path} / study.json: {type(exc).__name__}: {exc}") from exc
    data = data[..., None] if data.ndim == 3 else data
    if data.ndim != 4 or data.shape[3] != len(values) or len(values) < 2:
        raise StudyError(
            f"{path} holds {data.shape} but study.json lists {len(values)} targets (need >= 2, one per scan)."
        )
    if not np.isfinite(data).all() or not all(math.isfinite(v) for v in values):
        raise StudyError(f"{path} or its targets contain NaN/Inf.")
    vols = list(np.moveaxis(data, 3, 0))
    names = [f"images.nii.gz[{n}]" for n in range(len(vols))]
    extra = [{"subject": str(s)} for s in info.get("subjects", [""] * len(vols))]
    return names, values, extra, vols, np.asarray(img.affine, dtype=np.float64), data.shape[:3]


def load_study(
    dataset_dir: str | os.PathLike,
    targets_file: str | None = None,
    mask_file: str = "mask.nii.gz",
    truth_file: str = "truth.nii.gz",
    anatomy_file: str = "anatomy.nii.gz",
    reference_scan: str | None = None,
    progress: bool = True,
) -> PETStudyFolder:
    """Read every scan named in the study's targets file (see the module docstring for the layout).

    Args:
        dataset_dir: the study folder.
        targets_file: targets file name (default ``targets.csv``, else ``targets.json``).
        mask_file, truth_file, anatomy_file: optional NIfTI volumes on the scans' grid (ignored when absent).
        reference_scan: PT series the parametric maps reference (default: the first DICOM scan listed).
        progress: show a progress bar over the scans.

    Returns:
        :class:`PETStudyFolder`.

    Raises:
        StudyError: a missing/unreadable/corrupt file (named), scans on different grids, NaN/Inf voxels,
            fewer than 2 scans, or an unknown reference scan.
    """
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise StudyError(f"study folder {folder} does not exist; set --dataset_dir to a study folder.")
    packed = folder / "images.nii.gz"
    if (
        targets_file is None
        and packed.is_file()
        and (folder / "study.json").is_file()
        and not any((folder / n).is_file() for n in ("targets.csv", "targets.json"))
    ):
        names, values, extra, vols, affine, shape = _read_packed(folder)
        sources = [packed.resolve()]
    else:
        names, values, extra, vols, affine, shape, sources = _read_listed(folder, targets_file, progress)
    kinds = {"dicom" if p.is_dir() else "nifti" for p in sources}
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    aux = {}
    for key, fname in (("mask", mask_file), ("truth", truth_file), ("anatomy", anatomy_file)):
        path = folder / fname if fname else None
        aux[key] = _read_aux(path, shape, affine, key) if path is not None and path.exists() else None
    ref = None
    if reference_scan is not None:
        if (
            reference_scan not in names
            or len(sources) != len(names)
            or not sources[names.index(reference_scan)].is_dir()
        ):
            raise StudyError(
                f"reference_scan {reference_scan!r} is not a PT series listed in the study's targets file."
            )
        ref = sources[names.index(reference_scan)]
    else:
        ref = next((p for p in sources if p.is_dir()), None)
    aff_t = torch.as_tensor(affine, dtype=torch.float64)
    return PETStudyFolder(
        folder=folder,
        images=MetaTensor(torch.from_numpy(np.stack(vols)), affine=aff_t.clone()),
        targets=torch.tensor(values, dtype=torch.float64),
        names=names,
        sources=sources,
        kind=kind,
        affine=aff_t,
        mask=None if aux["mask"] is None else torch.from_numpy(aux["mask"] > 0),
        truth=None if aux["truth"] is None else torch.from_numpy(aux["truth"] > 0),
        anatomy=None if aux["anatomy"] is None else torch.from_numpy(aux["anatomy"].astype(np.float32)),
        reference_series=ref,
        extra=extra,
    )


# ------------------------------------------------------------------------------------------------ model
def fit_model(
    study: PETStudyFolder,
    n_components: int | None = None,
    hidden: int = 8,
    bias: bool = False,
    output_bias: bool = False,
    weight_decay: float = 0.1,
    tol: float = 1e-9,
    seed: int = 0,
    center_targets: bool = True,
    mask_threshold: float = 0.1,
) -> MorchModel:
    """Fit the PCA basis and eq. 1's tanh net on a study.

    Args:
        study: from :func:`load_study`.
        n_components: ``K`` (None: the rank, lossless).
        hidden: ``A`` tanh units.
        bias, output_bias: optional biases (not in eq. 1).
        weight_decay: ridge coefficient (0.1 by default: keeps non-negligible residuals, so the first-order
            saliency is meaningful; see ``methods/morch.py`` note 7).
        tol: gradient tolerance of the fit.
        seed: initial-weight seed.
        center_targets: subtract the mean target (eq. 1 has no output bias, ``F(0) = 0``).
        mask_threshold: without a mask file, the brain mask is ``mean scan > mask_threshold * max(mean scan)``
            (0: every voxel).

    Returns:
        :class:`MorchModel`.

    Raises:
        ValueError: from the PCA / net (e.g. ``n_components`` > rank), or an empty mask.
    """
    mask = study.mask
    if mask is None:
        mean = study.images.as_tensor().mean(0)
        mask = mean > mask_threshold * mean.max() if mask_threshold > 0 else torch.ones_like(mean, dtype=torch.bool)
    pca = PCAProjection(n_components=n_components).fit(study.images, mask=mask)
    offset = float(study.targets.mean()) if center_targets else 0.0
    net = TanhNet(pca.k, hidden=hidden, bias=bias, output_bias=output_bias, seed=seed)
    res = net.fit(pca(study.images), study.targets - offset, weight_decay=weight_decay, tol=tol)
    config = {
        "n_components": n_components,
        "hidden": hidden,
        "bias": bias,
        "output_bias": output_bias,
        "weight_decay": weight_decay,
        "tol": tol,
        "seed": seed,
        "center_targets": center_targets,
        "mask_threshold": mask_threshold,
    }
    train = {
        "cost": res.cost,
        "objective": res.objective,
        "grad_max": res.grad_max,
        "n_iter": res.n_iter,
        "converged": res.converged,
        "J": int(study.images.shape[0]),
        "K": pca.k,
        "I": pca.n_voxels,
        "scans": list(study.names),
    }
    logger.info(
        f"fitted PCA (I={pca.n_voxels} voxels, K={pca.k}) and tanh net (A={hidden}): cost E={res.cost:.4g}, "
        f"max|grad|={res.grad_max:.2g}, converged={res.converged}"
    )
    return MorchModel(pca, net, offset, config, train)


def save_model(model: MorchModel, path: str | os.PathLike, protect: Sequence[str | os.PathLike] = ()) -> Path:
    """Save a :class:`MorchModel` (state dicts + plain options) to one ``.pt`` file, atomically.

    Returns:
        The written path.
    """
    ckpt = {
        "pca": model.pca.state_dict(),
        "net": model.net.state_dict(),
        "target_offset": model.target_offset,
        "config": model.config,
        "train": model.train,
        "format": "monai_saliency.pet_morch/1",
    }
    with atomic_output(path, protect=protect) as tmp:
        torch.save(ckpt, tmp)
    logger.info(f"model written to {Path(path).resolve()}")
    return Path(path)


def load_model(path: str | os.PathLike, study: PETStudyFolder | None = None) -> MorchModel:
    """Load a model saved by :func:`save_model`; check it fits the study's grid.

    Raises:
        FileNotFoundError: no such file (train first with ``train.json``).
        StudyError: the study's volumes are not on the grid the model was fitted on.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist; fit one with configs/train.json.")
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    pca = PCAProjection()
    pca.load_state_dict(ckpt["pca"])
    cfg = ckpt["config"]
    net = TanhNet(pca.k, hidden=cfg["hidden"], bias=cfg["bias"], output_bias=cfg["output_bias"], seed=cfg["seed"])
    net.load_state_dict(ckpt["net"])
    model = MorchModel(pca, net, float(ckpt["target_offset"]), cfg, ckpt["train"])
    if study is not None:
        shape = tuple(study.images.shape[1:])
        if shape != pca.item_shape or not torch.allclose(study.affine, pca.affine.double(), atol=1e-3):
            raise StudyError(
                f"the study {study.folder} (grid {shape}) is not on the grid the model {path} was fitted on "
                f"({pca.item_shape}); fit a model on it with configs/train.json."
            )
    return model


def build_saliency(
    model: MorchModel, hessian: str = "gauss_newton", clip_negative: bool = False, chunk_bytes: int = 64 * 2**20
) -> MorchSaliency:
    """The :class:`MorchSaliency` of a fitted model."""
    return MorchSaliency(
        model.net,
        model.pca,
        hessian=hessian,
        clip_negative=clip_negative,
        chunk_bytes=chunk_bytes,
        weight_decay=model.config.get("weight_decay", 0.0),
    )


# ------------------------------------------------------------------------------------------------ computing
def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous range of ``n`` items for ``rank`` of ``world`` (sizes differ by at most one)."""
    base, rem = divmod(n, world)
    lo = rank * base + min(rank, rem)
    return lo, lo + base + (1 if rank < rem else 0)


def shard_cost_changes(
    sal: MorchSaliency, x: torch.Tensor, y: torch.Tensor, orders: Sequence[str], rank: int, world: int
) -> dict[str, torch.Tensor]:
    """Cost changes of this rank's contiguous voxel range only (every rank computes the shared projections);
    concatenating the ranks' results in rank order equals ``sal.cost_changes(x, y, orders)``."""
    n_vox = int(sal.projection.n_voxels)
    return sal.cost_changes(x, y, orders=orders, voxel_range=shard_bounds(n_vox, rank, world))


def compute_maps(
    sal: MorchSaliency,
    study: PETStudyFolder,
    model: MorchModel,
    orders: Sequence[str] = ORDER_NAMES,
    distributed: bool = False,
) -> dict[str, torch.Tensor] | None:
    """Per-voxel cost changes ``{order: (I,) float64}`` (mask order) for the study's scans and targets.

    With ``distributed=True`` (an initialised ``torch.distributed`` group), each rank computes a contiguous
    voxel range and rank 0 gathers them; other ranks return None.

    Raises:
        ValueError: an unknown order.
    """
    orders = list(orders)
    for o in orders:
        if o not in ORDER_NAMES:
            raise ValueError(f"orders must be among {ORDER_NAMES}, got {o!r}.")
    y = study.targets - model.target_offset
    if not distributed:
        return sal.cost_changes(study.images, y, orders=orders)
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    local = shard_cost_changes(sal, study.images, y, orders, rank, world)
    n = model.pca.n_voxels
    size = max(hi - lo for lo, hi in (shard_bounds(n, r, world) for r in range(world)))
    # nccl gathers CUDA tensors only; the computation itself stays on the study's device (CPU)
    comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    out = {}
    for o in orders:  # all_gather of equal-size padded shards
        buf = torch.zeros(size, dtype=local[o].dtype, device=comm)
        buf[: local[o].numel()] = local[o].to(comm)
        parts = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(parts, buf)
        out[o] = torch.cat([parts[r][: hi - lo].cpu() for r, (lo, hi) in enumerate(bounds)])
    logger.info(f"rank {rank}/{world}: computed voxels {shard_bounds(n, rank, world)} of {n}")
    return out if rank == 0 else None


def roc_auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney, ties averaged)."""
    from scipy.stats import rankdata

    lab = labels.reshape(-1).numpy().astype(bool)
    r = rankdata(scores.reshape(-1).numpy())
    p, n = int(lab.sum()), int(lab.size - lab.sum())
    if p == 0 or n == 0:
        return float("nan")
    return float((r[lab].sum() - p * (p + 1) / 2) / (p * n))


def summarize(maps: dict[str, torch.Tensor], study: PETStudyFolder, model: MorchModel) -> list[dict[str, Any]]:
    """One row per order: range, share of negative values, NMSE against the exact change, ROC AUC vs the truth."""
    truth = study.truth[model.pca.mask] if study.truth is not None else None
    rows = []
    for o, v in maps.items():
        row = {
            "order": o,
            "min": float(v.min()),
            "max": float(v.max()),
            "sum": float(v.sum()),
            "fraction_negative": float((v < 0).double().mean()),
        }
        if "exact" in maps:
            ex = maps["exact"]
            row["nmse_vs_exact"] = float(((v - ex) ** 2).sum() / (ex**2).sum().clamp_min(1e-300))
        if truth is not None:
            row["roc_auc_vs_truth"] = roc_auc(truth, v)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ writing
def write_outputs(
    maps: dict[str, torch.Tensor] | None,
    study: PETStudyFolder,
    model: MorchModel,
    output_dir: str | os.PathLike,
    write_dicom: bool = True,
    figure_order: str | None = "exact",
    figure_quantile: float = 0.99,
) -> dict[str, Path]:
    """Write the maps: ``morch_<order>.nii.gz`` (scans' geometry, 0 outside the mask), ``morch_<order>.dcm``
    (Parametric Map referencing ``study.reference_series``; DICOM studies only), ``morch_<order>_3d.png``,
    ``summary.csv`` and ``summary.json``.

    Nothing is written for ``maps=None`` (non-zero ranks). Every file is written atomically and never over an
    input; if any write fails, the files this call wrote are removed before the error propagates.

    Returns:
        ``{name: path}`` of the written files.
    """
    if maps is None:
        return {}
    from monai.transforms import SaveImage

    from monai_saliency.data.pet_writer import ParametricMapWriter
    from monai_saliency.visualize.surface3d import save_surface_figure

    if figure_order and figure_order not in maps:
        raise ValueError(
            f"figure_order {figure_order!r} is not among the computed orders {list(maps)}; add it to orders."
        )
    out = Path(output_dir)
    protect = study.input_files
    written: dict[str, Path] = {}
    vols = {o: model.pca.to_volume(v)[None] for o, v in maps.items()}  # (1, *spatial)
    rows = summarize(maps, study, model)
    try:
        for o, vol in vols.items():
            written[f"{o}_nifti"] = save_nifti(
                vol.float(), out / f"morch_{o}.nii.gz", affine=study.affine, protect=protect
            )
        if write_dicom and study.reference_series is not None:
            for o, vol in vols.items():
                meta = {
                    "source_series": str(study.reference_series),
                    "affine": study.affine.clone(),
                    "parametric_map_label": f"morch_{o}",
                    "parametric_map_description": f"Morch saliency ({o} order): training cost change",
                }
                img = MetaTensor(vol.float(), meta=meta)
                target = out / f"morch_{o}"
                SaveImage(
                    output_dir=str(out),
                    output_ext=".dcm",
                    writer=ParametricMapWriter,
                    output_dtype=None,
                    separate_folder=False,
                    print_log=False,
                )(img, filename=str(target))
                written[f"{o}_dicom"] = target.with_suffix(".dcm")
        if figure_order:
            bg = study.anatomy if study.anatomy is not None else study.images.as_tensor().mean(0)
            written["figure"] = save_surface_figure(
                vols[figure_order][0],
                out / f"morch_{figure_order}_3d.png",
                anatomy=bg,
                affine=study.affine,
                quantile=figure_quantile,
                mask=model.pca.mask,
                title=f"Mørch saliency ({figure_order} order), top {100 * (1 - figure_quantile):g}% of brain voxels",
            )
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "order", k))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        with atomic_output(out / "summary.csv", protect=protect) as tmp:
            tmp.write_text(buf.getvalue())
        written["summary_csv"] = out / "summary.csv"
        info = {
            "study": str(study.folder),
            "scans": len(study.names),
            "kind": study.kind,
            "reference_series": None if study.reference_series is None else str(study.reference_series),
            "model": {"config": model.config, "train": {k: v for k, v in model.train.items() if k != "scans"}},
            "orders": rows,
            "outputs": {k: str(Path(v).resolve()) for k, v in written.items()},
        }
        with atomic_output(out / "summary.json", protect=protect) as tmp:
            tmp.write_text(json.dumps(info, indent=1))
        written["summary_json"] = out / "summary.json"
    except BaseException:
        for p in written.values():
            Path(p).unlink(missing_ok=True)
        raise
    for r in rows:
        auc = f", ROC AUC vs truth {r['roc_auc_vs_truth']:.3f}" if "roc_auc_vs_truth" in r else ""
        logger.info(f"{r['order']:>6} order: range [{r['min']:.3g}, {r['max']:.3g}]{auc}")
    print(f"Mørch saliency maps of {len(study.names)} scans written to {out.resolve()}")
    return written
