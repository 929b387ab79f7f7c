from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests._parallel_runs import Prefetched, session_run
from tests.bundles.conftest import metadata_offline, run_bundle
from tests.engines.test_cohort_report import parse_report

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "gradient_saliency_3d"
CONFIG = "configs/inference.json"
MULTI = "['configs/inference.json','configs/multi_gpu_inference.json']"


def _rows(path):
    """predictions.csv without its header and label column: ``[study, p0, p1, ...]`` per row."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "study" and rows[0][-1] == "label"
    return [r[:-1] for r in rows[1:]]


def _check_maps(inputs, out_dir, method="vanillagrad"):
    for src in inputs:
        stem = src.name[: -len(".nii.gz")]
        written = nib.load(str(out_dir / stem / f"{stem}_{method}.nii.gz"))  # one folder per study
        original = nib.load(str(src))
        assert written.shape == original.shape
        np.testing.assert_allclose(written.affine, original.affine, atol=1e-5)
        values = written.get_fdata()
        assert np.isfinite(values).all() and values.min() == 0 and np.isclose(values.max(), 1)


def _sample(root: Path) -> tuple[subprocess.CompletedProcess, Path]:
    out = root / "out"
    return run_bundle("gradient_saliency_3d", "--config_file", CONFIG, "--output_dir", str(out)), out


def _process(root: Path) -> tuple[subprocess.CompletedProcess, Path]:
    out = root / "out"
    args = ("--config_file", CONFIG, "--output_dir", str(out), "--write_process", "true")
    return run_bundle("gradient_saliency_3d", *args), out


def _corrupt(root: Path) -> tuple[subprocess.CompletedProcess, Path, list[Path]]:
    """Two good studies and a truncated one; the run's result, output folder and good studies."""
    data = root / "studies"
    data.mkdir()
    good = []
    for name in ("case_000.nii.gz", "case_001.nii.gz"):
        shutil.copy(BUNDLE / "sample_data" / name, data / name)
        good.append(data / name)
    (data / "broken.nii.gz").write_bytes((BUNDLE / "sample_data" / "case_002.nii.gz").read_bytes()[:3000])
    out = root / "out"
    result = run_bundle(
        "gradient_saliency_3d", "--config_file", CONFIG, "--dataset_dir", str(data), "--output_dir", str(out)
    )
    return result, out, good


def _overrides(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path, Path]]:
    """A three-class DenseNet of the user's (``--network_def``, ``--ckpt_path``, ``--target_layer``) and one study,
    written now (torch's global generator is seeded here, in the test process's main thread); the run of the bundle
    with them, to call later: its result, the study folder and the output folder."""
    import torch
    from monai.networks.nets import DenseNet

    spec = {
        "_target_": "DenseNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 3,
        "init_features": 4,
        "growth_rate": 4,
        "block_config": [1, 1],
        "bn_size": 1,
    }
    torch.manual_seed(0)
    net = DenseNet(**{k: v for k, v in spec.items() if k != "_target_"})
    torch.save(net.state_dict(), root / "mine.pt")
    data = root / "studies"
    data.mkdir()
    shutil.copy(BUNDLE / "sample_data" / "case_001.nii.gz", data / "case_001.nii.gz")
    out = root / "out"
    args = ("--network_def", repr(spec), "--ckpt_path", str(root / "mine.pt"), "--target_layer", "features.denseblock2")
    args += ("--dataset_dir", str(data), "--output_dir", str(out))
    return lambda: (run_bundle("gradient_saliency_3d", "--config_file", CONFIG, *args), data, out)


def _torchrun(root: Path) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """Three samples, the two-process run over them: its result, the study folder and the output folder."""
    data = root / "studies"
    data.mkdir()
    for name in ("case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"):
        shutil.copy(BUNDLE / "sample_data" / name, data / name)
    out = root / "out"
    args = ("--config_file", MULTI, "--dataset_dir", str(data), "--output_dir", str(out))
    return run_bundle("gradient_saliency_3d", *args, torchrun_procs=2), data, out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, background) -> Prefetched:
    """The module's independent bundle runs, ``runs("sample")``, ``runs("corrupt")``, ``runs("torchrun")`` and
    ``runs("overrides")``: the first asked for runs at once, the others in the background (see
    tests/_parallel_runs.py)."""
    sample, corrupt = tmp_path_factory.mktemp("sample"), tmp_path_factory.mktemp("corrupt")
    torchrun, process = tmp_path_factory.mktemp("torchrun"), tmp_path_factory.mktemp("process")
    calls = {
        "sample": lambda: _sample(sample),
        "process": lambda: _process(process),
        "corrupt": lambda: _corrupt(corrupt),
        "torchrun": lambda: _torchrun(torchrun),
        "overrides": _overrides(tmp_path_factory.mktemp("overrides")),
    }
    return Prefetched(background, calls)


def test_runs_on_its_sample(runs):
    result, out = runs("sample")
    assert result.returncode == 0, result.stderr[-3000:]
    samples = sorted((BUNDLE / "sample_data").glob("*.nii.gz"))
    for method in ("vanillagrad", "smoothgrad", "integratedgradients", "forgrad", "structured", "gradcam"):
        _check_maps(samples, out, method)
    labels = json.loads((BUNDLE / "sample_data" / "labels.json").read_text())
    rows = _rows(out / "predictions.csv")
    assert len(rows) == len(samples)
    for row in rows:
        probs = np.array(row[1:], dtype=float)
        assert np.isclose(probs.sum(), 1, atol=1e-5)
        name = row[0].split("/")[-1][: -len(".nii.gz")]
        assert probs.argmax() == labels[name]
    assert not list((BUNDLE / "sample_data").glob("*vanillagrad*"))  # nothing written beside the inputs
    # issue #22: a PNG quick-look per study (three orthogonal slices, the first map blended), shown by report.html
    page = parse_report((out / "report.html").read_text(encoding="utf-8"))
    assert len(page.rows) == len(samples)
    for src, row in zip(samples, page.rows):
        stem = src.name[: -len(".nii.gz")]
        with Image.open(out / stem / f"{stem}_quicklook.png") as png:
            assert png.format == "PNG" and png.mode == "RGB" and min(png.size) >= 160
            pixels = np.asarray(png)
        assert (np.ptp(pixels.reshape(-1, 3), axis=0) > 50).all()  # a coloured map over grey, not a blank picture
        assert row["imgs"] == [f"{stem}/{stem}_quicklook.png"]


def test_writer_process_writes_the_same_files(runs):
    """``--write_process true``: the writing stage (quick-look, ``Invertd`` to the input grid, scaling, NIfTI) in a
    forked child gives the default run's files byte for byte (a pickled copy of the stage could not invert: every
    study failed before the child was forked)."""
    (result, out), (_, reference) = runs("process"), runs("sample")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the writers run in a child process" in result.stdout + result.stderr
    files = sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*") if p.suffix in (".gz", ".png"))
    assert len(files) == 4 * 7  # six maps and a quick-look per study
    assert files == sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".gz", ".png"))
    for rel in [*files, "predictions.csv"]:
        assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel


session_run("metadata.gradient_saliency_3d", __name__)(metadata_offline("gradient_saliency_3d"))


def test_metadata_verifies_offline(session_runs):
    """``python -m monai.bundle verify_metadata`` with the network made unreachable, against a local copy of the
    schema (verify_metadata may re-download it when absent): conftest.py's verify_metadata_offline, a session run."""
    result = session_runs("metadata.gradient_saliency_3d")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verified with no error" in result.stdout + result.stderr


def test_corrupt_study_reported_others_processed(runs):
    result, out, good = runs("corrupt")
    assert result.returncode != 0
    assert "broken.nii.gz" in result.stderr + result.stdout
    _check_maps(good, out)
    assert not list(out.glob("broken*"))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".cohort"]  # records; no temp files


def test_torchrun_two_processes_uneven_shards_write_each_study_once(runs):
    result, data, out = runs("torchrun")
    names = ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    assert result.returncode == 0, result.stderr[-3000:]
    _check_maps([data / n for n in names], out)
    rows = _rows(out / "predictions.csv")
    assert sorted(r[0].split("/")[-1] for r in rows) == names  # gathered from both ranks, no padding duplicate


def test_network_and_target_layer_are_overrides(runs):
    result, data, out = runs("overrides")
    assert result.returncode == 0, result.stderr[-3000:]
    _check_maps([data / "case_001.nii.gz"], out, "gradcam")
    assert len(_rows(out / "predictions.csv")[0]) == 1 + 3  # three classes from the overridden network
