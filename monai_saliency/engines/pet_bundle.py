"""Deprecated: the ``pet_morch_saliency`` bundle's glue moved into the bundle (``bundles/pet_morch_saliency/scripts``:
``study``, ``model``, ``outputs``); its generic parts moved to :mod:`monai_saliency.engines.sharding`
(``shard_bounds``) and :mod:`monai_saliency.metrics.roc_auc` (``roc_auc``, now ``roc_auc(scores, labels)``).

This module forwards the old names, with a ``DeprecationWarning``, for one release. The bundle's scripts are found
in the source checkout this package is imported from.
"""

from __future__ import annotations

from typing import Any

import torch

from monai_saliency._deprecation import bundle_scripts, forward_getattr

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


def _roc_auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """The old ``roc_auc(labels, scores)`` (NaN for one class), on :func:`monai_saliency.metrics.roc_auc.roc_auc`."""
    from monai_saliency.metrics.roc_auc import roc_auc

    lab = torch.as_tensor(labels).reshape(-1).bool()
    return roc_auc(scores, lab) if 0 < int(lab.sum()) < lab.numel() else float("nan")


def _from_scripts(module: str, name: str) -> Any:
    return lambda: getattr(bundle_scripts("pet_morch_saliency", module), name)


def _shard_bounds() -> Any:
    from monai_saliency.engines.sharding import shard_bounds

    return shard_bounds


__getattr__ = forward_getattr(
    __name__,
    {
        **{n: (f"the pet_morch_saliency bundle's scripts.{m}.{n}", _from_scripts(m, n)) for n, m in _WHERE.items()},
        "shard_bounds": ("monai_saliency.engines.sharding.shard_bounds", _shard_bounds),
        "roc_auc": ("monai_saliency.metrics.roc_auc.roc_auc(scores, labels)", lambda: _roc_auc),
    },
)
