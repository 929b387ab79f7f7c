"""Lossless compression of the DICOM objects the package writes (derived XA maps, Secondary Capture overlays):
uncompressed by default, JPEG-LS (the angiogram bundle's choice), JPEG 2000, RLE and deflate on request; the pixels read back unchanged (pydicom, MONAI), dciodvfy
reports no error, and a smooth clinical-size map shrinks several-fold."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from monai_saliency.data.dicom.encoding import check_compression
from monai_saliency.data.dicom.secondary_capture import write_secondary_capture
from monai_saliency.data.dicom.xa import read_xa_cine
from monai_saliency.data.dicom.xa_writer import write_xa_cine, write_xa_derived
from monai_saliency.visualize.secondary_capture import SaveOverlaySCd
from tests._sc_checks import dciodvfy_errors as sc_errors
from tests._system_tools import require_tool
from tests.data.dicom.test_dciodvfy import assert_valid

SYNTAX = {"jpegls": JPEGLSLossless, "jpeg2000": JPEG2000Lossless, "rle": RLELossless, "none": ExplicitVRLittleEndian}
T, H, W = 4, 48, 40


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    rng = np.random.default_rng(0)
    return write_xa_cine(rng.uniform(0.1, 0.9, (T, H, W)), tmp_path_factory.mktemp("src") / "cine.dcm")


def _smooth_map() -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    return torch.stack([torch.exp(-((x - 0.2 * k) ** 2 + y**2) * 3) for k in range(T)])[None] * 2.5 - 0.3


@pytest.mark.parametrize("compression", ["jpegls", "jpeg2000", "rle", "none"])
def test_derived_xa_compressions_read_back_and_validate(source, tmp_path, compression):
    sal = _smooth_map()
    kwargs = {} if compression == "none" else {"compression": compression}  # uncompressed is the default
    out = write_xa_derived(sal, source, tmp_path / "d.dcm", **kwargs)
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == SYNTAX[compression]
    plain = pydicom.dcmread(write_xa_derived(sal, source, tmp_path / "plain.dcm", compression="none"))
    np.testing.assert_array_equal(ds.pixel_array, plain.pixel_array)  # lossless: the same stored values
    step = (float(sal.max()) - float(sal.min())) / 65535
    assert (read_xa_cine(out).as_tensor() - sal).abs().max() <= 0.5 * step + 1e-6  # MONAI/pydicom re-read
    assert_valid(out, "XAImage")


def test_jpeg2000_shrinks_a_smooth_map(source, tmp_path):
    sal = _smooth_map()
    j2k = write_xa_derived(sal, source, tmp_path / "j.dcm", compression="jpeg2000").stat().st_size
    raw = write_xa_derived(sal, source, tmp_path / "r.dcm").stat().st_size
    assert j2k < 0.6 * raw, (j2k, raw)  # small frames: the header is a good part of the file


def test_frames_under_32_pixels_fall_back_to_rle(tmp_path):
    small = write_xa_cine(np.random.default_rng(1).uniform(0, 1, (3, 12, 10)), tmp_path / "s.dcm")
    out = write_xa_derived(torch.rand(1, 3, 12, 10), small, tmp_path / "d.dcm", compression="jpeg2000")
    assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == RLELossless


@pytest.mark.parametrize("compression", ["jpegls", "jpeg2000", "rle", "none"])
def test_secondary_capture_pixels_are_exact(tmp_path, compression):
    rgb = np.random.default_rng(2).integers(0, 256, (3, 40, 64, 3), dtype=np.uint8)
    out = write_secondary_capture(rgb, tmp_path / "sc.dcm", frame_time_ms=66.7, compression=compression)
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == SYNTAX[compression]
    # JPEG 2000 lossless of true colour uses the reversible colour transform, which the standard names YBR_RCT
    assert ds.PhotometricInterpretation == ("YBR_RCT" if compression == "jpeg2000" else "RGB")
    np.testing.assert_array_equal(ds.pixel_array, rgb)
    assert sc_errors(out) == []


def test_unknown_compression_is_refused(source, tmp_path):
    with pytest.raises(ValueError, match="compression must be one of"):
        check_compression("zip")
    with pytest.raises(ValueError, match="compression must be one of"):
        write_xa_derived(_smooth_map(), source, tmp_path / "x.dcm", compression="jpeg-ls")
    with pytest.raises(ValueError, match="compression must be one of"):
        SaveOverlaySCd(["cine", "map"], compression="lzw")
    assert not (tmp_path / "x.dcm").exists()


def test_deflate_is_lossless_and_valid_once_inflated(source, tmp_path):
    """``"deflate"`` (Deflated Explicit VR Little Endian): the same pixels and values, a magnified overlay several
    times smaller than uncompressed, and 0 dciodvfy errors after dcmtk inflates it (dciodvfy cannot parse a deflated
    dataset itself)."""
    sal = _smooth_map()
    out = write_xa_derived(sal, source, tmp_path / "d.dcm", compression="deflate")
    plain = write_xa_derived(sal, source, tmp_path / "p.dcm")
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(plain).pixel_array)
    assert torch.equal(read_xa_cine(out).as_tensor(), read_xa_cine(plain).as_tensor())
    rgb = np.random.default_rng(3).integers(0, 256, (3, 24, 32, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
    sc = write_secondary_capture(rgb, tmp_path / "sc.dcm", frame_time_ms=66.7, compression="deflate")
    raw = write_secondary_capture(rgb, tmp_path / "raw.dcm", frame_time_ms=66.7)
    np.testing.assert_array_equal(pydicom.dcmread(sc).pixel_array, rgb)
    assert sc.stat().st_size < 0.3 * raw.stat().st_size  # the pixel replication of a magnified overlay
    dcmconv = require_tool("dcmconv", "dcmtk")
    for path, iod in ((out, "XAImage"), (sc, None)):
        inflated = tmp_path / f"inflated_{path.name}"
        subprocess.run([dcmconv, "+te", str(path), str(inflated)], check=True, capture_output=True)
        assert pydicom.dcmread(inflated).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        if iod is None:
            assert sc_errors(inflated) == []
        else:
            assert_valid(inflated, iod)


def test_jpegls_is_read_by_dcmtk_and_smaller_than_jpeg2000(source, tmp_path):
    """JPEG-LS (the bundle's default): dcmtk's ``dcmdjpls`` decodes both objects to the same pixels (dcmtk's free
    toolkit has no JPEG 2000 decoder), and a magnified overlay is smaller than in JPEG 2000."""
    sal = _smooth_map()
    xa = write_xa_derived(sal, source, tmp_path / "xa.dcm", compression="jpegls")
    rgb = np.random.default_rng(4).integers(0, 256, (3, 24, 32, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
    sc = write_secondary_capture(rgb, tmp_path / "sc.dcm", frame_time_ms=66.7, compression="jpegls")
    j2k = write_secondary_capture(rgb, tmp_path / "j2k.dcm", frame_time_ms=66.7, compression="jpeg2000")
    assert sc.stat().st_size < j2k.stat().st_size
    dcmdjpls = require_tool("dcmdjpls", "dcmtk")
    for path in (xa, sc):
        plain = tmp_path / f"plain_{path.name}"
        subprocess.run([dcmdjpls, str(path), str(plain)], check=True, capture_output=True)
        back = pydicom.dcmread(plain)
        assert back.file_meta.TransferSyntaxUID != JPEGLSLossless
        np.testing.assert_array_equal(back.pixel_array, pydicom.dcmread(path).pixel_array)
    np.testing.assert_array_equal(pydicom.dcmread(tmp_path / "plain_sc.dcm").pixel_array, rgb)
