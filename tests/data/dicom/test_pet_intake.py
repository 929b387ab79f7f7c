"""PT series intake, pixel side (read_pet_series): rescale or Modality LUT per slice, signedness and bits stored,
compressed transfer syntaxes, and refusals by name. Expected values come from the bytes the test writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import JPEG2000Lossless, RLELossless

from monai_saliency.data.dicom.pet_series import read_pet_series, write_pet_series

SHAPE = (40, 34, 3)  # (X, Y, Z): 3 slices of 34 rows x 40 columns (JPEG 2000 needs >= 32)


@pytest.fixture
def series(tmp_path) -> list[Path]:
    vol = torch.arange(np.prod(SHAPE), dtype=torch.float32).reshape(SHAPE) * 3.0 - 20.0
    return write_pet_series(vol, tmp_path / "pt")


def _edit(paths: list[Path], edit) -> dict[int, np.ndarray]:
    """Apply ``edit(ds, k) -> expected (rows, cols) values`` to every slice; return the expected values by slice."""
    expected = {}
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        expected[k] = edit(ds, k)
        ds.save_as(path)
    return expected


def _volume(expected: dict[int, np.ndarray]) -> np.ndarray:
    """(X, Y, Z) from per-slice (rows = Y, cols = X) arrays."""
    return np.stack([expected[k].T for k in sorted(expected)], -1)


def test_slices_without_rescale_read_their_stored_values(series):
    def edit(ds, k):
        for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
            if kw in ds:
                delattr(ds, kw)
        return np.frombuffer(ds.PixelData, "<i2").reshape(ds.Rows, ds.Columns).astype(np.float64)

    expected = _edit(series, edit)
    vol, _ = read_pet_series(series[0].parent)
    np.testing.assert_array_equal(vol[0].numpy(), _volume(expected))


def test_signed_12_bit_slices_with_garbage_high_bits_and_own_rescale(series):
    rng = np.random.default_rng(0)

    def edit(ds, k):
        t = rng.integers(-2048, 2048, size=(ds.Rows, ds.Columns)).astype(np.int16)
        garbage = (rng.integers(1, 16, size=t.shape).astype(np.uint16) << 12).astype(np.uint16)
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelData = ((t.view(np.uint16) & 0x0FFF) | garbage).astype("<u2").tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = 0.25 * (k + 1), -5 + k
        return 0.25 * (k + 1) * t.astype(np.float64) - 5 + k

    expected = _edit(series, edit)
    vol, _ = read_pet_series(series[0].parent)
    np.testing.assert_allclose(vol[0].numpy(), _volume(expected), atol=1e-4)


def test_a_modality_lut_sequence_is_applied(series):
    lut = (np.arange(65536, dtype=np.int64) * 3 % 65536).astype(np.uint16)

    def edit(ds, k):
        stored = np.frombuffer(ds.PixelData, "<i2").reshape(ds.Rows, ds.Columns)
        for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
            if kw in ds:
                delattr(ds, kw)
        item = pydicom.Dataset()
        item.LUTDescriptor = [0, -32768, 16]  # 0 means 65536 entries, first mapped value -32768
        item.ModalityLUTType = "US"
        item.add_new("LUTData", "OW", lut.astype("<u2").tobytes())
        ds.ModalityLUTSequence = [item]
        return lut[stored.astype(np.int64) + 32768].astype(np.float64)

    expected = _edit(series, edit)
    vol, _ = read_pet_series(series[0].parent)
    np.testing.assert_array_equal(vol[0].numpy(), _volume(expected))


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
def test_compressed_slices_read_as_the_uncompressed_series(series, syntax):
    before, _ = read_pet_series(series[0].parent)

    def edit(ds, k):
        ds.compress(syntax)

    _edit(series, edit)
    assert pydicom.dcmread(series[0]).file_meta.TransferSyntaxUID == syntax
    after, _ = read_pet_series(series[0].parent)
    torch.testing.assert_close(after, before, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("photometric", "message"),
    [
        ("MONOCHROME1", "PhotometricInterpretation=MONOCHROME1; only MONOCHROME2"),
        ("PALETTE COLOR", r"palette colour \(PhotometricInterpretation=PALETTE COLOR\)"),
        ("RGB", r"colour \(PhotometricInterpretation=RGB, SamplesPerPixel=3\)"),
    ],
)
def test_non_monochrome2_slices_are_refused_by_name(series, photometric, message):
    def edit(ds, k):
        ds.PhotometricInterpretation = photometric
        if photometric == "RGB":
            ds.SamplesPerPixel, ds.PlanarConfiguration, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 0, 8, 8, 7
            ds.PixelRepresentation = 0
            ds.PixelData = bytes(ds.Rows * ds.Columns * 3)

    _edit(series, edit)
    with pytest.raises(ValueError, match=message):
        read_pet_series(series[0].parent)
