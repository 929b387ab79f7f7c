"""PET bundle intake (#21 §1, #23 property 8): series found by content and recursively, grouped by
SeriesInstanceUID, slices that do not fit their series and scans of the wrong kind refused by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from monai_saliency.data.dicom.pet_series import write_pet_series
from monai_saliency.data.dicom.series import find_series, read_series_volume
from tests.bundles.conftest import load_bundle_scripts

study_io = load_bundle_scripts("pet_morch_saliency", "study")
StudyError = study_io.StudyError

SHAPE = (6, 5, 4)
QUANT = 101 / 32000  # int16 pixels with a per-slice slope: error <= slice max / 64000
AFFINE = torch.tensor([[-2.0, 0, 0, 10], [0, -2.5, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]], dtype=torch.float64)


def _volume(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(SHAPE, generator=g, dtype=torch.float64) * 100 + 1


def _series(folder: Path, seed: int, **kwargs) -> list[Path]:
    return write_pet_series(_volume(seed), folder, affine=AFFINE, **kwargs)


def _targets(folder: Path, rows: list[str], header: str = "scan,target") -> None:
    (folder / "targets.csv").write_text(header + "\n" + "\n".join(rows) + "\n")


def _edit(path: Path, **attrs) -> None:
    ds = pydicom.dcmread(str(path))
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(str(path))


def test_pacs_export_found_by_content_recursively(tmp_path):
    """``scan/export/S0001/IM000001`` (no suffix, nested, beside non-DICOM files) is read as its series."""
    for n in range(3):
        series = tmp_path / f"scan{n}" / "export" / "S0001"
        for k, p in enumerate(_series(tmp_path / "tmp", seed=n)):
            series.mkdir(parents=True, exist_ok=True)
            p.rename(series / f"IM{k + 1:06d}")
        (tmp_path / f"scan{n}" / "README.txt").write_text("exported by PACS")
        (tmp_path / f"scan{n}" / "DICOMDIR.bak").write_bytes(b"\0" * 300)
    _targets(tmp_path, [f"scan{n},{n}" for n in range(3)])
    study = study_io.load_study(tmp_path, progress=False)
    for n in range(3):
        np.testing.assert_allclose(study.images[n].numpy(), _volume(n).numpy(), rtol=0, atol=QUANT)
    torch.testing.assert_close(study.affine, AFFINE, atol=1e-5, rtol=0)
    assert all("README" not in p.name for p in study.input_files) and len(study.input_files) == 3 * SHAPE[2] + 1


def _interleaved(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder holding two series whose files alternate (IM0001 of A, IM0002 of B, ...) and a third scan."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    uids = []
    for s in range(2):
        uid = pydicom.uid.generate_uid()
        uids.append(uid)
        for k, p in enumerate(_series(tmp_path / f"tmp{s}", seed=s, series_uid=uid)):
            p.rename(mixed / f"IM{2 * k + s + 1:04d}")
    _series(tmp_path / "other", seed=2)
    return mixed, uids


def test_interleaved_series_split_by_series_uid(tmp_path):
    mixed, uids = _interleaved(tmp_path)
    found = find_series(mixed)
    assert sorted(found) == sorted(uids) and all(len(s.files) == SHAPE[2] for s in found.values())
    _targets(tmp_path, [f"mixed,0,{uids[0]}", f"mixed,1,{uids[1]}", "other,2,"], header="scan,target,series_uid")
    study = study_io.load_study(tmp_path, progress=False)
    for n in range(3):
        np.testing.assert_allclose(study.images[n].numpy(), _volume(n).numpy(), rtol=0, atol=QUANT)
    assert study.reference_series == (tmp_path / "other").resolve()  # the only folder holding one series alone


def test_ambiguous_folder_refused_by_name(tmp_path):
    mixed, uids = _interleaved(tmp_path)
    _targets(tmp_path, ["mixed,0", "other,1"])
    with pytest.raises(StudyError, match=rf"{mixed.name} holds 2 PT series .*{uids[0]}.*series_uid"):
        study_io.load_study(tmp_path, progress=False)
    _targets(tmp_path, ["mixed,0,1.2.3.4", "other,1,"], header="scan,target,series_uid")
    with pytest.raises(StudyError, match=r"no PT series 1\.2\.3\.4 under .*mixed"):
        study_io.load_study(tmp_path, progress=False)


def test_pet_series_picked_beside_a_ct_series(tmp_path):
    """A PET/CT export: the folder also holds a CT series (and an earlier Parametric Map): the PT one is the scan."""
    for n in range(2):
        _series(tmp_path / f"s{n}", seed=n)
        for p in _series(tmp_path / "ct", seed=9):
            _edit(p, Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.2")
            p.rename(tmp_path / f"s{n}" / f"ct_{p.name}")
    _targets(tmp_path, ["s0,0", "s1,1"])
    study = study_io.load_study(tmp_path, progress=False)
    np.testing.assert_allclose(study.images[1].numpy(), _volume(1).numpy(), rtol=0, atol=QUANT)
    assert not [p for p in study.input_files if p.name.startswith("ct_")]


SLICE_FAULTS = {
    "orientation": ({"ImageOrientationPatient": [1, 0, 0, 0, 0.98, 0.199]}, "ImageOrientationPatient"),
    "pixel_spacing": ({"PixelSpacing": [2.5, 2.2]}, "PixelSpacing"),
    "slice_spacing": ({"ImagePositionPatient": None}, "slice spacing"),
    "same_position": ({"ImagePositionPatient": "dup"}, "same ImagePositionPatient"),
    "matrix": ({"Rows": 4}, "Rows, Columns"),
}


@pytest.mark.parametrize("fault", sorted(SLICE_FAULTS))
def test_slice_that_differs_from_its_series_is_refused_by_name(tmp_path, fault):
    edit, what = SLICE_FAULTS[fault]
    for n in range(2):
        _series(tmp_path / f"s{n}", seed=n)
    slices = sorted((tmp_path / "s1").iterdir())
    bad = slices[2]
    if fault == "slice_spacing":  # slice 3 moved 1 mm along the normal: the spacing around it is wrong
        pos = [float(v) for v in pydicom.dcmread(str(bad)).ImagePositionPatient]
        edit = {"ImagePositionPatient": [pos[0], pos[1], pos[2] + 1.0]}
    elif fault == "same_position":
        edit = {"ImagePositionPatient": pydicom.dcmread(str(slices[1])).ImagePositionPatient}
    elif fault == "matrix":  # a smaller slice: its pixels must match its header
        ds = pydicom.dcmread(str(bad))
        ds.PixelData = ds.pixel_array[:4].tobytes()
        ds.save_as(str(bad))
    _edit(bad, **edit)
    _targets(tmp_path, ["s0,0", "s1,1"])
    with pytest.raises(StudyError, match=what) as info:
        study_io.load_study(tmp_path, progress=False)
    assert bad.name in str(info.value) and "\n" not in str(info.value)


def test_wrong_kind_of_scan_refused_by_name(tmp_path):
    _series(tmp_path / "s0", seed=0)
    cases = {}
    one = tmp_path / "one_slice"
    one.mkdir()
    shutil.copy(min((tmp_path / "s0").iterdir()), one / "IM1")
    cases["one_slice"] = "2D image"
    cases["one_slice/IM1"] = "2D image"  # a single DICOM file given as a scan
    nib.save(nib.Nifti1Image(np.ones((6, 5), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    cases["flat.nii.gz"] = "2D image"
    nib.save(nib.Nifti1Image(np.ones((6, 5, 1), np.float32), np.eye(4)), str(tmp_path / "slab.nii.gz"))
    cases["slab.nii.gz"] = "2D image"
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4, 3), np.float32), np.eye(4)), str(tmp_path / "dyn.nii.gz"))
    cases["dyn.nii.gz"] = "4D file"
    multi = tmp_path / "multi"
    _series(multi, seed=3)
    _edit(sorted(multi.iterdir())[1], NumberOfFrames=2)
    cases["multi"] = "multi-frame"
    (tmp_path / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    cases["scan.png"] = "neither a PT series"
    for name, what in cases.items():
        _targets(tmp_path, ["s0,0", f"{name},1"])
        with pytest.raises(StudyError, match=what) as info:
            study_io.load_study(tmp_path, progress=False)
        assert Path(name).name in str(info.value), name


def test_read_series_volume_matches_the_written_volume_in_any_file_order(tmp_path):
    files = _series(tmp_path / "s", seed=4)
    vol, affine = read_series_volume(files[::-1])
    np.testing.assert_allclose(vol, _volume(4).numpy(), rtol=0, atol=QUANT)
    np.testing.assert_allclose(affine, AFFINE.numpy(), atol=1e-5)
