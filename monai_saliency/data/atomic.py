"""Safe output writing: atomic replace (temporary file + rename), never over an input."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from monai.data import MetaTensor, PILWriter

__all__ = ["AtomicPILWriter", "atomic_output", "source_paths"]

_MULTI_SUFFIXES = (".nii.gz", ".tar.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in _MULTI_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix


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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions a plain open() would
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
