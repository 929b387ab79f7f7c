"""Staging a study's outputs in a hidden folder of ``output_dir`` and moving the complete set into place.

Layout: ``output_dir/.staging/<run id>/<n>/`` per study; a complete folder is renamed onto ``output_dir/<study
folder>`` (an earlier folder of the study is swapped out atomically with ``renameat2(RENAME_EXCHANGE)`` where the
kernel offers it, else by two renames, and then removed). Nothing is ever written through a symlink: every path
component below ``output_dir`` is checked with ``lstat``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import tempfile
from pathlib import Path, PurePosixPath

from monai_saliency.data.atomic import current_umask

__all__ = ["STAGING_NAME", "Staging", "UnsafePathError", "exchange", "safe_makedirs"]

STAGING_NAME = ".staging"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class UnsafePathError(OSError):
    """A path below ``output_dir`` is a symlink or not a folder where a folder is needed: refused, not followed."""


def safe_makedirs(root: str | os.PathLike, rel: str) -> Path:
    """Create ``root/rel`` folder by folder, refusing any component that exists as a symlink or a non-folder.

    Args:
        root: an existing folder (``output_dir``); it may itself be reached through a symlink the user chose.
        rel: POSIX path relative to ``root`` (no ``..``).

    Returns:
        The folder.

    Raises:
        UnsafePathError: a component is a symlink (it is never followed) or a file, or ``rel`` leaves ``root``.
    """
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts:
        raise UnsafePathError(f"{rel!r} is not a path inside {root}.")
    here = Path(root)
    for part in parts:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            try:
                os.mkdir(here)
                continue
            except FileExistsError:  # created meanwhile (another rank of the run): checked like any existing one
                st = os.lstat(here)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(
                f"{here} is a symlink; refusing to write through it (remove it or choose another --output_dir)."
            )
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{here} exists and is not a folder; refusing to replace it.")
    return here


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        False if the platform or file system cannot (nothing was changed then).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not offered here
        return False
    raise OSError(err, os.strerror(err), str(a))


def _remove_tree(path: Path) -> None:
    """Remove a file, a symlink (not its target) or a folder tree (symlinks inside are unlinked, not followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Staging:
    """The hidden staging area of one run.

    Args:
        output_dir: the run's output folder (exists).
        run_id: the run's id (its staging folder is ``.staging/<run id>``).
    """

    def __init__(self, output_dir: str | os.PathLike, run_id: str) -> None:
        self.root = Path(output_dir)
        self.area = self.root / STAGING_NAME / run_id
        self.run_id = run_id

    def clean_leftovers(self) -> list[str]:
        """Remove the staging folders of other (crashed) runs; call only while holding the run lock.

        Returns:
            The names removed.
        """
        top = self.root / STAGING_NAME
        if top.is_symlink():
            top.unlink()
        if not top.is_dir():
            return []
        removed = []
        for entry in sorted(top.iterdir()):
            if entry.name != self.run_id:
                _remove_tree(entry)
                removed.append(entry.name)
        return removed

    def new_folder(self) -> Path:
        """A fresh, empty staging folder (permissions as a plain ``mkdir`` would give).

        Raises:
            UnsafePathError: the staging area is a symlink.
        """
        area = safe_makedirs(self.root, f"{STAGING_NAME}/{self.run_id}")
        folder = Path(tempfile.mkdtemp(prefix="study-", dir=area))
        os.chmod(folder, 0o777 & ~current_umask())
        return folder

    def discard(self, folder: str | os.PathLike | None) -> None:
        """Remove a staging folder (a failed study's partial outputs)."""
        if folder is not None and Path(folder).parent == self.area:
            _remove_tree(Path(folder))

    def commit(self, folder: str | os.PathLike, final_rel: str) -> Path:
        """Move a complete staging folder onto ``output_dir/<final_rel>``, replacing an earlier folder there.

        Args:
            folder: the staging folder from :meth:`new_folder`.
            final_rel: the study's output folder relative to ``output_dir``.

        Returns:
            The final folder.

        Raises:
            UnsafePathError: a component of the final path is a symlink or a file (nothing is moved then).
        """
        parent = safe_makedirs(self.root, str(PurePosixPath(final_rel).parent))
        final = parent / PurePosixPath(final_rel).name
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            os.rename(folder, final)
            return final
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
            raise UnsafePathError(f"{final} is {kind}; refusing to replace or write through it.")
        if exchange(folder, final):
            _remove_tree(Path(folder))  # now holds the earlier outputs
            return final
        old = Path(tempfile.mkdtemp(prefix="old-", dir=self.area))
        os.rename(final, old / "x")
        os.rename(folder, final)
        _remove_tree(old)
        return final

    def finish(self) -> None:
        """Remove this run's (empty or leftover) staging folder, and ``.staging`` when empty."""
        _remove_tree(self.area)
        try:
            os.rmdir(self.root / STAGING_NAME)
        except OSError:
            pass
