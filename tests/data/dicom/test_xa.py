from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.data.image_reader import PydicomReader
from monai.transforms import LoadImage, SaveImage

from monai_saliency.data.dicom.xa import XACineError, read_xa_cine, read_xa_dataset
from monai_saliency.data.dicom.xa_writer import XADerivedWriter, write_xa_cine, write_xa_derived
from monai_saliency.data.nifti import save_nifti


@pytest.fixture
def cine() -> torch.Tensor:
    # every frame different and asymmetric in (row, col) so any reordering or transposition shows
    g = torch.Generator().manual_seed(0)
    t, h, w = 5, 12, 10
    base = torch.rand(t, h, w, generator=g)
    ramp = torch.arange(t).view(t, 1, 1) / t
    return (0.5 * base + 0.5 * ramp).clamp(0, 1)


@pytest.fixture
def xa_file(tmp_path, cine) -> str:
    path = write_xa_cine(
        cine, tmp_path / "cine.dcm", frame_time_ms=50.0, primary_angle=-25.5, secondary_angle=12.0, uid_seed="case-1"
    )
    return str(path)


def _listing(folder) -> set[str]:
    return set(os.listdir(folder))


def test_round_trip_pixels_frame_order_and_meta(xa_file, cine):
    img = read_xa_cine(xa_file, normalize=True)
    assert isinstance(img, MetaTensor) and img.shape == (1, 5, 12, 10)
    assert torch.allclose(img[0].as_tensor(), cine, atol=0.5 / 4095 + 1e-6)  # 12-bit quantisation
    raw = read_xa_cine(xa_file)
    assert torch.equal(raw[0].as_tensor(), torch.round(cine.double() * 4095).float())
    assert img.meta["frame_time_ms"] == pytest.approx(50.0)
    assert img.meta["cine_rate"] == 20 and img.meta["number_of_frames"] == 5
    assert img.meta["positioner_primary_angle"] == pytest.approx(-25.5)
    assert img.meta["positioner_secondary_angle"] == pytest.approx(12.0)


def test_file_is_a_real_multiframe_xa_with_proper_uids(xa_file, tmp_path, cine):
    ds = pydicom.dcmread(xa_file)
    assert ds.Modality == "XA" and ds.SOPClassUID == pydicom.uid.XRayAngiographicImageStorage
    assert int(ds.NumberOfFrames) == 5 and ds.FrameIncrementPointer == 0x00181063
    assert float(ds.FrameTime) == 50.0
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    uids = [ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID]
    assert len(set(uids)) == 3
    for uid in uids:
        assert pydicom.uid.UID(uid).is_valid and len(uid) <= 64
    # pydicom's own decoder agrees with the pixels (frames first, rows, columns)
    assert ds.pixel_array.shape == (5, 12, 10)
    # deterministic UIDs from uid_seed; fresh UIDs otherwise
    again = pydicom.dcmread(write_xa_cine(cine, tmp_path / "again.dcm", uid_seed="case-1"))
    fresh = pydicom.dcmread(write_xa_cine(cine, tmp_path / "fresh.dcm"))
    assert again.SOPInstanceUID == ds.SOPInstanceUID and fresh.SOPInstanceUID != ds.SOPInstanceUID


def test_monai_loadimage_reads_the_multiframe_file(xa_file, cine):
    img = LoadImage(reader=PydicomReader(swap_ij=False), image_only=True, ensure_channel_first=True)(xa_file)
    assert img.shape == (1, 5, 12, 10)
    assert torch.equal(img[0].as_tensor(), torch.round(cine.double() * 4095).float())
    out = read_xa_cine(xa_file, normalize=True)
    assert torch.allclose(out, img / 4095) and out.meta["frame_time_ms"] == 50.0


def test_uint8_cine_is_stored_exactly(tmp_path):
    frames = np.arange(3 * 6 * 7, dtype=np.uint8).reshape(3, 6, 7)
    path = write_xa_cine(frames, tmp_path / "u8.dcm", bits_stored=8)
    assert pydicom.dcmread(path).BitsAllocated == 8
    np.testing.assert_array_equal(read_xa_cine(path)[0].numpy(), frames)


def test_derived_saliency_round_trip_dicom_and_nifti(xa_file, tmp_path):
    sal = torch.rand(1, 5, 12, 10, generator=torch.Generator().manual_seed(1)) * 3.0 - 0.5
    src = pydicom.dcmread(xa_file)
    out = write_xa_derived(sal, xa_file, tmp_path / "sal.dcm", description="Signature Activation, spatial")
    ds = pydicom.dcmread(out)
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.SOPInstanceUID != src.SOPInstanceUID
    ref = ds.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID and ref.ReferencedSOPClassUID == src.SOPClassUID
    assert ds.DerivationDescription == "Signature Activation, spatial"
    assert float(ds.FrameTime) == float(src.FrameTime)
    back = read_xa_cine(out)
    step = (float(sal.max()) - float(sal.min())) / 65535
    assert back.shape == sal.shape and (back.as_tensor() - sal).abs().max() <= 0.5 * step + 1e-6
    # the same map as NIfTI re-reads to the same array
    nii = save_nifti(sal, tmp_path / "sal.nii.gz")
    again = LoadImage(image_only=True, ensure_channel_first=True)(str(nii))
    assert torch.allclose(again.as_tensor(), sal)
    assert torch.allclose(again.as_tensor(), back.as_tensor(), atol=step)


def test_monai_writer_interface(xa_file, tmp_path):
    img = read_xa_cine(xa_file, normalize=True)
    writer = XADerivedWriter(description="test map")
    writer.set_data_array(img * 2)
    writer.set_metadata(img.meta)
    writer.write(tmp_path / "w.dcm")
    assert torch.allclose(read_xa_cine(tmp_path / "w.dcm"), img * 2, atol=2.0 / 65535 + 1e-6)


def test_saveimage_with_the_xa_writer(xa_file, tmp_path):
    img = read_xa_cine(xa_file, normalize=True)
    SaveImage(
        output_dir=tmp_path / "out",
        output_ext=".dcm",
        output_postfix="sal",
        separate_folder=False,
        writer=XADerivedWriter,
    )(img * 0.5)
    (written,) = (tmp_path / "out").iterdir()
    back = read_xa_cine(written)
    assert torch.allclose(back, img * 0.5, atol=0.5 / 65535 + 1e-6)
    assert pydicom.dcmread(written).SourceImageSequence[0].ReferencedSOPInstanceUID == img.meta["sop_instance_uid"]


def test_bad_inputs_give_clear_errors_and_no_partial_files(xa_file, tmp_path, cine):
    raw = Path(xa_file).read_bytes()
    trunc = tmp_path / "trunc.dcm"
    trunc.write_bytes(raw[: len(raw) - 300])
    with pytest.raises(XACineError, match="truncated"):
        read_xa_cine(trunc)
    for cut in (300, 600):  # cut inside the header: required attributes are lost
        short = tmp_path / f"cut{cut}.dcm"
        short.write_bytes(raw[:cut])
        with pytest.raises(XACineError, match="truncated"):
            read_xa_cine(short)
        short.unlink()
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(XACineError, match="not a DICOM|truncated|corrupt"):
        read_xa_cine(junk)
    # wrong modality
    ds = pydicom.dcmread(xa_file)
    ds.Modality = "CT"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    ds.save_as(tmp_path / "ct.dcm")
    with pytest.raises(XACineError, match="not an X-ray angiogram"):
        read_xa_cine(tmp_path / "ct.dcm")
    # single frame where a cine is expected
    one = pydicom.dcmread(xa_file)
    one.NumberOfFrames = 1
    one.PixelData = one.PixelData[: 12 * 10 * 2]
    one.save_as(tmp_path / "one.dcm")
    with pytest.raises(XACineError, match="single-frame"):
        read_xa_cine(tmp_path / "one.dcm")
    # declared frame count larger than the pixel data / frame-time vector of the wrong length
    bad = pydicom.dcmread(xa_file)
    bad.NumberOfFrames = 7
    bad.save_as(tmp_path / "bad_n.dcm")
    with pytest.raises(XACineError, match="truncated or NumberOfFrames"):
        read_xa_cine(tmp_path / "bad_n.dcm")
    bad = pydicom.dcmread(xa_file)
    bad.NumberOfFrames = 3
    bad.save_as(tmp_path / "bad_m.dcm")
    with pytest.raises(XACineError, match="inconsistent frame count"):
        read_xa_cine(tmp_path / "bad_m.dcm")
    vec = pydicom.dcmread(xa_file)
    vec.FrameTimeVector = [0, 50, 50]
    vec.save_as(tmp_path / "vec.dcm")
    with pytest.raises(XACineError, match="FrameTimeVector"):
        read_xa_dataset(tmp_path / "vec.dcm")
    # writers: nothing left behind on failure, inputs never overwritten
    before = _listing(tmp_path)
    with pytest.raises(XACineError, match="inconsistent frame count"):
        write_xa_derived(torch.rand(1, 4, 12, 10), xa_file, tmp_path / "sal.dcm")
    with pytest.raises(XACineError, match="frame size"):
        write_xa_derived(torch.rand(1, 5, 10, 12), xa_file, tmp_path / "sal.dcm")
    with pytest.raises(FileExistsError, match="input"):
        write_xa_derived(torch.rand(1, 5, 12, 10), xa_file, xa_file)
    with pytest.raises(ValueError, match="at least 2 frames"):
        write_xa_cine(cine[:1], tmp_path / "short.dcm")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_xa_cine(cine * 2, tmp_path / "range.dcm")
    with pytest.raises(ValueError, match="NaN"):
        write_xa_cine(cine * float("nan"), tmp_path / "nan.dcm")
    assert _listing(tmp_path) == before
    assert Path(xa_file).read_bytes() == raw
