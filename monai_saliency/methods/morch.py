"""Deprecated location of Mørch saliency: it moved to :mod:`monai_saliency.analysis.morch` (a training-set analysis,
not an explainer). Importing names from here still works for one release, with a DeprecationWarning."""

from __future__ import annotations

import warnings
from typing import Any

__all__: list[str] = []


def __getattr__(name: str) -> Any:
    from monai_saliency.analysis import morch

    if name in morch.__all__:
        warnings.warn(
            f"monai_saliency.methods.morch.{name} moved to monai_saliency.analysis.morch; import it from "
            "monai_saliency.analysis (the old path will be removed in the next release).",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(morch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
