"""An evaluator for saliency runs over a user's folder: a bad study costs only itself, at every stage."""

from __future__ import annotations

import contextlib
import copy
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import decollate_batch, list_data_collate
from monai.engines import SupervisedEvaluator
from monai.engines.utils import engine_apply_transform
from monai.transforms import Compose
from monai.utils import CommonKeys

from monai_saliency.data.dicom.encoding import encode_in_worker_process
from monai_saliency.data.tolerant import FAILED_KEY
from monai_saliency.engines.cohort.messages import one_line
from monai_saliency.engines.write_process import ChildUnavailable, StudyWriteError, WriterProcess, study_probabilities

__all__ = ["BackgroundWriter", "FailedStudiesError", "SaliencyEvaluator", "as_bool", "split_writers"]

logger = logging.getLogger(__name__)


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def as_bool(value: Any, name: str) -> bool:
    """A command-line flag as a bool: ``python -m monai.bundle run --amp true`` passes the string ``"true"``.

    Args:
        value: a bool, 0/1, or one of ``true/false, 1/0, yes/no, on/off`` (any case).
        name: the option, for the error message.

    Returns:
        The flag.

    Raises:
        ValueError: for any other value (``"flase"`` must not silently mean True).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"--{name} must be true or false, got {value!r}.")


def is_writer(transform: Any) -> bool:
    """Whether a post-processing transform is a per-study writer: it writes into the study's staging folder through
    a ``folder_key`` that is set (``SaveMapsd``, ``SaveXADerivedd``, ``SaveCineGifd``, ``SaveOverlaySCd``,
    ``SaveQuickLookd``: every per-study writer takes one)."""
    return getattr(transform, "folder_key", None) is not None


def split_writers(postprocessing: Callable | None) -> tuple[Callable | None, Callable | None]:
    """Split a post-processing ``Compose`` at its first per-study writer (:func:`is_writer`).

    The head (everything before the first writer: flattening, discretising, ...) stays on the compute path; the
    tail (the first writer and everything after it, e.g. ``Invertd`` to the input's grid, ``ScaleToUnitd``, more
    writers) is the study's *writing* stage, run per study after inference, in the background when asked. Running
    head then tail on one item is exactly running the whole ``Compose``, so the outputs do not depend on the split.

    Args:
        postprocessing: the evaluator's post-processing (a ``Compose``, another callable, or None).

    Returns:
        ``(head, tail)``; either may be None (nothing to run). A callable that is not a ``Compose`` is all head when
        it is not a writer itself, else all tail.
    """
    if postprocessing is None:
        return None, None
    if not isinstance(postprocessing, Compose):
        return (None, postprocessing) if is_writer(postprocessing) else (postprocessing, None)
    transforms = list(postprocessing.transforms)
    cut = next((i for i, t in enumerate(transforms) if is_writer(t)), len(transforms))

    def part(ts: list) -> Compose | None:
        if not ts:
            return None
        out = copy.copy(postprocessing)
        out.transforms = ts
        return out

    return part(transforms[:cut]), part(transforms[cut:])


class BackgroundWriter:
    """One daemon thread that runs jobs in order from a bounded queue, so that writing overlaps the next study's
    inference while at most ``max_pending`` finished studies wait in memory.

    A job must handle its own errors (the evaluator's jobs record a failed study and return); an exception that
    escapes a job anyway stops the writer and is raised in the submitting thread by the next :meth:`submit` or by
    :meth:`close`.

    Args:
        max_pending: queue size (jobs waiting; one more may be running). ``submit`` blocks while the queue is full.
        name: the thread's name.
    """

    _STOP = object()

    def __init__(self, max_pending: int = 2, name: str = "saliency-writer") -> None:
        if int(max_pending) < 1:
            raise ValueError(f"the write queue must hold at least 1 study, got {max_pending}.")
        self.max_pending = int(max_pending)
        self.name = name
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._cancel = threading.Event()

    def _loop(self) -> None:
        assert self._queue is not None
        while True:
            job, on_cancel = self._queue.get()
            try:
                if job is self._STOP:
                    return
                if self._cancel.is_set() or self._error is not None:
                    if on_cancel is not None:
                        on_cancel()
                    continue
                job()
            except BaseException as exc:  # noqa: BLE001  handed to the submitting thread
                self._error = self._error or exc
            finally:
                self._queue.task_done()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"the background writer stopped: {error}") from error

    def submit(self, job: Callable[[], None], on_cancel: Callable[[], None] | None = None) -> None:
        """Queue ``job`` (blocks while ``max_pending`` jobs wait); ``on_cancel`` runs instead if the run is cancelled.

        Raises:
            RuntimeError: an earlier job raised (its exception is the cause).
        """
        self._raise_error()
        if self._thread is None or not self._thread.is_alive():
            self._queue = queue.Queue(self.max_pending)
            self._cancel.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        assert self._queue is not None
        self._queue.put((job, on_cancel))

    def close(self, cancel: bool = False) -> None:
        """Wait for the queued jobs (or, with ``cancel``, run their ``on_cancel`` instead; a running job finishes)
        and stop the thread. Idempotent.

        Raises:
            RuntimeError: a job raised (not with ``cancel``, where the first error is the one being handled).
        """
        if self._thread is not None:
            if cancel:
                self._cancel.set()
            assert self._queue is not None
            self._queue.put((self._STOP, None))
            self._thread.join()
            self._thread = None
        if cancel:
            self._error = None
        self._raise_error()


class FailedStudiesError(RuntimeError):
    """Raised at the end of a run in which some studies could not be read."""


class SaliencyEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` that skips studies a :class:`~monai_saliency.data.tolerant.TolerantDataset` could
    not load, logs each by name, processes every other study, and raises :class:`FailedStudiesError` (so the
    bundle exits non-zero) when the run completes with failures.

    With a ``cohort`` (:class:`monai_saliency.engines.cohort.CohortRun`) a bad study costs only itself at every
    stage: each study of a batch gets a fresh staging folder under ``data[folder_key]`` (the writers'
    ``folder_key``) before inference; when inference or post-processing of a batch of B > 1 raises, its studies are
    retried one by one; a study whose logits or maps hold NaN/Inf, or whose class count differs from the cohort's
    ``class_names``, fails alone; a good study's outputs are committed (moved into place, recorded with checksums
    and its softmax probabilities), a failed one's are discarded and recorded with its reason. The cohort reports
    the failures at the end (:meth:`CohortRun.finish`), so no :class:`FailedStudiesError` is raised then.

    Writing off the compute path (with a cohort): the post-processing is split at its first per-study writer
    (:func:`split_writers`); the head runs right after inference, the tail (writers, and what follows the first of
    them), the finite check and the commit run per study as one *write job*. With ``async_write`` (default) the
    whole post-processing (head too: e.g. ``Invertd`` to the input's grid) is the write job, so the compute thread
    only loads, infers and hands over; the jobs run in order in one background thread (:class:`BackgroundWriter`)
    while the next batch is loaded and inferred, their JPEG 2000 / RLE pixel encoding in a worker process
    (:func:`~monai_saliency.data.dicom.encoding.encode_in_worker_process`: openjpeg holds the GIL while it encodes,
    which would stop the compute thread);
    at most ``write_queue`` finished studies wait in memory (the compute thread blocks when the queue is full). A
    study is committed only after all its files are written, a writing error fails that study alone (a batch is not
    retried for it: its other studies are fine), :meth:`run` returns only after every job is done (so
    ``cohort.finish()`` sees every record), and an exception in the run cancels the queued jobs (their staging
    folders are removed; nothing partial is ever in place, the staging area is hidden and the move is atomic). The
    outputs are the same files, byte for byte, as with ``async_write=False`` (the same jobs, run inline).

    With ``write_process`` (with ``async_write``) the write jobs run in one child process instead of the writer
    thread (:class:`~monai_saliency.engines.write_process.WriterProcess`): the writers (nibabel, PIL, pydicom) hold
    the GIL most of the time, so a writer thread and the compute thread share one core, while the child writes on
    another. The child is a fork of this process at the start of the run (where that is safe:
    :func:`~monai_saliency.engines.write_process.can_fork`; it has the writers as they are here, which ``Invertd``
    needs), each study's ``(batch, output)`` is sent to it with its tensors on the CPU, and it runs the writers, the
    finite check and the probabilities (DICOM pixels encoded in the child itself); the writer thread waits for it
    and commits (records, checksums and the atomic move stay in this process). A writing error fails that study
    alone with the same reason as in the thread; a child that dies fails the study it was writing
    (``RuntimeError: the writer process ended while writing this study ...``), and the rest of the run is written
    by the writer thread, as it is when no child can be forked (a warning says why); the child ends with the run
    (also when it is cancelled or raises). The files are the same, byte for byte.

    ``amp`` (the bundles' ``--amp true``) runs the network and the explainers under ``torch.autocast("cuda")``
    (float16 where autocast casts; the maps are float32 or upcast by the explainers). It applies to CUDA only:
    on another device it is switched off with a warning. A string flag from the command line is accepted.

    Args:
        args: as ``SupervisedEvaluator``.
        raise_on_failure: raise at the end if any study failed to load (default True; not used with a cohort).
        cohort: the cohort run, or None for the plain behaviour.
        folder_key: the item key that receives the study's staging folder.
        logits_key: the output key of the network's logits (``SaliencyInferer``'s ``pred_key``); None for a network
            without class scores (segmentation): studies are recorded without a prediction.
        async_write: with a cohort, write (and commit) each study in a background thread while the next computes
            (default True; a command-line string ``true``/``false`` is accepted). Without a cohort the writers run
            inline as in ``SupervisedEvaluator``.
        write_queue: how many finished studies may wait for the background writer (default 2; bounds memory).
        write_process: with ``async_write`` and a cohort, run the writers in one child process (default False; a
            command-line string is accepted; ignored with a warning when ``async_write`` is False).
        kwargs: as ``SupervisedEvaluator``.

    Raises:
        ValueError: an ``amp``, ``async_write`` or ``write_process`` that is not a boolean flag, a ``write_queue``
            below 1.
    """

    def __init__(
        self,
        *args: Any,
        raise_on_failure: bool = True,
        cohort: Any = None,
        folder_key: str = "study_dir",
        logits_key: str | None = "logits",
        async_write: bool | str = True,
        write_queue: int = 2,
        write_process: bool | str = False,
        **kwargs: Any,
    ) -> None:
        amp = as_bool(kwargs.pop("amp", False), "amp")
        self.async_write = as_bool(async_write, "async_write")
        self.write_process = as_bool(write_process, "write_process")
        if self.write_process and not self.async_write:
            # an info, not a warning: the angiogram bundle's default is true, and --async_write false is a choice
            logger.info("--write_process applies with --async_write true only; writing in this thread.")
            self.write_process = False
        self.writer_process: WriterProcess | None = None
        self.write_tail: Callable | None = None
        if cohort is not None:
            head, self.write_tail = split_writers(kwargs.get("postprocessing"))
            if self.async_write and head is not None and self.write_tail is not None:
                # the whole post-processing runs in the write job, off the compute path (head then tail on one
                # item is the whole Compose, see split_writers)
                head, self.write_tail = None, kwargs.get("postprocessing")
            kwargs["postprocessing"] = head
        device = kwargs.get("device", args[0] if args else None)
        if amp and getattr(device, "type", str(device)).split(":")[0] != "cuda":
            logger.warning("--amp applies to CUDA only; running in full precision on %s.", device)
            amp = False
        kwargs["amp"] = amp
        super().__init__(*args, **kwargs)
        self.failures: list[tuple[str, str]] = []
        self.raise_on_failure = raise_on_failure
        self.cohort = cohort
        self.folder_key = folder_key
        self.logits_key = logits_key
        self.writer = BackgroundWriter(write_queue)
        self._cohort_lock = threading.RLock()
        self.add_event_handler(Events.STARTED, lambda _: self.failures.clear())
        self.add_event_handler(Events.COMPLETED, self._report_failures)

    def run(self) -> None:
        """Run over the data loader and wait for the background writer; an empty shard (every study skipped, or fewer
        studies than ranks) is a no-op.

        Raises:
            RuntimeError: the background writer itself failed (not a study: those are recorded as failed).
        """
        if self.cohort is not None and len(self.data_loader) == 0:
            logger.info("no study to process on this process.")
            return
        self.writer_process = None
        if self.write_process and self.cohort is not None and self.write_tail is not None:
            names = getattr(self.cohort, "class_names", None)
            self.writer_process = WriterProcess(self.write_tail, self.logits_key, names)
            if not self.writer_process.start():  # forked now, while this is the only thread
                logger.warning(
                    "--write_process: no writer process (%s); writing in the writer thread.",
                    self.writer_process.unavailable,
                )
        cancel = True
        try:
            try:
                super().run()
            except BaseException:
                self.writer.close(cancel=True)
                raise
            self.writer.close()
            cancel = False
        finally:
            if self.writer_process is not None:
                self.writer_process.close(cancel=cancel)

    def _iteration(self, engine: Engine, batchdata: dict[str, Any]) -> Any:
        if isinstance(batchdata, dict) and FAILED_KEY in batchdata:
            batchdata = dict(batchdata)
            for name, error in batchdata.pop(FAILED_KEY):
                if self.cohort is not None:
                    with self._cohort_lock:
                        self.cohort.fail(name, error)
                else:
                    logger.error("study %s could not be processed: %s", name, error)
                self.failures.append((name, error))
            if CommonKeys.IMAGE not in batchdata:
                engine.state.batch = []
                engine.state.output = []
                return []
            engine.state.batch = batchdata
        if self.cohort is None:
            return super()._iteration(engine, batchdata)
        batch, output = self._cohort_iteration(engine, batchdata)
        engine.state.batch, engine.state.output = batch, output
        return output

    def _cohort_iteration(self, engine: Engine, batchdata: dict[str, Any]) -> tuple[list, list]:
        """One batch under the cohort: stage, infer, run the head of the post-processing, then hand each study to its
        write job (background or inline); retry items of a batch whose inference or head failed."""
        studies = list(batchdata[self.cohort.study_key])
        try:
            staged = dict(batchdata)
            with self._cohort_lock:
                staged[self.folder_key] = [self.cohort.stage(s) for s in studies]
            engine.state.batch = staged
            super()._iteration(engine, staged)
            batch, output = engine.state.batch, engine.state.output
            if not isinstance(batch, list) or not isinstance(output, list):
                batch, output = decollate_batch(batch), decollate_batch(output)
        except Exception as exc:  # noqa: BLE001  inference or post-processing: isolate the bad study
            with self._cohort_lock:
                for s in studies:
                    self.cohort.discard(s)
            if len(studies) > 1:
                items = decollate_batch(batchdata, detach=False)
                results = [self._cohort_iteration(engine, list_data_collate([item])) for item in items]
                return [b for r in results for b in r[0]], [o for r in results for o in r[1]]
            self._fail(studies[0], exc)
            return [], []
        for b, o in zip(batch, output):
            study = b[self.cohort.study_key]
            if self.async_write:
                self.writer.submit(
                    lambda b=b, o=o, study=study: self._write_study(b, o, study),
                    on_cancel=lambda study=study: self._discard(study),
                )
            else:
                self._write_study(b, o, study)
        return batch, output

    def _write_study(self, batch: dict[str, Any], output: dict[str, Any], study: str) -> None:
        """One study's write job: the writing tail of the post-processing, the finite check, the commit; any error
        fails this study alone (its staging folder is removed, nothing is moved into place)."""
        if self.writer_process is not None:
            try:
                self._write_study_in_process(batch, output, study)
                return
            except ChildUnavailable:
                pass  # no child takes it (any more): written here
        offload = encode_in_worker_process() if self.async_write else contextlib.nullcontext()
        try:
            with torch.no_grad(), offload:
                if self.write_tail is not None:
                    batch, output = engine_apply_transform(batch, output, self.write_tail)
                probabilities = self._probabilities(output)
            with self._cohort_lock:
                self.cohort.commit(study, probabilities)
        except Exception as exc:  # noqa: BLE001  a writer, a bad output or an unsafe destination: only this study
            self._fail(study, exc)

    def _write_study_in_process(self, batch: dict[str, Any], output: dict[str, Any], study: str) -> None:
        """:meth:`_write_study` with the writers, the finite check and the probabilities in the writer process; the
        commit here. A failure in the child is recorded with the reason a writer thread would give.

        Raises:
            ChildUnavailable: no child takes the study; nothing was written (write it in this thread).
        """
        try:
            probabilities = self.writer_process.write(batch, output)
            with self._cohort_lock:
                self.cohort.commit(study, probabilities)
        except ChildUnavailable:
            raise
        except StudyWriteError as exc:
            if getattr(self.cohort, "debug", False):
                logger.error("study %s: the writer process's traceback:\n%s", study, exc.details)
            self._fail(study, exc.reason)
        except Exception as exc:  # noqa: BLE001  the child ended, or the commit: only this study
            self._fail(study, exc)

    def _discard(self, study: str) -> None:
        with self._cohort_lock:
            self.cohort.discard(study)

    def _fail(self, study: str, exc: BaseException | str) -> None:
        with self._cohort_lock:
            self.cohort.fail(study, exc)
        self.failures.append((study, one_line(exc)))

    def _probabilities(self, output: dict[str, Any]) -> list[float] | None:
        """Softmax probabilities of one study's logits, after checking the logits and maps are finite
        (:func:`~monai_saliency.engines.write_process.study_probabilities` with the cohort's ``class_names``).

        Raises:
            ValueError: NaN/Inf in the logits or a map, or a class count other than the cohort's ``class_names``.
        """
        return study_probabilities(output, self.logits_key, getattr(self.cohort, "class_names", None))

    def _report_failures(self, _engine: Engine) -> None:
        if self.failures and self.raise_on_failure and self.cohort is None:
            names = "; ".join(f"{name} ({error})" for name, error in self.failures)
            raise FailedStudiesError(f"{len(self.failures)} studies could not be processed: {names}")
