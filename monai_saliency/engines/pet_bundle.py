"""Deprecated: the ``pet_morch_saliency`` bundle's glue moved into the bundle (``bundles/pet_morch_saliency/scripts``:
``study``, ``model``, ``outputs``); its generic parts moved to :mod:`monai_saliency.engines.sharding`
(``shard_bounds``) and :mod:`monai_saliency.metrics.roc_auc` (``roc_auc``, now ``roc_auc(scores, labels)``).

This module forwards the old names, with a ``DeprecationWarning``, for one release. The bundle's scripts are found
in the source checkout this package is imported from.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

_BUNDLE_SCRIPTS = Path(__file__).resolve().parents[2] / "bundles" / "pet_morch_saliency" / "scripts"
_PACKAGE = "_pet_morch_saliency_scripts"
_WHERE = {
    "StudyError": "study",
    "PETStudyFolder": "study",
    "load_study": "study",
    "MorchModel": "model",
    "fit_model": "model",
    "save_model": "model",
    "load_model": "model",
    "build_saliency": "model",
    "ORDER_NAMES": "outputs",
    "compute_maps": "outputs",
    "shard_cost_changes": "outputs",
    "summarize": "outputs",
    "write_outputs": "outputs",
}
__all__ = [  # noqa: F822 - forwarded by __getattr__
    "ORDER_NAMES",
    "MorchModel",
    "PETStudyFolder",
    "StudyError",
    "build_saliency",
    "compute_maps",
    "fit_model",
    "load_model",
    "load_study",
    "roc_auc",
    "save_model",
    "shard_bounds",
    "shard_cost_changes",
    "summarize",
    "write_outputs",
]


def _scripts(module: str) -> Any:
    """``bundles/pet_morch_saliency/scripts/<module>.py``, imported as a submodule of a private package."""
    if _PACKAGE not in sys.modules:
        init = _BUNDLE_SCRIPTS / "__init__.py"
        if not init.is_file():
            raise ImportError(
                f"monai_saliency.engines.pet_bundle moved into the pet_morch_saliency bundle's scripts, which are not "
                f"at {_BUNDLE_SCRIPTS}; import them from the bundle (``import scripts.study`` with the bundle root on "
                "sys.path)."
            )
        spec = importlib.util.spec_from_file_location(_PACKAGE, init, submodule_search_locations=[str(_BUNDLE_SCRIPTS)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[_PACKAGE] = pkg
        spec.loader.exec_module(pkg)
    return importlib.import_module(f"{_PACKAGE}.{module}")


def _roc_auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """The old ``roc_auc(labels, scores)`` (NaN for one class), on :func:`monai_saliency.metrics.roc_auc.roc_auc`."""
    from monai_saliency.metrics.roc_auc import roc_auc

    lab = torch.as_tensor(labels).reshape(-1).bool()
    return roc_auc(scores, lab) if 0 < int(lab.sum()) < lab.numel() else float("nan")


def __getattr__(name: str) -> Any:
    if name == "shard_bounds":
        from monai_saliency.engines.sharding import shard_bounds as value

        new = "monai_saliency.engines.sharding.shard_bounds"
    elif name == "roc_auc":
        value, new = _roc_auc, "monai_saliency.metrics.roc_auc.roc_auc(scores, labels)"
    elif name in _WHERE:
        value = getattr(_scripts(_WHERE[name]), name)
        new = f"the pet_morch_saliency bundle's scripts.{_WHERE[name]}.{name}"
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"monai_saliency.engines.pet_bundle.{name} is deprecated and will be removed in the next release; use {new}.",
        DeprecationWarning,
        stacklevel=2,
    )
    return value
