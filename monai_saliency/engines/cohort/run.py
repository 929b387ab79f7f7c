"""A cohort run: the studies of a dataset folder, each written into its own output folder, safely and resumably.

:class:`CohortRun` is the object a bundle config holds (``"cohort": {"_target_":
"monai_saliency.engines.cohort.CohortRun", ...}``, ``"datalist": "$@cohort.datalist()"``); the evaluator
(:class:`monai_saliency.engines.evaluator.SaliencyEvaluator` with ``cohort=@cohort``) calls :meth:`CohortRun.stage`,
:meth:`CohortRun.commit` and :meth:`CohortRun.fail` per study; the config's ``run`` ends with
:meth:`CohortRun.finish` and its ``finalize`` with :meth:`CohortRun.exit`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_saliency.engines.cohort.layout import KINDS, LayoutError, Study, discover_studies, plan_layout
from monai_saliency.engines.cohort.lock import LockError, RunLock
from monai_saliency.engines.cohort.manifest import (
    MANIFEST_NAME,
    PREDICTIONS_NAME,
    RecordStore,
    atomic_write_text,
    file_entries,
    is_complete,
    package_versions,
    predictions_csv,
    sha256_file,
    utc_now,
)
from monai_saliency.engines.cohort.messages import install_once_filters, one_line, remove_once_filters
from monai_saliency.engines.cohort.report import write_report
from monai_saliency.engines.cohort.staging import Staging

__all__ = ["CohortRun"]

logger = logging.getLogger(__name__)


def _dist() -> tuple[int, int, Any]:
    """(rank, world size, the initialised ``torch.distributed`` module or None)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed
        dist = None
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), None


def _flag(value: Any) -> bool:
    """A command-line flag: ``true``/``false`` (any case), ``1``/``0``, ``yes``/``no`` or a bool.

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", ""):
            return False
        raise ValueError(f"expected true or false, got {value!r}.")
    return bool(value)


class CohortRun:
    """Plan, lock, stage, record and report one run of a bundle over ``dataset_dir``.

    Args:
        dataset_dir: folder of studies (searched recursively, see :mod:`monai_saliency.engines.cohort.layout`).
        output_dir: where every output goes (created); may be ``dataset_dir`` or inside it.
        kinds: study kinds to look for (``"nifti"`` by suffix, ``"dicom"`` by content).
        overwrite: recompute studies whose outputs are complete from an earlier run (default: skip them).
        debug: log each failure's traceback.
        ckpt_path: the model checkpoint (its SHA-256 goes into the manifest).
        class_names: names of the predicted classes (``predictions.csv`` columns ``prob_<name>``).
        settings: configuration values to record in the manifest (e.g. the bundle's overrides).
        study_key: datalist key of the study id.
        image_key: datalist key of the input path.
        finder: how studies are found, ``finder(dataset_dir, output_dir, kinds, exclude_folders)`` returning sorted
            ``(study id, absolute path)`` pairs (default :func:`~monai_saliency.engines.cohort.layout.discover_studies`,
            one file per study; a bundle whose studies are series folders passes its own, with the same exclusions).
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        kinds: Sequence[str] = KINDS,
        overwrite: bool = False,
        debug: bool = False,
        ckpt_path: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        settings: Mapping[str, Any] | None = None,
        study_key: str = "study",
        image_key: str = "image",
        finder: Callable[..., list[tuple[str, str]]] | None = None,
    ) -> None:
        self.dataset_dir = Path(os.path.abspath(dataset_dir))
        self.output_dir = Path(os.path.abspath(output_dir))
        self.kinds, self.overwrite, self.debug = tuple(kinds), _flag(overwrite), _flag(debug)
        self.ckpt_path = ckpt_path
        self.class_names = list(class_names) if class_names is not None else None
        self.settings = dict(settings or {})
        self.study_key, self.image_key = study_key, image_key
        self.finder = finder or discover_studies
        self.run_id = (
            os.environ.get("TORCHELASTIC_RUN_ID") or f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        )
        self.started = utc_now()
        self.studies: list[Study] = []
        self._by_id: dict[str, Study] = {}
        self.skipped: set[str] = set()
        self._staged: dict[str, Path] = {}
        self._prepared = False
        self.n_failed = 0
        self.records = RecordStore(self.output_dir)
        self.staging = Staging(self.output_dir, self.run_id)
        self.lock: RunLock | None = None

    # ---------------------------------------------------------------- planning
    def _plan(self) -> list[Study]:
        records = self.records.read_all() if self.output_dir.is_dir() else {}
        known = {r["folder"] for r in records.values() if r.get("folder")}
        known |= {r["previous"]["folder"] for r in records.values() if (r.get("previous") or {}).get("folder")}
        manifest = self.output_dir / MANIFEST_NAME
        if manifest.is_file() and not manifest.is_symlink():
            try:
                known |= {s["folder"] for s in json.loads(manifest.read_text())["studies"] if s.get("folder")}
            except (OSError, ValueError, KeyError, TypeError):
                pass
        found = self.finder(self.dataset_dir, self.output_dir, self.kinds, exclude_folders=known)
        if not found:
            raise ValueError(f"no studies ({'/'.join(self.kinds)}) found under {self.dataset_dir}.")
        recorded = {sid: r["folder"] for sid, r in records.items() if r.get("folder")}
        studies = plan_layout(found, recorded)
        taken = [
            s for s in studies if os.path.lexists(self.output_dir / s.folder) and recorded.get(s.study_id) != s.folder
        ]
        if taken:
            listing = ", ".join(f"{s.study_id!r} -> {s.folder!r}" for s in taken)
            raise LayoutError(
                f"the output folders of these studies already exist in {self.output_dir} and are not earlier outputs "
                f"of the same study: {listing}. Choose another --output_dir; nothing was written."
            )
        self.skipped = set()
        if not self.overwrite:
            for s in studies:
                rec = records.get(s.study_id)
                own = rec and rec.get("run_id") != self.run_id and rec.get("folder") == s.folder
                if own and is_complete(rec, self.output_dir):
                    self.skipped.add(s.study_id)
        return studies

    def prepare(self) -> None:
        """Plan the layout (errors before anything is written), create ``output_dir``, take the lock, remove the
        leftovers of crashed runs. Called by :meth:`datalist`; idempotent.

        Raises:
            FileNotFoundError: ``dataset_dir`` is missing.
            LayoutError: unresolvable output folder collisions.
            monai_saliency.engines.cohort.lock.LockError: another live run writes to ``output_dir``.
        """
        if self._prepared:
            return
        install_once_filters()
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise NotADirectoryError(f"--output_dir {self.output_dir} exists and is not a folder.")
        if not self.dataset_dir.is_dir():
            raise FileNotFoundError(f"dataset folder {self.dataset_dir} does not exist; set --dataset_dir.")
        created = not self.output_dir.exists()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
        try:
            self.lock = RunLock(self.output_dir, self.run_id, pid=os.getppid() if under_torchrun else None).acquire()
        except LockError:
            if created:
                self.output_dir.rmdir()
            raise
        try:
            self.studies = self._plan()  # errors here leave nothing written
            self._by_id = {s.study_id: s for s in self.studies} | {s.path: s for s in self.studies}
        except BaseException:
            self.lock.release()
            if created:
                with contextlib.suppress(OSError):
                    self.output_dir.rmdir()
            raise
        atexit.register(self._release_on_exit)
        self.staging.clean_leftovers()
        self._prepared = True

    def datalist(self) -> list[dict[str, str]]:
        """The items to process: ``{study_key: id, image_key: path}`` per study not skipped, sorted by id.

        A run that cannot start safely (see :meth:`prepare`) ends here with its reason on one line and exit status 2
        (the exception itself with ``debug``).
        """
        try:
            self.prepare()
        except (LayoutError, LockError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
            if self.debug:
                raise
            print(f"ERROR: {one_line(exc)}", file=sys.stderr, flush=True)
            raise SystemExit(2) from exc
        return [
            {self.study_key: s.study_id, self.image_key: s.path} for s in self.studies if s.study_id not in self.skipped
        ]

    # ---------------------------------------------------------------- per study
    def _study(self, study_id: str) -> Study:
        if study_id not in self._by_id:
            raise KeyError(f"{study_id!r} is not a study of this run.")
        return self._by_id[study_id]

    def stage(self, study_id: str) -> str:
        """Create the study's fresh staging folder (writers get it through their ``folder_key``) and return it."""
        self.discard(study_id)
        self._staged[study_id] = self.staging.new_folder()
        return str(self._staged[study_id])

    def discard(self, study_id: str) -> None:
        """Remove the study's staging folder, if any (its partial outputs)."""
        self.staging.discard(self._staged.pop(study_id, None))

    def commit(self, study_id: str, probabilities: Sequence[float] | None = None) -> None:
        """Move the study's complete outputs into place and record them (with checksums and the prediction).

        Raises:
            ValueError: the staging folder is empty.
            monai_saliency.engines.cohort.staging.UnsafePathError: the final folder's path holds a symlink or a file.
        """
        study = self._study(study_id)
        folder = self._staged.pop(study.study_id)
        entries = file_entries(folder, folder)
        if not entries:
            self.staging.discard(folder)
            raise ValueError("no output was written for this study.")
        for e in entries:
            e["path"] = f"{study.folder}/{e['path']}"
        base = {"study": study.study_id, "input": study.path, "folder": study.folder, "run_id": self.run_id}
        self.records.write({**base, "status": "committing", "error": None, "outputs": []})
        try:
            self.staging.commit(folder, study.folder)
        except BaseException:
            self.staging.discard(folder)
            raise
        prediction = None
        if probabilities is not None:
            probs = [float(p) for p in probabilities]
            prediction = {"probabilities": probs, "label": max(range(len(probs)), key=probs.__getitem__)}
        self.records.write({**base, "status": "ok", "error": None, "outputs": entries, "prediction": prediction})

    def fail(self, study_id: str, error: BaseException | str) -> None:
        """Record a failed study (its staging folder removed; a complete earlier output is kept and recorded under
        ``previous``) and log it on one line (with the traceback when ``debug``)."""
        study = self._study(study_id)
        self.discard(study.study_id)
        reason = one_line(error)
        if self.debug and isinstance(error, BaseException):
            logger.error("study %s failed", study.study_id, exc_info=error)
        else:
            logger.error("study %s could not be processed: %s", study.study_id, reason)
        earlier = self.records.read(study.study_id)
        previous = earlier if is_complete(earlier, self.output_dir) else (earlier or {}).get("previous")
        self.records.write(
            {
                "study": study.study_id,
                "input": study.path,
                "folder": study.folder,
                "run_id": self.run_id,
                "status": "failed",
                "error": reason,
                "outputs": [],
                "prediction": None,
                "previous": previous,
            }
        )
        self.n_failed += 1

    # ---------------------------------------------------------------- run level
    def _checkpoint(self) -> dict[str, Any] | None:
        if self.ckpt_path is None:
            return None
        path = Path(self.ckpt_path)
        return {"path": str(path.resolve()), "sha256": sha256_file(path) if path.is_file() else None}

    def manifest(self) -> dict[str, Any]:
        """The run manifest rebuilt from the records on disk (see :mod:`monai_saliency.engines.cohort.manifest`)."""
        records = self.records.read_all()
        studies, counts = [], {"ok": 0, "skipped": 0, "failed": 0, "not processed": 0}
        for s in self.studies:
            rec = records.get(s.study_id) or {}
            if s.study_id in self.skipped:
                status = "skipped"
            elif rec.get("run_id") == self.run_id and rec.get("status") in ("ok", "failed"):
                status = rec["status"]
            else:
                status = "not processed"
            counts[status] += 1
            keep = status in ("ok", "skipped")
            studies.append(
                {
                    "study": s.study_id,
                    "input": s.path,
                    "status": status,
                    "error": rec.get("error") if status == "failed" else None,
                    "folder": s.folder,
                    "outputs": rec.get("outputs", []) if keep else [],
                    "prediction": rec.get("prediction") if keep else None,
                    "computed_by_run": rec.get("run_id") if keep else None,
                    "previous": rec.get("previous") if status == "failed" else None,
                }
            )
        return {
            "schema": "monai_saliency.cohort.manifest/1",
            "run": {
                "run_id": self.run_id,
                "started": self.started,
                "updated": utc_now(),
                "dataset_dir": str(self.dataset_dir),
                "output_dir": str(self.output_dir),
                "overwrite": self.overwrite,
                "kinds": list(self.kinds),
                "command": sys.argv,
                "settings": self.settings,
                "versions": package_versions(),
                "checkpoint": self._checkpoint(),
            },
            "summary": counts,
            "studies": studies,
        }

    def write_run_files(self) -> dict[str, Any]:
        """Rebuild ``run_manifest.json`` and ``predictions.csv`` from the records (under the merge lock).

        Returns:
            The manifest.
        """
        with self.records.merge_lock():
            manifest = self.manifest()
            rows = [
                (s["study"], s["prediction"]["probabilities"], s["prediction"]["label"])
                for s in manifest["studies"]
                if s["prediction"] is not None
            ]
            atomic_write_text(self.output_dir / PREDICTIONS_NAME, predictions_csv(rows, self.class_names))
            atomic_write_text(
                self.output_dir / MANIFEST_NAME, json.dumps(manifest, indent=1, ensure_ascii=False, default=str)
            )
        return manifest

    def finish(self) -> dict[str, Any]:
        """End the run: rebuild the run-level files (every rank; after a barrier rank 0 again, with all ranks'
        records) and rank 0 the quick-look page ``report.html``, print one ``FAILED <study>: <reason>`` line per failed study and the summary, release the lock.

        Returns:
            The manifest's summary counts.
        """
        self.prepare()
        manifest = self.write_run_files()
        rank, world, dist = _dist()
        if dist is not None and world > 1:
            dist.barrier()
            if rank == 0:
                manifest = self.write_run_files()
            dist.barrier()
            manifest = self.manifest() if rank != 0 else manifest
        counts = manifest["summary"]
        self.n_failed = counts["failed"] + counts["not processed"]
        if rank == 0:
            write_report(self.output_dir, manifest, self.class_names)
            for s in manifest["studies"]:
                if s["status"] in ("failed", "not processed"):
                    print(
                        f"FAILED {s['study']}: {s['error'] or 'not processed (the run was interrupted)'}",
                        file=sys.stderr,
                    )
            print(
                f"cohort run {self.run_id}: {counts['ok']} succeeded, {counts['skipped']} skipped, "
                f"{self.n_failed} failed; outputs in {self.output_dir}",
                flush=True,
            )
            self.staging.finish()
            if self.lock is not None:
                self.lock.release()
        remove_once_filters()
        return counts

    def exit(self) -> None:
        """Exit the process with status 1 when any study failed (call it last, in the config's ``finalize``)."""
        if self.n_failed:
            sys.stdout.flush()
            sys.stderr.flush()
            raise SystemExit(1)

    def _release_on_exit(self) -> None:
        if self.lock is not None and _dist()[0] == 0:
            self.lock.release()
