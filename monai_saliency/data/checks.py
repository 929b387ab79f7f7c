"""Intake checks: refuse a study file by name, from its header, before its pixels are decoded.

The bundles' loaders (the cine bundle's ``LoadCined``, :class:`monai_saliency.data.volume.LoadVolumed`) read a
study's header first (NIfTI through nibabel without touching the data, DICOM through pydicom with
``stop_before_pixels``), estimate its decoded size, check that it is the kind of image the bundle takes, and only
then decode it. Every refusal is one of a small set of named errors whose message names the file:

* :class:`UnreadableStudyError`: the file cannot be parsed (corrupt, truncated, inconsistent header). Whatever a
  parser (nibabel, pydicom, MONAI's readers) raises while reading a study is turned into this error, the original
  exception type and message quoted, by :func:`parsing`.
* :class:`WrongKindError`: a readable image of the wrong kind (a 2D image, a 4D or multi-channel file, a volume given
  to a cine bundle, a cine given to a volume bundle, DICOM of another modality, a non-scalar data type).
* :class:`StudyTooSmallError`: an axis below the bundle's stated minimum.
* :class:`StudyTooLargeError`: the decoded study would exceed ``max_study_mb`` (memory stays bounded by the study).
* :class:`NonFiniteError`: the decoded values hold NaN or Inf.

All are :class:`IntakeError` (a ``ValueError``); :data:`INTAKE_ERRORS` adds
:class:`~monai_saliency.data.dicom.xa.XACineError`, which the XA reader raises for invalid cines.

NIfTI cines are told apart from 3D volumes by an explicit marker: the header's ``intent_name`` is ``"cine"``
(:data:`CINE_INTENT_NAME`; :func:`mark_nifti_cine` sets it). A time unit in ``xyzt_units`` is no marker (dcm2niix
sets seconds on every volume) and neither is the spacing of the first axis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.dicom.xa import XACineError

__all__ = [
    "CINE_INTENT_NAME",
    "DEFAULT_MAX_STUDY_MB",
    "INTAKE_ERRORS",
    "IntakeError",
    "NonFiniteError",
    "StudyHeader",
    "StudyTooLargeError",
    "StudyTooSmallError",
    "UnreadableStudyError",
    "WrongKindError",
    "check_cine_header",
    "check_finite",
    "check_min_size",
    "check_study_size",
    "is_nifti_name",
    "mark_nifti_cine",
    "parsing",
    "read_dicom_header",
    "read_nifti_header",
]

DEFAULT_MAX_STUDY_MB = 1024.0
CINE_INTENT_NAME = "cine"
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MB = 1024 * 1024


class IntakeError(ValueError):
    """A study file refused at intake; the message names the file and the reason."""


class UnreadableStudyError(IntakeError):
    """The file cannot be parsed: corrupt, truncated or with an inconsistent header."""


class WrongKindError(IntakeError):
    """A readable image of a kind the bundle does not take (dimensionality, channels, modality, data type)."""


class StudyTooSmallError(IntakeError):
    """An axis of the study is smaller than the bundle's stated minimum."""


class StudyTooLargeError(IntakeError):
    """The decoded study would exceed the memory bound (``max_study_mb``)."""


class NonFiniteError(IntakeError):
    """The decoded values hold NaN or Inf."""


INTAKE_ERRORS: tuple[type[Exception], ...] = (IntakeError, XACineError)


@contextmanager
def parsing(path: str | os.PathLike, what: str = "read") -> Iterator[None]:
    """Turn whatever a parser raises while reading ``path`` into :class:`UnreadableStudyError` naming the file.

    Named intake errors (:data:`INTAKE_ERRORS`) and ``FileNotFoundError`` pass through; ``MemoryError`` becomes
    :class:`StudyTooLargeError`.

    Args:
        path: the file being read.
        what: the verb of the message ("read", "decoded").

    Raises:
        UnreadableStudyError, StudyTooLargeError: as above.
    """
    try:
        yield
    except (*INTAKE_ERRORS, FileNotFoundError):
        raise
    except MemoryError as e:
        raise StudyTooLargeError(f"{path}: ran out of memory while it was {what}; the study is too large.") from e
    except Exception as e:  # a parser's own error on a damaged file: name the file and quote it
        raise UnreadableStudyError(
            f"{path} cannot be {what}: the file is corrupt, truncated or inconsistent ({type(e).__name__}: {e})"
        ) from e


@dataclass(frozen=True)
class StudyHeader:
    """What a study's header says, read without decoding its pixels.

    Attributes:
        path: the file.
        shape: the stored array shape (NIfTI: ``dim[1:dim[0]+1]``; DICOM: ``(frames, rows, columns, samples)``).
        itemsize: bytes per stored value.
        decoded_bytes: size of the decoded study as float32 (``prod(shape) * max(itemsize, 4)``).
        is_cine: NIfTI ``intent_name`` is :data:`CINE_INTENT_NAME` (always False for DICOM).
        modality: DICOM ``Modality`` ("" for NIfTI).
        signed_pixels: DICOM ``PixelRepresentation`` is 1 (False for NIfTI, whose data type says it).
        photometric: DICOM ``PhotometricInterpretation`` ("" for NIfTI).
    """

    path: str
    shape: tuple[int, ...]
    itemsize: int
    decoded_bytes: int
    is_cine: bool = False
    modality: str = ""
    signed_pixels: bool = False
    photometric: str = ""


def _decoded_bytes(shape: Sequence[int], itemsize: int) -> int:
    return math.prod(shape) * max(itemsize, 4)


def is_nifti_name(path: str | os.PathLike) -> bool:
    """True if ``path`` ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti_header(path: str | os.PathLike) -> StudyHeader:
    """Read a NIfTI header (nibabel, data untouched) and check that the data it declares can be read.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        The :class:`StudyHeader`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        WrongKindError: if the name is not NIfTI or the data type is not a real scalar (complex, RGB, ...).
        UnreadableStudyError: if the header cannot be parsed, declares a non-positive dimension, or (``.nii``) the
            file ends before the data it declares.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such study file: {path}")
    if not is_nifti_name(path):
        raise WrongKindError(f"{path} is not a NIfTI file (.nii/.nii.gz).")
    with parsing(path):
        img = nib.load(str(path))  # lazy: the header only (for .nii.gz only its first bytes are decompressed)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise WrongKindError(f"{path} is a {type(img).__name__}, not a NIfTI-1/2 image.")
        header = img.header
        shape = tuple(int(s) for s in header.get_data_shape())
        dtype = np.dtype(header.get_data_dtype())
        offset = int(img.dataobj.offset)  # the file's vox_offset (the loaded header's copy is reset to 0)
        intent = header.get_intent()[2] if "intent_name" in header else ""
    with parsing(path, "read (its orientation: qform, sform and pixdim)"):
        affines = (img.affine, img.get_qform(), img.get_sform())  # MONAI's reader rectifies the header from these
    if not np.isfinite(affines[0]).all():
        raise UnreadableStudyError(f"{path} has a non-finite orientation (affine {affines[0].tolist()}).")
    if not shape or min(shape) < 1:
        raise UnreadableStudyError(f"{path} declares invalid dimensions {shape} (every dim must be >= 1).")
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise WrongKindError(
            f"{path} stores {dtype} values ({dtype.kind!r} kind); a study must hold real scalar intensities "
            "(integer or float, one value per voxel)."
        )
    if not str(path).lower().endswith(".gz"):
        needed, size = offset + math.prod(shape) * dtype.itemsize, os.path.getsize(path)
        if offset < 0 or size < needed:
            raise UnreadableStudyError(
                f"{path} is truncated or its header is wrong: it declares {math.prod(shape) * dtype.itemsize} bytes "
                f"of {dtype} data of shape {shape} from offset {offset} (file end {needed}), but the file has {size}."
            )
    return StudyHeader(
        str(path), shape, dtype.itemsize, _decoded_bytes(shape, dtype.itemsize), is_cine=intent == CINE_INTENT_NAME
    )


def _dicom_int(ds: pydicom.Dataset, keyword: str, default: int, path: str | os.PathLike) -> int:
    """An integer header field (absent or empty: ``default``); anything else is an unreadable header."""
    with parsing(path, f"read (header field {keyword})"):
        value = ds.get(keyword, default)
    value = default if value is None or value == "" else value
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
            if number.is_integer():
                return int(number)
        except (ValueError, OverflowError):
            pass
    raise UnreadableStudyError(f"{path} has an invalid {keyword} {value!r}; one integer is expected.")


def read_dicom_header(path: str | os.PathLike) -> StudyHeader:
    """Read a DICOM header (pydicom, ``stop_before_pixels``) and the size of the image it declares.

    Args:
        path: a DICOM file.

    Returns:
        The :class:`StudyHeader` (``shape`` is ``(NumberOfFrames, Rows, Columns, SamplesPerPixel)``).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        UnreadableStudyError: if the header cannot be parsed or its image description is not a positive size.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such study file: {path}")
    with parsing(path):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        modality = str(ds.get("Modality", "") or "")
        photometric = str(ds.get("PhotometricInterpretation", "") or "").strip()
    shape = tuple(_dicom_int(ds, k, 1, path) for k in ("NumberOfFrames", "Rows", "Columns", "SamplesPerPixel"))
    bits = _dicom_int(ds, "BitsAllocated", 0, path)
    signed = _dicom_int(ds, "PixelRepresentation", 0, path) != 0
    if min(shape) < 1 or bits < 1:
        raise UnreadableStudyError(
            f"{path} has an invalid image description: NumberOfFrames, Rows, Columns, SamplesPerPixel = {shape}, "
            f"BitsAllocated = {bits}."
        )
    itemsize = (bits + 7) // 8
    return StudyHeader(
        str(path),
        shape,
        itemsize,
        _decoded_bytes(shape, itemsize),
        modality=modality,
        signed_pixels=signed,
        photometric=photometric,
    )


def check_study_size(header: StudyHeader, max_study_mb: float | None) -> None:
    """Refuse a study whose decoded size (or, for a file read whole, whose file) exceeds ``max_study_mb``.

    Args:
        header: from :func:`read_nifti_header` or :func:`read_dicom_header`.
        max_study_mb: the bound in MiB; ``None`` for no bound.

    Raises:
        StudyTooLargeError: naming the file, its shape, its decoded size and the option that raises the bound.
    """
    if max_study_mb is None:
        return
    limit = float(max_study_mb) * _MB
    file_size = os.path.getsize(header.path)
    read_whole = not is_nifti_name(header.path)  # pydicom reads a DICOM file whole
    if header.decoded_bytes > limit or (read_whole and file_size > limit):
        raise StudyTooLargeError(
            f"{header.path} is too large: shape {header.shape} decodes to {header.decoded_bytes / _MB:.1f} MiB as "
            f"float32 (file {file_size / _MB:.1f} MiB), above max_study_mb={max_study_mb:g}; raise --max_study_mb "
            "if the machine has the memory."
        )


def check_min_size(
    spatial_shape: Sequence[int], minimum: Sequence[int], path: str | os.PathLike, axes: str = "spatial axes"
) -> None:
    """Refuse a study with an axis smaller than ``minimum``.

    Args:
        spatial_shape: the study's axes (no channel).
        minimum: the smallest size of each axis.
        path: the file, for the message.
        axes: what the axes are called in the message.

    Raises:
        StudyTooSmallError: naming the file, its shape and the minimum.
    """
    if len(spatial_shape) != len(minimum):
        raise ValueError(f"minimum {tuple(minimum)} does not match the {len(spatial_shape)} axes of {path}.")
    if any(s < m for s, m in zip(spatial_shape, minimum)):
        raise StudyTooSmallError(
            f"{path} is too small for the network: {axes} {tuple(spatial_shape)}, at least {tuple(minimum)} needed."
        )


def check_finite(img: torch.Tensor, path: str | os.PathLike) -> None:
    """Refuse a decoded study holding NaN or Inf.

    Raises:
        NonFiniteError: naming the file and how many values are NaN and Inf.
    """
    finite = torch.isfinite(img)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(img).sum())
        raise NonFiniteError(
            f"{path} holds non-finite values ({n_nan} NaN, {int((~finite).sum()) - n_nan} Inf of {img.numel()}); "
            "fix or mask them before running the bundle."
        )


def mark_nifti_cine(path: str | os.PathLike) -> Path:
    """Mark a NIfTI file as a cine (``intent_name`` = :data:`CINE_INTENT_NAME`), atomically, data unchanged.

    A NIfTI cine is a 3D array ``(T, H, W)`` whose first axis is the frame axis; the cine bundle refuses unmarked
    3D NIfTI files as volumes (``--require_cine_marker false`` reads them as cines as before).

    Args:
        path: the ``.nii``/``.nii.gz`` file.

    Returns:
        The path.
    """
    img = nib.load(str(path))
    marked = type(img)(np.asanyarray(img.dataobj), img.affine, img.header)
    marked.header.set_intent(marked.header.get_intent()[0], marked.header.get_intent()[1], name=CINE_INTENT_NAME)
    with atomic_output(path, overwrite=True) as tmp:
        nib.save(marked, str(tmp))
    return Path(path)


def check_cine_header(
    header: StudyHeader, min_frame_size: Sequence[int] = (16, 16), require_cine_marker: bool = True
) -> None:
    """Refuse a header that does not describe a cine ``(T, H, W)``: XA DICOM, or a NIfTI cine (frames first).

    Args:
        header: from :func:`read_dicom_header` (``modality`` set) or :func:`read_nifti_header`.
        min_frame_size: smallest ``(H, W)`` of a frame.
        require_cine_marker: refuse a 3D NIfTI without ``intent_name`` :data:`CINE_INTENT_NAME` as a volume; False
            reads any 3D NIfTI as ``(T, H, W)``.

    Raises:
        WrongKindError: DICOM of another modality than XA; a NIfTI that is not one 3D array with >= 2 frames, or
            (``require_cine_marker``) is not marked as a cine.
        StudyTooSmallError: frames smaller than ``min_frame_size``.
    """
    path, shape = header.path, header.shape
    if header.modality and header.modality != "XA":
        raise WrongKindError(
            f"{path} is not an X-ray angiogram: Modality={header.modality!r}; the cine bundle reads multi-frame "
            "XA cines (CT, MR, PT and other series are volumes or single images)."
        )
    # signed pixels and MONOCHROME1 are read correctly (monai_saliency.data.dicom.pixels); colour and palette
    # colour are refused by name by the XA reader (check_pixel_format)
    if not header.modality:  # NIfTI: (T, H, W), frames first; a trailing single channel axis is allowed
        if len(shape) < 3 or any(s != 1 for s in shape[3:]):
            raise WrongKindError(
                f"{path}: a NIfTI cine must be one 3D array (T, H, W) with the frame axis first, got shape {shape}."
            )
        if shape[0] < 2:
            raise WrongKindError(
                f"{path}: a cine needs at least 2 frames on the first axis, got shape {shape}; store NIfTI cines "
                "as (T, H, W) with the frame axis first."
            )
        if require_cine_marker and not header.is_cine:
            raise WrongKindError(
                f"{path} looks like a 3D volume, not a cine: its NIfTI header has no cine marker (intent_name "
                f"{CINE_INTENT_NAME!r}). Mark cines stored as (T, H, W) with "
                "monai_saliency.data.checks.mark_nifti_cine(path), or pass --require_cine_marker false."
            )
    check_min_size(shape[1:3], min_frame_size, path, "frame size (H, W)")
