"""A safe, resumable run of the ``pet_morch_saliency`` bundle (issue #23): one run = one study folder = one output set.

The maps of a study are a function of all its scans, so the unit of a run is the whole study folder and its outputs
are one set, ``output_dir/morch_maps/``. :class:`StudyRun` (the config's ``pet_run``) uses the cohort primitives of
:mod:`monai_saliency.engines.cohort`:

* **lock** (:class:`~monai_saliency.engines.cohort.RunLock`): one run per ``output_dir``; a second one refuses with
  the first's pid; the lock of a dead run is taken over.
* **staging** (:class:`~monai_saliency.engines.cohort.Staging`): every file is written into a hidden staging folder of
  ``output_dir``; only the complete set replaces the previous ``morch_maps/`` (one atomic folder exchange). A failed
  run (a bad scan, a full disk, an exception) removes its staging folder and keeps the earlier set; a killed run's
  leftovers are removed by the next run.
* **manifest**: ``run_manifest.json`` (input files with SHA-256, status, error, outputs with SHA-256, settings,
  package versions, model checksum) and a record under ``.cohort/records`` used to skip a rerun whose outputs are
  complete and whose inputs, settings and model are unchanged (``--overwrite true`` recomputes).
* **errors**: :func:`compact_errors` prints a failure on one line (the traceback with ``--debug true``); the exit
  code is non-zero.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_saliency.data.synthetic.pet_phantom import PETStudy
from monai_saliency.engines.cohort import CohortRun, LockError, RunLock, UnsafePathError, is_complete, one_line
from monai_saliency.engines.cohort.manifest import MANIFEST_NAME, atomic_write_text, file_entries, sha256_file
from monai_saliency.engines.cohort.messages import install_once_filters

__all__ = ["OUTPUT_FOLDER", "STUDY_ID", "StudyRun", "compact_errors", "reason"]

logger = logging.getLogger("pet_morch_saliency")

OUTPUT_FOLDER = "morch_maps"
"""The folder of ``output_dir`` holding a run's output set."""
STUDY_ID = "."
"""The study's id (its path relative to ``dataset_dir``: the folder itself)."""

_FAILURE: dict[str, BaseException] = {}
_WRAPPERS = ("Failed to instantiate component", "Failed to evaluate")
_TRACEBACK = "Traceback (most recent call last):"


def reason(error: BaseException) -> str:
    """One line for an error: the first exception of its ``__cause__`` chain that is not one of MONAI's config
    wrappers (``RuntimeError("Failed to instantiate component ...")``), as ``Type: message``; our own errors
    (StudyError, LockError, ...) name the file and the fix, so they are not replaced by their own causes."""
    seen = set()
    while (
        isinstance(error, RuntimeError)
        and str(error).startswith(_WRAPPERS)
        and error.__cause__ is not None
        and id(error) not in seen
    ):
        seen.add(id(error))
        error = error.__cause__
    text = str(error)
    if _TRACEBACK in text:  # MONAI's SaveImage embeds its writers' tracebacks: keep their last line, the error
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = f"{lines[0]} ({lines[-1]})"
    return one_line(f"{type(error).__name__}: {text}")


def compact_errors(debug: bool = False) -> None:
    """Print an uncaught error as one line ``ERROR: <reason>`` (the innermost cause, MONAI's config wrappers
    dropped) instead of a traceback, unless ``debug``; the exit code stays 1. The error is kept for
    :class:`StudyRun`'s failure record.

    Args:
        debug: keep Python's full traceback.
    """
    original = sys.excepthook

    def hook(kind, value, tb):
        _FAILURE["error"] = value
        if debug:
            original(kind, value, tb)
        else:
            print(f"ERROR: {reason(value)} (--debug true shows the traceback)", file=sys.stderr, flush=True)

    sys.excepthook = hook


def _rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


class StudyRun:
    """Lock, stage, commit and record the one output set of a study folder.

    Args:
        dataset_dir: the study folder.
        output_dir: the run's output folder (created); may be ``dataset_dir`` or inside it, even inside a scan folder.
        ckpt_path: the model (its SHA-256 goes into the manifest and decides whether a rerun may be skipped).
        overwrite: recompute even when the earlier outputs are complete and nothing changed.
        settings: the configuration recorded in the manifest (a change recomputes).
        debug: raise a refusal to start instead of printing it on one line.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        ckpt_path: str | os.PathLike | None = None,
        overwrite: bool = False,
        settings: Mapping[str, Any] | None = None,
        debug: bool = False,
    ) -> None:
        settings = json.loads(json.dumps(dict(settings or {}), default=str))
        # the cohort layer's run (no per-file studies here): run id, records, staging and the manifest's run header
        self.cohort = CohortRun(
            dataset_dir, output_dir, kinds=(), overwrite=overwrite, ckpt_path=ckpt_path, settings=settings
        )
        self.dataset_dir, self.output_dir = self.cohort.dataset_dir, self.cohort.output_dir
        self.final = self.output_dir / OUTPUT_FOLDER
        self.overwrite, self.settings, self.run_id = self.cohort.overwrite, self.cohort.settings, self.cohort.run_id
        self.records, self.staging = self.cohort.records, self.cohort.staging
        self.debug = bool(debug)
        self.checkpoint: dict[str, Any] | None = None
        self.lock: RunLock | None = None
        self.stage_dir: Path | None = None
        self.inputs: list[dict[str, Any]] = []
        self.done = False

    @property
    def excluded(self) -> list[Path]:
        """Folders never searched for scans (``load_study``'s ``exclude``): the output folder and its output set."""
        return [self.output_dir, self.final]

    # ------------------------------------------------------------------ start
    def _check_output_dir(self, study: PETStudy) -> None:
        """Refuse, before anything is written, an output set that would replace a symlink, a file, an input or a
        folder that no earlier run of this bundle wrote."""
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise NotADirectoryError(f"--output_dir {self.output_dir} exists and is not a folder.")
        if (self.output_dir / MANIFEST_NAME).resolve() in set(study.input_files):
            raise FileExistsError(
                f"{self.output_dir / MANIFEST_NAME} is an input of the study; choose another --output_dir."
            )
        try:
            st = os.lstat(self.final)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
            raise UnsafePathError(
                f"{self.final} is {kind}; refusing to replace or write through it. Nothing was written."
            )
        final = self.final.resolve()
        inside = [p for p in study.input_files if final in Path(p).parents]
        recorded = (self.records.read(STUDY_ID) or {}).get("folder") == OUTPUT_FOLDER
        if inside or not recorded:
            why = f"it holds the input {inside[0]}" if inside else "no earlier run of this bundle recorded it"
            raise FileExistsError(
                f"{self.final} exists and is not an earlier output set ({why}); choose another --output_dir. "
                "Nothing was written."
            )

    def _input_entries(self, study: PETStudy) -> list[dict[str, Any]]:
        entries = []
        for p in study.input_files:
            p = Path(p)
            rel = os.path.relpath(p, self.dataset_dir.resolve())
            entries.append(
                {
                    "path": Path(rel).as_posix() if not rel.startswith("..") else str(p),
                    "sha256": sha256_file(p),
                    "bytes": p.stat().st_size,
                }
            )
        return entries

    def _unchanged(self, record: Mapping[str, Any] | None) -> bool:
        return (
            record is not None
            and is_complete(record, self.output_dir)
            and record.get("inputs") == self.inputs
            and record.get("settings") == self.settings
            and record.get("checkpoint") == self.checkpoint
        )

    def _take(self, study: PETStudy) -> None:
        """Check the output folder, take the lock, remove crashed runs' leftovers, check again under the lock."""
        self._check_output_dir(study)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
        self.lock = RunLock(self.output_dir, self.run_id, pid=os.getppid() if under_torchrun else None).acquire()
        self.staging.clean_leftovers()
        self._check_output_dir(study)

    def start(self, study: PETStudy) -> None:
        """Check the output folder, take the lock, remove a crashed run's leftovers, and either skip the run (earlier
        outputs complete, nothing changed, no ``overwrite``: exits with status 0) or create the staging folder.

        A run that cannot start safely (another live run holds the lock; an output set or manifest path that is a
        symlink, a file, an input or not an earlier output) writes nothing and ends with one ``ERROR:`` line and exit
        status 2 (with ``debug``: the exception, a LockError, UnsafePathError, FileExistsError or NotADirectoryError).
        """
        install_once_filters()
        try:
            self._take(study)
        except (LockError, UnsafePathError, FileExistsError, NotADirectoryError) as exc:
            if self.lock is not None:  # refused under the lock: release it, touch nothing else
                self.lock.release()
                self.lock = None
            if self.debug:
                raise
            print(f"ERROR: {reason(exc)}", file=sys.stderr, flush=True)  # a refusal: exit status 2, as CohortRun's
            raise SystemExit(2) from exc
        atexit.register(self._on_exit)
        self.inputs = self._input_entries(study)
        self.checkpoint = self.cohort.manifest()["run"]["checkpoint"]
        if not self.overwrite and self._unchanged(self.records.read(STUDY_ID)):
            self.done = True
            if _rank() == 0:
                self._write_manifest("skipped", None, self.records.read(STUDY_ID))
                print(
                    f"outputs in {self.final} are complete and their inputs, settings and model are unchanged "
                    "(run_manifest.json): skipped; --overwrite true recomputes them.",
                    flush=True,
                )
                self._release()
            raise SystemExit(0)
        if _rank() == 0:
            self.stage_dir = self.staging.new_folder()

    def output_folder(self) -> str:
        """The folder the writers write into: the run's staging folder (rank 0)."""
        if self.stage_dir is None:
            return str(self.staging.area / "not-staged")  # non-zero ranks write nothing
        return str(self.stage_dir)

    # ------------------------------------------------------------------ end
    def _study_entry(self, status: str, error: str | None, record: Mapping[str, Any] | None) -> dict[str, Any]:
        keep = status in ("ok", "skipped")
        return {
            "study": STUDY_ID,
            "input": str(self.dataset_dir),
            "inputs": self.inputs,
            "status": status,
            "error": error,
            "folder": OUTPUT_FOLDER if keep else (record or {}).get("folder"),
            "outputs": (record or {}).get("outputs", []) if keep else [],
            "computed_by_run": (record or {}).get("run_id") if keep else None,
            "previous": (record or {}).get("previous") if status == "failed" else None,
        }

    def _write_manifest(self, status: str, error: str | None, record: Mapping[str, Any] | None) -> None:
        counts = {"ok": 0, "skipped": 0, "failed": 0}
        counts[status] += 1
        manifest = self.cohort.manifest()  # schema and run header (settings, versions, model checksum)
        manifest.update(summary=counts, studies=[self._study_entry(status, error, record)])
        atomic_write_text(self.output_dir / MANIFEST_NAME, json.dumps(manifest, indent=1, ensure_ascii=False))

    def _base(self) -> dict[str, Any]:
        return {
            "study": STUDY_ID,
            "input": str(self.dataset_dir),
            "inputs": self.inputs,
            "settings": self.settings,
            "checkpoint": self.checkpoint,
            "run_id": self.run_id,
        }

    def finish(self, written: Mapping[str, Any]) -> dict[str, Any] | None:
        """Move the complete staging folder onto ``output_dir/morch_maps`` (replacing the earlier set in one step),
        record it with checksums, write ``run_manifest.json``, release the lock (rank 0; other ranks return None).

        Args:
            written: the writer's ``{name: path}`` (its completion is the signal; the files are those staged).

        Returns:
            The study's record.
        """
        if _rank() != 0 or self.stage_dir is None:
            self.done = True
            return None
        folder, self.stage_dir = self.stage_dir, None
        entries = file_entries(folder, folder)
        if not entries or not written:
            self.staging.discard(folder)
            raise RuntimeError("no output was written.")
        for e in entries:
            e["path"] = f"{OUTPUT_FOLDER}/{e['path']}"
        self.records.write({**self._base(), "folder": OUTPUT_FOLDER, "status": "committing", "outputs": []})
        try:
            self.staging.commit(folder, OUTPUT_FOLDER)
        except BaseException:
            self.staging.discard(folder)
            raise
        record = {**self._base(), "folder": OUTPUT_FOLDER, "status": "ok", "error": None, "outputs": entries}
        self.records.write(record)
        self._write_manifest("ok", None, record)
        self.done = True
        self._release()
        print(f"run {self.run_id}: {len(entries)} outputs written to {self.final}", flush=True)
        return record

    def _release(self) -> None:
        self.staging.finish()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _on_exit(self) -> None:
        """At exit without :meth:`finish`: discard the staging folder (the earlier set stays), record the failure
        (keeping the earlier complete record as ``previous``), rewrite the manifest, release the lock."""
        if self.done or _rank() != 0 or self.lock is None:
            return
        try:
            self.staging.discard(self.stage_dir)
            error = _FAILURE.get("error")
            why = reason(error) if error is not None else "the run ended before its outputs were complete"
            earlier = self.records.read(STUDY_ID)
            previous = earlier if is_complete(earlier, self.output_dir) else (earlier or {}).get("previous")
            record = {**self._base(), "folder": (previous or {}).get("folder"), "status": "failed", "error": why}
            self.records.write({**record, "outputs": [], "previous": previous})
            self._write_manifest("failed", why, {**record, "previous": previous})
            print(f"FAILED {STUDY_ID} ({self.dataset_dir}): {why}", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - the disk may be full: one line, never a second traceback
            print(f"WARNING: could not record the failure in {self.output_dir}: {one_line(exc)}", file=sys.stderr)
        finally:
            self._release()
