"""Twins of an XA cine for intake tests: the same display image stored another way (MONOCHROME1, signed with a
rescale, garbage above HighBit, compressed), and pydicom's own test files dressed as XA."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import XRayAngiographicImageStorage, generate_uid

__all__ = ["SAMPLE_CINE", "as_xa", "monochrome1_twin", "pydicom_test_file", "stored_values"]

SAMPLE_CINE = (
    Path(__file__).resolve().parents[3] / "bundles" / "angiogram_signature_activation" / "sample_data" / "case_000.dcm"
)


def stored_values(ds: Dataset) -> np.ndarray:
    """The stored values of uncompressed unsigned 16-bit pixel data, read from the bytes (not through pydicom)."""
    assert ds.BitsAllocated == 16 and not ds.file_meta.TransferSyntaxUID.is_compressed
    shape = (int(ds.get("NumberOfFrames", 1)), int(ds.Rows), int(ds.Columns))
    return np.frombuffer(ds.PixelData, dtype="<u2").reshape(shape).copy()


def _new_instance(ds: Dataset) -> None:
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()


def monochrome1_twin(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write the MONOCHROME1 twin of an unsigned MONOCHROME2 cine: stored values ``2**BitsStored - 1 - s``."""
    ds = pydicom.dcmread(src)
    top = (1 << int(ds.BitsStored)) - 1
    ds.PixelData = (top - stored_values(ds)).astype("<u2").tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    _new_instance(ds)
    ds.save_as(dst, enforce_file_format=True)
    return Path(dst)


def as_xa(ds: Dataset, frame_time_ms: float = 40.0) -> Dataset:
    """Dress a dataset of another modality as a classic XA (Modality, SOP class, frame count, frame time); the pixel
    data and pixel module are left as they are."""
    ds.Modality = "XA"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = XRayAngiographicImageStorage
    if "NumberOfFrames" not in ds:
        ds.NumberOfFrames = 1
    ds.FrameTime = frame_time_ms
    _new_instance(ds)
    return ds


def pydicom_test_file(name: str) -> str:
    """Path of one of pydicom's test files shipped with the package; skip when it is not installed locally."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not shipped with this pydicom")
    return str(path)
