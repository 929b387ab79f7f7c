"""The angiogram_signature_activation bundle, run as a user would (``python -m monai.bundle run`` in a subprocess)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import math
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from monai_saliency.data.dicom.xa import read_xa_cine
from monai_saliency.data.dicom.xa_writer import write_xa_cine
from monai_saliency.data.synthetic.angiogram import make_angiogram_dataset
from monai_saliency.models.video import VideoLesionNet
from tests._parallel_runs import Prefetched, session_run
from tests.bundles.conftest import metadata_offline, run_bundle, run_multi_gpu

NAME = "angiogram_signature_activation"
BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / NAME
SAMPLE = BUNDLE / "sample_data"
CONFIG = "configs/inference.json"
METHODS = ("sigact_spatial", "sigact_frames", "gradcam")


def _stem(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem


def _rows(path: Path) -> list[list[str]]:
    """predictions.csv without its header and label column: ``[study, p0, p1]`` per row."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["study", "prob_0", "prob_1", "label"]
    return [r[:-1] for r in rows[1:]]


def _input_geometry(src: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(T, H, W) and affine of a study as MONAI reads it (identity affine for XA, which has no patient geometry)."""
    if src.suffix == ".dcm":
        cine = read_xa_cine(src)
        return tuple(cine.shape[1:]), np.asarray(cine.affine)
    img = nib.load(str(src))
    return img.shape, img.affine


def _check_study(src: Path, out: Path) -> None:
    stem = _stem(src)
    out = out / stem  # one folder per study
    shape, affine = _input_geometry(src)
    for method in METHODS:
        written = nib.load(str(out / f"{stem}_{method}.nii.gz"))
        assert written.shape == shape, (method, written.shape, shape)
        np.testing.assert_allclose(written.affine, affine, atol=1e-5)
        values = written.get_fdata()
        assert np.isfinite(values).all() and values.min() == 0 and np.isclose(values.max(), 1), method
    with Image.open(out / f"{stem}_sigact_spatial.gif") as gif:
        assert gif.n_frames == shape[0]
    derived = out / f"{stem}_sigact_spatial.dcm"
    if src.suffix != ".dcm":
        assert not derived.exists()  # NIfTI inputs get NIfTI only
        return
    source = pydicom.dcmread(src, stop_before_pixels=True)
    ds = pydicom.dcmread(derived, stop_before_pixels=True)
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and ds.Modality == "XA"
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert "Signature Activation" in ds.DerivationDescription
    reread = read_xa_cine(derived)  # validated multi-frame XA, re-read with MONAI's PydicomReader
    assert tuple(reread.shape) == (1, *shape)
    nifti = nib.load(str(out / f"{stem}_sigact_spatial.nii.gz")).get_fdata()
    # the XA holds 16 bits, the NIfTI map the bundle's default --map_dtype uint8 (half a step of 1/255)
    np.testing.assert_allclose(reread[0].numpy(), nifti, atol=0.5 / 255 + 2.0 / 65535)


def test_runs_on_its_sample(angio_sample_run):
    """The default inference on the sample (one run per session, see conftest.py, also read by other modules)."""
    result, out = angio_sample_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"outputs in {out}" in result.stdout  # the run says where its outputs are
    samples = sorted(p for p in SAMPLE.iterdir() if p.name.endswith((".dcm", ".nii.gz")))
    assert {p.suffix for p in samples} == {".dcm", ".gz"}  # both kinds of input are exercised
    for src in samples:
        _check_study(src, out)
    labels = json.loads((SAMPLE / "labels.json").read_text())
    rows = _rows(out / "predictions.csv")
    assert sorted(Path(r[0]).name for r in rows) == sorted(p.name for p in samples)
    for row in rows:
        probs = np.array(row[1:], dtype=float)
        assert probs.shape == (2,) and np.isclose(probs.sum(), 1, atol=1e-5)
        assert probs.argmax() == labels[_stem(Path(row[0]))]["label"], row
    assert not [p for p in SAMPLE.iterdir() if "sigact" in p.name or p.name.startswith(".")]  # nothing beside inputs
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".cohort"]  # records; no temp files left


def test_prediction_matches_direct_model_call(angio_sample_run):
    """The bundle's probability equals the shipped network on the NIfTI sample called directly (no resize needed)."""
    _, out = angio_sample_run
    net = VideoLesionNet()
    net.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", weights_only=True))
    cine = torch.as_tensor(nib.load(str(SAMPLE / "case_004.nii.gz")).get_fdata(), dtype=torch.float32)
    with torch.no_grad():
        expected = net.eval()(cine[None, None]).softmax(1)[0].numpy()
    row = next(r for r in _rows(out / "predictions.csv") if r[0].endswith("case_004.nii.gz"))
    np.testing.assert_allclose(np.array(row[1:], dtype=float), expected, atol=1e-4)


session_run("metadata.angiogram_signature_activation", __name__)(metadata_offline(NAME))


def test_metadata_verifies_offline(session_runs):
    """``python -m monai.bundle verify_metadata`` with the network made unreachable, against a local copy of the
    schema (verify_metadata may re-download it when absent): conftest.py's verify_metadata_offline, a session run."""
    result = session_runs("metadata.angiogram_signature_activation")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verified with no error" in result.stdout + result.stderr


def _training(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path, str]]:
    """A reduced training run into ``root / "train"``, to call later: its result, output folder and the SHA-256 of
    the shipped weights taken now, before it."""
    digest = hashlib.sha256((BUNDLE / "models" / "model.pt").read_bytes()).hexdigest()
    out = root / "train"
    args = ("--output_dir", str(out), "--epochs", "1", "--n_train", "16", "--n_val", "8")
    return lambda: (run_bundle(NAME, "--config_file", "configs/train.json", *args, timeout=300), out, digest)


def _corrupt(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path, list[Path]]]:
    """A study folder written now (three good studies, a truncated DICOM, a CT, a 12-bit NIfTI without
    ``--nifti_scale``); the bundle run over it, to call later: its result, output folder and the good studies."""
    data = root / "studies"
    data.mkdir()
    good = [data / "case_000.dcm", data / "case_004.nii.gz", data / "other_size.dcm"]
    for p in good[:2]:
        shutil.copy(SAMPLE / p.name, p)
    # a user-like cine: another frame count and a non-square frame size (resized for the network, maps inverted)
    other = make_angiogram_dataset(1, shape=(96, 72), frames=10, seed=9, grades=("severe",))
    write_xa_cine(other.cine[0], good[2], frame_time_ms=100.0, uid_seed="other")
    (data / "broken.dcm").write_bytes((SAMPLE / "case_001.dcm").read_bytes()[:40000])  # truncated pixel data
    ct = pydicom.dcmread(SAMPLE / "case_002.dcm")
    ct.Modality = "CT"
    ct.save_as(data / "not_xa.dcm")
    raw = nib.load(str(SAMPLE / "case_004.nii.gz"))
    nib.save(nib.Nifti1Image(raw.get_fdata() * 4095.0, raw.affine, raw.header), str(data / "raw_12bit.nii.gz"))
    out = root / "out"
    args = ("--config_file", CONFIG, "--dataset_dir", str(data), "--output_dir", str(out))
    return lambda: (run_bundle(NAME, *args), out, good)


def _torchrun(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path, Path]]:
    """Two sample cines and a 12-bit NIfTI copied now; the two-process run over them, to call later: its result,
    the study folder and the output folder."""
    data = root / "studies"
    data.mkdir()
    for name in ("case_000.dcm", "case_002.dcm"):
        shutil.copy(SAMPLE / name, data / name)
    raw = nib.load(str(SAMPLE / "case_004.nii.gz"))  # 12-bit values stored as is: read with --nifti_scale 4095
    nib.save(nib.Nifti1Image(raw.get_fdata() * 4095.0, raw.affine, raw.header), str(data / "raw_12bit.nii.gz"))
    out = root / "out"
    return lambda: (run_multi_gpu(NAME, data, out, "--nifti_scale", "4095"), data, out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, background) -> Prefetched:
    """The training, corrupt-folder and two-process runs, ``runs("training")``, ``runs("corrupt")`` and
    ``runs("torchrun")``, prepared here (in the test process's main thread): the first asked for runs at once, the
    others in the background (see tests/_parallel_runs.py)."""
    calls = {"training": _training(tmp_path_factory.mktemp("training"))}
    calls["corrupt"] = _corrupt(tmp_path_factory.mktemp("corrupt"))
    calls["torchrun"] = _torchrun(tmp_path_factory.mktemp("torchrun"))
    return Prefetched(background, calls)


def test_reduced_training_writes_only_to_output_dir(runs):
    result, out, digest = runs("training")
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(out / "model.pt", weights_only=True)
    VideoLesionNet().load_state_dict(state)  # the inference network loads it
    assert hashlib.sha256((BUNDLE / "models" / "model.pt").read_bytes()).hexdigest() == digest
    assert "val_auc" in result.stdout + result.stderr


def test_corrupt_dicom_reported_others_processed(runs):
    result, out, good = runs("corrupt")
    assert result.returncode != 0
    log = result.stderr + result.stdout
    assert "broken.dcm" in log and "truncated" in log
    assert "not_xa.dcm" in log and "Modality='CT'" in log
    assert "raw_12bit.nii.gz" in log and "--nifti_scale" in log
    assert sorted(line.split(":")[0] for line in result.stderr.splitlines() if line.startswith("FAILED ")) == [
        "FAILED broken.dcm",
        "FAILED not_xa.dcm",
        "FAILED raw_12bit.nii.gz",
    ]
    for src in good:
        _check_study(src, out)
    assert not list(out.glob("broken*")) and not list(out.glob("not_xa*")) and not list(out.glob("raw_12bit*"))
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".cohort"]
    assert len(_rows(out / "predictions.csv")) == 3
    with Image.open(out / "other_size" / "other_size_sigact_spatial.gif") as gif:
        assert gif.info["duration"] == 100  # the cine's own frame time


def test_torchrun_two_processes_uneven_shards_write_each_study_once(runs):
    result, data, out = runs("torchrun")
    names = ["case_000.dcm", "case_002.dcm", "raw_12bit.nii.gz"]
    assert result.returncode == 0, result.stderr[-3000:]
    for name in names:
        _check_study(data / name, out)
    rows = _rows(out / "predictions.csv")
    assert sorted(Path(r[0]).name for r in rows) == names  # both ranks gathered, no padding duplicate
    assert len(list(out.glob("*/*.gif"))) == len(names)
    labels = json.loads((SAMPLE / "labels.json").read_text())
    expected = {
        "case_000.dcm": labels["case_000"]["label"],
        "case_002.dcm": labels["case_002"]["label"],
        "raw_12bit.nii.gz": labels["case_004"]["label"],
    }
    assert {Path(r[0]).name: int(np.argmax(np.array(r[1:], dtype=float))) for r in rows} == expected


def _cine_io():
    spec = importlib.util.spec_from_file_location("_angiogram_cine_io", BUNDLE / "scripts" / "cine_io.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loader_reads_both_formats_and_rejects_non_cines(tmp_path):
    cine_io = _cine_io()
    loader = cine_io.LoadCined("image")
    dcm = loader({"image": str(SAMPLE / "case_000.dcm")})["image"]
    nii = loader({"image": str(SAMPLE / "case_004.nii.gz")})["image"]
    assert tuple(dcm.shape) == tuple(nii.shape) == (1, 16, 64, 64)
    assert 0 <= float(dcm.min()) and float(dcm.max()) <= 1 and 0 <= float(nii.min()) and float(nii.max()) <= 1
    assert abs(float(dcm.meta["frame_time_ms"]) - 1000 / 15) < 0.01
    no_angles = pydicom.dcmread(SAMPLE / "case_000.dcm")
    del no_angles.PositionerPrimaryAngle, no_angles.ImagerPixelSpacing
    no_angles.save_as(tmp_path / "no_angles.dcm")
    sparse = loader({"image": str(tmp_path / "no_angles.dcm")})["image"]
    assert math.isnan(sparse.meta["positioner_primary_angle"])  # absent tags are NaN, never None
    assert all(math.isnan(v) for v in sparse.meta["imager_pixel_spacing"])
    assert all(v is not None for v in sparse.meta.values())  # MONAI's collate cannot batch None
    affine = np.diag([1.0, 0.3, 0.3, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((1, 8, 8), np.float32), affine), str(tmp_path / "one_frame.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), affine), str(tmp_path / "image2d.nii.gz"))
    with pytest.raises(ValueError, match="at least 2 frames"):
        loader({"image": str(tmp_path / "one_frame.nii.gz")})
    with pytest.raises(ValueError, match="3D array"):
        loader({"image": str(tmp_path / "image2d.nii.gz")})
    with pytest.raises(ValueError, match="nifti_scale"):
        cine_io.LoadCined("image", nifti_scale=0)
