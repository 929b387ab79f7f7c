"""The evaluator's per-study writers in one child process (``SaliencyEvaluator(write_process=True)``).

Why: the writers (nibabel, PIL's GIF and overlay rendering, pydicom) hold Python's global interpreter lock most of
the time, so a writer *thread* and the compute thread together use one core however many are free
(``benchmarks/speed/bench_cohort_throughput.py`` measures it). In a child process the writing runs beside the
computation. The child is started once per run, by :func:`start_method`: a ``fork`` of the parent when that is safe
(Linux, one Python thread, CUDA not initialised; torch's own DataLoader workers start this way), which takes a few
milliseconds and keeps the bundle's logging configuration; otherwise ``spawn`` (a fresh interpreter with the
parent's ``sys.path``, about 4 s to import torch and MONAI again). The writers are pickled to it once, then each
study's ``(batch, output)``, its tensors on the CPU. It runs the writers, checks the outputs are finite and returns
the softmax probabilities; the cohort bookkeeping (records, checksums, the atomic move) stays in the parent.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import pickle
import re
import sys
import threading
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
from monai.engines.utils import engine_apply_transform
from monai.utils import CommonKeys

from monai_saliency.engines.cohort.messages import one_line

__all__ = ["StudyWriteError", "WriterProcess", "start_method", "study_probabilities", "to_cpu"]

logger = logging.getLogger(__name__)

_STOP = b""
#: modules of a bundle's ``scripts`` imported under a private package name (``monai_saliency._deprecation``)
_PRIVATE_SCRIPTS = re.compile(r"^_monai_saliency_bundle_(?P<bundle>.+)_scripts\.(?P<module>\w+)$")


def start_method() -> str:
    """How a writer process is started from here: ``"fork"`` where it is safe -- a platform with ``fork``
    (Linux; macOS's system libraries are not fork-safe), one Python thread in this process (a fork copies another
    thread's held locks but not the thread), CUDA not initialised (a forked child cannot use it, and its state is not
    fork-safe) -- else ``"spawn"``.

    The child sets one torch thread before any work, as torch's DataLoader workers do after their fork.
    """
    if (
        sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
        and not torch.cuda.is_initialized()
    ):
        return "fork"
    return "spawn"


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


class _Unpickler(pickle.Unpickler):
    """Finds, besides importable classes, those of a bundle's ``scripts`` imported under a private package name
    (``monai_saliency._deprecation.bundle_scripts``, e.g. by the benchmarks), which a fresh interpreter lacks."""

    def find_class(self, module: str, name: str) -> Any:
        match = _PRIVATE_SCRIPTS.match(module)
        if match is not None:
            from monai_saliency._deprecation import bundle_scripts

            bundle_scripts(match["bundle"], match["module"])
        return super().find_class(module, name)


def _loads(data: bytes) -> Any:
    return _Unpickler(io.BytesIO(data)).load()


def _serve(
    conn: Connection,
    writers: bytes,
    logits_key: str | None,
    class_names: Sequence[str] | None,
    parent_end: Connection | None = None,
) -> None:
    """The child's loop: load the writers (answer ``("ready", None)`` or ``("init-error", reason)``), then for each
    pickled ``(batch, output)`` answer ``("ok", probabilities)`` or ``("error", (reason, traceback))``, until the
    parent sends the stop message or closes the pipe. One torch thread; DICOM pixels are encoded here (no nested
    encoder process). ``parent_end``: a forked child's copy of the parent's end of the pipe, closed first (else the
    child would never see the pipe close when the parent ends)."""
    if parent_end is not None:
        parent_end.close()
    torch.set_num_threads(1)
    try:
        tail = _loads(writers)
    except Exception as exc:  # noqa: BLE001  handed to the parent
        conn.send(("init-error", one_line(exc)))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if message == _STOP:
            return
        try:
            batch, output = _loads(message)
            with torch.no_grad():
                batch, output = engine_apply_transform(batch, output, tail)
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


class _Ended(Exception):
    """The child ended (or its pipe broke) before answering."""


class WriterProcess:
    """One child process (started as :func:`start_method` says) that runs a study's writers, the finite check and the probabilities
    (:func:`study_probabilities`) for the evaluator's writer thread, one study at a time.

    :meth:`start` starts it (the writers were pickled once, here); :meth:`write` sends one study and waits for its
    answer (started again if it ended); :meth:`close` ends it. A child that dies fails the study it was writing
    (a clear error, no hang: the wait watches the process too) and is started again for the next one; a child that
    cannot load the writers, or ends before it has, fails every study with that reason (it is not started again).

    Args:
        writers: the writing stage (the tail of :func:`~monai_saliency.engines.evaluator.split_writers`).
        logits_key: as :func:`study_probabilities`.
        class_names: as :func:`study_probabilities`.

    Raises:
        TypeError: the writers cannot be pickled.
    """

    def __init__(self, writers: Any, logits_key: str | None, class_names: Sequence[str] | None) -> None:
        try:
            self._writers = pickle.dumps(writers, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickle raises several types
            raise TypeError(
                f"the writers cannot be sent to a writer process ({one_line(exc)}); write in a thread instead "
                "(write_process=False)."
            ) from exc
        self.logits_key = logits_key
        self.class_names = None if class_names is None else list(class_names)
        self.pids: list[int] = []  # every child started, for checks
        self.methods: list[str] = []  # how each was started (start_method)
        self._proc: Any = None
        self._conn: Connection | None = None
        self._ready = False
        self._broken: str | None = None

    def start(self) -> None:
        """Start the child if it is not running (it loads torch and the writers while the parent goes on)."""
        if self._proc is not None:
            return
        method = start_method()
        context = multiprocessing.get_context(method)
        parent, child = context.Pipe()
        args = (child, self._writers, self.logits_key, self.class_names)
        proc = context.Process(
            target=_serve,
            args=(*args, parent) if method == "fork" else args,
            name="saliency-writer-process",
            daemon=True,
        )
        proc.start()
        child.close()  # the parent's copy: the child's end closes when the child ends
        self._proc, self._conn, self._ready = proc, parent, False
        self.pids.append(proc.pid)
        self.methods.append(method)
        logger.info("the writers run in a child process (pid %d, started by %s).", proc.pid, method)

    def _receive(self) -> tuple[str, Any]:
        assert self._conn is not None and self._proc is not None
        if self._conn in wait([self._conn, self._proc.sentinel]):
            with contextlib.suppress(EOFError, OSError):
                return self._conn.recv()
        raise _Ended

    def write(self, batch: dict[str, Any], output: dict[str, Any]) -> list[float] | None:
        """Write one study in the child: its writers, the finite check, the probabilities.

        Returns:
            The study's softmax probabilities (None without logits).

        Raises:
            StudyWriteError: a writer or the check failed (the child's reason).
            RuntimeError: the child ended while writing the study, or could not load the writers.
        """
        if self._broken is not None:
            raise RuntimeError(self._broken)
        message = pickle.dumps((to_cpu(batch), to_cpu(output)), protocol=pickle.HIGHEST_PROTOCOL)
        self.start()
        try:
            if not self._ready:
                kind, value = self._receive()
                if kind == "init-error":
                    self._broken = f"the writer process could not load the writers: {value}"
                    self.close()
                    raise RuntimeError(self._broken)
                self._ready = True
            try:
                self._conn.send_bytes(message)
            except OSError as exc:
                raise _Ended from exc
            kind, value = self._receive()
        except _Ended:
            self._proc.join(5)
            code, starting = self._proc.exitcode, not self._ready
            self.close()
            if starting:  # it would end again: fail every study with the reason instead of restarting it
                self._broken = (
                    f"the writer process ended while starting (exit code {code}), before it loaded the writers; "
                    'a script of your own must run under `if __name__ == "__main__":` (the child imports it)'
                )
                raise RuntimeError(self._broken) from None
            raise RuntimeError(
                f"the writer process ended (exit code {code}) while writing this study; it is started "
                "again for the next study"
            ) from None
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
