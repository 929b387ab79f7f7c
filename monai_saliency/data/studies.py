"""Finding the studies of a user's folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["list_studies"]


def list_studies(dataset_dir: str | os.PathLike, patterns: Sequence[str] = ("*.nii", "*.nii.gz")) -> list[str]:
    """Sorted files in ``dataset_dir`` (not recursive) matching any of ``patterns``.

    Args:
        dataset_dir: folder of studies.
        patterns: glob patterns, e.g. ``("*.nii.gz", "*.dcm")``.

    Returns:
        Sorted, de-duplicated absolute paths.

    Raises:
        FileNotFoundError: if the folder does not exist.
        ValueError: if nothing matches (the message names the folder and patterns).
    """
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist; set --dataset_dir to a folder of studies.")
    found = sorted({str(p.resolve()) for pat in patterns for p in folder.glob(pat) if p.is_file()})
    if not found:
        raise ValueError(f"no studies matching {list(patterns)} in {folder}.")
    return found
