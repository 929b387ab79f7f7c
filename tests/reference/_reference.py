"""Import the independent reference implementations installed only in ``.venv-ref`` (``make test-reference``).

Under ``make test`` (``.venv``, no reference packages) the reference tests skip with a pointer to
``make test-reference``; where ``MONAI_SALIENCY_REFERENCE=1`` (set by that target, and so in CI) a missing package
fails them instead of skipping silently. Reuse :func:`reference_module` in every module of ``tests/reference/``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRED = os.environ.get("MONAI_SALIENCY_REFERENCE", "") not in ("", "0")


def reference_module(name: str) -> ModuleType:
    """Import ``name``; skip the calling test module if it is missing, unless the reference run requires it.

    Args:
        name: module to import (e.g. ``"pytorch_grad_cam"``).

    Returns:
        The module.

    Raises:
        ImportError: if it is missing and ``MONAI_SALIENCY_REFERENCE`` is set (the test module fails to collect).
    """
    try:
        return importlib.import_module(name)
    except ImportError as err:
        if REQUIRED:
            raise ImportError(
                f"{name} is required by the reference tests (MONAI_SALIENCY_REFERENCE is set) but cannot be "
                f"imported: {err}; rebuild the reference environment with `make test-reference`."
            ) from err
        pytest.skip(
            f"{name} is not installed here: run `make test-reference` (builds .venv-ref with the reference "
            "implementations)",
            allow_module_level=True,
        )
