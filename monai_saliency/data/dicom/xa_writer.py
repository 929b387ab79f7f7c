"""X-Ray Angiographic (XA) multi-frame DICOM: write cines, and write saliency maps as derived XA.

* :func:`write_xa_cine` stores a cine ``(T, H, W)`` as one multi-frame XA object (SOP class
  1.2.840.10008.5.1.4.1.1.12.1, uncompressed explicit-VR little endian) with the Cine and XA Positioner
  attributes: ``FrameTime``, ``CineRate``/``RecommendedDisplayFrameRate``, ``FrameIncrementPointer`` ->
  FrameTime, ``PositionerPrimaryAngle``/``PositionerSecondaryAngle`` (LAO/RAO, cranial/caudal), source distances,
  ``ImagerPixelSpacing``, the X-Ray Acquisition technique (kVp, tube current, exposure time, exposure),
  ``BodyPartExamined`` and a display window over the stored bit range.
* :func:`write_xa_derived` stores a map of the same frame count and size (e.g. a saliency cine) as a *derived*
  multi-frame XA (``ImageType DERIVED\\SECONDARY``) in the source's study, new series, referencing the source
  instance in ``SourceImageSequence`` (purpose DCM 121322, "Source image for image processing operation").
  Pixels are uncompressed by default; ``compression="jpeg2000"``, ``"rle"`` or ``"deflate"`` stores them losslessly compressed
  (:mod:`monai_saliency.data.dicom.encoding`; the angiogram bundle uses JPEG 2000).
  Floats are stored as 16-bit integers with ``RescaleSlope``/``RescaleIntercept`` (max error ``range / 65535``),
  which MONAI's PydicomReader applies when reading, so the map re-reads to the same array up to that step. The
  acquisition attributes the XA IOD requires are copied from the source, and a ``LINEAR_EXACT`` display window spans
  the map's value range (in rescaled units, as pydicom, MONAI and web viewers apply the rescale), so a viewer shows
  the map rather than a black frame.
  :class:`XADerivedWriter` wraps it as a MONAI ``ImageWriter``; pass it to ``SaveImage(writer=XADerivedWriter)``
  (nothing is registered for ``.dcm`` globally).

Every write goes through :func:`monai_saliency.data.atomic.atomic_output`: a failed write leaves no partial file and
an input is never overwritten. Reading: :mod:`monai_saliency.data.dicom.xa`. Both objects give no error in the
standard's validator ``dciodvfy`` (dicom3tools); its remaining warnings for the derived map are the Rescale attributes,
which the classic XA IOD does not list. dcmtk, following the IOD, ignores them for XA: its default (full stored range)
and min-max renderings show the map, but the file's window applied to stored values (``dcm2pnm +Wi 1``) is white.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.data.image_writer import ImageWriter
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, XRayAngiographicImageStorage, generate_uid

from monai_saliency.data.atomic import atomic_output, source_paths
from monai_saliency.data.dicom.encoding import check_compression, encode_pixel_data
from monai_saliency.data.dicom.values import covering_window, short_text
from monai_saliency.data.dicom.xa import _FRAME_TIME_TAG, XACineError, _frame_time_ms, _validate_xa, read_xa_dataset

__all__ = ["XADerivedWriter", "write_xa_cine", "write_xa_derived"]


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


# X-Ray Acquisition / technique attributes of the XA IOD copied from the source; XRayTubeCurrent, ExposureTime and
# Exposure are Type 2C (one of them is required): written empty ("unknown") when the source has none of them.
_XA_TECHNIQUE = ("XRayTubeCurrent", "ExposureTime", "Exposure")
_XA_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "FrameOfReferenceUID",
    "Manufacturer",
    "BodyPartExamined",
    "Laterality",
    "ImageLaterality",
    "PatientPosition",
    "PositionerMotion",
    "PositionerPrimaryAngle",
    "PositionerSecondaryAngle",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
    "ImagerPixelSpacing",
    "KVP",
    "RadiationSetting",
    *_XA_TECHNIQUE,
    "XRayTubeCurrentInuA",
    "ExposureTimeInuS",
    "ExposureInuAs",
    "AveragePulseWidth",
    "FocalSpots",
    "Grid",
    "FilterType",
    "IntensifierSize",
    "FieldOfViewShape",
    "FieldOfViewDimensions",
    "PatientOrientation",
)


def _headline(description: str) -> str:
    """The description's first clause (up to a comma, semicolon, colon or parenthesis): a short series label."""
    head = re.split(r"\s*[,;:(]", description.strip(), maxsplit=1)[0].strip()
    return head or description


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
    ds.CineRate = round(rate)
    ds.RecommendedDisplayFrameRate = round(rate)
    ds.StartTrim, ds.StopTrim = 1, int(t)
    ds.LossyImageCompression = "00"
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
    body_part: str = "HEART",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    uid_seed: str | None = None,
    protect: Sequence[str | os.PathLike] = (),
    overwrite: bool = True,
    compression: str = "none",
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
        body_part: BodyPartExamined (an unpaired part, so General Series ``Laterality`` is not required).
        study_uid, series_uid, sop_uid: UIDs to use; new ones are generated when None.
        uid_seed: if given, generated UIDs are derived from it deterministically (same seed, same UIDs).
        protect: input files never to overwrite.
        overwrite: replace an existing ``path``.
        compression: lossless pixel compression, ``"none"`` (default: uncompressed explicit-VR little endian, as most
            modalities send), ``"rle"``, ``"jpeg2000"`` or ``"deflate"`` (see :mod:`monai_saliency.data.dicom.encoding`).

    Returns:
        The written path.

    Raises:
        ValueError: for a wrong shape, fewer than 2 frames, NaN/Inf, out-of-range pixels, a bad bit depth or frame
            time, or an unknown/unavailable compression.
        FileExistsError: see :func:`~monai_saliency.data.atomic.atomic_output`.
    """
    if bits_stored not in (8, 10, 12, 16):
        raise ValueError(f"bits_stored must be 8, 10, 12 or 16 for XA, got {bits_stored}.")
    if not frame_time_ms > 0:
        raise ValueError(f"frame_time_ms must be > 0, got {frame_time_ms}.")
    check_compression(compression)
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
    ds.BodyPartExamined = body_part
    ds.WindowCenter, ds.WindowWidth = covering_window(0.0, float((1 << bits_stored) - 1))
    ds.VOILUTFunction = "LINEAR_EXACT"
    # X-Ray Acquisition technique (synthetic, typical of a cardiac cine run); one of current/time/exposure required
    ds.KVP = "80"
    ds.XRayTubeCurrent, ds.ExposureTime, ds.Exposure = 500, 6, 3  # mA, ms, mAs
    ds.RadiationSetting = "GR"
    ds.PositionerMotion = "STATIC"
    ds.PositionerPrimaryAngle = f"{primary_angle:.6g}"
    ds.PositionerSecondaryAngle = f"{secondary_angle:.6g}"
    ds.DistanceSourceToDetector = "1000"
    ds.DistanceSourceToPatient = "750"
    ds.ImagerPixelSpacing = [f"{pixel_spacing_mm:.6g}", f"{pixel_spacing_mm:.6g}"]
    encode_pixel_data(ds, frames, compression)
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
    compression: str = "none",
) -> Path:
    """Write a per-frame map (e.g. saliency) as a derived multi-frame XA that references its source cine.

    The map keeps the source's patient, study, frame of reference, frame time, angles, pixel spacing, body part and
    X-Ray acquisition technique (kVp, tube current, exposure time, exposure: the XA IOD requires one of the last three;
    ``Exposure`` is written empty, i.e. unknown, when the source has none); it gets a new series and instance UID,
    ``ImageType = DERIVED\\SECONDARY\\SINGLE PLANE``, ``DerivationDescription = description`` (the long text), a short
    ``SeriesDescription`` (at most 64 characters, never cut mid-word), a ``SourceImageSequence`` item pointing at
    the source SOP instance and a ``ReferencedSeriesSequence`` naming the source series. A ``LINEAR_EXACT`` display
    window (``WindowCenter``/``WindowWidth``) spans the map's rescaled value range. Values are stored as 16-bit integers with
    ``RescaleSlope = (max - min) / 65535`` and ``RescaleIntercept = min`` (``RescaleType`` "US"), so readers that
    apply the rescale (MONAI's PydicomReader does) get the map back within one quantisation step.

    Args:
        image: ``(T, H, W)`` or ``(1, T, H, W)`` finite values, with the source's frame count and frame size.
        source: the source XA file (it is validated and protected from being overwritten) or its pydicom Dataset.
        path: output file.
        description: DerivationDescription (what the map is, e.g. ``"Signature Activation, spatial"``).
        series_description: SeriesDescription; default ``"Derived: "`` + the description's first clause (up to a
            comma, semicolon, colon or parenthesis); longer than 64 characters, it is cut at a word boundary (:func:`~monai_saliency.data.dicom.values.short_text`).
        series_number: SeriesNumber of the derived series.
        protect: further input files never to overwrite.
        overwrite: replace an existing ``path``.
        compression: pixel compression: ``"none"`` (default, uncompressed), ``"jpeg2000"`` (lossless; a smooth
            512 x 512 x 48 map takes about 2 MB instead of 25 MB) or ``"rle"`` (decoded by every toolkit, dcmtk
            included) or ``"deflate"``, see :mod:`monai_saliency.data.dicom.encoding`.

    Returns:
        The written path.

    Raises:
        XACineError: if the source is not a valid multi-frame XA, or the map's frame count / size differ from it.
        ValueError: for a wrong shape, NaN/Inf values, or an unknown/unavailable compression.
        FileExistsError: see :func:`~monai_saliency.data.atomic.atomic_output`.
    """
    check_compression(compression)
    arr = _as_numpy_frames(image, "derived image")
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
    q = np.empty(arr.shape, dtype=np.uint16)
    for i in range(0, t, 8):  # a few frames at a time in float64: no full-size float64 copy of a clinical cine
        q[i : i + 8] = np.rint((arr[i : i + 8].astype(np.float64) - lo) / slope).clip(0, 65535)
    sop_uid = generate_uid()
    ds = _base_dataset(sop_uid, q, float(_frame_time_ms(src)))
    for kw in _XA_COPIED:
        if kw in src:
            setattr(ds, kw, src.data_element(kw).value)
    if not any(kw in src for kw in _XA_TECHNIQUE):  # Type 2C: one is required; unknown for this source
        ds.Exposure = None
    date, time = _now()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesDate = ds.ContentDate = date
    ds.SeriesTime = ds.ContentTime = time
    ds.SeriesNumber, ds.InstanceNumber = int(series_number), 1
    ds.SeriesDescription = short_text(series_description or f"Derived: {_headline(description)}", 64)
    ds.ImageType = ["DERIVED", "SECONDARY", "SINGLE PLANE"]
    ds.DerivationDescription = description[:1024]
    ds.PixelIntensityRelationship = "LIN"
    ds.BitsStored, ds.HighBit = 16, 15
    ds.RescaleIntercept = f"{lo:.10g}"
    ds.RescaleSlope = f"{slope:.10g}"
    ds.RescaleType = "US"
    # the window spans the rescaled values as written (DS-rounded intercept and slope), so the whole map is shown
    lo_w = float(ds.RescaleIntercept)
    ds.WindowCenter, ds.WindowWidth = covering_window(lo_w, lo_w + float(ds.RescaleSlope) * float(q.max()))
    ds.VOILUTFunction = "LINEAR_EXACT"
    ds.WindowCenterWidthExplanation = "map value range"
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
    encode_pixel_data(ds, q, compression)
    protected = [*src_paths, *protect, *(source_paths(image) if isinstance(image, torch.Tensor) else [])]
    return _save(ds, path, protected, overwrite)


class XADerivedWriter(ImageWriter):
    """MONAI ``ImageWriter`` that stores ``(1, T, H, W)`` maps as derived XA referencing their source cine.

    The source is found in the metadata's ``filename_or_obj`` (MONAI keeps it from ``LoadImage``), so
    ``SaveImage(output_ext=".dcm", writer=XADerivedWriter)`` works on maps computed from a cine read with
    :func:`read_xa_cine` / ``LoadImage``. ``DerivationDescription`` comes from ``meta["derivation_description"]``
    if present.
    """

    output_dtype = np.float32

    def __init__(self, description: str = "saliency map", compression: str = "none", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.description = description
        self.compression = compression
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
        write_xa_derived(
            self.data_obj, self.source, filename, description=self.description, compression=self.compression
        )
