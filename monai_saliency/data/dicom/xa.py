"""X-Ray Angiographic (XA) multi-frame DICOM cines: validate and read them with MONAI.

:func:`read_xa_cine` validates the file (XA modality and SOP class, multi-frame, monochrome, a decodable transfer
syntax, frame count consistent with the pixel data, its fragments and any frame-time vector, pixel data not
truncated) and then reads it with ``LoadImage`` and a ``PydicomReader(swap_ij=False)`` that interprets the pixel data
(:mod:`monai_saliency.data.dicom.pixels`: decoders, MONOCHROME1, signedness, bits stored, Modality LUT) ->
``MetaTensor (1, T, H, W)`` (frames first, rows, columns) whose meta holds ``frame_time_ms``, the angles and the UIDs. Writing cines and derived maps:
:mod:`monai_saliency.data.dicom.xa_writer`.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import MetaTensor
from monai.data.image_reader import PydicomReader
from monai.transforms import LoadImage
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import XRayAngiographicImageStorage

from monai_saliency.data.dicom.pixels import check_pixel_format, modality_range, modality_values

__all__ = ["XA_SOP_CLASS_UIDS", "XACineError", "read_xa_cine", "read_xa_dataset"]

XA_SOP_CLASS_UIDS: dict[str, str] = {
    str(XRayAngiographicImageStorage): "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.1.1": "Enhanced XA Image Storage",
}
_FRAME_TIME_TAG = 0x00181063
_FRAME_TIME_VECTOR_TAG = 0x00181065


class XACineError(ValueError):
    """A file is not a readable multi-frame XA cine (wrong modality, single frame, truncated, inconsistent, colour,
    palette colour, or a transfer syntax without an installed decoder)."""


def _values(value: Any) -> list:
    """A multi-valued element's values as a list (pydicom gives a single value, VM 1, as a scalar)."""
    return list(value) if isinstance(value, MultiValue) else [value]


def _frame_time_ms(ds: Dataset) -> float:
    if "FrameTime" in ds and ds.FrameTime not in (None, ""):
        return float(ds.FrameTime)
    if "FrameTimeVector" in ds and ds.FrameTimeVector:
        vec = np.asarray([float(v) for v in _values(ds.FrameTimeVector)])
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
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if rows < 1 or cols < 1 or bits not in (8, 16):
        raise XACineError(
            f"{name} has an invalid image description: Rows={rows}, Columns={cols}, BitsAllocated={bits}."
        )
    stored = int(ds.get("BitsStored", bits) or bits)
    high = int(ds.HighBit) if ds.get("HighBit") not in (None, "") else stored - 1
    if not 1 <= stored <= bits or high != stored - 1:
        raise XACineError(
            f"{name} has an invalid bit layout: BitsAllocated={bits}, BitsStored={stored}, HighBit={high}; "
            "expected BitsStored <= BitsAllocated and HighBit = BitsStored - 1."
        )
    # colour, palette colour, a transfer syntax without an installed decoder, fragments that cannot hold the frames
    check_pixel_format(ds, name, error=XACineError)
    if "FrameTimeVector" in ds and ds.FrameTimeVector is not None and len(_values(ds.FrameTimeVector)) != frames:
        raise XACineError(
            f"inconsistent frame count in {name}: NumberOfFrames={frames} but FrameTimeVector has "
            f"{len(_values(ds.FrameTimeVector))} entries."
        )
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    # native pixel data (encapsulated: see check_pixel_format); a damaged VR reads the syntax as str
    if tsyntax is None or not pydicom.uid.UID(str(tsyntax)).is_compressed:
        expected = rows * cols * frames * bits // 8
        got = len(ds.PixelData or b"")  # an empty element reads as None
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
        XACineError: if the file is not DICOM, is truncated/corrupt, not XA, single-frame or inconsistent, is colour
            or palette colour, or uses a transfer syntax without an installed decoder (named with the packages that
            would decode it).
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
    try:
        _validate_xa(ds, str(path), min_frames=min_frames)
    except XACineError:
        raise
    except ValueError as e:  # a number field holding text, e.g. FrameTime '6x.67' (a damaged header)
        raise XACineError(f"{path} has a damaged header: {e}") from e
    return ds


def _xa_meta(ds: Dataset) -> dict[str, Any]:
    # absent optional tags become NaN, not None: MONAI's collate cannot batch None, and NaN keeps the type
    def num(kw: str) -> float:
        return (
            float(ds.data_element(kw).value) if kw in ds and ds.data_element(kw).value not in (None, "") else math.nan
        )

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
        "photometric_interpretation": str(ds.PhotometricInterpretation),
    }


class _XAPixelReader(PydicomReader):
    """MONAI's PydicomReader whose array is :func:`~monai_saliency.data.dicom.pixels.modality_values` (decoded,
    Modality LUT applied, MONOCHROME1 inverted) instead of the stored values with only the rescale applied."""

    def _get_array_data(self, img: Dataset, filename: Any) -> np.ndarray:
        values = modality_values(img, str(filename), error=XACineError)
        return values[None] if values.ndim == 2 else values  # a single frame (min_frames=1) is still (T, H, W)


def read_xa_cine(path: str | os.PathLike, normalize: bool = False, min_frames: int = 2) -> MetaTensor:
    """Validate a multi-frame XA file and read its display values with MONAI's ``LoadImage`` and a
    ``PydicomReader(swap_ij=False)`` that interprets the pixel data (:mod:`monai_saliency.data.dicom.pixels`).

    The values are the stored values decoded by pydicom (any transfer syntax with an installed decoder; bits above
    ``HighBit`` masked, signed data sign-extended), through the Modality LUT (``RescaleSlope``/``RescaleIntercept``
    or a Modality LUT Sequence), with ``MONOCHROME1`` inverted within the representable range so that larger is
    always brighter: a ``MONOCHROME1`` cine and its ``MONOCHROME2`` twin read to the same array. A VOI LUT or window
    in the file is not applied (a viewer's presentation choice; the network sees the full range).

    Args:
        path: the XA DICOM file.
        normalize: map the representable range of those values to [0, 1]: ``(v - lo) / (hi - lo)`` with
            ``(lo, hi)`` the stored bit depth's range through the Modality LUT (``[0, 2**BitsStored - 1]`` for
            unsigned data without rescale, so stored values divided by ``2**BitsStored - 1``). The range is the
            representable one, not the file's min/max, so a dark and a bright cine keep their difference.
        min_frames: the fewest frames accepted.

    Returns:
        ``MetaTensor (1, T, H, W)`` float32, frames first; meta holds MONAI's keys plus ``frame_time_ms``,
        ``cine_rate``, ``number_of_frames``, ``positioner_primary_angle``, ``positioner_secondary_angle``,
        ``imager_pixel_spacing``, ``image_type``, ``sop_class_uid``, ``sop_instance_uid``, ``series_instance_uid``,
        ``study_instance_uid``, ``bits_stored``, ``photometric_interpretation`` (as stored) and ``display_range``
        (``[lo, hi]`` above).

    Raises:
        FileNotFoundError, XACineError: see :func:`read_xa_dataset` (which also refuses colour, palette colour and
            transfer syntaxes without an installed decoder, by name); XACineError also if the pixel data cannot
            be decoded or the array read back does not have the declared ``(T, H, W)``.
    """
    ds = read_xa_dataset(path, min_frames=min_frames)
    loader = LoadImage(reader=_XAPixelReader(swap_ij=False), image_only=True, ensure_channel_first=True)
    with warnings.catch_warnings():
        # XA has no ImageOrientation/PositionPatient: MONAI warns and uses an identity affine, which is right here
        warnings.filterwarnings("ignore", message=".*ImageOrientationPatient.*")
        img = loader(str(path))
    expected = (1, int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    if tuple(img.shape) != expected:
        raise XACineError(f"{path}: read an array of shape {tuple(img.shape)}, expected {expected} (1, T, H, W).")
    try:
        meta = _xa_meta(ds)
    except ValueError as e:  # an angle or spacing holding text (a damaged header)
        raise XACineError(f"{path} has a damaged header: {e}") from e
    lo, hi = modality_range(ds)
    meta["display_range"] = [lo, hi]
    if normalize:
        img = (img - lo) / (hi - lo)
    img.meta.update(meta)
    return img
