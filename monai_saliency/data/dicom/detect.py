"""Recognising DICOM files by their content, not their name (PACS exports are ``study/series/IM000001``)."""

from __future__ import annotations

import os

__all__ = ["is_dicom_file"]

_PREAMBLE = 128
_MAGIC = b"DICM"


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is a regular file holding a DICOM Part 10 stream (the ``DICM`` marker after the 128-byte
    preamble), whatever its name or suffix.

    Only the first 132 bytes are read; a file that cannot be opened (permissions, a broken symlink, a folder) is
    not DICOM. Raw DICOM streams without the Part 10 header are not recognised (a PACS export always has it).

    Args:
        path: the file to test.
    """
    try:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as f:
            head = f.read(_PREAMBLE + len(_MAGIC))
    except OSError:
        return False
    return len(head) == _PREAMBLE + len(_MAGIC) and head[_PREAMBLE:] == _MAGIC
