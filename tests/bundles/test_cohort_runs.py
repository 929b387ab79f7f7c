"""Issue #23, properties 1-7 and usability, through ``python -m monai.bundle run`` of the angiogram bundle (DICOM and
NIfTI inputs; the gradient_saliency_3d bundle runs the same cohort layer, see test_gradient_saliency_3d.py).

One cohort is run four times (module fixture), with ``output_dir`` == ``dataset_dir``:

1. first run: odd names, bad studies at loading (a truncated DICOM; a NIfTI of NaNs, refused by the
   loader's finite check; failures at inference and writing are tested in tests/engines/test_cohort_evaluator.py), batch 3;
2. rerun over a stale lock and a crashed run's staging leftovers: the complete studies are skipped;
3. ``--overwrite true`` with obstacles: two output folders replaced by symlinks (to an outside folder, to an input
   file) and one input turned bad: those studies fail alone, the earlier outputs of the bad one are kept;
4. a run while another live run holds the lock: refused, nothing written (over a copy of the folder as run 2 left
   it, at the same time as run 3: the two runs are independent).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests._parallel_runs import Prefetched, run_together
from tests.bundles.conftest import run_bundle, run_multi_gpu

NAME = "angiogram_signature_activation"
BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / NAME
SAMPLE = BUNDLE / "sample_data"
CONFIG = "configs/inference.json"
ODD = "sp ace/é, ü.nii.gz"
GOOD = {  # study id -> output folder (the documented layout rule)
    "a.dcm": "a_dcm",
    "a.nii.gz": "a_nii_gz",
    "f1/IM0001": "f1/IM0001_file",
    "f2/IM0001": "f2/IM0001_file",
    ODD: "sp ace/é, ü",
}
BAD = ("broken.dcm", "nan.nii.gz")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    """Every regular file below ``root`` (not through symlinks) -> its SHA-256; symlinks -> their target."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            if p.is_symlink():
                out[p.relative_to(root).as_posix()] = "-> " + os.readlink(p)
            elif p.is_file():
                out[p.relative_to(root).as_posix()] = _sha(p)
    return out


def _nan_like(src: Path, dst: Path) -> None:
    img = nib.load(str(src))
    # the source's header keeps the cine marker: the study is refused for its values, not for its kind
    nib.save(nib.Nifti1Image(np.full(img.shape, np.nan, np.float32), img.affine, img.header), str(dst))


def _run(data: Path, *args: str, warnings: bool = False):
    return run_bundle(
        NAME, "--config_file", CONFIG, "--dataset_dir", str(data), "--output_dir", str(data), *args, warnings=warnings
    )


def _manifest(data: Path) -> dict:
    path = data / "run_manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {"studies": [], "run": {}}  # {} : the test fails itself


def _statuses(manifest: dict) -> dict[str, str]:
    return {s["study"]: s["status"] for s in manifest["studies"]}


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(proc.stdout)


def _cohort(root: Path) -> dict:
    """The four runs of the module docstring below ``root``: their results and the folder's state after each."""
    data = root / "data"
    for sub in ("f1", "f2", "sp ace"):
        (data / sub).mkdir(parents=True)
    shutil.copy(SAMPLE / "case_000.dcm", data / "f1" / "IM0001")  # DICOM by content, same name in two folders
    shutil.copy(SAMPLE / "case_001.dcm", data / "f2" / "IM0001")
    shutil.copy(SAMPLE / "case_002.dcm", data / "a.dcm")  # a.dcm + a.nii.gz share a stem
    shutil.copy(SAMPLE / "case_004.nii.gz", data / "a.nii.gz")
    shutil.copy(SAMPLE / "case_004.nii.gz", data / ODD)
    (data / "broken.dcm").write_bytes((SAMPLE / "case_003.dcm").read_bytes()[:40000])  # fails at loading
    _nan_like(SAMPLE / "case_004.nii.gz", data / "nan.nii.gz")  # fails at loading (non-finite)
    (data / "notes.txt").write_text("not a study")
    inputs = _tree(data)
    runs = {"inputs": inputs, "data": data, "root": root}

    runs["first"] = _run(data, "--dataloader#batch_size", "3", warnings=True)
    runs["after_first"] = _tree(data)

    (data / ".cohort.lock").write_text(
        json.dumps({"run_id": "crashed", "pid": _dead_pid(), "host": socket.gethostname(), "started": 0})
    )
    leftover = data / ".staging" / "crashed" / "study-x"
    leftover.mkdir(parents=True)
    (leftover / "partial.nii.gz").write_bytes(b"partial")
    runs["rerun"] = _run(data)
    runs["after_rerun"] = _tree(data)
    runs["manifest_rerun"] = _manifest(data)
    runs["predictions_rerun"] = (data / "predictions.csv").read_text() if (data / "predictions.csv").is_file() else ""

    locked = root / "locked"  # run 4 runs on a copy of the folder as the rerun left it, at the same time as run 3
    shutil.copytree(data, locked, symlinks=True)
    lock = {"run_id": "live", "pid": os.getpid(), "host": socket.gethostname(), "started": 0}
    (locked / ".cohort.lock").write_text(json.dumps(lock))
    before = _tree(locked)

    outside = root / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not yours")
    shutil.rmtree(data / "a_dcm", ignore_errors=True)
    os.symlink(outside, data / "a_dcm")  # a symlinked folder inside output_dir: never written through
    shutil.rmtree(data / "f1" / "IM0001_file", ignore_errors=True)
    os.symlink(data / "f2" / "IM0001", data / "f1" / "IM0001_file")  # a symlink to an input file
    _nan_like(SAMPLE / "case_004.nii.gz", data / ODD)  # the study turns bad: its earlier outputs must stay
    runs["odd_input"] = _sha(data / ODD)
    runs["outside"] = _tree(outside)
    runs["overwrite"], runs["locked"] = run_together(lambda: _run(data, "--overwrite", "true"), lambda: _run(locked))
    runs["after_overwrite"] = _tree(data)
    runs["lock_refused_nothing_written"] = _tree(locked) == before
    return runs


def _torchrun(root: Path) -> dict:
    """Two ranks (gloo on CPU), ``output_dir`` inside ``dataset_dir``; one rank gets a NaN study."""
    data = root / "data"
    data.mkdir()
    for name in ("case_000.dcm", "case_002.dcm"):
        shutil.copy(SAMPLE / name, data / name)
    _nan_like(SAMPLE / "case_004.nii.gz", data / "nan.nii.gz")
    inputs = _tree(data)
    out = data / "out"
    return {"result": run_multi_gpu(NAME, data, out), "data": data, "out": out, "inputs": inputs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, background) -> Prefetched:
    """``runs("cohort")``, the four runs, and ``runs("torchrun")``: the first asked for runs at once, the other in
    the background (see tests/_parallel_runs.py)."""
    return Prefetched(
        background,
        {
            "cohort": lambda: _cohort(tmp_path_factory.mktemp("cohort")),
            "torchrun": lambda: _torchrun(tmp_path_factory.mktemp("torchrun")),
        },
    )


@pytest.fixture
def cohort(runs) -> dict:
    return runs("cohort")


def test_first_run_bad_studies_cost_only_themselves(cohort):
    result = cohort["first"]
    log = result.stdout + result.stderr
    assert result.returncode != 0
    failed = sorted(line for line in result.stderr.splitlines() if line.startswith("FAILED "))
    assert [line.split(":")[0] for line in failed] == ["FAILED broken.dcm", "FAILED nan.nii.gz"], log[-3000:]
    assert "non-finite" in failed[1] and "Traceback" not in log  # one line each, no traceback without --debug
    assert "5 succeeded, 0 skipped, 2 failed" in result.stdout
    written = cohort["after_first"]
    for study, folder in GOOD.items():
        stem = Path(study).name.split(".")[0]
        files = sorted(k[len(folder) + 1 :] for k in written if k.startswith(folder + "/"))
        expected = {f"{stem}_{m}.nii.gz" for m in ("sigact_spatial", "sigact_frames", "gradcam")}
        expected |= {f"{stem}_sigact_spatial.gif", f"{stem}_sigact_spatial_overlay.dcm"}  # GIF + Secondary Capture
        if not study.endswith(".nii.gz"):
            expected.add(f"{stem}_sigact_spatial.dcm")  # DICOM by content too (IM0001)
        assert set(files) == expected, (study, files)
    assert not [k for k in written if k.startswith(("broken", "nan")) and k not in cohort["inputs"]]
    assert not [k for k in written if k.startswith((".staging", ".cohort.lock"))]


def test_repeated_warnings_appear_once(cohort):
    log = cohort["first"].stdout + cohort["first"].stderr
    assert log.count("nvImageCodec is not available") <= 1
    assert log.count("NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register") <= 1


def test_predictions_csv(cohort):
    rows = list(csv.reader(io.StringIO(cohort["predictions_rerun"], newline="")))
    assert rows[0] == ["study", "prob_0", "prob_1", "label"]
    assert [r[0] for r in rows[1:]] == sorted(GOOD)  # relative paths, sorted, the comma survives (quoting)
    for r in rows[1:]:
        probs = np.array(r[1:3], dtype=float)
        assert np.isclose(probs.sum(), 1, atol=1e-6) and int(r[3]) == int(probs.argmax())


def test_manifest_records_inputs_outputs_checksums_and_run(cohort):
    data = cohort["data"]
    manifest = cohort["manifest_rerun"]
    assert _statuses(manifest) == {**dict.fromkeys(GOOD, "skipped"), **dict.fromkeys(BAD, "failed")}
    for s in manifest["studies"]:
        assert s["input"] == str(data / s["study"])
        if s["status"] == "failed":
            assert s["error"] and s["outputs"] == []
            continue
        assert s["folder"] == GOOD[s["study"]] and len(s["outputs"]) >= 4
        for out in s["outputs"]:
            assert out["path"].startswith(s["folder"] + "/")
            assert cohort["after_rerun"][out["path"]] == out["sha256"]
    run = manifest["run"]
    assert run["checkpoint"]["sha256"] == _sha(BUNDLE / "models" / "model.pt")
    assert {"torch", "monai", "monai_saliency", "python"} <= set(run["versions"])
    assert run["settings"]["target_layer"] == "features.stage3" and run["dataset_dir"] == str(data)
    assert manifest["summary"] == {"ok": 0, "skipped": 5, "failed": 2, "not processed": 0}


def test_inputs_never_written_and_outputs_not_taken_as_studies(cohort):
    inputs = cohort["inputs"]
    for tree in ("after_first", "after_rerun"):
        assert {k: v for k, v in cohort[tree].items() if k in inputs} == inputs
    after = cohort["after_overwrite"]
    assert {k: after[k] for k in inputs if k != ODD} == {k: v for k, v in inputs.items() if k != ODD}
    assert after[ODD] == cohort["odd_input"]
    studies = {s["study"] for s in cohort["manifest_rerun"]["studies"]}
    assert studies == set(GOOD) | set(BAD)  # the first run's outputs (in the dataset folder) are not studies


def test_rerun_skips_complete_studies_takes_over_stale_lock_cleans_leftovers(cohort):
    result, data = cohort["rerun"], cohort["data"]
    assert result.returncode != 0  # the two bad studies fail again
    assert "0 succeeded, 5 skipped, 2 failed" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    first = cohort["after_first"]
    run_level = (".", "run_manifest.json", "predictions.csv", "report.html")
    assert {k: v for k, v in cohort["after_rerun"].items() if not k.startswith(run_level)} == {
        k: v for k, v in first.items() if not k.startswith(run_level)
    }  # every output byte kept
    assert not (data / ".staging").exists() and not (data / ".cohort.lock").exists()


def test_overwrite_with_obstacles_refuses_symlinks_and_keeps_earlier_outputs(cohort):
    result, data = cohort["overwrite"], cohort["data"]
    log = result.stdout + result.stderr
    assert result.returncode != 0
    failed = {line.split(":")[0][len("FAILED ") :]: line for line in result.stderr.splitlines() if "FAILED " in line}
    assert set(failed) == {"a.dcm", "f1/IM0001", ODD, *BAD}, log[-3000:]
    assert "symlink" in failed["a.dcm"] and "symlink" in failed["f1/IM0001"]
    assert "2 succeeded, 0 skipped, 5 failed" in result.stdout
    assert _tree(cohort["root"] / "outside") == cohort["outside"]  # nothing written through the folder link
    assert os.readlink(data / "f1" / "IM0001_file") == str(data / "f2" / "IM0001")
    assert _sha(data / "f2" / "IM0001") == cohort["inputs"]["f2/IM0001"]
    after, before = cohort["after_overwrite"], cohort["after_first"]
    odd = [k for k in before if k.startswith("sp ace/é, ü/")]
    assert odd and all(after[k] == before[k] for k in odd)  # the failed rerun kept the earlier outputs
    manifest = _manifest(data)
    entry = next(s for s in manifest["studies"] if s["study"] == ODD)
    assert entry["status"] == "failed" and entry["previous"]["folder"] == GOOD[ODD]
    recomputed = {s["study"] for s in manifest["studies"] if s["computed_by_run"] == manifest["run"]["run_id"]}
    assert recomputed == {"a.nii.gz", "f2/IM0001"}


def test_second_concurrent_run_refuses(cohort):
    result = cohort["locked"]
    assert result.returncode != 0
    assert result.stderr.count("ERROR: LockError: another run") == 1 and f"pid {os.getpid()}" in result.stderr
    assert "Traceback" not in result.stderr  # one clear line
    assert cohort["lock_refused_nothing_written"]


def test_torchrun_failure_on_one_rank_loses_nothing(runs):
    """Two ranks (gloo on CPU), ``output_dir`` inside ``dataset_dir``; one rank gets a NaN study."""
    run = runs("torchrun")
    result, data, out, inputs = run["result"], run["data"], run["out"], run["inputs"]
    assert result.returncode != 0
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1 and failed[0].startswith("FAILED nan.nii.gz: ") and "non-finite" in failed[0], (
        result.stderr[-3000:]
    )
    with open(out / "predictions.csv", newline="") as f:
        assert [r["study"] for r in csv.DictReader(f)] == ["case_000.dcm", "case_002.dcm"]
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        "case_000",
        "case_002",
        "predictions.csv",
        "report.html",
        "run_manifest.json",
    }
    assert {k: v for k, v in _tree(data).items() if not k.startswith("out/")} == inputs
    assert _statuses(_manifest(out)) == {"case_000.dcm": "ok", "case_002.dcm": "ok", "nan.nii.gz": "failed"}
