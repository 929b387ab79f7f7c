"""XA intake, pixel side: photometric interpretation, signedness, bits stored, Modality LUT, compressed transfer
syntaxes, and refusals by name. Expected values are computed from the bytes the test writes (not through pydicom),
from dcmtk's decoder, or from pydicom's own uncompressed test files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from monai_saliency.data.dicom.xa import XACineError, read_xa_cine
from tests._system_tools import require_tool
from tests.data.dicom._xa_twins import SAMPLE_CINE, as_xa, monochrome1_twin, pydicom_test_file, stored_values

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def sample() -> pydicom.Dataset:
    return pydicom.dcmread(SAMPLE_CINE)


@pytest.fixture(scope="module")
def stored(sample) -> np.ndarray:
    s = stored_values(sample)
    assert sample.BitsStored == 12 and sample.PixelRepresentation == 0 and s.max() <= 4095
    return s


def _garbage(shape, bits_stored: int, seed: int = 0) -> np.ndarray:
    """Random values for the bits above HighBit of 16 allocated bits (never all zero)."""
    g = np.random.default_rng(seed).integers(1, 1 << (16 - bits_stored), size=shape, dtype=np.uint16)
    return (g << bits_stored).astype(np.uint16)


def test_monochrome1_twin_reads_to_the_same_display_values(tmp_path, stored):
    twin = monochrome1_twin(SAMPLE_CINE, tmp_path / "m1.dcm")
    assert pydicom.dcmread(twin).PhotometricInterpretation == "MONOCHROME1"
    a, b = read_xa_cine(SAMPLE_CINE, normalize=True), read_xa_cine(twin, normalize=True)
    np.testing.assert_array_equal(b[0].numpy(), a[0].numpy())
    np.testing.assert_allclose(b[0].numpy(), stored / 4095.0, atol=1e-7)
    np.testing.assert_array_equal(read_xa_cine(twin)[0].numpy(), stored)  # modality units, MONOCHROME2 orientation
    assert b.meta["photometric_interpretation"] == "MONOCHROME1" and b.meta["display_range"] == [0.0, 4095.0]


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_bits_stored_10_of_16_with_garbage_high_bits(tmp_path, sample, stored, photometric):
    v = stored >> 2  # 10-bit values
    written = v if photometric == "MONOCHROME2" else 1023 - v
    ds = pydicom.dcmread(SAMPLE_CINE)
    ds.BitsStored, ds.HighBit, ds.PhotometricInterpretation = 10, 9, photometric
    ds.PixelData = (written.astype(np.uint16) | _garbage(v.shape, 10)).astype("<u2").tobytes()
    ds.save_as(tmp_path / "b10.dcm")
    img = read_xa_cine(tmp_path / "b10.dcm", normalize=True)
    np.testing.assert_allclose(img[0].numpy(), v / 1023.0, atol=1e-7)
    assert img.meta["display_range"] == [0.0, 1023.0]


def test_signed_pixels_with_rescale_and_garbage_high_bits(tmp_path, stored):
    signed = stored.astype(np.int32) - 2048  # 12-bit two's complement, [-2048, 2047]
    raw = (signed.astype(np.int16).view(np.uint16) & 0x0FFF) | _garbage(signed.shape, 12, seed=1)
    ds = pydicom.dcmread(SAMPLE_CINE)
    ds.PixelRepresentation = 1
    ds.PixelData = raw.astype("<u2").tobytes()
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 2048, "US"
    ds.save_as(tmp_path / "signed.dcm")
    # the rescale undoes the shift: the same display values as the unsigned original, normalised the same way
    img = read_xa_cine(tmp_path / "signed.dcm", normalize=True)
    np.testing.assert_array_equal(img[0].numpy(), read_xa_cine(SAMPLE_CINE, normalize=True)[0].numpy())
    np.testing.assert_array_equal(read_xa_cine(tmp_path / "signed.dcm")[0].numpy(), stored)
    # a scaling rescale: values slope * s + intercept, range the 12-bit signed range through it
    ds.RescaleSlope, ds.RescaleIntercept = 0.5, -10
    ds.save_as(tmp_path / "scaled.dcm")
    img = read_xa_cine(tmp_path / "scaled.dcm")
    np.testing.assert_allclose(img[0].numpy(), 0.5 * signed - 10, atol=1e-5)
    assert img.meta["display_range"] == [0.5 * -2048 - 10, 0.5 * 2047 - 10]
    norm = read_xa_cine(tmp_path / "scaled.dcm", normalize=True)
    np.testing.assert_allclose(norm[0].numpy(), (signed + 2048) / 4095.0, atol=1e-6)


def test_modality_lut_sequence_is_applied(tmp_path, stored):
    lut = (np.arange(4096, dtype=np.int64) * 7 + 3).clip(0, 65535).astype(np.uint16)
    ds = pydicom.dcmread(SAMPLE_CINE)
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "US"
    item.add_new("LUTData", "OW", lut.astype("<u2").tobytes())
    ds.ModalityLUTSequence = [item]
    ds.save_as(tmp_path / "lut.dcm")
    np.testing.assert_array_equal(read_xa_cine(tmp_path / "lut.dcm")[0].numpy(), lut[stored])
    img = read_xa_cine(tmp_path / "lut.dcm", normalize=True)
    np.testing.assert_allclose(img[0].numpy(), lut[stored] / 65535.0, atol=1e-7)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda u: u.name[:10])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_lossless_compressed_cine_reads_back_the_same(tmp_path, stored, syntax, photometric):
    src = SAMPLE_CINE if photometric == "MONOCHROME2" else monochrome1_twin(SAMPLE_CINE, tmp_path / "m1.dcm")
    ds = pydicom.dcmread(src)
    ds.compress(syntax)  # pydicom's encoders (RLE: pydicom/pylibjpeg-rle, JPEG-LS: pyjpegls, J2K: pylibjpeg-openjpeg)
    ds.save_as(tmp_path / "c.dcm")
    assert pydicom.dcmread(tmp_path / "c.dcm").file_meta.TransferSyntaxUID == syntax
    img = read_xa_cine(tmp_path / "c.dcm")
    assert img.shape == (1, *stored.shape)
    np.testing.assert_array_equal(img[0].numpy(), stored)


def test_deflated_and_big_endian_cines_read_the_same(tmp_path, stored):
    ds = pydicom.dcmread(SAMPLE_CINE)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm")
    np.testing.assert_array_equal(read_xa_cine(tmp_path / "deflated.dcm")[0].numpy(), stored)
    dcmconv = require_tool("dcmconv", "dcmtk")
    subprocess.run([dcmconv, "+tb", str(SAMPLE_CINE), str(tmp_path / "be.dcm")], check=True, capture_output=True)
    assert pydicom.dcmread(tmp_path / "be.dcm").file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    np.testing.assert_array_equal(read_xa_cine(tmp_path / "be.dcm")[0].numpy(), stored)


@pytest.mark.parametrize(
    ("option", "bits", "lossless"),
    [("+e1", 12, True), ("+el", 12, True), ("+ee", 12, False), ("+eb", 8, False)],
    ids=["jpeg-lossless-sv1", "jpeg-lossless-p14", "jpeg-extended", "jpeg-baseline"],
)
def test_jpeg_encoded_by_dcmtk_reads_as_dcmtk_decodes_it(tmp_path, stored, option, bits, lossless):
    """JPEG lossless (process 14, SV1), extended (12-bit) and baseline (8-bit) written by dcmtk's dcmcjpeg; the read
    equals the stored values (lossless) or dcmtk's own decoding (dcmdjpeg) within one step of IDCT rounding."""
    cjpeg, djpeg = require_tool("dcmcjpeg", "dcmtk"), require_tool("dcmdjpeg", "dcmtk")
    src = tmp_path / "src.dcm"
    ds = pydicom.dcmread(SAMPLE_CINE)
    if bits == 8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = (stored >> 4).astype(np.uint8).tobytes()
    ds.save_as(src)
    for cmd in ([cjpeg, option, src, tmp_path / "j.dcm"], [djpeg, tmp_path / "j.dcm", tmp_path / "d.dcm"]):
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True)
    assert pydicom.dcmread(tmp_path / "j.dcm").file_meta.TransferSyntaxUID.is_compressed
    img = read_xa_cine(tmp_path / "j.dcm", normalize=True)[0].numpy() * ((1 << bits) - 1)
    decoded = pydicom.dcmread(tmp_path / "d.dcm")  # dcmtk's decoding, uncompressed
    reference = np.frombuffer(decoded.PixelData, np.uint8 if bits == 8 else "<u2").reshape(stored.shape)
    if lossless:
        np.testing.assert_allclose(img, stored, atol=1e-3)
    assert np.abs(img - reference).max() <= 1 + 1e-3


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"], ids=lambda n: n[9:-4]
)
def test_pydicom_compressed_test_files_read_as_their_uncompressed_original(tmp_path, name):
    """pydicom's own encodings of MR_small (signed 16-bit) dressed as XA read to MR_small's stored values."""
    original = pydicom.dcmread(pydicom_test_file("MR_small.dcm"))
    expected = np.frombuffer(original.PixelData, "<i2").reshape(original.Rows, original.Columns)
    ds = as_xa(pydicom.dcmread(pydicom_test_file(name)))
    ds.save_as(tmp_path / "x.dcm")
    img = read_xa_cine(tmp_path / "x.dcm", min_frames=1)
    np.testing.assert_array_equal(img[0, 0].numpy(), expected)
    assert img.meta["display_range"] == [-32768.0, 32767.0]


def test_encapsulated_frame_count_is_checked_against_fragments_and_offsets(tmp_path, stored):
    ds = pydicom.dcmread(SAMPLE_CINE)
    ds.compress(RLELossless)
    frames = list(generate_frames(ds.PixelData, number_of_frames=16))
    for n in (15, 17):  # with a basic offset table
        ds.NumberOfFrames = n
        ds.save_as(tmp_path / f"bot{n}.dcm")
        with pytest.raises(XACineError, match=rf"NumberOfFrames={n} but .*offset table lists 16"):
            read_xa_cine(tmp_path / f"bot{n}.dcm")
    ds.PixelData = encapsulate(frames, has_bot=False)
    ds.NumberOfFrames = 17  # without one: fewer fragments than frames
    ds.save_as(tmp_path / "nobot17.dcm")
    with pytest.raises(XACineError, match="16 fragments for NumberOfFrames=17"):
        read_xa_cine(tmp_path / "nobot17.dcm")
    ds.PixelData = encapsulate(frames[:-1], has_bot=False)  # the last frame lost in transfer
    ds.NumberOfFrames = 16
    ds.save_as(tmp_path / "lost.dcm")
    with pytest.raises(XACineError, match="truncated"):
        read_xa_cine(tmp_path / "lost.dcm")
    ds.PixelData = encapsulate(frames, has_bot=False)
    ds.save_as(tmp_path / "ok.dcm")
    np.testing.assert_array_equal(read_xa_cine(tmp_path / "ok.dcm")[0].numpy(), stored)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("examples_ybr_color.dcm", r"colour \(PhotometricInterpretation=YBR_FULL_422, SamplesPerPixel=3\)"),
        ("examples_rgb_color.dcm", r"colour \(PhotometricInterpretation=RGB"),
        ("examples_palette.dcm", r"palette colour \(PhotometricInterpretation=PALETTE COLOR\)"),
    ],
)
def test_colour_and_palette_xa_are_refused_by_name(tmp_path, name, message):
    ds = as_xa(pydicom.dcmread(pydicom_test_file(name)))
    ds.save_as(tmp_path / "x.dcm")
    with pytest.raises(XACineError, match=message):
        read_xa_cine(tmp_path / "x.dcm", min_frames=1)


def test_a_syntax_pydicom_cannot_decode_is_refused_by_name(tmp_path):
    ds = pydicom.dcmread(SAMPLE_CINE)
    ds.compress(RLELossless)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML  # video: no pydicom decoder exists
    ds.save_as(tmp_path / "mpeg.dcm")
    with pytest.raises(XACineError, match=r"MPEG2 Main Profile / Main Level \(1.2.840.10008.1.2.4.100\).*no pixel"):
        read_xa_cine(tmp_path / "mpeg.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.99.1"  # a private encoding
    ds.save_as(tmp_path / "private.dcm", enforce_file_format=False)
    with pytest.raises(XACineError, match=r"TransferSyntaxUID 1.2.826.0.1.3680043.99.1, which is not a transfer"):
        read_xa_cine(tmp_path / "private.dcm")


_WITHOUT_DECODERS = """
import sys
for name in ("pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls", "gdcm", "PIL"):
    sys.modules[name] = None  # as if the decoder packages were not installed
from monai_saliency.data.dicom.xa import XACineError, read_xa_cine
for path in sys.argv[1:]:
    try:
        read_xa_cine(path)
        print("READ", path)
    except XACineError as e:
        print("REFUSED", e)
"""


def test_a_syntax_without_an_installed_decoder_names_syntax_and_package(tmp_path):
    paths = []
    for syntax in (JPEGLSLossless, JPEG2000Lossless):
        ds = pydicom.dcmread(SAMPLE_CINE)
        ds.compress(syntax)
        paths.append(str(tmp_path / f"{syntax.name[:6]}.dcm"))
        ds.save_as(paths[-1])
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_DECODERS, *paths],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"},
        timeout=120,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == 2, result.stdout + result.stderr[-2000:]
    jls, j2k = lines
    assert jls.startswith("REFUSED") and "JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)" in jls, jls
    assert "no decoder for it is installed" in jls and "pylibjpeg-libjpeg" in jls and "pyjpegls" in jls, jls
    assert j2k.startswith("REFUSED") and "JPEG 2000 Image Compression (Lossless Only)" in j2k, j2k
    assert "pylibjpeg-openjpeg" in j2k, j2k
