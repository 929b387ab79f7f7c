"""How the evaluator's writer process starts (:mod:`monai_saliency.engines.write_process`): a fork of the parent at
the run's start, where that is safe (:func:`can_fork`). The child has the writers as they are in the parent -- the
same objects, which MONAI's ``Invertd`` needs (a pickled copy fails) -- and the parent's logging configuration; it
must not keep the parent's end of its pipe open, or it would outlive a parent that ends without saying goodbye."""

from __future__ import annotations

import logging
import pickle
import sys
import threading

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Resized, Transform

from monai_saliency.engines.write_process import ChildUnavailable, StudyWriteError, WriterProcess, can_fork

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the writer process is forked on Linux")

LOGGER = "monai_saliency.tests.writer_child"


class LogWriter(Transform):
    """A writer that logs one warning per study (in whichever process runs it) and changes nothing."""

    def __call__(self, data):
        logging.getLogger(LOGGER).warning("child %s wrote a study", "pid")
        return data


def test_can_fork_only_with_one_thread_and_no_cuda(monkeypatch):
    assert can_fork() is None  # pytest's main thread alone
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert "2 Python threads run in this process" in can_fork()
        writer = WriterProcess(LogWriter(), None, None)
        assert not writer.start() and writer.pids == []
        with pytest.raises(ChildUnavailable, match="2 Python threads"):
            writer.write({"image": torch.zeros(1, 2, 2)}, {})
    finally:
        stop.set()
        other.join()
    assert can_fork() is None
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert "CUDA is initialised" in can_fork()


def test_forked_child_inverts_with_the_parents_transforms_and_logs_through_its_handlers(tmp_path):
    pre = Compose([Resized("image", (8, 8))])
    batch = pre({"image": MetaTensor(torch.arange(16.0).reshape(1, 4, 4))})
    output = {"pred": torch.tensor([2.0, 0.0]), "map": batch["image"].clone()}
    writers = Compose([Invertd("map", transform=pre, orig_keys="image"), LogWriter()])
    # a copy of the writers (pickled, as a spawned child would get them) cannot invert: MONAI matches by id()
    with pytest.raises(RuntimeError) as copied:
        pickle.loads(pickle.dumps(writers))({**batch, **output})
    root = copied.value
    while root.__cause__ is not None:
        root = root.__cause__
    assert "most recently applied invertible transform" in str(root)
    log_file = tmp_path / "bundle.log"
    handler = logging.FileHandler(log_file)
    logging.getLogger(LOGGER).addHandler(handler)
    try:
        child = WriterProcess(writers, "pred", ["a", "b"])
        assert child.start() and len(child.pids) == 1
        probabilities = child.write(batch, output)
        with pytest.raises(StudyWriteError, match="NaN or Inf"):  # a study's failure comes back with its reason
            child.write(batch, {**output, "map": batch["image"] * float("nan")})
        child.close()
    finally:
        logging.getLogger(LOGGER).removeHandler(handler)
        handler.close()
    assert probabilities == pytest.approx(torch.tensor([2.0, 0.0]).softmax(0).tolist())
    # the forked child logged through the parent's handler (a spawned one would have none)
    assert log_file.read_text().count("child pid wrote a study") == 2


def test_forked_child_ends_when_the_parent_end_closes_without_a_stop():
    writer = WriterProcess(LogWriter(), None, None)
    assert writer.start()
    assert writer._receive() == ("ready", None)
    proc = writer._proc
    writer._conn.close()  # as when the parent dies: no stop message, its end of the pipe closes
    proc.join(10)
    assert not proc.is_alive() and proc.exitcode == 0
    writer._proc = writer._conn = None
