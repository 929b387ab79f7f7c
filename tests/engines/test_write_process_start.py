"""How the evaluator's writer process starts (:func:`monai_saliency.engines.write_process.start_method`): a fork of
the parent where that is safe -- milliseconds instead of the ~4 s a spawned interpreter needs to import torch and
MONAI, with the parent's logging configuration -- and a spawn otherwise (another Python thread alive, CUDA
initialised). A forked child must not keep the parent's end of its pipe open, or it would outlive a parent that ends
without saying goodbye."""

from __future__ import annotations

import logging
import sys
import threading
import time

import pytest
import torch
from monai.transforms import Transform

from monai_saliency.engines import write_process
from monai_saliency.engines.write_process import WriterProcess, start_method

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is used on Linux only")

LOGGER = "monai_saliency.tests.writer_child"


class LogWriter(Transform):
    """A writer that logs one warning per study (in whichever process runs it) and changes nothing."""

    def __call__(self, data):
        logging.getLogger(LOGGER).warning("child %s wrote a study", "pid")
        return data


def _study() -> tuple[dict, dict]:
    return {"image": torch.zeros(1, 4, 4)}, {"pred": torch.tensor([2.0, 0.0])}


def _ready_seconds(writer: WriterProcess) -> float:
    t0 = time.perf_counter()
    writer.start()
    assert writer._receive() == ("ready", None)
    writer._ready = True
    return time.perf_counter() - t0


def test_start_method_forks_only_when_safe(monkeypatch):
    assert start_method() == "fork"  # pytest's main thread, no CUDA here
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert start_method() == "spawn"  # a fork would copy the other thread's held locks, not the thread
    finally:
        stop.set()
        other.join()
    assert start_method() == "fork"
    monkeypatch.setattr(write_process.torch.cuda, "is_initialized", lambda: True)
    assert start_method() == "spawn"


def test_forked_child_starts_fast_keeps_logging_and_writes_like_a_spawned_one(tmp_path, monkeypatch):
    log_file = tmp_path / "bundle.log"
    handler = logging.FileHandler(log_file)
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        forked = WriterProcess(LogWriter(), "pred", ["a", "b"])
        fork_s = _ready_seconds(forked)
        assert forked.methods == ["fork"]
        probs = forked.write(*_study())
        forked.close()
        monkeypatch.setattr(write_process, "start_method", lambda: "spawn")
        spawned = WriterProcess(LogWriter(), "pred", ["a", "b"])
        spawn_s = _ready_seconds(spawned)
        assert spawned.methods == ["spawn"]
        assert spawned.write(*_study()) == probs == pytest.approx(torch.tensor([2.0, 0.0]).softmax(0).tolist())
        spawned.close()
    finally:
        logger.removeHandler(handler)
        handler.close()
    # the spawned interpreter imports torch, MONAI and the package again; the fork has them already
    assert fork_s < 0.5 * spawn_s, (fork_s, spawn_s)
    # the forked child logged through the parent's handler (a spawned one has no handler: logging's last resort)
    assert log_file.read_text().count("child pid wrote a study") == 1


def test_forked_child_ends_when_the_parent_end_closes_without_a_stop():
    writer = WriterProcess(LogWriter(), None, None)
    _ready_seconds(writer)
    proc = writer._proc
    assert writer.methods == ["fork"] and proc.is_alive()
    writer._conn.close()  # as when the parent dies: no stop message, its end of the pipe closes
    proc.join(10)
    assert not proc.is_alive() and proc.exitcode == 0
    writer._proc = writer._conn = None
