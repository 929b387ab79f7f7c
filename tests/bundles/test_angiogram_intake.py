"""The angiogram bundle's DICOM intake, run as a user would: a MONOCHROME1 twin of a cine and an RLE-compressed copy
named like a PACS export (no suffix) give the same prediction, maps and derived XA as the original."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless, generate_uid

from tests._parallel_runs import session_run
from tests.bundles.conftest import run_inference
from tests.data.dicom._xa_twins import SAMPLE_CINE, monochrome1_twin

NAME = "angiogram_signature_activation"
METHODS = ("sigact_spatial", "sigact_frames", "gradcam")
STEMS = ("case_000", "case_000_m1", "IM000001")


@session_run("angiogram_intake")
def _twin_run(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path]]:
    """The twins written now; the bundle run over them, to call later (a session run: see tests/_parallel_runs.py)."""
    data = root / "twins"
    data.mkdir()
    shutil.copy(SAMPLE_CINE, data / "case_000.dcm")
    monochrome1_twin(SAMPLE_CINE, data / "case_000_m1.dcm")
    ds = pydicom.dcmread(SAMPLE_CINE)
    ds.compress(RLELossless)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(data / "IM000001")  # DICOM by content only
    out = root / "twins_out"
    return lambda: (run_inference(NAME, data, out), out)  # the cohort layer finds DICOM by content


@pytest.fixture(scope="module")
def twin_run(session_runs):
    return session_runs("angiogram_intake")


def _manifest(out: Path) -> dict:
    return json.loads((out / "run_manifest.json").read_text())


def test_twins_give_the_same_prediction(twin_run):
    result, out = twin_run
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "predictions.csv") as f:
        rows = {
            Path(r["study"]).name.removesuffix(".dcm"): np.array([r["prob_0"], r["prob_1"]], dtype=float)
            for r in csv.DictReader(f)
        }
    assert sorted(rows) == sorted(STEMS), rows
    for stem in STEMS[1:]:
        np.testing.assert_allclose(rows[stem], rows["case_000"], atol=1e-6, err_msg=stem)


def test_twins_give_the_same_maps_and_derived_xa(twin_run):
    result, out = twin_run
    assert result.returncode == 0, result.stderr[-3000:]
    # each study's output folder, as the run recorded it (a suffix-less DICOM gets "<name>_file")
    folders = {Path(s["study"]).name.removesuffix(".dcm"): s["folder"] for s in _manifest(out)["studies"]}
    for method in METHODS:
        ref = nib.load(str(out / folders["case_000"] / f"case_000_{method}.nii.gz")).get_fdata()
        assert ref.max() > ref.min()
        for stem in STEMS[1:]:
            np.testing.assert_allclose(
                nib.load(str(out / folders[stem] / f"{stem}_{method}.nii.gz")).get_fdata(),
                ref,
                atol=1e-6,
                err_msg=(stem, method),
            )
    derived = {stem: pydicom.dcmread(out / folders[stem] / f"{stem}_sigact_spatial.dcm") for stem in STEMS}
    ref = derived["case_000"].pixel_array
    for stem in STEMS[1:]:
        np.testing.assert_array_equal(derived[stem].pixel_array, ref, err_msg=stem)
