"""Writing off the compute path (issue #22 section 2): ``SaliencyEvaluator(async_write=True)`` writes and commits each
study in a background thread. A writing error fails that study alone, a study is committed only once all its files
are written, the run waits for the writer, an exception in the run leaves nothing partial in place, and the queue is
bounded. These checks fail on naive variants (commit before the writes finish, no wait at the end, a writer thread
that dies on the first error): see ``test_checks_catch_naive_async_writers``.

The same checks run with ``write_process=True`` (the writers in a forked child process, the commit in the writer
thread), which adds its own: the child ends with the run (also on an exception), a child that dies fails the study it
was writing with a clear reason and the writer thread writes the rest, no study is lost when no child can be forked."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, MapTransform

from monai_saliency.engines import evaluator as evaluator_module
from monai_saliency.engines import write_process as write_process_module
from monai_saliency.engines.cohort import CohortRun
from monai_saliency.engines.cohort.manifest import sha256_file
from monai_saliency.engines.evaluator import BackgroundWriter, SaliencyEvaluator, split_writers
from monai_saliency.transforms import SaveMapsd
from tests._evaluators import nifti_cohort_evaluator

NAMES = ("a", "b", "c", "d", "e")
#: the writing modes: a background thread (the default), a child process, inline
MODES = {
    "thread": {"async_write": True},
    "process": {"async_write": True, "write_process": True},
    "sync": {"async_write": False},
}


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended and been reaped (no zombie left)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _check_children_gone(evaluator: SaliencyEvaluator, expected: int) -> None:
    """The evaluator started ``expected`` writer processes (0: none) and every one has ended."""
    pids = evaluator.writer_process.pids if evaluator.writer_process is not None else []
    assert len(pids) == expected, pids
    assert all(_gone(pid) for pid in pids), pids


class SlowFailingWriter(MapTransform):
    """A per-study writer (``folder_key``) that writes a file slowly, then raises for the study named ``fail``
    (after leaving a partial file, as a real writer that runs out of disk would)."""

    def __init__(self, keys, folder_key: str = "study_dir", fail: str = "c", delay: float = 0.05) -> None:
        super().__init__(keys)
        self.folder_key, self.fail, self.delay = folder_key, fail, delay

    def __call__(self, data):
        d = dict(data)
        folder = Path(d[self.folder_key])
        stem = Path(str(d["image"].meta["filename_or_obj"])).name.split(".")[0]
        (folder / f"{stem}_part.bin").write_bytes(b"partial")
        time.sleep(self.delay)
        if stem == self.fail:
            raise OSError(f"No space left on device: {stem}")
        (folder / f"{stem}_extra.txt").write_text(stem)
        return d


class Boom(BaseException):
    """An interruption (not an ``Exception``: the evaluator must not treat it as one study's failure)."""


class Interrupting(torch.nn.Module):
    """Wraps a network; raises :class:`Boom` on its ``n``-th call."""

    def __init__(self, net: torch.nn.Module, n: int) -> None:
        super().__init__()
        self.net, self.n, self.calls = net, n, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.n:
            raise Boom("interrupted")
        return self.net(x)


def _cohort(tmp_path: Path) -> CohortRun:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in NAMES:
        nib.save(nib.Nifti1Image(rng.random((8, 8, 2)).astype(np.float32), np.eye(4)), str(data / f"{name}.nii"))
    return CohortRun(data, tmp_path / "out", kinds=["nifti"])


def _evaluator(cohort: CohortRun, net: torch.nn.Module, batch_size: int = 2, **kwargs) -> SaliencyEvaluator:
    post = Compose(
        [SaveMapsd("image", cohort.output_dir / "unused", folder_key="study_dir"), SlowFailingWriter("image")]
    )
    return nifti_cohort_evaluator(cohort, net, post, batch_size, **kwargs)


def _check_cohort_outputs(out: Path, failed: str = "c") -> dict:
    """Every study but ``failed`` committed complete (files and checksums as recorded); ``failed`` recorded as failed
    with the writer's reason and nothing of it in place; no staging folder left in place."""
    records = {json.loads(p.read_text())["study"]: json.loads(p.read_text()) for p in (out / ".cohort").rglob("*.json")}
    for name in NAMES:
        rec = records.get(f"{name}.nii")
        assert rec is not None, f"no record for {name}.nii"
        if name == failed:
            assert rec["status"] == "failed" and "No space left on device" in rec["error"], rec
            assert not (out / name).exists()
            continue
        assert rec["status"] == "ok", rec
        files = sorted(p.name for p in (out / name).iterdir())
        assert files == sorted([f"{name}_image.nii.gz", f"{name}_part.bin", f"{name}_extra.txt"]), files
        for entry in rec["outputs"]:
            assert sha256_file(out / entry["path"]) == entry["sha256"], entry
    return records


def test_split_writers_keeps_head_before_first_writer():
    save = SaveMapsd("image", "/unused", folder_key="study_dir")
    other = SlowFailingWriter("image")
    head, tail = split_writers(Compose([EnsureChannelFirstd("image"), save, EnsureChannelFirstd("image"), other]))
    assert [type(t).__name__ for t in head.transforms] == ["EnsureChannelFirstd"]
    assert [type(t).__name__ for t in tail.transforms] == ["SaveMapsd", "EnsureChannelFirstd", "SlowFailingWriter"]
    assert split_writers(None) == (None, None)
    head, tail = split_writers(Compose([EnsureChannelFirstd("image")]))
    assert tail is None and len(head.transforms) == 1
    assert SaveMapsd("image", "/unused").folder_key is None  # a writer without folder_key is no per-study writer
    assert split_writers(SaveMapsd("image", "/unused"))[1] is None


def _tree(out: Path) -> dict[str, bytes]:
    """The bytes of every file a run left in ``out`` but the run's records, manifest and report."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.parts[len(out.parts)] not in (".cohort", "run_manifest.json", "report.html")
    }


@pytest.mark.parametrize("mode", list(MODES))
def test_write_error_fails_only_that_study(tmp_path, cnn2d, capsys, mode):
    """Also: every mode writes the same bytes (the process mode is compared with a synchronous run here, the thread
    mode in the next test)."""
    cohort = _cohort(tmp_path / mode)
    evaluator = _evaluator(cohort, cnn2d, **MODES[mode])
    evaluator.run()
    _check_children_gone(evaluator, 1 if mode == "process" else 0)
    # the run waited for the writer: every record is on disk before finish
    _check_cohort_outputs(cohort.output_dir)
    counts = cohort.finish()
    assert counts == {"ok": 4, "skipped": 0, "failed": 1, "not processed": 0}
    err = capsys.readouterr().err
    assert "FAILED c.nii: OSError: No space left on device: c" in err
    with pytest.raises(SystemExit) as stop:
        cohort.exit()
    assert stop.value.code == 1
    assert not (cohort.output_dir / ".staging").exists()
    if mode == "process":
        reference = _cohort(tmp_path / "sync")
        _evaluator(reference, cnn2d, **MODES["sync"]).run()
        reference.finish()
        assert _tree(cohort.output_dir) == _tree(reference.output_dir)


def test_async_and_sync_outputs_identical(tmp_path, cnn2d):
    trees = {}
    for mode in ("thread", "sync"):
        cohort = _cohort(tmp_path / mode)
        _evaluator(cohort, cnn2d, **MODES[mode]).run()
        cohort.finish()
        trees[mode] = _tree(cohort.output_dir)
    assert trees["thread"] == trees["sync"] and "predictions.csv" in trees["sync"] and len(trees["sync"]) == 13


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_exception_in_run_cancels_queue_and_leaves_nothing_partial(tmp_path, cnn2d, mode):
    cohort = _cohort(tmp_path)
    evaluator = _evaluator(cohort, Interrupting(cnn2d, n=3), batch_size=1, write_queue=1, **MODES[mode])
    with pytest.raises(Boom):
        evaluator.run()
    assert not evaluator.writer._thread  # stopped and joined
    _check_children_gone(evaluator, 1 if mode == "process" else 0)
    out = cohort.output_dir
    in_place = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert set(in_place) <= {"a", "b"}  # studies 1-2 may be committed (complete); nothing of the others
    records = {json.loads(p.read_text())["study"]: json.loads(p.read_text()) for p in (out / ".cohort").rglob("*.json")}
    for name in in_place:
        rec = records[f"{name}.nii"]
        assert rec["status"] == "ok"
        assert sorted(e["path"] for e in rec["outputs"]) == sorted(f"{name}/{f.name}" for f in (out / name).iterdir())
    staged = [p for p in (out / ".staging").rglob("*") if p.is_file()] if (out / ".staging").exists() else []
    assert not staged, staged  # cancelled studies' staging folders were removed


class DyingWriter(SlowFailingWriter):
    """A per-study writer whose process dies (as by the kernel's OOM killer) while it writes study ``die``."""

    def __init__(self, keys, die: str = "d") -> None:
        super().__init__(keys, fail="", delay=0.0)
        self.die = die

    def __call__(self, data):
        if Path(str(data["image"].meta["filename_or_obj"])).name.startswith(self.die + "."):
            os._exit(3)
        return super().__call__(data)


def test_writer_process_death_fails_only_the_study_it_was_writing(tmp_path, cnn2d, capsys):
    cohort = _cohort(tmp_path)
    post = Compose([SaveMapsd("image", cohort.output_dir / "unused", folder_key="study_dir"), DyingWriter("image")])
    # a writer thread would run DyingWriter in this process (and end it): only with a forked child
    assert write_process_module.can_fork() is None, write_process_module.can_fork()
    evaluator = nifti_cohort_evaluator(cohort, cnn2d, post, 2, write_process=True)
    evaluator.run()
    _check_children_gone(evaluator, 1)  # not forked again from the writer thread: the thread writes the rest
    assert cohort.finish() == {"ok": 4, "skipped": 0, "failed": 1, "not processed": 0}
    err = capsys.readouterr().err
    assert "FAILED d.nii: RuntimeError: the writer process ended while writing this study (exit code 3)" in err
    assert "the writer process ended while writing this study (exit code 3)" in evaluator.writer_process.unavailable
    assert sorted(p.name for p in cohort.output_dir.iterdir() if not p.name.startswith(".")) == [
        *sorted(set(NAMES) - {"d"}),
        "predictions.csv",
        "report.html",
        "run_manifest.json",
    ]


def _exit_in_child(parent_end):
    os._exit(4)


def test_writer_process_fallbacks(tmp_path, cnn2d, monkeypatch):
    """Writers need not be picklable (the child is a fork); a child that ends while starting fails no study (the
    writer thread writes them all); with another thread alive no child is forked (a warning says why) and the
    thread writes; without ``async_write`` the option is ignored (logged)."""
    ok_writer = SlowFailingWriter("image", fail="", delay=0.0)
    cohort = _cohort(tmp_path)
    writer = SlowFailingWriter("image", fail="", delay=0.0)
    writer.hook = lambda: None  # not picklable: a forked child has it as it is
    evaluator = nifti_cohort_evaluator(cohort, cnn2d, Compose([writer]), 2, write_process=True)
    evaluator.run()
    _check_children_gone(evaluator, 1)
    assert evaluator.writer_process.unavailable is None
    assert cohort.finish() == {"ok": len(NAMES), "skipped": 0, "failed": 0, "not processed": 0}
    # a child that ends before it takes a study: every study written by the thread, none lost
    cohort = _cohort(tmp_path / "exits")
    monkeypatch.setattr(write_process_module, "_prepare_child", _exit_in_child)  # the fork inherits the patch
    evaluator = nifti_cohort_evaluator(cohort, cnn2d, Compose([ok_writer]), 2, write_process=True)
    evaluator.run()
    _check_children_gone(evaluator, 1)
    assert "the writer process ended while starting (exit code 4)" in evaluator.writer_process.unavailable
    assert cohort.finish() == {"ok": len(NAMES), "skipped": 0, "failed": 0, "not processed": 0}
    monkeypatch.undo()
    # another thread alive when the run starts: no fork, the thread writes, a warning says why
    cohort = _cohort(tmp_path / "threads")
    warned = []
    monkeypatch.setattr(evaluator_module.logger, "warning", lambda msg, *args: warned.append(msg % args))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        evaluator = nifti_cohort_evaluator(cohort, cnn2d, Compose([ok_writer]), 2, write_process=True)
        evaluator.run()
    finally:
        stop.set()
        other.join()
    _check_children_gone(evaluator, 0)
    assert any("no writer process (2 Python threads run in this process" in w for w in warned), warned
    assert cohort.finish() == {"ok": len(NAMES), "skipped": 0, "failed": 0, "not processed": 0}
    told = []
    monkeypatch.setattr(evaluator_module.logger, "info", lambda msg, *args: told.append(msg % args))
    evaluator = _evaluator(cohort, cnn2d, async_write=False, write_process="true")
    assert not evaluator.write_process and any("applies with --async_write true only" in w for w in told)
    with pytest.raises(ValueError, match="--write_process must be true or false"):
        _evaluator(cohort, cnn2d, write_process="maybe")


def test_background_writer_bounded_and_errors_surface():
    writer = BackgroundWriter(max_pending=1)
    release, started, done = threading.Event(), threading.Event(), []

    def blocking():
        started.set()
        release.wait(5)
        done.append("first")

    writer.submit(blocking)
    started.wait(5)
    writer.submit(lambda: done.append("second"))  # fills the queue (1 waiting, 1 running)
    third = threading.Thread(target=writer.submit, args=(lambda: done.append("third"),))
    third.start()
    third.join(0.2)
    assert third.is_alive()  # blocked: the queue is full
    release.set()
    third.join(5)
    writer.close()
    assert done == ["first", "second", "third"]

    def broken():
        raise OSError("writer broke")

    writer.submit(broken)
    with pytest.raises(RuntimeError, match="writer broke"):
        writer.close()
    cancelled = []
    writer.submit(lambda: time.sleep(0.1))
    writer.submit(lambda: done.append("never"), on_cancel=lambda: cancelled.append(1))
    writer.close(cancel=True)
    assert cancelled == [1] and "never" not in done
    with pytest.raises(ValueError, match="at least 1"):
        BackgroundWriter(0)


def _naive_commit_before_writes(self, batch, output, study):
    """Naive: commit as soon as the study is handed over, write afterwards."""
    with self._cohort_lock:
        self.cohort.commit(study, self._probabilities(output))
    from monai.engines.utils import engine_apply_transform

    engine_apply_transform(batch, output, self.write_tail)


def _naive_no_wait(self):
    """Naive: return without waiting for the writer."""
    super(SaliencyEvaluator, self).run()


def _naive_unguarded(self, batch, output, study):
    """Naive: a writer error escapes the job (the thread stops; later studies never written)."""
    from monai.engines.utils import engine_apply_transform

    batch, output = engine_apply_transform(batch, output, self.write_tail)
    with self._cohort_lock:
        self.cohort.commit(study, self._probabilities(output))


@pytest.mark.parametrize(
    "attr, naive",
    [("_write_study", _naive_commit_before_writes), ("run", _naive_no_wait), ("_write_study", _naive_unguarded)],
)
def test_checks_catch_naive_async_writers(tmp_path, cnn2d, monkeypatch, attr, naive):
    monkeypatch.setattr(SaliencyEvaluator, attr, naive)
    cohort = _cohort(tmp_path)
    evaluator = _evaluator(cohort, cnn2d, async_write=True)
    with pytest.raises((AssertionError, RuntimeError, OSError)):
        evaluator.run()
        _check_cohort_outputs(cohort.output_dir)
    evaluator.writer.close(cancel=True)


def test_writers_never_set_the_umask(tmp_path, monkeypatch):
    """Files are written from two threads (the compute thread's records and staging folders, the writer's files):
    reading the umask by setting it to 0 and back races (another thread reads 0 and restores 0, leaving the process
    creating world-writable files), so the writers must read it without setting it."""
    from monai_saliency.data.atomic import atomic_output, current_umask
    from monai_saliency.engines.cohort.manifest import atomic_write_text
    from monai_saliency.engines.cohort.staging import Staging

    if not Path("/proc/self/status").is_file():
        pytest.skip("reading the umask without setting it needs /proc/self/status (Linux)")
    before = os.umask(0o022)
    calls = []
    real = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real(mask))
    try:
        assert current_umask() == 0o022
        with atomic_output(tmp_path / "f.bin") as tmp:
            tmp.write_bytes(b"x")
        atomic_write_text(tmp_path / "t.txt", "x")
        folder = Staging(tmp_path, "run").new_folder()
        assert calls == []
        assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "f.bin", tmp_path / "t.txt")} == {0o644}
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    finally:
        real(before)
