"""Reading a PET activation study folder (``load_study``), for the ``pet_morch_saliency`` bundle.

Study folder layout::

    <dataset_dir>/
      targets.csv          columns scan,target (a header row; further columns such as subject are kept)
                           (or targets.json: {"<scan>": target, ...} or [{"scan": ..., "target": ...}, ...])
      <scan>               each scan named in the targets file, relative to the folder: either a folder holding
                           one PT DICOM series (one single-frame file per slice) or a 3D NIfTI file
      mask.nii.gz          optional brain mask on the scans' grid (default: mean scan > mask_threshold * its max)
      truth.nii.gz         optional ground-truth activation mask: the summary then reports each order's ROC AUC
      anatomy.nii.gz       optional background for the 3D figure (default: the mean scan)

or the layout written by :func:`monai_saliency.data.synthetic.pet_phantom.save_pet_study_nifti` (a 4D
``images.nii.gz``, scans last, with ``study.json`` holding the targets, beside ``mask``/``truth``/``anatomy.nii.gz``),
used when the folder has no targets file.

Every scan must share one grid (shape and affine). A scan or mask that cannot be read raises :class:`StudyError`
naming the file, before anything is written.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_saliency.data.synthetic.pet_phantom import PETStudy

__all__ = ["PETStudy", "PETStudyFolder", "StudyError", "load_study"]

_NIFTI = (".nii", ".nii.gz")


class StudyError(ValueError):
    """A study folder that cannot be used; the message names the offending file and the fix."""


PETStudyFolder = PETStudy
"""A study read from a folder is a :class:`monai_saliency.data.synthetic.pet_phantom.PETStudy` with ``folder``,
``names``, ``sources``, ``kind``, ``reference_series`` and ``extra`` set (the old name, kept)."""


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
        from monai_saliency.data.dicom.pet_series import read_pet_series

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
    """The layout of :func:`monai_saliency.data.synthetic.pet_phantom.save_pet_study_nifti` (read with its
    :func:`~monai_saliency.data.synthetic.pet_phantom.read_pet_study_images`): a 4D ``images.nii.gz`` (scans last)
    and ``study.json`` holding ``targets``."""
    from monai_saliency.data.synthetic.pet_phantom import read_pet_study_images

    path = folder / "images.nii.gz"
    try:
        images, info = read_pet_study_images(folder)
        values = [float(t) for t in info["targets"]]
    except Exception as exc:
        raise StudyError(f"cannot read the packed study {path} / study.json: {type(exc).__name__}: {exc}") from exc
    data = images.as_tensor().numpy()
    if len(values) < 2:
        raise StudyError(f"{path} holds {data.shape[0]} scan(s); PCA + network need at least 2.")
    if not np.isfinite(data).all() or not all(math.isfinite(v) for v in values):
        raise StudyError(f"{path} or its targets contain NaN/Inf.")
    names = [f"images.nii.gz[{n}]" for n in range(len(data))]
    extra = [{"subject": str(s)} for s in info.get("subjects", [""] * len(data))]
    return names, values, extra, list(data), images.affine.numpy().astype(np.float64), data.shape[1:]


def load_study(
    dataset_dir: str | os.PathLike,
    targets_file: str | None = None,
    mask_file: str = "mask.nii.gz",
    truth_file: str = "truth.nii.gz",
    anatomy_file: str = "anatomy.nii.gz",
    reference_scan: str | None = None,
    progress: bool = True,
) -> PETStudy:
    """Read every scan named in the study's targets file (see the module docstring for the layout).

    Args:
        dataset_dir: the study folder.
        targets_file: targets file name (default ``targets.csv``, else ``targets.json``).
        mask_file, truth_file, anatomy_file: optional NIfTI volumes on the scans' grid (ignored when absent).
        reference_scan: PT series the parametric maps reference (default: the first DICOM scan listed).
        progress: show a progress bar over the scans.

    Returns:
        A :class:`~monai_saliency.data.synthetic.pet_phantom.PETStudy` with the folder fields set.

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
    return PETStudy(
        images=MetaTensor(torch.from_numpy(np.stack(vols)), affine=aff_t.clone()),
        mask=None if aux["mask"] is None else torch.from_numpy(aux["mask"] > 0),
        truth=None if aux["truth"] is None else torch.from_numpy(aux["truth"] > 0),
        targets=torch.tensor(values, dtype=torch.float64),
        subjects=None,
        scans=None,
        anatomy=None if aux["anatomy"] is None else torch.from_numpy(aux["anatomy"].astype(np.float32)),
        paradigm="",
        affine=aff_t,
        folder=folder,
        names=names,
        sources=sources,
        kind=kind,
        reference_series=ref,
        extra=extra,
    )
