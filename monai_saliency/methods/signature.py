"""Deprecated module: Signature Activation moved (one release of grace).

``SignatureActivation`` is now in :mod:`monai_saliency.methods.cam` (import it from :mod:`monai_saliency.methods`);
its tensor math (``signature_map``, ``signature_energy``, ``signature_reconstruction``, ``zero_tolerance``, ...) is in
:mod:`monai_saliency.ops.signature`, the bilateral helpers in :mod:`monai_saliency.ops.bilateral`. The old names
still work from here, with a ``DeprecationWarning``.
"""

# ruff: noqa: F822  (the names of __all__ are resolved lazily by the module __getattr__)
from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = {
    "SignatureActivation": "monai_saliency.methods.cam",
    "BILATERAL_DEFAULTS": "monai_saliency.ops.bilateral",
    "bilateral_filter_axes": "monai_saliency.ops.bilateral",
    "bilateral_options": "monai_saliency.ops.bilateral",
    "DCT_AXES": "monai_saliency.ops.signature",
    "DCT_SCALINGS": "monai_saliency.ops.signature",
    "ZERO_TOL_EPS": "monai_saliency.ops.signature",
    "signature_energy": "monai_saliency.ops.signature",
    "signature_map": "monai_saliency.ops.signature",
    "signature_reconstruction": "monai_saliency.ops.signature",
    "zero_tolerance": "monai_saliency.ops.signature",
}

__all__ = [
    "BILATERAL_DEFAULTS",
    "DCT_AXES",
    "DCT_SCALINGS",
    "ZERO_TOL_EPS",
    "SignatureActivation",
    "bilateral_filter_axes",
    "bilateral_options",
    "signature_energy",
    "signature_map",
    "signature_reconstruction",
    "zero_tolerance",
]


def __getattr__(name: str) -> Any:
    """The moved name from its new module, with a ``DeprecationWarning`` naming the new import path.

    Raises:
        AttributeError: for a name that never lived here.
    """
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _MOVED[name]
    warnings.warn(
        f"monai_saliency.methods.signature.{name} moved to {module}.{name}; the old path will be removed in the next "
        "release.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_MOVED])
