"""Intake checks of the bundles' loaders (issue #23, properties 8 and 9): the wrong kind of input is refused by name,
never silently reshaped, and a study too large for memory is refused from its header before it is decoded."""

from __future__ import annotations

import gzip
import importlib.util
import json
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import LoadImage

from monai_saliency.data.checks import (
    CINE_INTENT_NAME,
    DEFAULT_MAX_STUDY_MB,
    NonFiniteError,
    StudyTooLargeError,
    StudyTooSmallError,
    UnreadableStudyError,
    WrongKindError,
    mark_nifti_cine,
    read_nifti_header,
)
from monai_saliency.data.dicom.xa import XACineError
from monai_saliency.data.dicom.xa_writer import write_xa_cine
from monai_saliency.data.volume import LoadVolume, LoadVolumed
from tests.data.dicom._xa_twins import monochrome1_twin

REPO = Path(__file__).resolve().parents[2]
CINE_BUNDLE = REPO / "bundles" / "angiogram_signature_activation"
VOLUME_BUNDLE = REPO / "bundles" / "gradient_saliency_3d"
VOLUME = VOLUME_BUNDLE / "sample_data" / "case_000.nii.gz"
CINE_NII = CINE_BUNDLE / "sample_data" / "case_004.nii.gz"
CINE_DCM = CINE_BUNDLE / "sample_data" / "case_000.dcm"
AFFINE = np.diag([1.2, 1.1, 1.5, 1.0])


def _cine_io():
    spec = importlib.util.spec_from_file_location("_intake_cine_io", CINE_BUNDLE / "scripts" / "cine_io.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nifti(path: Path, data: np.ndarray, cine: bool = False) -> str:
    img = nib.Nifti1Image(data, AFFINE)
    if cine:
        img.header.set_intent(0, (), name=CINE_INTENT_NAME)
    nib.save(img, str(path))
    return str(path)


def _huge_header(path: Path, shape: tuple[int, ...], cine: bool = False) -> str:
    """A ``.nii.gz`` whose header declares ``shape`` but which holds no data at all (a few hundred bytes)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    if cine:
        header.set_intent(0, (), name=CINE_INTENT_NAME)
    raw = header.binaryblock + b"\x00" * 4
    path.write_bytes(gzip.compress(raw))
    return str(path)


# ------------------------------------------------------------------------------------------ 3D bundle: LoadVolume


def test_volume_loader_matches_monai_on_a_good_volume():
    """LoadVolumed gives what the 3D bundle's former LoadImaged + EnsureChannelFirstd gave: values, affine, meta."""
    ours = LoadVolumed("image")({"image": str(VOLUME)})["image"]
    monai = LoadImage(image_only=True, ensure_channel_first=True)(str(VOLUME))
    assert tuple(ours.shape) == tuple(monai.shape) == (1, 32, 32, 32)
    torch.testing.assert_close(ours.as_tensor(), monai.as_tensor())
    torch.testing.assert_close(ours.affine, monai.affine)
    assert ours.meta["filename_or_obj"] == monai.meta["filename_or_obj"]


@pytest.mark.parametrize(
    ("shape", "error", "words"),
    [
        ((32, 32), WrongKindError, "2D image"),
        ((32, 32, 1), WrongKindError, "2D image"),
        ((1, 32, 32), WrongKindError, "2D image"),
        ((16, 16, 16, 2), WrongKindError, "4D or multi-channel"),
        ((16, 16, 16, 1, 3), WrongKindError, "4D or multi-channel"),
        ((4, 16, 16), StudyTooSmallError, "at least (8, 8, 8)"),
    ],
)
def test_volume_loader_refuses_wrong_kinds_by_name(tmp_path, shape, error, words):
    path = _nifti(tmp_path / "study.nii.gz", np.ones(shape, np.float32))
    with pytest.raises(error, match="study.nii.gz") as info:
        LoadVolume()(path)
    assert words in str(info.value)


def test_volume_loader_accepts_a_single_channel_4d_file(tmp_path):
    path = _nifti(tmp_path / "one_channel.nii.gz", np.ones((16, 16, 16, 1), np.float32))
    assert tuple(LoadVolume()(path).shape) == (1, 16, 16, 16)


def test_volume_loader_refuses_a_cine_non_finite_values_and_complex_data(tmp_path):
    with pytest.raises(WrongKindError, match="marked as a cine"):
        LoadVolume()(str(CINE_NII))
    for bad in (np.nan, np.inf):
        data = np.ones((16, 16, 16), np.float32)
        data[3, 4, 5] = bad
        with pytest.raises(NonFiniteError, match="non-finite"):
            LoadVolume()(_nifti(tmp_path / "bad.nii.gz", data))
    with pytest.raises(WrongKindError, match="complex"):
        LoadVolume()(_nifti(tmp_path / "complex.nii.gz", np.ones((16, 16, 16), np.complex64)))
    with pytest.raises(WrongKindError, match="not a NIfTI"):
        LoadVolume()(str(CINE_DCM))


def test_volume_loader_minimum_is_an_option(tmp_path):
    path = _nifti(tmp_path / "small.nii.gz", np.ones((4, 4, 4), np.float32))
    assert tuple(LoadVolume(min_size=2)(path).shape) == (1, 4, 4, 4)
    with pytest.raises(StudyTooSmallError):
        LoadVolume(min_size=(2, 2, 8))(path)


def test_too_large_volume_is_refused_from_its_header_without_decoding(tmp_path):
    """A header declaring 2048³ int16 (32 GiB as float32) in a file of a few hundred bytes: refused by name before
    any allocation (today's LoadImage would try to allocate it or fail with an unnamed OSError)."""
    path = _huge_header(tmp_path / "huge.nii.gz", (2048, 2048, 2048))
    header = read_nifti_header(path)
    assert header.decoded_bytes == 2048**3 * 4
    tracemalloc.start()
    try:
        with pytest.raises(StudyTooLargeError, match=r"huge.nii.gz.*32768.0 MiB.*max_study_mb=1024"):
            LoadVolume(min_size=1)(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20
    small = _nifti(tmp_path / "vol.nii.gz", np.ones((64, 64, 64), np.float32))  # 1 MiB as float32
    with pytest.raises(StudyTooLargeError, match="max_study_mb=0.5"):
        LoadVolume(max_study_mb=0.5)(small)
    assert tuple(LoadVolume(max_study_mb=1)(small).shape) == (1, 64, 64, 64)  # the bound is inclusive
    assert tuple(LoadVolume(max_study_mb=None)(small).shape) == (1, 64, 64, 64)


def test_truncated_nifti_is_refused_from_its_header(tmp_path):
    good = _nifti(tmp_path / "good.nii", np.ones((16, 16, 16), np.float32))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(Path(good).read_bytes()[:-100])
    with pytest.raises(UnreadableStudyError, match=r"cut.nii is truncated.*16384 bytes"):
        LoadVolume()(str(cut))


# ------------------------------------------------------------------------------------------ cine bundle: LoadCined


def test_cine_loader_refuses_a_volume_and_reads_a_marked_cine(tmp_path):
    loader = _cine_io().LoadCined("image")
    with pytest.raises(WrongKindError, match=r"case_000.nii.gz looks like a 3D volume, not a cine"):
        loader({"image": str(VOLUME)})
    cine = loader({"image": str(CINE_NII)})["image"]
    assert tuple(cine.shape) == (1, 16, 64, 64)
    unmarked = tmp_path / "unmarked.nii.gz"
    raw = nib.load(str(CINE_NII))
    nib.save(nib.Nifti1Image(np.asarray(raw.dataobj), raw.affine), str(unmarked))
    with pytest.raises(WrongKindError, match="mark_nifti_cine"):
        loader({"image": str(unmarked)})
    legacy = _cine_io().LoadCined("image", require_cine_marker=False)({"image": str(unmarked)})["image"]
    torch.testing.assert_close(legacy.as_tensor(), cine.as_tensor())
    mark_nifti_cine(unmarked)  # marking changes the header only
    torch.testing.assert_close(loader({"image": str(unmarked)})["image"].as_tensor(), cine.as_tensor())
    assert read_nifti_header(unmarked).is_cine and not read_nifti_header(VOLUME).is_cine


@pytest.mark.parametrize("modality", ["CT", "MR", "PT"])
def test_cine_loader_refuses_other_modalities_by_name(tmp_path, modality):
    ds = pydicom.dcmread(CINE_DCM)
    ds.Modality = modality
    ds.save_as(tmp_path / f"{modality}.dcm")
    with pytest.raises(WrongKindError, match=rf"{modality}.dcm is not an X-ray angiogram: Modality='{modality}'"):
        _cine_io().LoadCined("image")({"image": str(tmp_path / f"{modality}.dcm")})


def test_cine_loader_refuses_non_finite_and_small_cines_reads_monochrome1(tmp_path):
    loader = _cine_io().LoadCined("image")
    data = np.asarray(nib.load(str(CINE_NII)).dataobj).copy()
    data[2, 10, 10] = np.nan
    with pytest.raises(NonFiniteError, match="nan.nii.gz holds non-finite values"):
        loader({"image": _nifti(tmp_path / "nan.nii.gz", data, cine=True)})
    with pytest.raises(StudyTooSmallError, match=r"frame size \(H, W\) \(8, 64\)"):
        loader({"image": _nifti(tmp_path / "thin.nii.gz", np.full((4, 8, 64), 0.5, np.float32), cine=True)})
    small = tmp_path / "small.dcm"
    write_xa_cine(torch.full((4, 12, 12), 0.5), small, frame_time_ms=50.0, uid_seed="small")
    with pytest.raises(StudyTooSmallError, match="small.dcm is too small"):
        loader({"image": str(small)})
    assert tuple(_cine_io().LoadCined("image", min_frame_size=8)({"image": str(small)})["image"].shape) == (
        1,
        4,
        12,
        12,
    )
    # a MONOCHROME1 cine is not refused: it is read inverted, as its MONOCHROME2 twin (data.dicom.pixels)
    monochrome1_twin(CINE_DCM, tmp_path / "inverted.dcm")
    np.testing.assert_allclose(
        loader({"image": str(tmp_path / "inverted.dcm")})["image"], loader({"image": str(CINE_DCM)})["image"]
    )


def test_too_large_cine_is_refused_from_its_header(tmp_path):
    """DICOM: Rows x Columns x NumberOfFrames from a header read without pixels; a header that declares 2**30
    frames is refused as too large before pydicom reads the pixel data (today: an XACineError after reading it)."""
    loader = _cine_io().LoadCined("image", max_study_mb=1)
    big = tmp_path / "big.dcm"
    write_xa_cine(torch.full((40, 96, 96), 0.5), big, frame_time_ms=50.0, uid_seed="big")  # 1.4 MiB as float32
    with pytest.raises(StudyTooLargeError, match=r"big.dcm is too large: shape \(40, 96, 96, 1\)"):
        loader({"image": str(big)})
    assert tuple(loader({"image": str(CINE_DCM)})["image"].shape) == (1, 16, 64, 64)  # 0.25 MiB passes
    lying = pydicom.dcmread(CINE_DCM)
    lying.NumberOfFrames = 2**30
    lying.save_as(tmp_path / "lying.dcm")
    with pytest.raises(StudyTooLargeError, match="lying.dcm is too large"):
        _cine_io().LoadCined("image")({"image": str(tmp_path / "lying.dcm")})
    with pytest.raises(StudyTooLargeError, match="huge.nii.gz is too large"):
        _cine_io().LoadCined("image")({"image": _huge_header(tmp_path / "huge.nii.gz", (4096, 1024, 1024), cine=True)})


def test_bundles_state_and_use_the_default_bound():
    for bundle in (CINE_BUNDLE, VOLUME_BUNDLE):
        config = json.loads((bundle / "configs" / "inference.json").read_text())
        assert config["max_study_mb"] == DEFAULT_MAX_STUDY_MB
        readme = (bundle / "docs" / "README.md").read_text()
        assert "max_study_mb" in readme and f"{DEFAULT_MAX_STUDY_MB:.0f} MiB" in readme
        assert "What is refused" in readme


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("PixelData", b"", "truncated"),  # an empty element reads back as None (len(None) before)
        ("FrameTimeVector", 66.7, "FrameTimeVector has 1 entries"),  # one value reads back as a scalar (no len)
        (b"66.6667", b"6x.6667", "damaged header"),  # text in FrameTime (a bare ValueError of float() before)
        (b"0.3\\0.3", b"0.3\\0x3", "damaged header"),  # text in ImagerPixelSpacing
    ],
)
def test_damaged_xa_headers_are_named_errors(tmp_path, field, value, words):
    """Damaged XA headers the fuzz test found crashing ``monai_saliency.data.dicom.xa`` with TypeError/ValueError
    (set as elements, or as same-length byte edits of the file that pydicom would not write)."""
    path = tmp_path / "damaged.dcm"
    if isinstance(field, bytes):
        data = CINE_DCM.read_bytes()
        assert data.count(field) == 1
        path.write_bytes(data.replace(field, value))
    else:
        ds = pydicom.dcmread(CINE_DCM)
        setattr(ds, field, value)
        ds.save_as(path)
    with pytest.raises(XACineError, match="damaged.dcm") as info:
        _cine_io().LoadCined("image")({"image": str(path)})
    assert words in str(info.value)
