"""The evaluator's per-study writers in one child process (``SaliencyEvaluator(write_process=True)``).

Why: the writers (nibabel, PIL's GIF and overlay rendering, pydicom) hold Python's global interpreter lock most of
the time, so a writer *thread* and the compute thread together use one core however many are free
(``benchmarks/speed/bench_cohort_throughput.py`` measures it). In a child process the writing runs beside the
computation.

The child is a ``fork`` of the parent at the start of the run (:func:`can_fork`): it starts in milliseconds, keeps
the bundle's logging configuration, and has the writers as they are in the parent -- the same objects at the same
addresses, which MONAI's ``Invertd`` needs (it matches the transforms that recorded a study's operations by
``id()``; a pickled or spawned copy fails every study with "Error Resize getting the most recently applied
invertible transform"). Each study's ``(batch, output)`` is sent to it packed
(:func:`~monai_saliency.data.loader.pack_batch`: its tensors on the CPU, as numpy arrays); it runs the writers,
checks the outputs are finite and returns the softmax probabilities; the cohort bookkeeping (records, checksums, the
atomic move) stays in the parent. Where no child can be forked, or once it has ended, the caller
writes in its own thread instead (:class:`ChildUnavailable`): slower, the same files.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sys
import threading
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
from monai.engines.utils import engine_apply_transform
from monai.utils import CommonKeys

from monai_saliency.data.loader import pack_batch, unpack_batch
from monai_saliency.engines.cohort.messages import one_line

__all__ = ["ChildUnavailable", "StudyWriteError", "WriterProcess", "can_fork", "study_probabilities", "to_cpu"]

logger = logging.getLogger(__name__)

_STOP = b""


def can_fork() -> str | None:
    """Why a writer process cannot be forked from here now, or None if it can: a platform with ``fork`` (Linux;
    macOS's system libraries are not fork-safe), one Python thread in this process (a fork copies the locks other
    threads hold, not the threads), and CUDA not initialised (a forked child cannot use it, so a writer holding a
    CUDA tensor would fail every study). torch's DataLoader starts its workers by the same fork; the child sets one
    torch thread before any work, as they do, and gets its studies' tensors on the CPU."""
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return f"no safe fork on {sys.platform}"
    if threading.active_count() != 1:
        return f"{threading.active_count()} Python threads run in this process (a fork is safe with one)"
    if torch.cuda.is_initialized():
        return "CUDA is initialised in this process (a forked child cannot use it)"
    return None


def study_probabilities(
    output: dict[str, Any], logits_key: str | None, class_names: Sequence[str] | None
) -> list[float] | None:
    """Softmax probabilities of one study's logits, after checking the logits and maps are finite.

    Args:
        output: the study's (decollated) output.
        logits_key: the key of the logits in ``output`` (or in its ``pred`` dict); None: no prediction.
        class_names: the expected classes, or None (not checked).

    Returns:
        The probabilities, or None without ``logits_key`` or logits.

    Raises:
        ValueError: NaN/Inf in the logits or a map, or a class count other than ``class_names``.
    """
    pred = output.get(CommonKeys.PRED)
    logits = None
    if logits_key is not None:
        logits = output.get(logits_key, pred.get(logits_key) if isinstance(pred, dict) else None)
    tensors = {k: v for k, v in output.items() if isinstance(v, torch.Tensor) and k != CommonKeys.LABEL}
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            what = "input" if key == CommonKeys.IMAGE else f"output {key!r}"
            raise ValueError(f"the {what} holds NaN or Inf values; is the input file's data finite?")
    if logits is None:
        return None
    logits = torch.as_tensor(logits).detach().float().reshape(-1)
    if class_names is not None and logits.numel() != len(class_names):
        raise ValueError(f"the network gave {logits.numel()} class scores, the run expects {len(class_names)} classes.")
    return logits.softmax(0).tolist()


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested dicts, lists, tuples) detached and on the CPU (a ``MetaTensor`` keeps
    its metadata)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):  # not a named tuple's constructor
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def _prepare_child(parent_end: Connection) -> None:
    """First thing in the forked child: close its copy of the parent's end of the pipe (else it would never see the
    pipe close when the parent ends) and use one torch thread (no OpenMP pool after a fork)."""
    parent_end.close()
    torch.set_num_threads(1)


def _serve(
    conn: Connection,
    parent_end: Connection,
    writers: Any,
    logits_key: str | None,
    class_names: Sequence[str] | None,
) -> None:
    """The child's loop: answer ``("ready", None)``, then for each pickled ``(batch, output)`` answer
    ``("ok", probabilities)`` or ``("error", (reason, traceback))``, until the parent sends the stop message or
    closes the pipe. DICOM pixels are encoded here (no nested encoder process)."""
    _prepare_child(parent_end)
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if message == _STOP:
            return
        try:
            batch, output = unpack_batch(message)
            with torch.no_grad():
                batch, output = engine_apply_transform(batch, output, writers)
                answer = ("ok", study_probabilities(output, logits_key, class_names))
        except Exception as exc:  # noqa: BLE001  one study's failure, handed to the parent
            answer = ("error", (one_line(exc), traceback.format_exc()))
        conn.send(answer)


class StudyWriteError(Exception):
    """A study's writing failed in the writer process; ``reason`` is its one-line reason (as a writer thread would
    record it), ``details`` the child's traceback."""

    def __init__(self, reason: str, details: str = "") -> None:
        super().__init__(reason)
        self.reason, self.details = reason, details


class ChildUnavailable(Exception):
    """No writer process takes this study (none could be forked, or it has ended): write it in this thread. Nothing
    of the study was written by a child."""


class _Ended(Exception):
    """The child ended (or its pipe broke) before answering."""


class WriterProcess:
    """One forked child process that runs a study's writers, the finite check and the probabilities
    (:func:`study_probabilities`) for the evaluator's writer thread, one study at a time.

    :meth:`start` forks it (or says why it cannot, :func:`can_fork`); :meth:`write` sends one study and waits for its
    answer; :meth:`close` ends it. A child that dies while writing a study fails that study (a clear error, no hang:
    the wait watches the process too); one that ends before taking a study fails none. Either way it is not started
    again (a fork from the writer thread would not be safe): :meth:`write` raises :class:`ChildUnavailable` from
    then on and the caller writes in its thread.

    Args:
        writers: the writing stage (e.g. the post-processing run per study); the child has it as it is in the parent
            (it is not pickled).
        logits_key: as :func:`study_probabilities`.
        class_names: as :func:`study_probabilities`.
    """

    def __init__(self, writers: Any, logits_key: str | None, class_names: Sequence[str] | None) -> None:
        self.writers = writers
        self.logits_key = logits_key
        self.class_names = None if class_names is None else list(class_names)
        self.pids: list[int] = []  # every child started, for checks
        self.unavailable: str | None = None  # why no child takes studies (any more)
        self._proc: Any = None
        self._conn: Connection | None = None
        self._ready = False

    def start(self) -> bool:
        """Fork the child now, from the thread that will not fork again (the run's start), unless it runs or cannot
        be forked.

        Returns:
            Whether a child runs (else :attr:`unavailable` says why).
        """
        if self._proc is not None:
            return True
        if self.unavailable is None:
            self.unavailable = can_fork()
        if self.unavailable is not None:
            return False
        context = multiprocessing.get_context("fork")
        parent, child = context.Pipe()
        proc = context.Process(
            target=_serve,
            args=(child, parent, self.writers, self.logits_key, self.class_names),
            name="saliency-writer-process",
            daemon=True,
        )
        proc.start()
        child.close()  # the parent's copy: the child's end closes when the child ends
        self._proc, self._conn, self._ready = proc, parent, False
        self.pids.append(proc.pid)
        logger.info("the writers run in a child process (pid %d).", proc.pid)
        return True

    def _receive(self) -> tuple[str, Any]:
        assert self._conn is not None and self._proc is not None
        if self._conn in wait([self._conn, self._proc.sentinel]):
            with contextlib.suppress(EOFError, OSError):
                return self._conn.recv()
        raise _Ended

    def _gone(self, why: str) -> str:
        """Close the ended child and remember ``why`` (with its exit code) for the studies that come after."""
        assert self._proc is not None
        self._proc.join(5)
        why = f"{why} (exit code {self._proc.exitcode})"
        self.close()
        self.unavailable = why
        logger.warning("%s; the rest of the run writes in the writer thread.", why)
        return why

    def write(self, batch: dict[str, Any], output: dict[str, Any]) -> list[float] | None:
        """Write one study in the child: its writers, the finite check, the probabilities.

        Returns:
            The study's softmax probabilities (None without logits).

        Raises:
            ChildUnavailable: no child takes the study (it could not be forked or has ended); nothing was written.
            StudyWriteError: a writer or the check failed (the child's reason).
            RuntimeError: the child ended while writing this study.
        """
        if self._proc is None:
            raise ChildUnavailable(self.unavailable or "the writer process was not started")
        if not self._ready:
            try:
                kind, _ = self._receive()
            except _Ended:
                raise ChildUnavailable(self._gone("the writer process ended while starting")) from None
            self._ready = kind == "ready"
        message = pack_batch((to_cpu(batch), to_cpu(output)))  # tensors as numpy arrays: fast both ways
        try:
            self._conn.send_bytes(message)
            kind, value = self._receive()
        except (_Ended, OSError):
            raise RuntimeError(self._gone("the writer process ended while writing this study")) from None
        if kind == "error":
            raise StudyWriteError(*value)
        return value

    def close(self, cancel: bool = False) -> None:
        """End the child: let it finish (it is idle between studies), or with ``cancel`` (or if it never answered)
        terminate it; killed if it does not end. Idempotent."""
        proc, conn, ready = self._proc, self._conn, self._ready
        self._proc, self._conn, self._ready = None, None, False
        if proc is None:
            return
        if not cancel and ready and proc.is_alive():
            with contextlib.suppress(OSError):
                conn.send_bytes(_STOP)
            proc.join(30)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()
        with contextlib.suppress(ValueError):
            proc.close()
