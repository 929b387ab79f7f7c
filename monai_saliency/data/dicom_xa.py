"""X-Ray Angiographic (XA) multi-frame DICOM: write cines, read them with MONAI, write saliency as derived XA.

* :func:`write_xa_cine` stores a cine ``(T, H, W)`` as one multi-frame XA object (SOP class
  1.2.840.10008.5.1.4.1.1.12.1, uncompressed explicit-VR little endian) with the Cine and XA Positioner
  attributes: ``FrameTime``, ``CineRate``/``RecommendedDisplayFrameRate``, ``FrameIncrementPointer`` ->
  FrameTime, ``PositionerPrimaryAngle``/``PositionerSecondaryAngle`` (LAO/RAO, cranial/caudal), source distances
  and ``ImagerPixelSpacing``.
* :func:`read_xa_cine` validates the file (XA modality and SOP class, multi-frame, frame count consistent with
  the pixel data and any frame-time vector, pixel data not truncated) and then reads it with
  ``LoadImage(reader=PydicomReader(swap_ij=False))`` -> ``MetaTensor (1, T, H, W)`` (frames first, rows, columns)
  whose meta holds ``frame_time_ms``, the angles and the UIDs. :class:`LoadXACine` / :class:`LoadXACined` are the
  MONAI transform forms.
* :func:`write_xa_derived` stores a map of the same frame count and size (e.g. a saliency cine) as a *derived*
  multi-frame XA (``ImageType DERIVED\\SECONDARY``) in the source's study, new series, referencing the source
  instance in ``SourceImageSequence`` (purpose DCM 121322, "Source image for image processing operation").
  Floats are stored as 16-bit integers with ``RescaleSlope``/``RescaleIntercept`` (max error ``range / 65535``),
  which MONAI's PydicomReader applies when reading, so the map re-reads to the same array up to that step.
  :class:`XADerivedWriter` wraps it as a MONAI ``ImageWriter`` (register it with :func:`register_xa_writer` to
  use ``SaveImage(output_ext=".dcm")``).

Every write goes through :func:`monai_saliency.data.io.atomic_output`: a failed write leaves no partial file and an
input is never overwritten.
"""

from __future__ import annotations

import datetime
import math
import os
import struct
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.image_reader import PydicomReader
from monai.data.image_writer import ImageWriter, register_writer
from monai.transforms import LoadImage, MapTransform, Transform
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, XRayAngiographicImageStorage, generate_uid

from monai_saliency.data.io import atomic_output, source_paths

__all__ = [
    "XA_SOP_CLASS_UIDS",
    "XACineError",
    "write_xa_cine",
    "write_xa_derived",
    "read_xa_dataset",
    "read_xa_cine",
    "LoadXACine",
    "LoadXACined",
    "XADerivedWriter",
    "register_xa_writer",
]

XA_SOP_CLASS_UIDS: dict[str, str] = {
    str(XRayAngiographicImageStorage): "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.1.1": "Enhanced XA Image Storage",
}
_FRAME_TIME_TAG = 0x00181063
_FRAME_TIME_VECTOR_TAG = 0x00181065


class XACineError(ValueError):
    """A file is not a readable multi-frame XA cine (wrong modality, single frame, truncated, inconsistent)."""


# ----------------------------------------------------------------------------------------------------- writing


def _as_numpy_frames(cine: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    arr = cine.detach().cpu().numpy() if isinstance(cine, torch.Tensor) else np.asarray(cine)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{what} must be (T, H, W) or (1, T, H, W), got shape {tuple(arr.shape)}.")
    if arr.shape[0] < 2:
        raise ValueError(f"{what} has {arr.shape[0]} frame; a multi-frame XA cine needs at least 2 frames.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or Inf; clean it before writing DICOM.")
    return arr


def _quantize_display(arr: np.ndarray, bits_stored: int) -> np.ndarray:
    """Integers are stored as they are (range-checked); floats are read as [0, 1] and scaled to the bit depth."""
    top = (1 << bits_stored) - 1
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        if arr.min() < 0 or arr.max() > top:
            raise ValueError(
                f"integer pixels must lie in [0, {top}] for BitsStored={bits_stored}, got [{arr.min()}, {arr.max()}]."
            )
        q = arr
    else:
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(
                f"float cines are written as display intensities in [0, 1], got [{arr.min():.4g}, {arr.max():.4g}]; "
                "rescale (e.g. minmax) or pass integer pixels."
            )
        q = np.rint(arr.astype(np.float64) * top)
    return q.astype(np.uint8 if bits_stored <= 8 else np.uint16)


def _now() -> tuple[str, str]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _base_dataset(sop_uid: str, frames: np.ndarray, frame_time_ms: float) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = XRayAngiographicImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = XRayAngiographicImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "XA"
    t, h, w = frames.shape
    # Image Pixel + Multi-frame + Cine modules
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(h), int(w)
    ds.NumberOfFrames = int(t)
    ds.BitsAllocated = 8 if frames.dtype == np.uint8 else 16
    ds.PixelRepresentation = 0
    ds.FrameIncrementPointer = pydicom.tag.Tag(_FRAME_TIME_TAG)
    ds.FrameTime = f"{frame_time_ms:.6g}"
    rate = 1000.0 / frame_time_ms
    ds.CineRate = int(round(rate))
    ds.RecommendedDisplayFrameRate = int(round(rate))
    ds.StartTrim, ds.StopTrim = 1, int(t)
    ds.LossyImageCompression = "00"
    ds.PixelData = np.ascontiguousarray(frames).astype(frames.dtype.newbyteorder("<"), copy=False).tobytes()
    return ds


def _save(ds: Dataset, path: str | os.PathLike, protect: Sequence[str | os.PathLike], overwrite: bool) -> Path:
    path = Path(path)
    with atomic_output(path, protect=protect, overwrite=overwrite) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def write_xa_cine(
    cine: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    frame_time_ms: float = 1000.0 / 15.0,
    primary_angle: float = 30.0,
    secondary_angle: float = 20.0,
    pixel_spacing_mm: float = 0.3,
    bits_stored: int = 12,
    patient_id: str = "SYNTH0001",
    patient_name: str = "Synthetic^Angiogram",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    uid_seed: str | None = None,
    protect: Sequence[str | os.PathLike] = (),
    overwrite: bool = True,
) -> Path:
    """Write a cine as one multi-frame X-Ray Angiographic DICOM object, atomically.

    Args:
        cine: ``(T, H, W)`` or ``(1, T, H, W)``, ``T >= 2``; floats are display intensities in [0, 1] (vessels dark)
            scaled to ``2**bits_stored - 1``; unsigned integers are stored unchanged.
        path: output file (``.dcm``).
        frame_time_ms: time between frames (FrameTime); CineRate is its reciprocal in frames/s.
        primary_angle: PositionerPrimaryAngle in degrees (+ = LAO, - = RAO).
        secondary_angle: PositionerSecondaryAngle in degrees (+ = cranial, - = caudal).
        pixel_spacing_mm: ImagerPixelSpacing (detector plane), both axes.
        bits_stored: 8 (one byte per pixel) or 10/12/16 (two bytes).
        patient_id, patient_name: patient identification (synthetic by default).
        study_uid, series_uid, sop_uid: UIDs to use; new ones are generated when None.
        uid_seed: if given, generated UIDs are derived from it deterministically (same seed, same UIDs).
        protect: input files never to overwrite.
        overwrite: replace an existing ``path``.

    Returns:
        The written path.

    Raises:
        ValueError: for a wrong shape, fewer than 2 frames, NaN/Inf, out-of-range pixels, a bad bit depth or frame time.
        FileExistsError: see :func:`~monai_saliency.data.io.atomic_output`.
    """
    if bits_stored not in (8, 10, 12, 16):
        raise ValueError(f"bits_stored must be 8, 10, 12 or 16 for XA, got {bits_stored}.")
    if not frame_time_ms > 0:
        raise ValueError(f"frame_time_ms must be > 0, got {frame_time_ms}.")
    frames = _quantize_display(_as_numpy_frames(cine, "cine"), bits_stored)

    def uid(kind: str, given: str | None) -> str:
        if given is not None:
            return given
        return generate_uid(entropy_srcs=[uid_seed, kind] if uid_seed is not None else None)

    ds = _base_dataset(uid("sop", sop_uid), frames, frame_time_ms)
    date, time = _now()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study", study_uid), uid("series", series_uid)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Manufacturer = "monai_saliency synthetic"
    ds.PatientOrientation = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.PixelIntensityRelationship = "DISP"
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.KVP = "80"
    ds.RadiationSetting = "GR"
    ds.PositionerMotion = "STATIC"
    ds.PositionerPrimaryAngle = f"{primary_angle:.6g}"
    ds.PositionerSecondaryAngle = f"{secondary_angle:.6g}"
    ds.DistanceSourceToDetector = "1000"
    ds.DistanceSourceToPatient = "750"
    ds.ImagerPixelSpacing = [f"{pixel_spacing_mm:.6g}", f"{pixel_spacing_mm:.6g}"]
    return _save(ds, path, [*source_paths(cine), *protect] if isinstance(cine, torch.Tensor) else protect, overwrite)


def write_xa_derived(
    image: torch.Tensor | np.ndarray,
    source: str | os.PathLike | Dataset,
    path: str | os.PathLike,
    description: str = "saliency map",
    series_description: str | None = None,
    series_number: int = 900,
    protect: Sequence[str | os.PathLike] = (),
    overwrite: bool = True,
) -> Path:
    """Write a per-frame map (e.g. saliency) as a derived multi-frame XA that references its source cine.

    The map keeps the source's patient, study, frame time, angles and pixel spacing; it gets a new series and
    instance UID, ``ImageType = DERIVED\\SECONDARY\\SINGLE PLANE``, ``DerivationDescription = description`` and a
    ``SourceImageSequence`` item pointing at the source SOP instance. Values are stored as 16-bit integers with
    ``RescaleSlope = (max - min) / 65535`` and ``RescaleIntercept = min`` (``RescaleType`` "US"), so readers that
    apply the rescale (MONAI's PydicomReader does) get the map back within one quantisation step.

    Args:
        image: ``(T, H, W)`` or ``(1, T, H, W)`` finite values, with the source's frame count and frame size.
        source: the source XA file (it is validated and protected from being overwritten) or its pydicom Dataset.
        path: output file.
        description: DerivationDescription (what the map is, e.g. ``"Signature Activation, spatial"``).
        series_description: SeriesDescription; default ``"Derived: " + description``.
        series_number: SeriesNumber of the derived series.
        protect: further input files never to overwrite.
        overwrite: replace an existing ``path``.

    Returns:
        The written path.

    Raises:
        XACineError: if the source is not a valid multi-frame XA, or the map's frame count / size differ from it.
        ValueError: for a wrong shape or NaN/Inf values.
        FileExistsError: see :func:`~monai_saliency.data.io.atomic_output`.
    """
    arr = _as_numpy_frames(image, "derived image").astype(np.float64)
    src_paths: list[str | os.PathLike] = []
    if isinstance(source, Dataset):
        src = source
        _validate_xa(src, "source dataset")
    else:
        src = read_xa_dataset(source)
        src_paths.append(source)
    t, h, w = arr.shape
    if t != int(src.NumberOfFrames):
        raise XACineError(
            f"inconsistent frame count: the map has {t} frames but the source cine has {int(src.NumberOfFrames)}; "
            "explain every frame (or resample the map in time) before writing."
        )
    if (h, w) != (int(src.Rows), int(src.Columns)):
        raise XACineError(
            f"the map's frame size {(h, w)} differs from the source's {(int(src.Rows), int(src.Columns))}; "
            "resize the map to the input before writing."
        )
    lo, hi = float(arr.min()), float(arr.max())
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    q = np.rint((arr - lo) / slope).clip(0, 65535).astype(np.uint16)
    sop_uid = generate_uid()
    ds = _base_dataset(sop_uid, q, float(_frame_time_ms(src)))
    for kw in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
        "ReferringPhysicianName", "StudyID", "AccessionNumber", "FrameOfReferenceUID", "Manufacturer",
        "PositionerMotion", "PositionerPrimaryAngle", "PositionerSecondaryAngle", "DistanceSourceToDetector",
        "DistanceSourceToPatient", "ImagerPixelSpacing", "KVP", "RadiationSetting", "PatientOrientation",
    ):
        if kw in src:
            setattr(ds, kw, src.data_element(kw).value)
    date, time = _now()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesDate = ds.ContentDate = date
    ds.SeriesTime = ds.ContentTime = time
    ds.SeriesNumber, ds.InstanceNumber = int(series_number), 1
    ds.SeriesDescription = (series_description or f"Derived: {description}")[:64]
    ds.ImageType = ["DERIVED", "SECONDARY", "SINGLE PLANE"]
    ds.DerivationDescription = description[:1024]
    ds.PixelIntensityRelationship = "LIN"
    ds.BitsStored, ds.HighBit = 16, 15
    ds.RescaleIntercept = f"{lo:.10g}"
    ds.RescaleSlope = f"{slope:.10g}"
    ds.RescaleType = "US"
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator = "121322", "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    ref = Dataset()
    ref.ReferencedSOPClassUID = src.SOPClassUID
    ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
    ref.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
    ds.SourceImageSequence = DicomSequence([ref])
    if "SeriesInstanceUID" in src:
        series_ref = Dataset()
        series_ref.SeriesInstanceUID = src.SeriesInstanceUID
        inst = Dataset()
        inst.ReferencedSOPClassUID, inst.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
        series_ref.ReferencedInstanceSequence = DicomSequence([inst])
        ds.ReferencedSeriesSequence = DicomSequence([series_ref])
    protected = [*src_paths, *protect, *(source_paths(image) if isinstance(image, torch.Tensor) else [])]
    return _save(ds, path, protected, overwrite)


# ----------------------------------------------------------------------------------------------------- reading


def _frame_time_ms(ds: Dataset) -> float:
    if "FrameTime" in ds and ds.FrameTime not in (None, ""):
        return float(ds.FrameTime)
    if "FrameTimeVector" in ds and ds.FrameTimeVector:
        vec = np.asarray([float(v) for v in ds.FrameTimeVector])
        return float(vec[1:].mean()) if vec.size > 1 else float("nan")
    if "CineRate" in ds and ds.CineRate:
        return 1000.0 / float(ds.CineRate)
    return float("nan")


def _validate_xa(ds: Dataset, name: str, min_frames: int = 2) -> None:
    modality = str(ds.get("Modality", ""))
    sop = str(ds.get("SOPClassUID", ""))
    if not modality or not sop or "PixelData" not in ds:
        present = {"Modality": modality, "SOPClassUID": sop, "PixelData": "PixelData" in ds}
        missing = [k for k, v in present.items() if not v]
        raise XACineError(
            f"{name} is incomplete: {', '.join(missing)} missing; the file is truncated, corrupt or not an image."
        )
    if modality != "XA" or sop not in XA_SOP_CLASS_UIDS:
        raise XACineError(
            f"{name} is not an X-ray angiogram: Modality={modality or 'missing'!r}, SOPClassUID={sop or 'missing'}; "
            f"expected Modality 'XA' and one of {sorted(XA_SOP_CLASS_UIDS)}."
        )
    if sop != str(XRayAngiographicImageStorage):
        raise XACineError(
            f"{name} is an Enhanced XA object ({sop}); only classic multi-frame XA "
            f"({XRayAngiographicImageStorage}) is supported here - convert it or read it with highdicom."
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < min_frames:
        raise XACineError(
            f"{name} is a single-frame image (NumberOfFrames={frames}); a cine with >= {min_frames} frames is "
            "expected. Read single frames with LoadImage(reader=PydicomReader()) instead."
        )
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    spp, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 0) or 0)
    if rows < 1 or cols < 1 or bits not in (8, 16):
        raise XACineError(
            f"{name} has an invalid image description: Rows={rows}, Columns={cols}, BitsAllocated={bits}."
        )
    if spp != 1:
        raise XACineError(f"{name} has SamplesPerPixel={spp}; XA cines are monochrome (1 sample per pixel).")
    if "FrameTimeVector" in ds and ds.FrameTimeVector is not None and len(ds.FrameTimeVector) != frames:
        raise XACineError(
            f"inconsistent frame count in {name}: NumberOfFrames={frames} but FrameTimeVector has "
            f"{len(ds.FrameTimeVector)} entries."
        )
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None or not tsyntax.is_compressed:
        expected = rows * cols * frames * bits // 8
        got = len(ds.PixelData)
        if got < expected:
            raise XACineError(
                f"{name}: pixel data is truncated or NumberOfFrames is wrong: {got} bytes for {frames} frames of "
                f"{rows}x{cols} at {bits} bits (expected {expected}); the file is incomplete or corrupt."
            )
        if got > expected + 1:  # one padding byte keeps an even length
            raise XACineError(
                f"inconsistent frame count in {name}: pixel data holds {got} bytes, more than NumberOfFrames={frames} "
                f"frames of {rows}x{cols} at {bits} bits ({expected} bytes)."
            )
    ft = _frame_time_ms(ds)
    if not (np.isfinite(ft) and ft > 0):
        raise XACineError(f"{name} has no usable frame time (FrameTime, FrameTimeVector or CineRate); got {ft}.")


def read_xa_dataset(path: str | os.PathLike, min_frames: int = 2) -> Dataset:
    """Read and validate a multi-frame XA file with pydicom (pixel data included).

    Args:
        path: the DICOM file.
        min_frames: the fewest frames accepted.

    Returns:
        The pydicom Dataset.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        XACineError: if the file is not DICOM, is truncated/corrupt, not XA, single-frame or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such DICOM file: {path}")
    try:
        ds = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError as e:
        raise XACineError(f"{path} is not a DICOM file ({e}); pass a DICOM Part 10 XA file.") from e
    except (EOFError, OSError, ValueError, struct.error) as e:
        raise XACineError(f"{path} is truncated or corrupt and cannot be parsed: {e}") from e
    _validate_xa(ds, str(path), min_frames=min_frames)
    return ds


def _xa_meta(ds: Dataset) -> dict[str, Any]:
    # absent optional tags become NaN, not None: MONAI's collate cannot batch None, and NaN keeps the type
    def num(kw: str) -> float:
        return float(ds.data_element(kw).value) if kw in ds and ds.data_element(kw).value not in (None, "") else math.nan

    return {
        "frame_time_ms": _frame_time_ms(ds),
        "cine_rate": num("CineRate"),
        "number_of_frames": int(ds.NumberOfFrames),
        "positioner_primary_angle": num("PositionerPrimaryAngle"),
        "positioner_secondary_angle": num("PositionerSecondaryAngle"),
        "imager_pixel_spacing": (
            [float(v) for v in ds.ImagerPixelSpacing] if "ImagerPixelSpacing" in ds else [math.nan, math.nan]
        ),
        "modality": str(ds.Modality),
        "image_type": list(ds.get("ImageType", [])),
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
        "bits_stored": int(ds.get("BitsStored", ds.BitsAllocated)),
    }


def read_xa_cine(path: str | os.PathLike, normalize: bool = False, min_frames: int = 2) -> MetaTensor:
    """Validate a multi-frame XA file and read it with MONAI's ``PydicomReader(swap_ij=False)``.

    Args:
        path: the XA DICOM file.
        normalize: divide stored display values by ``2**BitsStored - 1`` to get [0, 1] (only for originals without
            a rescale; derived maps already come back in their own units).
        min_frames: the fewest frames accepted.

    Returns:
        ``MetaTensor (1, T, H, W)`` float32, frames first; meta holds MONAI's keys plus ``frame_time_ms``,
        ``cine_rate``, ``number_of_frames``, ``positioner_primary_angle``, ``positioner_secondary_angle``,
        ``imager_pixel_spacing``, ``image_type``, ``sop_class_uid``, ``sop_instance_uid``, ``series_instance_uid``,
        ``study_instance_uid``, ``bits_stored``.

    Raises:
        FileNotFoundError, XACineError: see :func:`read_xa_dataset`; XACineError also if the pixel array read
            back does not have the declared ``(T, H, W)``.
    """
    ds = read_xa_dataset(path, min_frames=min_frames)
    loader = LoadImage(reader=PydicomReader(swap_ij=False), image_only=True, ensure_channel_first=True)
    with warnings.catch_warnings():
        # XA has no ImageOrientation/PositionPatient: MONAI warns and uses an identity affine, which is right here
        warnings.filterwarnings("ignore", message=".*ImageOrientationPatient.*")
        img = loader(str(path))
    expected = (1, int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    if tuple(img.shape) != expected:
        raise XACineError(f"{path}: read an array of shape {tuple(img.shape)}, expected {expected} (1, T, H, W).")
    meta = _xa_meta(ds)
    if normalize:
        if "RescaleSlope" in ds:
            raise XACineError(f"{path} carries a rescale (a derived map); read it with normalize=False.")
        img = img / float((1 << meta["bits_stored"]) - 1)
    img.meta.update(meta)
    return img


class LoadXACine(Transform):
    """MONAI transform: XA file path -> validated ``MetaTensor (1, T, H, W)`` (see :func:`read_xa_cine`).

    Args:
        normalize: scale stored display values to [0, 1].
        min_frames: the fewest frames accepted.
    """

    def __init__(self, normalize: bool = False, min_frames: int = 2) -> None:
        self.normalize = normalize
        self.min_frames = min_frames

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        return read_xa_cine(path, normalize=self.normalize, min_frames=self.min_frames)


class LoadXACined(MapTransform):
    """Dictionary twin of :class:`LoadXACine`.

    Args:
        keys: keys holding XA file paths.
        normalize, min_frames: see :class:`LoadXACine`.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self, keys: KeysCollection, normalize: bool = False, min_frames: int = 2, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadXACine(normalize=normalize, min_frames=min_frames)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


# ------------------------------------------------------------------------------------------- MONAI image writer


class XADerivedWriter(ImageWriter):
    """MONAI ``ImageWriter`` that stores ``(1, T, H, W)`` maps as derived XA referencing their source cine.

    The source is found in the metadata's ``filename_or_obj`` (MONAI keeps it from ``LoadImage``), so
    ``SaveImage(output_ext=".dcm", writer=XADerivedWriter)`` works on maps computed from a cine read with
    :func:`read_xa_cine` / ``LoadImage``. ``DerivationDescription`` comes from ``meta["derivation_description"]``
    if present.
    """

    output_dtype = np.float32

    def __init__(self, description: str = "saliency map", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.description = description
        self.source: str | None = None

    def set_data_array(
        self, data_array: Any, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs: Any
    ) -> None:
        arr = data_array.detach().cpu().numpy() if isinstance(data_array, torch.Tensor) else np.asarray(data_array)
        if channel_dim is not None and arr.ndim == 4:
            if arr.shape[channel_dim] != 1:
                raise ValueError(f"derived XA stores one channel, got {arr.shape[channel_dim]} on axis {channel_dim}.")
            arr = np.take(arr, 0, axis=channel_dim)
        self.data_obj = arr

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = False, **options: Any) -> None:
        meta = dict(meta_dict or {})
        src = meta.get("filename_or_obj")
        self.source = src if isinstance(src, (str, os.PathLike)) and str(src) else None
        self.description = str(meta.get("derivation_description", self.description))

    def write(self, filename: str | os.PathLike, verbose: bool = False, **kwargs: Any) -> None:
        if self.source is None:
            raise XACineError(
                "XADerivedWriter needs the source XA file in meta['filename_or_obj'] (read the cine with LoadImage "
                "or read_xa_cine and keep its metadata on the map)."
            )
        write_xa_derived(self.data_obj, self.source, filename, description=self.description)


def register_xa_writer() -> None:
    """Make ``SaveImage(output_ext=".dcm")`` resolve to :class:`XADerivedWriter` (MONAI has no other .dcm writer)."""
    register_writer("dcm", XADerivedWriter)
