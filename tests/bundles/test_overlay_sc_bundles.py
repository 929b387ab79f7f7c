"""Secondary Capture overlays written by the bundles: one per explained angiogram cine (DICOM and NIfTI inputs) and
one per PET study; valid in dciodvfy, readable by pydicom and dcm2niix; ``--write_overlays false`` turns them off."""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from monai_saliency.data.dicom.pet_series import write_pet_series
from monai_saliency.data.synthetic.pet_phantom import make_pet_study
from tests._parallel_runs import session_run
from tests._sc_checks import dciodvfy_errors, dcm2niix_rgb, zero_map_blend
from tests.bundles.conftest import load_bundle_scripts, run_bundle

ANGIO = "angiogram_signature_activation"
SAMPLE = Path(__file__).resolve().parents[2] / "bundles" / ANGIO / "sample_data"
KEY = "sigact_spatial"
MF_SC = "1.2.840.10008.5.1.4.1.1.7.4"


def _stem(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem


def _one(out: Path, pattern: str) -> Path:
    found = sorted(out.rglob(pattern))  # flat or per-study folders
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.fixture(scope="module")
def angio_run(angio_sample_run):
    """The output folder of the bundle's default run on its sample (shared for the session: only read here)."""
    result, out = angio_sample_run
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _inputs() -> list[Path]:
    return sorted(p for p in SAMPLE.iterdir() if p.name.endswith((".dcm", ".nii.gz")))


def test_angiogram_overlay_per_cine_valid_and_readable(angio_run, tmp_path):
    inputs = _inputs()
    assert {p.suffix for p in inputs} == {".dcm", ".gz"}
    assert len(list(angio_run.rglob("*_overlay.dcm"))) == len(inputs)
    for src in inputs:
        sc = _one(angio_run, f"{_stem(src)}_{KEY}_overlay.dcm")
        assert dciodvfy_errors(sc) == [], sc
        ds = pydicom.dcmread(sc)
        frames = nib.load(str(_one(angio_run, f"{_stem(src)}_{KEY}.nii.gz"))).shape[0]
        assert ds.SOPClassUID == MF_SC and ds.BurnedInAnnotation == "YES"
        assert ds.pixel_array.shape == (frames, ds.Rows, ds.Columns, 3) and ds.pixel_array.dtype == np.uint8
        assert "Signature Activation" in ds.DerivationDescription and "VideoLesionNet" in ds.DerivationDescription
        if src.suffix == ".dcm":
            source = pydicom.dcmread(src, stop_before_pixels=True)
            assert ds.FrameTime == source.FrameTime and ds.FrameIncrementPointer == source.FrameIncrementPointer
            assert (ds.PatientID, ds.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)
            assert ds.SeriesInstanceUID != source.SeriesInstanceUID
            assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        else:  # NIfTI: a new study named after the file, the bundle's default frame time
            assert ds.PatientID == "" and src.name in ds.StudyDescription and "SourceImageSequence" not in ds
            assert float(ds.FrameTime) == pytest.approx(1000 / 15, abs=1e-3)
    sc = _one(angio_run, f"case_001_{KEY}_overlay.dcm")
    ds = pydicom.dcmread(sc)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless  # the bundle's --dicom_compression
    # Debian's dcm2niix (v1.0.20220720) has no JPEG-LS decoder and asks for a decompressed copy: give it one
    ds.decompress()
    plain = tmp_path / "plain" / sc.name
    plain.parent.mkdir()
    ds.save_as(plain)
    rgb = dcm2niix_rgb(plain, tmp_path)
    px = pydicom.dcmread(sc).pixel_array
    assert rgb.shape == (px.shape[2], px.shape[1], px.shape[0], 3)


def test_angiogram_overlay_pixels_follow_the_written_map(angio_run):
    """Against the bundle's own NIfTI map of the study and the source's stored pixels: where the map is 0 the capture
    is the cine blended with the colour of 0; where it is >= 0.8 it differs strongly from the plain cine."""
    src = SAMPLE / "case_003.dcm"
    plain = pydicom.dcmread(src).pixel_array  # (T, H, W)
    sal = nib.load(str(_one(angio_run, f"case_003_{KEY}.nii.gz"))).get_fdata()
    ds = pydicom.dcmread(_one(angio_run, f"case_003_{KEY}_overlay.dcm"))
    _, h, w = plain.shape
    s = ds.Columns // w
    image = ds.pixel_array[:, : h * s : s, ::s].astype(int)
    zero, high = sal == 0, sal >= 0.8
    assert zero.sum() > 0 and high.sum() > 0
    assert np.abs(image - zero_map_blend(plain))[zero].max() <= 1
    grey = np.rint(255 * (plain - plain.min()) / np.ptp(plain)).astype(int)[..., None]
    assert np.abs(image - grey)[high].max(axis=-1).mean() > 80


@session_run("overlay_sc_bundles")
def _overlays_off(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path]]:
    """One cine copied now; the bundle run over it with ``--write_overlays false``, to call later (a session run:
    see tests/_parallel_runs.py)."""
    data = root / "data"
    data.mkdir()
    shutil.copy(SAMPLE / "case_002.dcm", data)
    out = root / "out"
    args = ("--dataset_dir", str(data), "--output_dir", str(out), "--write_overlays", "false")
    return lambda: (run_bundle(ANGIO, "--config_file", "configs/inference.json", *args), out)


def test_write_overlays_false_turns_them_off(angio_run, session_runs):
    assert list(angio_run.rglob(f"case_002_{KEY}_overlay.dcm"))  # written by default
    result, out = session_runs("overlay_sc_bundles")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(out.rglob("*_overlay.dcm"))
    assert list(out.rglob(f"case_002_{KEY}.dcm")) and list(out.rglob(f"case_002_{KEY}.gif"))  # the rest is written
    with open(_one(out, "predictions.csv")) as f:
        assert len(list(csv.DictReader(f))) == 1  # one study (a header row, then its row)


# ------------------------------------------------------------------------------------------------ PET bundle
PET = "pet_morch_saliency"


def test_pet_config_option():
    from monai.bundle import ConfigParser

    config = Path(__file__).resolve().parents[2] / "bundles" / PET / "configs" / "inference.json"
    for value, expected in ((None, True), ("false", "false"), (False, False), ("true", "true")):
        parser = ConfigParser()
        parser.read_config(str(config))
        if value is not None:
            parser["write_overlays"] = value
        # passed through to write_outputs, which parses command-line strings strictly (as_bool)
        assert parser.get_parsed_content("write#write_overlays", instantiate=False) == expected, value


@pytest.fixture(scope="module")
def dicom_pet_study(tmp_path_factory):
    """A small DICOM PET study: 2 subjects x 3 scans, each a PT series, plus its targets."""
    study_io, model_io = load_bundle_scripts(PET, "study"), load_bundle_scripts(PET, "model")
    folder = tmp_path_factory.mktemp("pet_dicom")
    st = make_pet_study("graded", shape=(12, 14, 10), n_subjects=2, n_scans=3, seed=4)
    rows = []
    for n in range(st.images.shape[0]):
        write_pet_series(
            st.images.as_tensor()[n], folder / f"scan_{n}", st.affine, patient_id="PETSUBJ", study_uid="1.2.3.4"
        )
        rows.append(f"scan_{n},{float(st.targets[n])}\n")
    (folder / "targets.csv").write_text("scan,target\n" + "".join(rows))
    study = study_io.load_study(folder, progress=False)
    model = model_io.fit_model(study, hidden=3, weight_decay=0.05)
    return study, model


def test_pet_overlay_in_the_reference_series_study(dicom_pet_study, tmp_path):
    outputs = load_bundle_scripts(PET, "outputs")
    study, model = dicom_pet_study
    assert study.kind == "dicom" and study.reference_series is not None
    maps = outputs.compute_maps(load_bundle_scripts(PET, "model").build_saliency(model), study, model, ["exact"])
    written = outputs.write_outputs(maps, study, model, tmp_path / "out", write_dicom=False, figure_order=None)
    sc = written["overlay_sc"]
    assert sc == tmp_path / "out" / "morch_exact_overlay.dcm"
    assert dciodvfy_errors(sc) == []
    ds = pydicom.dcmread(sc)
    ref = pydicom.dcmread(min(study.reference_series.iterdir()))
    assert (ds.PatientID, ds.StudyInstanceUID) == (
        "PETSUBJ",
        "1.2.3.4",
    ) and ds.SeriesInstanceUID != ref.SeriesInstanceUID
    assert ref.SOPInstanceUID in {r.ReferencedSOPInstanceUID for r in ds.SourceImageSequence}
    assert ds.pixel_array.shape == (ds.Rows, ds.Columns, 3) and "Morch" in ds.DerivationDescription
    assert dcm2niix_rgb(sc, tmp_path / "n").shape == (ds.Columns, ds.Rows, 1, 3)
    vol = model.pca.to_volume(maps["exact"])
    peak = np.unravel_index(int(torch.argmax(vol)), tuple(vol.shape))
    assert f"peak at voxel ({peak[0]}, {peak[1]}, {peak[2]})" in ds.DerivationDescription
    off = outputs.write_outputs(
        maps, study, model, tmp_path / "off", write_dicom=False, figure_order=None, write_overlays=False
    )
    assert "overlay_sc" not in off and not list((tmp_path / "off").glob("*overlay*"))
    # as the command line gives them: "--write_dicom false --write_overlays false" write no DICOM at all
    off = outputs.write_outputs(
        maps, study, model, tmp_path / "str", write_dicom="false", figure_order=None, write_overlays="false"
    )
    assert not list((tmp_path / "str").glob("*.dcm")) and off
    with pytest.raises(ValueError, match="write_dicom must be true or false"):
        outputs.write_outputs(maps, study, model, tmp_path / "bad", write_dicom="flase", figure_order=None)
