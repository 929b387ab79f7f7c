"""Wrong kinds, too-large studies and fuzzed files in a user's folder (issue #23, properties 8-10), through
``python -m monai.bundle run`` as a user would: one run per bundle over a folder holding one good study and bad
ones; the good study is processed, each bad one is named with its reason, and the run exits non-zero."""

from __future__ import annotations

import csv
import gzip
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from monai_saliency.data.checks import CINE_INTENT_NAME
from monai_saliency.data.dicom.xa_writer import write_xa_cine
from tests._parallel_runs import Prefetched
from tests.bundles.conftest import run_bundle
from tests.data._intake_mutations import raw_nifti, set_nifti_field

REPO = Path(__file__).resolve().parents[2]
CINE_SAMPLE = REPO / "bundles" / "angiogram_signature_activation" / "sample_data"
VOLUME_SAMPLE = REPO / "bundles" / "gradient_saliency_3d" / "sample_data"
CONFIG = "configs/inference.json"


def _save(path: Path, data: np.ndarray, affine: np.ndarray, cine: bool = False) -> None:
    img = nib.Nifti1Image(data, affine)
    if cine:
        img.header.set_intent(0, (), name=CINE_INTENT_NAME)
    nib.save(img, str(path))


def _mutant(path: Path, source: Path, field: str, value, index: int | None = None) -> None:
    """``source`` with one header field set to an impossible value (see tests/data/_intake_mutations.py)."""
    data = set_nifti_field(raw_nifti(source), field, value, index)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def _run(bundle: str, data: Path, out: Path) -> tuple[subprocess.CompletedProcess, Path]:
    args = ("--config_file", CONFIG, "--dataset_dir", str(data), "--output_dir", str(out), "--max_study_mb", "2")
    return run_bundle(bundle, *args), out


def _check_good(run: tuple[subprocess.CompletedProcess, Path], name: str, method: str) -> None:
    """The run failed (exit code) but wrote the good study's prediction (alone) and maps."""
    result, out = run
    assert result.returncode != 0
    with open(out / "predictions.csv") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("study")]  # with or without a header
    assert [Path(r[0]).name for r in rows] == [name], rows
    assert list(out.rglob(f"*{name.split('.')[0]}*{method}*.nii.gz"))


def _check_bad(run: tuple[subprocess.CompletedProcess, Path], name: str, reason: str) -> None:
    """Some line of the run's log names the study with its reason, and no map of it was written."""
    result, out = run
    log = result.stdout + result.stderr
    assert any(name in line and re.search(reason, line) for line in log.splitlines()), log[-4000:]
    assert not list(out.rglob(f"*{name.split('.')[0]}*.nii.gz"))


def _cine_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    data = tmp_path_factory.mktemp("cines")
    shutil.copy(CINE_SAMPLE / "case_000.dcm", data / "good.dcm")
    shutil.copy(VOLUME_SAMPLE / "case_000.nii.gz", data / "volume.nii.gz")  # a 3D volume, not a cine
    ct = pydicom.dcmread(CINE_SAMPLE / "case_002.dcm")
    ct.Modality = "PT"
    ct.save_as(data / "pet.dcm")
    raw = nib.load(str(CINE_SAMPLE / "case_004.nii.gz"))
    nan = np.asarray(raw.dataobj).copy()
    nan[3, 30, 30] = np.nan
    _save(data / "nan.nii.gz", nan, raw.affine, cine=True)
    write_xa_cine(torch.full((64, 96, 96), 0.5), data / "large.dcm", frame_time_ms=50.0, uid_seed="large")  # 2.25 MiB
    write_xa_cine(torch.full((8, 6, 6), 0.5), data / "tiny.dcm", frame_time_ms=50.0, uid_seed="tiny")
    (data / "mutant_cut.dcm").write_bytes((CINE_SAMPLE / "case_001.dcm").read_bytes()[:3000])  # truncated
    _mutant(data / "mutant_hdr.nii", CINE_SAMPLE / "case_004.nii.gz", "dim", 32767, index=2)  # data past the end
    return _run("angiogram_signature_activation", data, tmp_path_factory.mktemp("cine_out"))


def _volume_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    data = tmp_path_factory.mktemp("volumes")
    good = nib.load(str(VOLUME_SAMPLE / "case_001.nii.gz"))
    shutil.copy(VOLUME_SAMPLE / "case_001.nii.gz", data / "good.nii.gz")
    values, affine = np.asarray(good.dataobj), good.affine
    _save(data / "slice.nii.gz", values[:, :, 16:17], affine)  # a 2D image stored as (H, W, 1)
    _save(data / "flat.nii.gz", values[:, :, 16], affine)
    _save(data / "series.nii.gz", np.stack([values, values], -1), affine)  # 4D
    _save(data / "tiny.nii.gz", values[:4, :4, :4], affine)
    nan = values.copy()
    nan[5, 5, 5] = np.inf
    _save(data / "inf.nii.gz", nan, affine)
    _save(data / "large.nii.gz", np.zeros((96, 96, 96), np.float32), affine)  # 3.4 MiB as float32
    shutil.copy(CINE_SAMPLE / "case_004.nii.gz", data / "cine.nii.gz")
    _mutant(data / "mutant_hdr.nii.gz", VOLUME_SAMPLE / "case_002.nii.gz", "datatype", 9999)  # unknown type
    return _run("gradient_saliency_3d", data, tmp_path_factory.mktemp("volume_out"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, background) -> Prefetched:
    """The two bundle runs: the first asked for runs at once, the other in the background (see
    tests/_parallel_runs.py)."""
    return Prefetched(
        background, {"cine": lambda: _cine_run(tmp_path_factory), "volume": lambda: _volume_run(tmp_path_factory)}
    )


@pytest.fixture
def cine_run(runs) -> tuple[subprocess.CompletedProcess, Path]:
    return runs("cine")


@pytest.fixture
def volume_run(runs) -> tuple[subprocess.CompletedProcess, Path]:
    return runs("volume")


@pytest.mark.parametrize(
    ("run", "name", "method"),
    [("cine_run", "good.dcm", "sigact_spatial"), ("volume_run", "good.nii.gz", "vanillagrad")],
)
def test_the_good_study_is_processed(request, run, name, method):
    _check_good(request.getfixturevalue(run), name, method)


@pytest.mark.parametrize(
    ("run", "name", "reason"),
    [
        ("cine_run", "volume.nii.gz", "WrongKindError.*looks like a 3D volume"),
        ("cine_run", "pet.dcm", "Modality='PT'"),
        ("cine_run", "nan.nii.gz", "NonFiniteError"),
        ("cine_run", "large.dcm", "StudyTooLargeError.*max_study_mb=2"),
        ("cine_run", "tiny.dcm", r"StudyTooSmallError.*\(6, 6\)"),
        ("cine_run", "mutant_cut.dcm", "truncated"),
        ("cine_run", "mutant_hdr.nii", "UnreadableStudyError.*truncated"),
        ("volume_run", "slice.nii.gz", "WrongKindError.*2D image"),
        ("volume_run", "flat.nii.gz", "WrongKindError.*2D image"),
        ("volume_run", "series.nii.gz", "WrongKindError.*4D or multi-channel"),
        ("volume_run", "tiny.nii.gz", r"StudyTooSmallError.*\(4, 4, 4\)"),
        ("volume_run", "inf.nii.gz", "NonFiniteError.*1 Inf"),
        ("volume_run", "large.nii.gz", "StudyTooLargeError.*max_study_mb=2"),
        ("volume_run", "cine.nii.gz", "WrongKindError.*cine"),
        ("volume_run", "mutant_hdr.nii.gz", "UnreadableStudyError.*data code 9999"),
    ],
)
def test_each_bad_study_is_named_with_its_reason(request, run, name, reason):
    _check_bad(request.getfixturevalue(run), name, reason)
