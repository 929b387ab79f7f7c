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
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_saliency.data.synthetic.pet_phantom import PETStudy

__all__ = ["PETStudy", "PETStudyFolder", "StudyError", "load_study"]

logger = logging.getLogger("pet_morch_saliency")

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
    keys = [(name, e.get("series_uid", "")) for name, e in zip(names, extra, strict=True)]
    if len(set(keys)) != len(keys):
        raise StudyError(f"{path}: a scan is listed twice.")
    return names, values, extra, path


def _pick_series(path: Path, series_uid: str | None, exclude: list[Path]) -> list[Path]:
    """The files of the one PT series a scan entry names: the series under ``path`` (searched recursively, by
    content, grouped by SeriesInstanceUID), or the one with ``series_uid`` when the targets file gives one."""
    from monai_saliency.data.dicom.series import PET_SERIES_CLASSES, SeriesError, find_series

    try:
        found = find_series(path, exclude=[e for e in exclude if path in e.parents])
    except SeriesError as exc:
        raise StudyError(str(exc)) from exc
    pet = {uid: s for uid, s in found.items() if s.sop_class in PET_SERIES_CLASSES}
    listing = ", ".join(f"{uid} ({len(s.files)} files, {s.modality or '?'})" for uid, s in found.items())
    if series_uid:
        if series_uid not in pet:
            raise StudyError(f"no PT series {series_uid} under {path}; found: {listing or 'no DICOM file'}.")
        return pet[series_uid].files
    if not pet:
        raise StudyError(
            f"{path} holds no PT (PET Image Storage) series; found: {listing or 'no DICOM file'}. A scan is a folder "
            "with one PT series or a 3D NIfTI file."
        )
    if len(pet) > 1:
        raise StudyError(
            f"{path} holds {len(pet)} PT series ({', '.join(f'{u} ({len(s.files)} files)' for u, s in pet.items())}): "
            "ambiguous; give one row per series with a series_uid column in the targets file, or split the folder."
        )
    return next(iter(pet.values())).files


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        img = nib.load(str(path))
        if len(img.shape) == 4 and img.shape[3] > 1:
            raise StudyError(
                f"{path} is a 4D file ({img.shape[3]} volumes); a scan is one 3D volume, give one per row."
            )
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except StudyError:
        raise
    except Exception as exc:
        raise StudyError(f"cannot read the NIfTI file {path}: {type(exc).__name__}: {exc}") from exc
    data = data.reshape(data.shape[:3]) if data.ndim == 4 and data.shape[3] == 1 else data
    if data.ndim < 3 or (data.ndim == 3 and min(data.shape) == 1):
        raise StudyError(f"{path} is a 2D image (shape {data.shape}); a scan must be a 3D volume.")
    if data.ndim != 3:
        raise StudyError(f"{path} must hold one 3D volume, got shape {data.shape}.")
    return data, np.asarray(img.affine, dtype=np.float64)


def _read_scan(
    path: Path, series_uid: str | None = None, exclude: Sequence[Path] = ()
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """One scan: ``((X, Y, Z) float32, RAS affine, the files read)``; raises StudyError naming the file.

    A folder (searched recursively) or a DICOM file is read as one PT series (see :func:`_pick_series`); a NIfTI
    file as one 3D volume. A single slice (2D) or a 4D/multi-frame file is refused by name.
    """
    from monai_saliency.data.dicom.detect import is_dicom_file
    from monai_saliency.data.dicom.series import SeriesError, read_series_volume

    if path.is_dir() or is_dicom_file(path):
        files = _pick_series(path, series_uid, list(exclude)) if path.is_dir() else [path]
        try:
            return (*read_series_volume(files), files)
        except SeriesError as exc:
            raise StudyError(f"scan {path}: {exc}") from exc
    if path.name.lower().endswith(_NIFTI):
        return (*_read_nifti(path), [path])
    raise StudyError(f"{path} is neither a PT series (a DICOM folder or file) nor a NIfTI file (.nii/.nii.gz).")


def _plain_series_folder(path: Path, files: Sequence[Path]) -> bool:
    """True if ``files`` (a scan's series) are exactly the ``.dcm``/suffix-less files directly in the folder
    ``path``: what the Parametric Map writer reads as its source series."""
    if not path.is_dir():
        return False
    top = {p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".dcm", "")}
    return top == set(files)


def _read_aux(path: Path, shape: tuple[int, ...], affine: np.ndarray, what: str) -> np.ndarray:
    data, aff, _ = _read_scan(path)
    if data.shape != shape or not np.allclose(aff, affine, atol=1e-3):
        raise StudyError(f"{what} {path} is not on the scans' grid (shape {data.shape} vs {shape}); resample it.")
    if not np.isfinite(data).all():
        raise StudyError(f"{what} {path} contains NaN/Inf.")
    return data


def _read_listed(folder: Path, targets_file: str | None, progress: bool, exclude: Sequence[Path] = ()):
    """Scans named in a targets file: ``(names, targets, extra, volumes, affine, shape, sources, files)`` (files:
    per scan, the files read, the targets file last); a row's optional ``series_uid`` picks one series of a folder
    holding several."""
    names, values, extra, tpath = _read_targets(folder, targets_file)
    if len(names) < 2:
        raise StudyError(f"{tpath} lists {len(names)} scan; PCA + network need at least 2.")
    sources = []
    for name in names:
        p = (folder / name).resolve()
        if not p.exists():
            raise StudyError(f"scan {name!r} listed in {tpath} does not exist ({p}).")
        sources.append(p)
    it = zip(sources, [e.get("series_uid") or None for e in extra], strict=True)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(sources), desc="reading scans", unit="scan")
    vols, affine, files = [], None, []
    for p, uid in it:  # one file/series per scan: I/O loop
        data, aff, read = _read_scan(p, uid, exclude)
        files.append(read)
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
    return names, values, extra, vols, affine, shape, sources, [*files, [tpath]]


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
    exclude: Sequence[str | os.PathLike] = (),
) -> PETStudy:
    """Read every scan named in the study's targets file (see the module docstring for the layout).

    Args:
        dataset_dir: the study folder.
        targets_file: targets file name (default ``targets.csv``, else ``targets.json``).
        mask_file, truth_file, anatomy_file: optional NIfTI volumes on the scans' grid (ignored when absent).
        reference_scan: PT series the parametric maps reference (default: the first DICOM scan listed).
        progress: show a progress bar over the scans.
        exclude: folders never searched for scans when they lie inside a scan folder (the run's output folder:
            earlier outputs are not scans).

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
        files = [[packed, folder / "study.json"]]
    else:
        names, values, extra, vols, affine, shape, sources, files = _read_listed(
            folder, targets_file, progress, [Path(e).resolve() for e in exclude]
        )
    kinds = {"dicom" if p.is_dir() else "nifti" for p in sources}
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    aux = {}
    for key, fname in (("mask", mask_file), ("truth", truth_file), ("anatomy", anatomy_file)):
        path = folder / fname if fname else None
        aux[key] = _read_aux(path, shape, affine, key) if path is not None and path.exists() else None
        files += [[path]] if aux[key] is not None else []
    ref = None
    if reference_scan is not None:
        if (
            reference_scan not in names
            or len(sources) != len(names)
            or not _plain_series_folder(sources[names.index(reference_scan)], files[names.index(reference_scan)])
        ):
            raise StudyError(
                f"reference_scan {reference_scan!r} is not a PT series listed in the study's targets file, alone in "
                "its folder (the Parametric Maps reference a folder holding one series)."
            )
        ref = sources[names.index(reference_scan)]
    else:
        ref = next((p for p, f in zip(sources, files, strict=False) if _plain_series_folder(p, f)), None)
        if ref is None and kind != "nifti":
            logger.warning("no PT series is alone in its folder: no DICOM Parametric Map will be written.")
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
        files=sorted({Path(p).resolve() for group in files for p in group}),
    )
