"""Safe output writing: atomic replace (temporary file + rename), never over an input."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from monai.data import MetaTensor, PILWriter

__all__ = [
    "STUDY_SUFFIXES",
    "AtomicPILWriter",
    "atomic_output",
    "current_umask",
    "file_in_study_folder",
    "source_paths",
    "study_stem",
]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's file-mode creation mask, read without changing it where the system tells it (Linux
    ``/proc/self/status``), else by setting and restoring it under a lock.

    ``os.umask(0); os.umask(old)`` alone is unsafe once threads write files (a background writer next to the
    compute thread): a second thread doing the same in between reads 0 and restores 0, leaving the process creating
    world-writable files.

    Returns:
        The mask (e.g. ``0o022``).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


_MULTI_SUFFIXES = (".nii.gz", ".tar.gz")
#: suffixes a study's stem drops (compared case-insensitively); any other name is its own stem (``IM0001``)
STUDY_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".dicom")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in _MULTI_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix


def study_stem(name: str | os.PathLike) -> str:
    """The stem of a study's file name: ``a.nii.gz`` -> ``a``, ``b.DCM`` -> ``b``, ``IM0001`` -> ``IM0001``,
    ``1.2.840.5`` (a DICOM named by its UID) -> ``1.2.840.5``.

    Args:
        name: a file name or path (only its last component is used).
    """
    base = Path(name).name
    for suffix in STUDY_SUFFIXES:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def file_in_study_folder(folder: str | os.PathLike, source: str | os.PathLike | None, what: str, ext: str) -> Path:
    """The path ``<folder>/<stem of source>_<what><ext>`` of a per-study output, checked for safe writing.

    ``folder`` is a study's staging folder created by the cohort layer
    (:mod:`monai_saliency.engines.cohort`); writers given a ``folder_key`` write there.

    Args:
        folder: an existing folder (not a symlink).
        source: the input file the output derives from (its stem names the file); None uses the folder's name.
        what: what the file holds (e.g. the map key).
        ext: the extension with its dot (``.nii.gz``).

    Raises:
        FileExistsError: ``folder`` is not an existing real folder, or the file exists as a symlink (a writer must
            never write through a link).
    """
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        raise FileExistsError(f"study folder {folder} is not an existing folder (or is a symlink); refusing to write.")
    stem = study_stem(source) if source is not None and str(source) else folder.name
    path = folder / f"{stem}_{what}{ext}"
    if path.is_symlink():
        raise FileExistsError(f"{path} is a symlink; refusing to write through it.")
    return path


def source_paths(*tensors: torch.Tensor) -> list[Path]:
    """Files the given MetaTensors were read from (``meta["filename_or_obj"]``), resolved."""
    paths = []
    for t in tensors:
        if isinstance(t, MetaTensor):
            src = t.meta.get("filename_or_obj")
            srcs = src if isinstance(src, (list, tuple)) else [src]
            paths += [Path(s).resolve() for s in srcs if isinstance(s, (str, os.PathLike)) and str(s)]
    return paths


@contextmanager
def atomic_output(
    path: str | os.PathLike, protect: Iterable[str | os.PathLike] = (), overwrite: bool = True
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched, so no partial output
    is ever visible under the final name.

    Args:
        path: final destination; parent folders are created.
        protect: input files that must never be overwritten.
        overwrite: if False, refuse to replace an existing ``path``.

    Yields:
        The temporary path (same folder and suffix as ``path``) to write to.

    Raises:
        FileExistsError: if ``path`` is a protected input, or exists and ``overwrite`` is False.
    """
    final = Path(path).resolve()
    if any(final == Path(p).resolve() for p in protect):
        raise FileExistsError(f"refusing to overwrite the input file {final}; choose another output folder.")
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True or choose another name.")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{_suffix(final)}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the file the permissions a plain open() would
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


class AtomicPILWriter(PILWriter):
    """MONAI's ``PILWriter`` (PNG, JPEG, BMP) writing through :func:`atomic_output`: no partial file is ever visible
    under the final name, and a failed write leaves no file behind."""

    def write(self, filename: os.PathLike | str, verbose: bool = False, **kwargs) -> None:
        """Write to a temporary file beside ``filename`` (same suffix, so PIL picks the format) and rename it.

        Args:
            filename: destination image file.
            verbose: log the progress.
            kwargs: passed to ``PILWriter.write``.
        """
        with atomic_output(filename) as tmp:
            super().write(str(tmp), verbose=verbose, **kwargs)
