"""Finding single-frame DICOM series by content and checking their slices, as a PACS export holds them.

A PACS export is ``study/series/IM000001`` (no suffix), may interleave two series in one folder, and may put one
series across folders; so files are recognised by content (:func:`~monai_saliency.data.dicom.detect.is_dicom_file`),
folders are searched recursively and instances are grouped by ``SeriesInstanceUID``, never by file or folder
(:func:`find_series`). Before a series is stacked into a volume (:func:`read_series_volume`), every slice must share
the series' orientation (``ImageOrientationPatient``), pixel spacing, matrix and slice spacing (from
``ImagePositionPatient``); a slice that differs is refused by name, never resampled silently.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_saliency.data.dicom.detect import is_dicom_file

__all__ = [
    "PET_SERIES_CLASSES",
    "PET_STORAGE",
    "DicomSeries",
    "SeriesError",
    "find_series",
    "read_series_volume",
    "series_geometry",
]

PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
_MULTI_FRAME_PET = {
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Enhanced PET",
}
PET_SERIES_CLASSES = frozenset({PET_STORAGE, *_MULTI_FRAME_PET})
"""SOP classes of PET images (single- and multi-frame; the multi-frame ones are refused by name when read)."""
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class SeriesError(ValueError):
    """A DICOM series that cannot be used as one 3D volume; the message names the offending file(s)."""


@dataclass
class DicomSeries:
    """The instances of one ``SeriesInstanceUID`` found under a folder.

    Attributes:
        uid: SeriesInstanceUID.
        modality: Modality of its first instance.
        sop_class: SOPClassUID of its first instance.
        files: the instances' paths, sorted.
        description: SeriesDescription (may be empty).
    """

    uid: str
    modality: str
    sop_class: str
    files: list[Path] = field(default_factory=list)
    description: str = ""


def _walk(root: Path, exclude: set[Path]) -> Iterable[Path]:
    """Regular files below ``root`` (sorted, recursive, symlinked folders not followed), skipping hidden folders
    (the cohort layer's staging area) and the folders in ``exclude``."""
    for parent, dirs, files in os.walk(root):
        here = Path(parent)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in exclude)
        yield from (here / f for f in sorted(files) if not f.startswith("."))


def find_series(
    root: str | os.PathLike, exclude: Sequence[str | os.PathLike] = (), skip_files: Iterable[str | os.PathLike] = ()
) -> dict[str, DicomSeries]:
    """Every DICOM series under ``root`` (a folder searched recursively, or one file), by ``SeriesInstanceUID``.

    Only headers are read (``stop_before_pixels``). Files that are not DICOM by content are ignored, whatever their
    names; so are hidden files and folders, the folders in ``exclude`` (e.g. an output folder inside the dataset)
    and the files in ``skip_files`` (e.g. the outputs of an earlier run recorded in its manifest).

    Args:
        root: folder (or file) to search.
        exclude: folders not to descend into.
        skip_files: files to ignore.

    Returns:
        ``{SeriesInstanceUID: DicomSeries}``, in the order first found.

    Raises:
        SeriesError: a DICOM file whose header cannot be read or that has no SeriesInstanceUID (named).
    """
    import pydicom

    root = Path(root)
    skip = {Path(p).resolve() for p in skip_files}
    candidates = [root] if root.is_file() else _walk(root, {Path(p).resolve() for p in exclude})
    found: dict[str, DicomSeries] = {}
    for path in candidates:  # one header per file: I/O loop
        if path.resolve() in skip or not is_dicom_file(path):
            continue
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            uid = str(ds.SeriesInstanceUID)
        except Exception as exc:
            raise SeriesError(
                f"cannot read the DICOM file {path}: {type(exc).__name__}: {exc}; it looks truncated or corrupt, "
                "replace or remove it."
            ) from exc
        series = found.setdefault(
            uid,
            DicomSeries(
                uid,
                str(ds.get("Modality", "")),
                str(ds.get("SOPClassUID", "")),
                [],
                str(ds.get("SeriesDescription", "")),
            ),
        )
        series.files.append(path)
    return found


def _majority(values: list[tuple[float, ...]], files: list[Path], what: str, decimals: int) -> np.ndarray:
    """The value most slices share; the first slice that differs from it is named in a :class:`SeriesError`."""
    keys = [tuple(np.round(v, decimals)) for v in values]
    common, _ = Counter(keys).most_common(1)[0]
    for key, value, path in zip(keys, values, files, strict=True):
        if key != common:
            raise SeriesError(
                f"{path}: its {what} {list(value)} differs from the rest of its series ({list(common)}); "
                "a slice of another acquisition or a resampled slice? Remove it or fix the series."
            )
    return np.asarray(common, dtype=np.float64)


def series_geometry(datasets: Sequence, files: Sequence[Path]) -> tuple[list[int], np.ndarray]:
    """Check that single-frame slices form one regular 3D grid and give its slice order and RAS affine.

    Every slice must have the series' ImageOrientationPatient, PixelSpacing, Rows and Columns; the positions
    (ImagePositionPatient) must be distinct and evenly spaced.

    Args:
        datasets: pydicom datasets (headers suffice), one per slice.
        files: their paths, for the messages.

    Returns:
        ``(order, affine)``: the slices' order along the stack and the 4x4 RAS voxel-to-world matrix of the volume
        ``(X = columns, Y = rows, Z = slices)``.

    Raises:
        SeriesError: fewer than 2 slices (a 2D image), a multi-frame instance, missing geometry, or a slice whose
            orientation, pixel spacing, matrix or slice spacing differs from the rest of its series (named).
    """
    files = [Path(p) for p in files]
    for ds, path in zip(datasets, files, strict=True):
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        kind = _MULTI_FRAME_PET.get(str(ds.get("SOPClassUID", "")))
        if frames > 1 or kind:
            raise SeriesError(
                f"{path} is a multi-frame {kind or 'image'} ({frames} frames); a scan must be a series of "
                "single-frame slices (export the series as single-frame PET Image Storage)."
            )
        missing = [k for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing") if k not in ds]
        if missing:
            raise SeriesError(f"{path} has no {', '.join(missing)}; its place in the volume is unknown.")
    if len(files) < 2:
        raise SeriesError(
            f"{files[0] if files else 'the series'} is a single slice: a 2D image, not a 3D scan; give the whole series."
        )
    _majority([(int(ds.Rows), int(ds.Columns)) for ds in datasets], files, "matrix (Rows, Columns)", 0)
    iop = _majority(
        [tuple(float(v) for v in ds.ImageOrientationPatient) for ds in datasets], files, "ImageOrientationPatient", 4
    )
    spacing = _majority([tuple(float(v) for v in ds.PixelSpacing) for ds in datasets], files, "PixelSpacing", 4)
    pos = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    order = np.argsort(pos @ np.cross(iop[:3], iop[3:]), kind="stable")
    pos = pos[order]
    steps = np.diff(pos, axis=0)
    dist = np.linalg.norm(steps, axis=1)
    for n in np.flatnonzero(dist < 1e-3):
        raise SeriesError(
            f"{files[order[n]]} and {files[order[n + 1]]} have the same ImagePositionPatient {pos[n].tolist()}: two "
            "images of one place in one series (interleaved acquisitions?); split the series or remove one of them."
        )
    step = np.median(steps, axis=0)
    for n in np.flatnonzero(np.linalg.norm(steps - step, axis=1) > max(1e-3, 1e-3 * np.linalg.norm(step))):
        raise SeriesError(
            f"{files[order[n + 1]]}: its slice spacing ({dist[n]:.4g} mm from {files[order[n]].name}, from "
            f"ImagePositionPatient) differs from the rest of its series ({np.linalg.norm(step):.4g} mm); a missing, "
            "extra or misplaced slice? Fix the series or resample it."
        )
    lps = np.eye(4)
    lps[:3, :3] = np.stack([iop[:3] * spacing[1], iop[3:] * spacing[0], step], axis=1)
    lps[:3, 3] = pos[0]
    return order.tolist(), _RAS_FROM_LPS @ lps


def read_series_volume(
    files: Sequence[str | os.PathLike], modality: str | None = "PT"
) -> tuple[np.ndarray, np.ndarray]:
    """Read single-frame slices as one volume after checking their geometry (:func:`series_geometry`).

    Pixel values go through pydicom's Modality LUT (RescaleSlope / RescaleIntercept per slice).

    Args:
        files: the series' instances (any order), e.g. ``find_series(...)[uid].files``.
        modality: required Modality (None: any).

    Returns:
        ``(volume (X, Y, Z) float32, RAS affine 4x4 float64)``.

    Raises:
        SeriesError: a file that cannot be read or decoded, of another series or modality, or not monochrome
            (named); see :func:`series_geometry` for the geometry checks.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    files = [Path(p) for p in files]
    datasets = []
    for path in files:  # one file per slice: I/O loop
        try:
            ds = pydicom.dcmread(str(path))
        except Exception as exc:
            raise SeriesError(f"cannot read {path}: {type(exc).__name__}: {exc}; replace or remove it.") from exc
        if modality is not None and ds.get("Modality") != modality:
            raise SeriesError(f"{path} is a {ds.get('Modality')!r} image, not {modality}.")
        datasets.append(ds)
    uids = {str(ds.SeriesInstanceUID) for ds in datasets}
    if len(uids) > 1:
        raise SeriesError(f"the files {files[0]} ... {files[-1]} belong to {len(uids)} series; group them first.")
    order, affine = series_geometry(datasets, files)
    slices = []
    for n in order:
        ds, path = datasets[n], files[n]
        if ds.get("PhotometricInterpretation") != "MONOCHROME2" or int(ds.get("SamplesPerPixel", 1)) != 1:
            raise SeriesError(
                f"{path} has PhotometricInterpretation {ds.get('PhotometricInterpretation')!r}; a PET slice is "
                "MONOCHROME2."
            )
        try:
            slices.append(np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64))
        except Exception as exc:
            raise SeriesError(
                f"cannot decode the pixels of {path}: {type(exc).__name__}: {exc}; it looks truncated or corrupt."
            ) from exc
    return np.stack(slices, -1).transpose(1, 0, 2).astype(np.float32), affine
