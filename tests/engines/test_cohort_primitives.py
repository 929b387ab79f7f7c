"""The cohort layer's primitives (monai_saliency.engines.cohort): layout, lock, staging, records, messages, and the
writers' ``folder_key``. The bundle runs that use them are in tests/bundles/test_cohort_runs.py."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.data import MetaTensor

from monai_saliency.data.atomic import study_stem
from monai_saliency.engines.cohort import (
    LayoutError,
    LockError,
    RecordStore,
    RunLock,
    Staging,
    UnsafePathError,
    atomic_write_text,
    discover_studies,
    is_complete,
    one_line,
    plan_layout,
    predictions_csv,
    safe_makedirs,
)
from monai_saliency.engines.cohort.manifest import file_entries
from monai_saliency.engines.cohort.messages import OncePerMessage
from monai_saliency.transforms import SaveMapsd

DICOM = (
    Path(__file__).resolve().parents[2] / "bundles" / "angiogram_signature_activation" / "sample_data" / "case_000.dcm"
)


def _folders(ids):
    return {s.study_id: s.folder for s in plan_layout([(i, "/x/" + i) for i in ids])}


def test_study_stem():
    assert [study_stem(n) for n in ("a.nii.gz", "b.DCM", "IM0001", "1.2.840.5", ".nii", "c.nii")] == [
        "a",
        "b",
        "IM0001",
        "1.2.840.5",
        ".nii",
        "c",
    ]


def test_layout_rule():
    assert _folders(["a.dcm", "a.nii.gz", "b.nii", "f1/IM0001", "f2/IM0001", "x.nii.gz", "x/y.nii", "A.nii"]) == {
        "a.dcm": "a_dcm",  # same stem in one folder
        "a.nii.gz": "a_nii_gz",
        "A.nii": "A_nii",  # case-insensitive file systems
        "b.nii": "b",
        "f1/IM0001": "f1/IM0001_file",  # a DICOM without suffix never takes its own path
        "f2/IM0001": "f2/IM0001_file",
        "x.nii.gz": "x_nii_gz",  # x/ holds another study
        "x/y.nii": "x/y",
    }
    assert _folders(["predictions.csv"])["predictions.csv"] == "predictions.csv_file"  # a run-level name
    kept = plan_layout([("a.nii", "/x/a.nii"), ("a.dcm", "/x/a.dcm")], recorded={"a.nii": "a"})
    assert {s.study_id: s.folder for s in kept} == {"a.nii": "a", "a.dcm": "a_dcm"}  # an earlier folder is kept
    with pytest.raises(LayoutError, match="a_nii_gz"):
        _folders(["a.dcm", "a.nii.gz", "a_nii_gz.nii"])


def test_discover(tmp_path):
    data = tmp_path / "d"
    (data / "sub").mkdir(parents=True)
    shutil.copy(DICOM, data / "sub" / "IM0001")
    for name in ("a.nii.gz", "sub/b.nii", ".hidden.nii", "notes.txt", "fake.dcm"):
        (data / name).write_bytes(b"x")
    (data / "out" / "old").mkdir(parents=True)
    (data / "out" / "old" / "map.nii.gz").write_bytes(b"x")
    (data / "prev").mkdir()
    (data / "prev" / "p_map.nii.gz").write_bytes(b"x")
    ids = [i for i, _ in discover_studies(data, data / "out")]
    assert ids == ["a.nii.gz", "prev/p_map.nii.gz", "sub/IM0001", "sub/b.nii"]
    assert [i for i, _ in discover_studies(data, data, kinds=["nifti"], exclude_folders=["prev"])] == [
        "a.nii.gz",
        "out/old/map.nii.gz",
        "sub/b.nii",
    ]
    inside_output = [i for i, _ in discover_studies(data, tmp_path, exclude_folders=["d/prev", "d/out"])]
    assert inside_output == ["a.nii.gz", "sub/IM0001", "sub/b.nii"]  # dataset_dir inside output_dir
    with pytest.raises(FileNotFoundError):
        discover_studies(tmp_path / "missing")


def _dead_pid() -> int:
    return int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_lock(tmp_path):
    first = RunLock(tmp_path, "run1").acquire()
    assert first.held and json.loads((tmp_path / ".cohort.lock").read_text())["run_id"] == "run1"
    assert not RunLock(tmp_path, "run1").acquire().held  # the ranks of one run join it
    with pytest.raises(LockError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path, "run2").acquire()
    first.release()
    assert not (tmp_path / ".cohort.lock").exists()
    stale = {"run_id": "dead", "pid": _dead_pid(), "host": socket.gethostname(), "started": 0}
    (tmp_path / ".cohort.lock").write_text(json.dumps(stale))
    assert RunLock(tmp_path, "run3").acquire().held  # a crashed run's lock is taken over
    (tmp_path / ".cohort.lock").unlink()
    os.symlink(tmp_path / "elsewhere", tmp_path / ".cohort.lock")
    with pytest.raises(LockError, match="symlink"):
        RunLock(tmp_path, "run4").acquire()


def test_staging_commit_replace_and_symlinks(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    staging = Staging(out, "r1")
    (out / ".staging" / "crashed").mkdir(parents=True)
    assert staging.clean_leftovers() == ["crashed"]
    for content in ("old", "new"):
        folder = staging.new_folder()
        (folder / "m.txt").write_text(content)
        staging.commit(folder, "s/a")
    assert [p.read_text() for p in (out / "s" / "a").iterdir()] == ["new"]  # the earlier set replaced whole
    os.symlink(outside, out / "link")
    folder = staging.new_folder()
    (folder / "m.txt").write_text("x")
    with pytest.raises(UnsafePathError, match="symlink"):
        staging.commit(folder, "link")
    with pytest.raises(UnsafePathError, match="symlink"):
        staging.commit(folder, "link/below")
    with pytest.raises(UnsafePathError):
        safe_makedirs(out, "../escape")
    assert list(outside.iterdir()) == []
    staging.discard(folder)
    staging.finish()
    assert not (out / ".staging").exists()


def test_records_checksums_and_run_files(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "m.bin").write_bytes(b"abc")
    entries = file_entries(tmp_path, tmp_path / "s")
    assert entries == [
        {"path": "s/m.bin", "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "bytes": 3}
    ]
    store = RecordStore(tmp_path)
    store.write({"study": "a, b/é.nii", "status": "ok", "outputs": entries, "folder": "s"})
    record = store.read_all()["a, b/é.nii"]
    assert is_complete(record, tmp_path)
    (tmp_path / "s" / "m.bin").write_bytes(b"abd")  # same size, other bytes
    assert not is_complete(record, tmp_path)
    text = predictions_csv([("b", [0.25, 0.75], 1), ("a, b/é.nii", [0.5, 0.5], 0)], None)
    assert text.splitlines() == ["study,prob_0,prob_1,label", '"a, b/é.nii",0.5,0.5,0', "b,0.25,0.75,1"]
    target = tmp_path / "target.txt"
    target.write_text("keep")
    os.symlink(target, tmp_path / "predictions.csv")
    atomic_write_text(tmp_path / "predictions.csv", text)  # replaces the link, never writes through it
    assert target.read_text() == "keep" and not (tmp_path / "predictions.csv").is_symlink()


def test_one_line_and_once_filter():
    try:
        try:
            raise ValueError("bad\nvalue")
        except ValueError as inner:
            raise RuntimeError("applying transform") from inner
    except RuntimeError as exc:
        assert one_line(exc) == "ValueError: bad value"
    flt = OncePerMessage()
    record = logging.LogRecord("m", logging.WARNING, "f", 1, "nvImageCodec is not available", None, None)
    assert flt.filter(record) and not flt.filter(record)
    error = logging.LogRecord("m", logging.ERROR, "f", 1, "study x failed", None, None)
    assert flt.filter(error) and flt.filter(error)  # errors are never dropped


def test_save_maps_folder_key(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    img = MetaTensor(torch.rand(1, 4, 5, 6), meta={"filename_or_obj": "/in/case 1.nii.gz"})
    SaveMapsd(["sal"], output_dir=tmp_path / "unused", folder_key="dir")({"sal": img, "dir": str(folder)})
    assert [p.name for p in folder.iterdir()] == ["case 1_sal.nii.gz"] and not (tmp_path / "unused").exists()
    (folder / "case 1_sal.nii.gz").unlink()
    os.symlink(tmp_path / "elsewhere.nii.gz", folder / "case 1_sal.nii.gz")
    with pytest.raises(FileExistsError, match="symlink"):
        SaveMapsd(["sal"], output_dir=tmp_path, folder_key="dir")({"sal": img, "dir": str(folder)})
    assert not (tmp_path / "elsewhere.nii.gz").exists()


def test_hidden_run_folders_are_not_followed(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    os.symlink(outside, out / ".cohort")
    with pytest.raises(UnsafePathError, match="symlink"):
        RecordStore(out).write({"study": "a.nii", "status": "ok"})
    os.symlink(outside, out / ".staging")
    with pytest.raises(UnsafePathError, match="symlink"):
        Staging(out, "r1").new_folder()
    os.symlink(outside / "x", out / f".cohort.lock.{os.getpid()}.tmp")  # a planted link where the lock is prepared
    assert RunLock(out, "r1").acquire().held
    assert list(outside.iterdir()) == []


def test_safe_makedirs_tolerates_a_folder_created_meanwhile(tmp_path, monkeypatch):
    """Two ranks of one torchrun create ``.staging`` at once: the one that loses the race between its ``lstat`` and
    its ``mkdir`` must check the new folder like any existing one, not fail the study with FileExistsError."""
    from monai_saliency.engines.cohort import staging

    real_lstat, raced = os.lstat, []

    def lstat_then_other_rank_creates(path, *args, **kwargs):
        if Path(path).name == ".staging" and not raced:
            raced.append(path)
            os.mkdir(path)  # the other rank wins the race right after our lstat
            raise FileNotFoundError(path)
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(staging.os, "lstat", lstat_then_other_rank_creates)
    assert safe_makedirs(tmp_path, ".staging/run") == tmp_path / ".staging" / "run"
    assert raced and (tmp_path / ".staging" / "run").is_dir()
    monkeypatch.setattr(staging.os, "lstat", real_lstat)
    (tmp_path / "link").symlink_to(tmp_path / ".staging")
    with pytest.raises(UnsafePathError):  # a symlink created meanwhile is still refused
        safe_makedirs(tmp_path, "link/x")
