"""One run at a time per output folder: a lock file created atomically, taken over when its run is dead."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

from monai_saliency.engines.cohort.staging import safe_makedirs

__all__ = ["LOCK_NAME", "LockError", "RunLock", "pid_alive"]

LOCK_NAME = ".cohort.lock"


class LockError(RuntimeError):
    """Another live run holds the output folder (or its lock cannot be judged)."""


def pid_alive(pid: int) -> bool:
    """True if a process ``pid`` exists on this host (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The lock file ``output_dir/.cohort.lock`` holding ``{"run_id", "pid", "host", "started"}``.

    Created with ``os.link`` of a complete temporary file (atomic, fails if the name exists, never a half-written
    lock). A lock of the same ``run_id`` is joined (the ranks of one ``torchrun`` share it: their ``run_id`` is
    ``TORCHELASTIC_RUN_ID`` and their ``pid`` the torchrun agent's, which outlives every rank). A lock whose pid is
    dead on this host is stale and taken over (under an ``flock`` so that two runs cannot both take it over). A lock
    of another host cannot be judged: the error says to remove it once that run is known to be gone.

    Args:
        output_dir: the run's output folder (exists).
        run_id: this run's id.
        pid: the pid that represents the run (default this process).
    """

    def __init__(self, output_dir: str | os.PathLike, run_id: str, pid: int | None = None) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self.run_id = run_id
        self.info = {"run_id": run_id, "pid": pid or os.getpid(), "host": socket.gethostname(), "started": time.time()}
        self.held = False

    def read(self) -> dict[str, Any] | None:
        """The current lock's content, None if there is none.

        Raises:
            LockError: the lock is a symlink, or unreadable.
        """
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise LockError(f"{self.path} is not a regular file (a symlink?); remove it by hand.")
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LockError(f"cannot read the lock {self.path} ({exc}); remove it if no run uses this folder.") from exc

    def _create(self) -> bool:
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)  # a leftover (or a planted symlink) is removed, never followed
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self.info))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _stale(self, info: dict[str, Any]) -> bool:
        return info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", 0)))

    def acquire(self) -> RunLock:
        """Take the lock, join it (same run id), or take over a stale one.

        Returns:
            self.

        Raises:
            LockError: another live run holds it (the message names its pid, host and start time).
        """
        for _ in range(5):
            if self._create():
                self.held = True
                return self
            info = self.read()
            if info is None:
                continue
            if info.get("run_id") == self.run_id:
                return self
            if not self._stale(info):
                started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("started", 0))))
                other_host = info.get("host") != socket.gethostname()
                where = "; it runs on another host: remove the lock by hand once it has ended" if other_host else ""
                raise LockError(
                    f"another run (pid {info.get('pid')} on {info.get('host')}, started {started}) is writing to "
                    f"{self.path.parent}; wait for it to end or choose another --output_dir (lock: {self.path}{where})."
                )
            self._take_over(info)
        raise LockError(f"could not take the lock {self.path}; retry.")

    def _take_over(self, stale: dict[str, Any]) -> None:
        guard = safe_makedirs(self.path.parent, ".cohort") / "lock.guard"
        fd = os.open(guard, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.read() == stale:  # still the stale lock: nobody took it over meanwhile
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def release(self) -> None:
        """Remove the lock if it is this run's (a no-op otherwise)."""
        try:
            info = self.read()
        except LockError:
            return
        if info is not None and info.get("run_id") == self.run_id:
            try:
                self.path.unlink()
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        self.held = False
