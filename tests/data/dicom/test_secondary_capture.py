"""Secondary Capture overlays (data.dicom.secondary_capture + visualize.secondary_capture): validated by dciodvfy,
read back by pydicom and dcm2niix, frame timing and identity of the source kept, pixels checked against the source."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.tag import Tag

from monai_saliency.data.dicom.pet_series import write_pet_series
from monai_saliency.data.dicom.secondary_capture import write_secondary_capture
from monai_saliency.data.dicom.xa import read_xa_cine
from monai_saliency.data.dicom.xa_writer import write_xa_cine
from monai_saliency.visualize.secondary_capture import (
    OverlayStyle,
    SaveOverlaySCd,
    render_orthogonal_overlay,
    save_cine_overlay_sc,
    save_orthogonal_overlay_sc,
)
from tests._sc_checks import dciodvfy_errors, dcm2niix_rgb, zero_map_blend

T, H, W = 5, 24, 32
MF_SC = "1.2.840.10008.5.1.4.1.1.7.4"  # Multi-frame True Color Secondary Capture Image Storage
IDENTITY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyID")


def _cine() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.uniform(0.2, 0.9, (T, H, W))


def _map() -> np.ndarray:
    """Zero on the left half of every frame, a ramp up to 1 on the right half."""
    m = np.zeros((T, H, W))
    m[..., W // 2 :] = np.linspace(0.1, 1.0, W - W // 2)
    return m


@pytest.fixture(scope="module")
def xa(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("xa")
    return write_xa_cine(_cine(), folder / "cine.dcm", frame_time_ms=40.0, patient_id="P42", patient_name="Doe^Jane")


@pytest.fixture(scope="module")
def written(xa, tmp_path_factory) -> Path:
    cine = read_xa_cine(xa, normalize=True)  # MetaTensor (1, T, H, W), as the bundle reads it
    out = tmp_path_factory.mktemp("sc") / "cine_overlay.dcm"
    return save_cine_overlay_sc(cine, _map(), out, source=xa, style=OverlayStyle("Signature Activation", "TinyNet"))


def test_cine_overlay_is_a_valid_multiframe_true_colour_sc(written):
    assert dciodvfy_errors(written) == []
    ds = pydicom.dcmread(written)
    assert ds.SOPClassUID == MF_SC and ds.file_meta.MediaStorageSOPClassUID == MF_SC
    assert ds.BurnedInAnnotation == "YES" and ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
    px = ds.pixel_array
    assert px.dtype == np.uint8 and px.shape == (T, ds.Rows, ds.Columns, 3) and int(ds.NumberOfFrames) == T
    assert ds.Columns >= 256 and ds.Columns % W == 0 and ds.Rows > H * (ds.Columns // W)  # magnified + caption


def test_identity_timing_and_reference_come_from_the_source(xa, written):
    src, ds = pydicom.dcmread(xa), pydicom.dcmread(written)
    for kw in IDENTITY:
        assert ds.get(kw) == src.get(kw), kw
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.SOPInstanceUID != src.SOPInstanceUID
    assert float(ds.FrameTime) == pytest.approx(float(src.FrameTime)) and float(src.FrameTime) == 40.0
    assert ds.FrameIncrementPointer == Tag(0x0018, 0x1063)
    ref = ds.SourceImageSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (src.SOPClassUID, src.SOPInstanceUID)
    assert "Signature Activation" in ds.SeriesDescription and "TinyNet" in ds.DerivationDescription


def test_overlay_pixels_against_the_source_cine(xa, written):
    """Where the map is 0 the picture is the source cine blended with the colour of 0 (computed here from the
    source's stored pixels); where it is high it differs strongly from the plain cine."""
    ds = pydicom.dcmread(written)
    s = ds.Columns // W
    image = ds.pixel_array[:, : H * s : s, ::s]  # one pixel per source pixel
    plain = pydicom.dcmread(xa).pixel_array  # (T, H, W) stored values
    zero = _map() == 0
    expected = zero_map_blend(plain)
    diff = np.abs(image.astype(int) - expected.astype(int))
    assert diff[zero].max() <= 1  # float32 reading of the cine: at most one rounding step
    grey = np.rint(255 * (plain - plain.min()) / np.ptp(plain)).astype(int)[..., None]
    high = _map() >= 0.8
    assert np.abs(image.astype(int) - grey)[high].max(axis=-1).mean() > 80  # the map's colour is on top
    assert diff[high].max(axis=-1).mean() > 80  # and differs from the zero-map blend


def test_dcm2niix_reads_the_capture(written, tmp_path):
    rgb = dcm2niix_rgb(written, tmp_path)
    px = pydicom.dcmread(written).pixel_array
    assert rgb.shape == (px.shape[2], px.shape[1], T, 3)  # columns, rows, frames
    np.testing.assert_array_equal(rgb.transpose(2, 1, 0, 3)[:, ::-1], px)  # NIfTI rows run bottom-up


def test_rendering_in_frame_chunks_is_the_same(monkeypatch):
    import monai_saliency.visualize.secondary_capture as vsc

    whole = vsc.render_cine_overlay(_cine(), _map())
    monkeypatch.setattr(vsc, "_CHUNK_PIXELS", 2 * H * W)  # chunks of 2 frames (2, 2, 1)
    np.testing.assert_array_equal(vsc.render_cine_overlay(_cine(), _map()), whole)


def test_frame_time_vector_of_the_source_is_kept(xa, tmp_path):
    src = pydicom.dcmread(xa)
    del src.FrameTime
    src.FrameTimeVector = ["0", "33", "40", "47", "33"]
    src.FrameIncrementPointer = Tag(0x0018, 0x1065)
    vec_src = tmp_path / "vector.dcm"
    src.save_as(vec_src)
    out = save_cine_overlay_sc(_cine(), _map(), tmp_path / "o.dcm", source=vec_src, style=OverlayStyle("m", "n"))
    ds = pydicom.dcmread(out)
    assert [float(v) for v in ds.FrameTimeVector] == [0, 33, 40, 47, 33] and "FrameTime" not in ds
    assert ds.FrameIncrementPointer == Tag(0x0018, 0x1065)
    assert dciodvfy_errors(out) == []


def test_nifti_input_gets_a_new_study_named_after_the_file(tmp_path):
    nii = tmp_path / "case_9.nii.gz"
    nib.save(nib.Nifti1Image(_cine().astype(np.float32), np.eye(4)), str(nii))
    a = save_cine_overlay_sc(_cine(), _map(), tmp_path / "a.dcm", source=nii, frame_time_ms=50.0)
    b = save_cine_overlay_sc(_cine(), _map() * 0, tmp_path / "b.dcm", source=nii, frame_time_ms=50.0)
    other = save_cine_overlay_sc(_cine(), _map(), tmp_path / "c.dcm", source=tmp_path / "x.nii.gz", frame_time_ms=50)
    da, db, dc = (pydicom.dcmread(p) for p in (a, b, other))
    assert da.PatientID == "" and da.PatientName == "" and "SourceImageSequence" not in da
    assert da.StudyInstanceUID == db.StudyInstanceUID != dc.StudyInstanceUID  # one study per input file
    assert da.SeriesInstanceUID != db.SeriesInstanceUID
    assert "case_9.nii.gz" in da.StudyDescription and "case_9.nii.gz" in da.SeriesDescription
    assert float(da.FrameTime) == 50.0
    assert dciodvfy_errors(a) == []
    s = da.Columns // W
    zero = zero_map_blend(_cine())  # a constant (all-zero) map blends its zero colour everywhere
    assert np.abs(db.pixel_array[:, : H * s : s, ::s].astype(int) - zero).max() <= 1


def test_non_ascii_names_survive_in_utf8(tmp_path):
    """A Latin-1 source name and a non-ASCII method name: the capture switches to UTF-8 and keeps both."""
    src = write_xa_cine(_cine(), tmp_path / "latin1.dcm", patient_name="Müller^Jürgen")
    ds = pydicom.dcmread(src)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.save_as(src)
    out = save_cine_overlay_sc(_cine(), _map(), tmp_path / "o.dcm", source=src, style=OverlayStyle("Mørch", "n"))
    sc = pydicom.dcmread(out)
    assert sc.SpecificCharacterSet == "ISO_IR 192" and str(sc.PatientName) == "Müller^Jürgen"
    assert "Mørch" in sc.SeriesDescription and "Müller".encode() in out.read_bytes()
    assert dciodvfy_errors(out) == []


def test_dict_transform_writes_into_the_study_folder(xa, tmp_path):
    cine = read_xa_cine(xa, normalize=True)
    study = tmp_path / "staging" / "cine"
    study.mkdir(parents=True)
    data = {"cine": cine, "map": torch.as_tensor(_map())[None], "folder": str(study)}
    t = SaveOverlaySCd(["cine", "map"], tmp_path / "unused", folder_key="folder", path_key="sc", method="m")
    out = t(data)
    assert out["sc"] == str(study / "cine_overlay.dcm") and Path(out["sc"]).is_file()
    assert not (tmp_path / "unused").exists() and out["cine"] is cine
    default = SaveOverlaySCd(["cine", "map"], tmp_path / "flat", output_postfix="sigact_overlay")(data)
    assert (tmp_path / "flat" / "cine_sigact_overlay.dcm").is_file() and "sc" not in default
    with pytest.raises(ValueError, match="not an existing folder"):
        t({**data, "folder": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="two keys"):
        SaveOverlaySCd(["cine"], tmp_path)


def test_errors_and_inputs_are_never_overwritten(xa, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_secondary_capture(np.zeros((2, 4, 4, 3), np.float32), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_secondary_capture(np.zeros((2, 4, 4), np.uint8), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="frame time"):
        write_secondary_capture(np.zeros((2, 4, 4, 3), np.uint8), tmp_path / "x.dcm")
    before = xa.read_bytes()
    with pytest.raises(FileExistsError, match="input"):
        save_cine_overlay_sc(_cine(), _map(), xa, source=xa)
    assert xa.read_bytes() == before and not list(tmp_path.iterdir())


def _oblique_affine() -> np.ndarray:
    """LPS-like voxel axes (x and y flipped), anisotropic 2 x 2 x 3 mm voxels."""
    return np.array([[-2.0, 0, 0, 20], [0, -2.0, 0, 30], [0, 0, 3.0, -10], [0, 0, 0, 1]])


def test_orthogonal_slices_through_the_peak():
    """The peak voxel (1, 4, 6) of an x- and y-flipped, 2 x 2 x 3 mm grid is at world (18, 22, 8) mm (RAS): the 2nd
    most right-ward of 10 x positions, the 5th most anterior of 12 y positions, the 2nd most superior of 8 z
    positions. Radiological display (right on the left, anterior / superior up) puts it there in each panel."""
    vol = np.random.default_rng(0).uniform(0, 1, (10, 12, 8))
    sal = np.zeros_like(vol)
    sal[1, 4, 6] = 1.0
    aff = _oblique_affine()
    np.testing.assert_allclose(aff @ [1, 4, 6, 1], [18, 22, 8, 1])
    pixels, peak = render_orthogonal_overlay(vol, sal, aff, OverlayStyle("m", "n"), min_panel=64)
    assert peak == (1, 4, 6) and pixels.dtype == np.uint8
    s = 64 // 12 + 1  # largest panel side: 12 pixels of 2 mm (y), so magnified 6x
    widths = [10 * s, 10 * s, 12 * s]  # axial and coronal: x; sagittal: y (2 mm pixels)
    assert pixels.shape[1] == sum(widths) + 2 * 2
    # map 1 -> jet (0.5, 0, 0) adds ~57 to red only; map 0 -> jet (0, 0, 0.5) adds to blue only
    rgb = pixels[: 12 * s].astype(int)
    rows, cols = np.nonzero(rgb[..., 0] > rgb[..., 2] + 30)
    axial = cols < widths[0]
    assert set(rows[axial] // s) == {4} and set(cols[axial] // s) == {1}
    coronal = (cols >= widths[0] + 2) & (cols < widths[0] + widths[1] + 2)
    assert set((cols[coronal] - widths[0] - 2) // s) == {1} and rows[coronal].max() < 3 * s  # 2nd of 8 x 3 mm
    sagittal = cols >= widths[0] + widths[1] + 4
    assert set((cols[sagittal] - widths[0] - widths[1] - 4) // s) == {4} and rows[sagittal].max() < 3 * s
    with pytest.raises(ValueError, match="shapes differ"):
        render_orthogonal_overlay(vol, sal[:-1], aff)


@pytest.fixture(scope="module")
def pt_series(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pt") / "series"
    vol = np.random.default_rng(1).uniform(0, 1, (10, 12, 8)).astype(np.float32)
    write_pet_series(vol, folder, _oblique_affine(), patient_id="PET7")
    return folder


def test_orthogonal_sc_in_the_pt_study(pt_series, tmp_path):
    vol = np.random.default_rng(1).uniform(0, 1, (10, 12, 8))
    sal = np.zeros_like(vol)
    sal[5, 6, 4] = 1
    out = save_orthogonal_overlay_sc(vol, sal, _oblique_affine(), tmp_path / "pet.dcm", source=pt_series)
    assert dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out)
    src = [pydicom.dcmread(p) for p in sorted(pt_series.iterdir())]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.BurnedInAnnotation == "YES"
    assert ds.PatientID == "PET7" and ds.StudyInstanceUID == src[0].StudyInstanceUID
    assert ds.SeriesInstanceUID not in {s.SeriesInstanceUID for s in src}
    refs = {r.ReferencedSOPInstanceUID for r in ds.SourceImageSequence}
    assert refs == {s.SOPInstanceUID for s in src}  # every slice of the series is referenced
    px = ds.pixel_array
    assert px.shape == (ds.Rows, ds.Columns, 3) and px.dtype == np.uint8
    rgb = dcm2niix_rgb(out, tmp_path / "n")
    assert rgb.shape == (ds.Columns, ds.Rows, 1, 3)
    np.testing.assert_array_equal(rgb[:, ::-1, 0].transpose(1, 0, 2), px)
