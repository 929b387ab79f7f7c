"""Issue #23 for the PET bundle, through ``python -m monai.bundle run``: inputs never written (also with
``output_dir`` = ``dataset_dir`` or a scan folder), staged output set replaced only when complete, manifest, resumable
reruns, failures (bad scan, full disk, killed) keep the earlier set, one run per output folder, symlinks not followed.

The runs share one small DICOM study (6 PT series of 10 x 12 x 8 voxels) and a model fitted on it in-process; the
run outputs are shared through module-scoped fixtures (about 9 bundle runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from monai_saliency.data.dicom.pet_series import write_pet_series
from monai_saliency.data.synthetic.pet_phantom import make_pet_study
from monai_saliency.engines.cohort import RunLock
from tests._parallel_runs import Prefetched
from tests.bundles.conftest import BUNDLES, load_bundle_scripts, run_bundle

NAME = "pet_morch_saliency"
SET = "morch_maps"
study_io = load_bundle_scripts(NAME, "study")
model_io = load_bundle_scripts(NAME, "model")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    """SHA-256 of every file below ``root`` (hidden run files included), by relative path."""
    return {p.relative_to(root).as_posix(): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _manifest(out: Path) -> dict:
    return json.loads((out / "run_manifest.json").read_text())


def _set_matches_manifest(out: Path) -> dict[str, str]:
    """The output set on disk is exactly the one the manifest lists (names and SHA-256)."""
    study = _manifest(out)["studies"][0]
    listed = {e["path"]: e["sha256"] for e in (study["outputs"] or (study.get("previous") or {}).get("outputs", []))}
    on_disk = {f"{SET}/{k}": v for k, v in _tree(out / SET).items()}
    assert listed and listed == on_disk
    return on_disk


def _run(data: Path, out: Path, models: Path, *args: str) -> subprocess.CompletedProcess:
    config = ("--config_file", "configs/inference.json", "--dataset_dir", str(data), "--output_dir", str(out))
    return run_bundle(NAME, *config, "--model_dir", str(models), *args)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """A failure: exit status non-zero, exactly one ``ERROR:`` line, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """``data/sub-0s/scan-0n/slice_*.dcm`` + targets.csv, and a model fitted on it in ``models/``."""
    root = tmp_path_factory.mktemp("pet_cohort")
    data = root / "data"
    st = make_pet_study("graded", shape=(10, 12, 8), n_subjects=2, n_scans=3, seed=3)
    rows = []
    for n in range(st.images.shape[0]):
        name = f"sub-{n // 3 + 1:02d}/scan-{n % 3 + 1:02d}"
        write_pet_series(st.images.as_tensor()[n], data / name, affine=st.affine, patient_id=f"P{n // 3}")
        rows.append(f"{name},{float(st.targets[n])}")
    (data / "targets.csv").write_text("scan,target\n" + "\n".join(rows) + "\n")
    torch.manual_seed(0)
    model = model_io.fit_model(study_io.load_study(data, progress=False), hidden=3)
    models = root / "models"
    model_io.save_model(model, models / "model.pt")
    return data, models


def _into_dataset(data: Path, models: Path) -> tuple[dict[str, str], dict[str, str]]:
    before = _tree(data)
    result = _run(data, data, models, "--figure_order", "first")
    assert result.returncode == 0, result.stderr[-3000:]
    return before, _set_matches_manifest(data)


def _inside_a_scan(data: Path, models: Path, root: Path) -> Callable[[], dict]:
    """A copy of the study's inputs made now, with a symlinked ``run_manifest.json`` in the scan folder that is the
    output folder; the two runs into that folder (the second a rerun), to call later."""
    copy = root / "data"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns(SET, ".*", "run_manifest.json"))
    out = copy / "sub-01" / "scan-01"
    before = _tree(copy)
    (root / "victim.json").write_text("not yours")
    (out / "run_manifest.json").symlink_to(root / "victim.json")  # replaced, never written through

    def runs() -> dict:
        first = _run(copy, out, models, "--figure_order", "None")
        assert first.returncode == 0, first.stderr[-3000:]
        outputs = _set_matches_manifest(out)
        stamps = {k: (out / k).stat().st_mtime_ns for k in outputs}
        second = _run(copy, out, models, "--figure_order", "None")
        return {"copy": copy, "out": out, "before": before, "outputs": outputs, "stamps": stamps, "second": second}

    return runs


def _symlinked(data: Path, models: Path, root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path, Path]]:
    """A copy of the study's inputs and an output folder whose output set is a symlink to a victim folder, made
    now; the run into it (with ``--debug``: the traceback instead of one line), to call later: its result, the
    output folder and the victim folder."""
    copy = root / "data"
    shutil.copytree(data, copy)
    victim = root / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    out = root / "out"
    out.mkdir()
    (out / SET).symlink_to(victim, target_is_directory=True)
    return lambda: (_run(copy, out, models, "--debug", "true"), out, victim)


@pytest.fixture(scope="module")
def runs(study, tmp_path_factory, background) -> Prefetched:
    """``runs("into_dataset")``, a first run with ``output_dir`` = ``dataset_dir`` (the earlier set of the failure
    tests below: its input tree and output set), and the runs over copies of the inputs, ``runs("inside_a_scan")``
    and ``runs("symlinked")`` (see their tests), prepared here, before any run: the first asked for runs at once,
    the others in the background (see tests/_parallel_runs.py)."""
    data, models = study
    calls = {
        "inside_a_scan": _inside_a_scan(data, models, tmp_path_factory.mktemp("inside_a_scan")),
        "symlinked": _symlinked(data, models, tmp_path_factory.mktemp("symlinked")),
        "into_dataset": lambda: _into_dataset(data, models),
    }
    return Prefetched(background, calls)


@pytest.fixture(scope="module")
def into_dataset(runs):
    """A first run with ``output_dir`` = ``dataset_dir``: the earlier set of the failure tests below."""
    return runs("into_dataset")


def test_output_dir_is_dataset_dir_inputs_unchanged_and_manifest(study, into_dataset):
    data, models = study
    before, outputs = into_dataset
    after = _tree(data)
    assert {k: after[k] for k in before} == before  # no input byte changed
    assert {"morch_first.nii.gz", "morch_exact.dcm", "morch_first_3d.png", "summary.json"} <= {
        Path(k).name for k in outputs
    }
    manifest = _manifest(data)
    entry = manifest["studies"][0]
    assert manifest["summary"] == {"ok": 1, "skipped": 0, "failed": 0} and entry["status"] == "ok"
    assert entry["error"] is None and entry["folder"] == SET
    inputs = {e["path"]: e["sha256"] for e in entry["inputs"]}
    assert inputs == {k: v for k, v in before.items()}  # every file read, with its checksum (targets.csv included)
    run = manifest["run"]
    assert run["checkpoint"]["sha256"] == _sha(models / "model.pt")
    assert run["settings"]["orders"] == ["first", "second", "exact"] and run["settings"]["figure_order"] == "first"
    assert run["versions"]["monai"] and run["versions"]["torch"] and run["versions"]["pydicom"]
    assert not (data / ".staging").exists() and not (data / ".cohort.lock").exists()


def test_output_dir_inside_a_scan_folder_rerun_skips_and_outputs_are_not_scans(runs):
    """Outputs written into a scan's own series folder are not read as slices of it on the rerun (today's reader
    took the earlier Parametric Maps as slices); the rerun of a complete, unchanged set is skipped."""
    run = runs("inside_a_scan")
    copy, out, before, outputs, second = run["copy"], run["out"], run["before"], run["outputs"], run["second"]
    assert second.returncode == 0, second.stderr[-3000:]
    assert "skipped" in second.stdout and _manifest(out)["summary"]["skipped"] == 1
    assert {k: (out / k).stat().st_mtime_ns for k in outputs} == run["stamps"]  # not recomputed
    after = _tree(copy)
    assert {k: after[k] for k in before} == before
    victim = copy.parent / "victim.json"
    assert victim.read_text() == "not yours" and not (out / "run_manifest.json").is_symlink()
    assert {e["path"] for e in _manifest(out)["studies"][0]["inputs"]} == set(before)


def test_rerun_with_a_bad_scan_keeps_the_earlier_set(study, into_dataset, tmp_path):
    data, models = study
    _, outputs = into_dataset
    bad = tmp_path / "bad_scan"
    shutil.copytree(data / "sub-02" / "scan-03", bad)
    slices = sorted(bad.iterdir())
    slices[3].write_bytes(slices[3].read_bytes()[:400])
    targets = tmp_path / "targets_bad.csv"
    targets.write_text((data / "targets.csv").read_text() + f"{bad},1\n")
    manifest = (data / "run_manifest.json").read_bytes()
    result = _run(data, data, models, "--targets_file", str(targets))
    assert slices[3].name in _one_error_line(result)
    assert _set_matches_manifest(data) == outputs and (data / "run_manifest.json").read_bytes() == manifest


def test_full_disk_during_the_rerun_keeps_the_earlier_set_and_no_temporary_file(study, into_dataset):
    """The file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes a write fail with EFBIG, as a full disk would."""
    data, models = study
    _, outputs = into_dataset

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--bundle_root", "."]
    cmd += ["--dataset_dir", str(data), "--output_dir", str(data), "--model_dir", str(models), "--overwrite", "true"]
    result = subprocess.run(
        cmd,
        cwd=BUNDLES / NAME,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=small_files,
        check=False,
    )
    assert "File too large" in _one_error_line(result)
    assert _set_matches_manifest(data) == outputs
    leftovers = [p for p in data.rglob("*") if ".tmp" in p.name or ".staging" in p.parts]
    assert not leftovers and not (data / ".cohort.lock").exists()


def test_second_run_refuses_while_the_first_holds_the_lock(study, into_dataset):
    data, models = study
    _, outputs = into_dataset
    lock = RunLock(data, "another-run").acquire()  # a live run: this test process
    try:
        result = _run(data, data, models, "--overwrite", "true")
    finally:
        lock.release()
    line = _one_error_line(result)
    assert "another run" in line and f"pid {os.getpid()}" in line
    assert _set_matches_manifest(data) == outputs


def test_killed_rerun_keeps_the_earlier_set_and_the_next_run_takes_over(study, into_dataset):
    data, models = study
    _, outputs = into_dataset
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--bundle_root", "."]
    cmd += ["--dataset_dir", str(data), "--output_dir", str(data), "--model_dir", str(models)]
    cmd += ["--orders", "['first']", "--figure_order", "first"]  # another output set than the earlier one
    proc = subprocess.Popen(cmd, cwd=BUNDLES / NAME, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not any(p.is_file() for p in (data / ".staging").rglob("*")) and proc.poll() is None:  # writing began
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _set_matches_manifest(data) == outputs  # the earlier set, whole
    stale = json.loads((data / ".cohort.lock").read_text())
    assert stale["pid"] == proc.pid and list((data / ".staging").iterdir())  # what the killed run left

    result = _run(data, data, models, "--overwrite", "true", "--orders", "['first']", "--figure_order", "first")
    assert result.returncode == 0, result.stderr[-3000:]
    new = _set_matches_manifest(data)
    assert {Path(k).name for k in new} == {"morch_first.nii.gz", "morch_first.dcm", "morch_first_3d.png"} | {
        "morch_first_overlay.dcm",
        "summary.csv",
        "summary.json",
    }
    assert not (data / ".staging").exists() and not (data / ".cohort.lock").exists()


def test_symlinked_output_set_is_refused_and_not_followed(runs):
    result, out, victim = runs("symlinked")
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert f"UnsafePathError: {out / SET} is a symlink" in result.stderr
    assert [p.name for p in victim.iterdir()] == ["keep.txt"] and sorted(p.name for p in out.iterdir()) == [SET]


def test_output_set_folder_that_is_not_an_earlier_output_is_refused(study, tmp_path, capsys):
    """A folder named like the output set that holds an input, or that no earlier run recorded, is never replaced."""
    run_io = load_bundle_scripts(NAME, "run")
    data, _ = study
    copy = tmp_path / "data"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns(SET, ".*", "run_manifest.json"))
    (copy / "sub-01").rename(copy / SET)  # a subject folder named like the output set
    (copy / "targets.csv").write_text((copy / "targets.csv").read_text().replace("sub-01/", f"{SET}/"))
    study = study_io.load_study(copy, progress=False)
    with pytest.raises(FileExistsError, match="holds the input"):
        run_io.StudyRun(copy, copy, debug=True).start(study)
    (tmp_path / "out" / SET).mkdir(parents=True)
    with pytest.raises(SystemExit) as info:  # without debug: one line, exit status 2
        run_io.StudyRun(copy, tmp_path / "out").start(study)
    assert info.value.code == 2 and "no earlier run" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [SET] and not list(
        (tmp_path / "out" / SET).iterdir()
    )
