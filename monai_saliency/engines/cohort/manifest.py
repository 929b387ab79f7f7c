"""Per-study records, ``run_manifest.json`` and ``predictions.csv``, each written atomically.

A record is written for every study as soon as it completes (``output_dir/.cohort/records/<sha1 of id>.json``), so a
killed run loses only its in-flight studies; the run-level files are rebuilt from all records on disk (by whichever
process finishes, under a merge ``flock``), so resumed runs and ``torchrun`` ranks keep every earlier row.

Record schema (``schema`` ``"monai_saliency.cohort.record/1"``)::

    {"study": "<id: path relative to dataset_dir>", "input": "<absolute input path>",
     "status": "ok" | "failed" | "committing", "error": null | "<one line>",
     "folder": "<output folder relative to output_dir>",
     "outputs": [{"path": "<relative to output_dir>", "sha256": "<hex>", "bytes": n}, ...],
     "prediction": null | {"probabilities": [p0, p1, ...], "label": k},
     "run_id": "...", "finished": "<UTC ISO time>", "previous": null | <the earlier "ok" record kept on a failure>}
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import platform
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from monai_saliency.data.atomic import current_umask
from monai_saliency.engines.cohort.staging import safe_makedirs

__all__ = [
    "MANIFEST_NAME",
    "PREDICTIONS_NAME",
    "RecordStore",
    "atomic_write_text",
    "file_entries",
    "is_complete",
    "package_versions",
    "predictions_csv",
    "sha256_file",
    "utc_now",
]

MANIFEST_NAME = "run_manifest.json"
PREDICTIONS_NAME = "predictions.csv"
RECORD_SCHEMA = "monai_saliency.cohort.record/1"
_VERSIONED = ("monai_saliency", "monai", "torch", "numpy", "pytorch-ignite", "nibabel", "pydicom", "highdicom")


def utc_now() -> str:
    """The current UTC time as ISO 8601 (seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    An existing symlink at ``path`` is replaced by the file, never written through; on an error no partial file is
    left.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_entries(root: str | os.PathLike, folder: str | os.PathLike) -> list[dict[str, Any]]:
    """``[{"path", "sha256", "bytes"}]`` of the files below ``folder``, paths relative to ``root``, sorted.

    Raises:
        OSError: ``folder`` holds a symlink or another non-regular entry (writers never create one).
    """
    root, folder = Path(root), Path(folder)
    entries = []
    for dirpath, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{path} is not a regular file (a symlink?); refusing to record it.")
            entries.append(
                {"path": path.relative_to(root).as_posix(), "sha256": sha256_file(path), "bytes": st.st_size}
            )
    return sorted(entries, key=lambda e: e["path"])


def is_complete(record: Mapping[str, Any] | None, output_dir: str | os.PathLike) -> bool:
    """True if ``record`` is ``ok``, lists outputs, and each is a regular file with its recorded SHA-256."""
    if not record or record.get("status") != "ok" or not record.get("outputs"):
        return False
    for entry in record["outputs"]:
        path = Path(output_dir) / entry["path"]
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.get("bytes", st.st_size):
            return False
        if sha256_file(path) != entry["sha256"]:
            return False
    return True


class RecordStore:
    """The per-study records of ``output_dir`` (``.cohort/records/``).

    Args:
        output_dir: the run's output folder.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.folder = self.output_dir / ".cohort" / "records"

    def path_for(self, study_id: str) -> Path:
        """The record file of a study (named by the SHA-1 of its id: any name, any length)."""
        return self.folder / f"{hashlib.sha1(study_id.encode('utf-8')).hexdigest()}.json"

    def write(self, record: Mapping[str, Any]) -> None:
        """Write one study's record atomically (adds ``schema`` and ``finished``)."""
        safe_makedirs(self.output_dir, ".cohort/records")
        full = {"schema": RECORD_SCHEMA, "finished": utc_now(), **record}
        atomic_write_text(self.path_for(full["study"]), json.dumps(full, indent=1, ensure_ascii=False))

    def read(self, study_id: str) -> dict[str, Any] | None:
        """One study's record, None if absent or unreadable."""
        try:
            record = json.loads(self.path_for(study_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("study") == study_id else None

    def read_all(self) -> dict[str, dict[str, Any]]:
        """Every readable record, by study id (unreadable or foreign files are ignored)."""
        records = {}
        if not self.folder.is_dir():
            return records
        for path in sorted(self.folder.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("schema") == RECORD_SCHEMA and "study" in record:
                records[record["study"]] = record
        return records

    @contextmanager
    def merge_lock(self) -> Iterator[None]:
        """An exclusive ``flock`` serialising the rebuilds of the run-level files (ranks of one run)."""
        safe_makedirs(self.output_dir, ".cohort/records")
        fd = os.open(self.folder.parent / "merge.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def predictions_csv(rows: Iterable[tuple[str, Sequence[float], int]], class_names: Sequence[str] | None) -> str:
    """The text of ``predictions.csv``: header ``study, prob_<class>..., label``, rows sorted by study id.

    Args:
        rows: ``(study id, probabilities, predicted label)``.
        class_names: names of the classes (default ``0, 1, ...``).
    """
    rows = sorted(rows, key=lambda r: r[0])
    n = max((len(r[1]) for r in rows), default=len(class_names or ()))
    names = list(class_names) if class_names is not None and len(class_names) == n else [str(i) for i in range(n)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["study", *(f"prob_{c}" for c in names), "label"])
    for study, probs, label in rows:
        writer.writerow([study, *(f"{float(p):.8g}" for p in probs), label])
    return buf.getvalue()


def package_versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages a run's outputs depend on."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
