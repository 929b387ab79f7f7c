"""Tests that need a system tool (dciodvfy, dcm2niix, Orthanc, Chromium): skip with a reason outside CI, fail in CI.

``.ci/run`` installs the tools with ``apt-get`` (see ``.ci/install-system-tools``); under ``CI=true`` a missing
tool is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["in_ci", "require_tool"]


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where every system tool must be present."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, package: str) -> str:
    """Path of the executable ``name``; skip (outside CI) or fail (under ``CI=true``) when it is absent.

    Args:
        name: executable, e.g. ``"dciodvfy"``.
        package: the Debian package that provides it, named in the message.
    """
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not found (Debian package {package}; .ci/run installs it)"
        if in_ci():
            pytest.fail(f"{reason}, and CI=true: system tools must be installed in CI.")
        pytest.skip(reason)
    return path
