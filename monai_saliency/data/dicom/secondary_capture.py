"""Secondary Capture (SC) objects of rendered RGB pictures: viewer-ready saliency overlays beside the source study.

* :func:`write_secondary_capture` stores ``(H, W, 3)`` uint8 as one true-colour *Secondary Capture Image*
  (SOP class 1.2.840.10008.5.1.4.1.1.7) and ``(T, H, W, 3)`` uint8 as one *Multi-frame True Color Secondary Capture
  Image* (1.2.840.10008.5.1.4.1.1.7.4) with the source's frame timing: ``FrameTime`` (or ``FrameTimeVector`` when the
  source has only that), ``FrameIncrementPointer`` to it, and the source's ``CineRate`` /
  ``RecommendedDisplayFrameRate``. Both are built with :class:`highdicom.sc.SCImage` (which checks names, UIDs,
  dates and the pixel description); highdicom builds single-frame SC only, so the multi-frame object is that
  instance with its SOP class, frame count, Cine attributes and pixel data replaced (the modules of the two IODs
  are the same apart from the Multi-frame, Cine and SC Multi-frame Image modules, which are added).
* Identity: with a DICOM source (a dataset, a file, or a series folder whose first file is read), the patient and
  study (``PatientName``, ``PatientID``, birth date, sex, ``StudyInstanceUID``, study date/time/ID, accession number,
  referring physician; ``StudyDescription``, ``IssuerOfPatientID`` when present) are copied from it by
  :meth:`highdicom.sc.SCImage.from_ref_dataset`; the SC gets a new series and SOP instance UID and references the
  source instances in ``SourceImageSequence`` (purpose DCM 121322) with a ``DerivationDescription``.
  Without a DICOM source (a NIfTI input) the SC gets an empty patient name and ID (type 2: unknown, never made up),
  a **new study** whose UID is derived from the input's resolved path (so every SC of one input file shares one
  study in a viewer, and a rerun reuses it; a random UID when no path is given), ``StudyDescription`` /
  ``SeriesDescription`` naming the file, and no source reference.
* ``BurnedInAnnotation`` is ``YES`` (method and model names are drawn into the pixels), ``ConversionType`` is
  ``WSD`` (workstation), ``ImageType`` is ``DERIVED\\SECONDARY\\OTHER``, pixels are 8-bit RGB, uncompressed explicit-VR
  little endian by default (the most widely readable encoding); ``compression="jpeg2000"`` (about half the size of a
  noisy cine's overlay), ``"rle"`` or ``"deflate"`` stores them losslessly compressed
  (:mod:`monai_saliency.data.dicom.encoding`).

Every write goes through :func:`monai_saliency.data.atomic.atomic_output` (no partial file, never over an input).
Rendering the pictures (colour map, blending, colour bar, text): :mod:`monai_saliency.visualize.secondary_capture`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from highdicom.sc import SCImage
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, MultiFrameTrueColorSecondaryCaptureImageStorage, generate_uid

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.dicom.detect import is_dicom_file
from monai_saliency.data.dicom.encoding import check_compression, encode_pixel_data

__all__ = ["SC_MANUFACTURER", "read_source_header", "write_secondary_capture"]

SC_MANUFACTURER = "monai_saliency"
_FRAME_TIME = Tag(0x0018, 0x1063)
_FRAME_TIME_VECTOR = Tag(0x0018, 0x1065)
_LO = 64  # value length of LO (SeriesDescription, StudyDescription)


def read_source_header(source: str | os.PathLike | None) -> Dataset | None:
    """The DICOM header (no pixel data) of a source file, or of the first DICOM file (sorted) of a series folder.

    Args:
        source: a file or folder, or None.

    Returns:
        The pydicom Dataset, or None when ``source`` is None, not DICOM (e.g. NIfTI) or a folder without DICOM files.
    """
    if source is None or not str(source):
        return None
    path = Path(source)
    if path.is_dir():
        path = next((p for p in sorted(path.iterdir()) if is_dicom_file(p)), None)
        if path is None:
            return None
    if not is_dicom_file(path):
        return None
    return pydicom.dcmread(path, stop_before_pixels=True)


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        raise ValueError(f"Secondary Capture pixels must be uint8 RGB, got dtype {arr.dtype}; render them first.")
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3 or min(arr.shape) < 1:
        raise ValueError(f"Secondary Capture pixels must be (H, W, 3) or (T, H, W, 3) RGB, got shape {arr.shape}.")
    return np.ascontiguousarray(arr)


def _cut(text: str, n: int = _LO) -> str:
    """``text`` in at most ``n`` characters, cut at a word boundary with an ellipsis (never mid-word)."""
    text = " ".join(str(text).split())
    if len(text) <= n:
        return text
    head = text[: n - 3].rsplit(" ", 1)[0] if " " in text[: n - 3] else text[: n - 3]
    return head.rstrip(" ,;:-") + "..."


def _frame_timing(ds: Dataset, frames: int, source: Dataset | None, frame_time_ms: float | None) -> None:
    """Cine module + FrameIncrementPointer: the source's FrameTime, else its FrameTimeVector, else ``frame_time_ms``."""
    vector = None
    ft = frame_time_ms
    if source is not None and source.get("FrameTime") not in (None, ""):
        ft = float(source.FrameTime)
    elif source is not None and source.get("FrameTimeVector"):
        vector = [float(v) for v in source.FrameTimeVector]
        if len(vector) != frames:
            raise ValueError(
                f"the source's FrameTimeVector has {len(vector)} entries but the capture has {frames} frames."
            )
    if vector is not None:
        ds.FrameTimeVector = [f"{v:.6g}" for v in vector]
        ds.FrameIncrementPointer = _FRAME_TIME_VECTOR
    else:
        if ft is None or not (np.isfinite(ft) and ft > 0):
            raise ValueError(f"a multi-frame capture needs a positive frame time, got {ft} (and no source timing).")
        ds.FrameTime = f"{float(ft):.6g}"
        ds.FrameIncrementPointer = _FRAME_TIME
    for kw in ("CineRate", "RecommendedDisplayFrameRate", "StartTrim", "StopTrim", "ActualFrameDuration"):
        if source is not None and kw in source and source.data_element(kw).value not in (None, ""):
            setattr(ds, kw, source.data_element(kw).value)
    if "CineRate" not in ds and vector is None:
        ds.CineRate = max(1, round(1000.0 / float(ft)))


def _body_part(ds: Dataset, source: Dataset | None, body_part: str | None) -> None:
    """General Series: BodyPartExamined / Laterality (and General Image ImageLaterality) from the source; else
    ``body_part``; else an empty Laterality (type 2C: required, possibly empty, for a paired or unknown part)."""
    for kw in ("BodyPartExamined", "Laterality", "ImageLaterality"):
        if source is not None and kw in source and source.data_element(kw).value not in (None, ""):
            setattr(ds, kw, source.data_element(kw).value)
    if "BodyPartExamined" not in ds and body_part:
        ds.BodyPartExamined = str(body_part).upper()[:16]
    if "BodyPartExamined" not in ds and "Laterality" not in ds:
        ds.Laterality = ""


def _reference(ds: Dataset, references: Sequence[Dataset], description: str) -> None:
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator = "121322", "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    items = []
    for ref in references:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ref.SOPClassUID, ref.SOPInstanceUID
        item.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
        items.append(item)
    if items:
        ds.SourceImageSequence = DicomSequence(items)
    if description:
        ds.DerivationDescription = " ".join(description.split())[:1024]


def write_secondary_capture(
    pixels: np.ndarray,
    path: str | os.PathLike,
    source: Dataset | str | os.PathLike | None = None,
    source_name: str = "",
    frame_time_ms: float | None = None,
    series_description: str = "saliency overlay",
    derivation_description: str = "",
    series_number: int = 901,
    references: Sequence[Dataset] | None = None,
    body_part: str | None = None,
    protect: Sequence[str | os.PathLike] = (),
    overwrite: bool = True,
    compression: str = "none",
) -> Path:
    """Write rendered RGB pixels as a (multi-frame true-colour) Secondary Capture, atomically.

    Args:
        pixels: ``(H, W, 3)`` uint8 (Secondary Capture Image) or ``(T, H, W, 3)`` uint8 (Multi-frame True Color
            Secondary Capture Image; ``T = 1`` allowed).
        path: output file (``.dcm``).
        source: the DICOM source: a pydicom Dataset, a file, or a series folder (its first DICOM file is read); the
            patient/study identity and frame timing come from it. None or a non-DICOM path (NIfTI): a new study.
        source_name: the input's name, shown in the descriptions of a capture without a DICOM source; default the
            source path's name.
        frame_time_ms: time between frames when the source has neither FrameTime nor FrameTimeVector (or there is
            no DICOM source); ignored for single-frame pixels.
        series_description: SeriesDescription (cut at a word boundary to 64 characters).
        derivation_description: DerivationDescription (what is shown, e.g. method and model).
        series_number: SeriesNumber of the new series.
        references: instances to list in ``SourceImageSequence``; default the source instance itself.
        body_part: ``BodyPartExamined`` when the source has none (e.g. ``"HEART"``, ``"BRAIN"``: unpaired parts,
            so the General Series ``Laterality`` is not required); with neither, ``Laterality`` is sent empty
            (unknown), as the standard allows.
        protect: input files never to overwrite (a source file is protected automatically).
        overwrite: replace an existing ``path``.
        compression: pixel compression: ``"none"`` (default), ``"jpeg2000"`` (lossless; ``PhotometricInterpretation``
            becomes ``YBR_RCT``, readers get the RGB values back exactly), ``"rle"`` or ``"deflate"`` (see
            :mod:`monai_saliency.data.dicom.encoding`).

    Returns:
        The written path.

    Raises:
        ValueError: pixels that are not uint8 RGB, a multi-frame capture without a usable frame time, a source
            FrameTimeVector of another length, or an unknown/unavailable compression.
        FileExistsError: see :func:`~monai_saliency.data.atomic.atomic_output`.
    """
    arr = _check_pixels(pixels)
    check_compression(compression)
    multi = arr.ndim == 4
    source_path = None if source is None or isinstance(source, Dataset) else Path(source)
    ref = source if isinstance(source, Dataset) else read_source_header(source_path)
    name = source_name or (source_path.name if source_path is not None else "")
    common = {
        "pixel_array": arr[0] if multi else arr,
        "photometric_interpretation": "RGB",
        "bits_allocated": 8,
        "coordinate_system": "PATIENT",
        "series_instance_uid": generate_uid(),
        "series_number": int(series_number),
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
        "manufacturer": SC_MANUFACTURER,
        "patient_orientation": ("L", "F"),  # placeholder required by highdicom; replaced below
        "transfer_syntax_uid": ExplicitVRLittleEndian,
        "series_description": _cut(series_description),
        "software_versions": "monai_saliency",
    }
    if ref is not None:
        with warnings.catch_warnings():  # the source's names are copied as they are, e.g. a one-component name
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
            sc = SCImage.from_ref_dataset(ref_dataset=ref, **common)
        for kw in ("StudyDescription", "IssuerOfPatientID"):
            if kw in ref and ref.data_element(kw).value not in (None, ""):
                setattr(sc, kw, ref.data_element(kw).value)
        _reference(sc, list(references) if references is not None else [ref], derivation_description)
        sc.PatientOrientation = ref.get("PatientOrientation", "") if "ImageOrientationPatient" not in ref else ""
    else:
        study = generate_uid(entropy_srcs=[str(source_path.resolve())]) if source_path is not None else generate_uid()
        sc = SCImage(
            study_instance_uid=study,
            patient_id=None,
            patient_name=None,
            **common,
        )
        sc.StudyDate, sc.StudyTime = sc.InstanceCreationDate, sc.InstanceCreationTime  # the new study starts now
        if name:
            sc.StudyDescription = _cut(f"monai_saliency results for {name}")
            sc.SeriesDescription = _cut(f"{series_description} of {name}")
        _reference(sc, list(references or []), derivation_description)
        sc.PatientOrientation = ""
    _body_part(sc, ref, body_part)
    texts = [str(sc.get(kw, "")) for kw in ("SeriesDescription", "StudyDescription", "DerivationDescription")]
    if not all(t.isascii() for t in texts):  # e.g. "Mørch": the whole object in UTF-8 (names are re-encoded)
        sc.SpecificCharacterSet = "ISO_IR 192"
    sc.ConversionType = "WSD"
    sc.BurnedInAnnotation = "YES"
    sc.ContentDate, sc.ContentTime = sc.InstanceCreationDate, sc.InstanceCreationTime
    sc.SeriesDate, sc.SeriesTime = sc.InstanceCreationDate, sc.InstanceCreationTime
    if multi:
        sc.SOPClassUID = MultiFrameTrueColorSecondaryCaptureImageStorage
        sc.file_meta.MediaStorageSOPClassUID = MultiFrameTrueColorSecondaryCaptureImageStorage
        sc.NumberOfFrames = int(arr.shape[0])
        _frame_timing(sc, int(arr.shape[0]), ref, frame_time_ms)
    encode_pixel_data(sc, arr, compression)
    protected = [*protect, *([source_path] if source_path is not None and source_path.is_file() else [])]
    with atomic_output(path, protect=protected, overwrite=overwrite) as tmp:
        sc.save_as(tmp, enforce_file_format=True)
    return Path(path)
