"""Saliency methods: each class wraps a model and returns maps (see ``base.Explainer``).

The model plumbing (``ActivationHooks``, ``find_layer``, ``model_logits``, the targets, ...) lives in :mod:`monai_saliency.core`
and is re-exported here as public API. Mørch saliency, a training-set analysis rather than an explainer, moved to
:mod:`monai_saliency.analysis`; ``from monai_saliency.methods import MorchSaliency`` still works for one release,
with a DeprecationWarning.
"""

from __future__ import annotations

import warnings
from typing import Any

from monai_saliency.core import (
    ActivationHooks,
    ClassTarget,
    RegionTarget,
    RegressionTarget,
    Target,
    check_input,
    evaluation_mode,
    find_layer,
    frozen_parameters,
    model_logits,
    select_class,
    wrap_like,
)
from monai_saliency.methods.base import Explainer
from monai_saliency.methods.cam import EigenCAM, GradCAM, GradCAMpp, SignatureActivation
from monai_saliency.methods.forgrad import FORGrad
from monai_saliency.methods.gradients import (
    IntegratedGradients,
    SmoothGrad,
    VanillaGrad,
    input_gradients,
    target_gradients,
)
from monai_saliency.methods.structured import StructuredGradient
from monai_saliency.ops.tokens import TokenGrid

__all__ = [
    "ActivationHooks",
    "ClassTarget",
    "EigenCAM",
    "Explainer",
    "FORGrad",
    "GradCAM",
    "GradCAMpp",
    "IntegratedGradients",
    "RegionTarget",
    "RegressionTarget",
    "SignatureActivation",
    "SmoothGrad",
    "StructuredGradient",
    "Target",
    "TokenGrid",
    "VanillaGrad",
    "check_input",
    "evaluation_mode",
    "find_layer",
    "frozen_parameters",
    "input_gradients",
    "model_logits",
    "select_class",
    "target_gradients",
    "wrap_like",
]


def __getattr__(name: str) -> Any:
    if name == "MorchSaliency":
        warnings.warn(
            "monai_saliency.methods.MorchSaliency moved to monai_saliency.analysis (it analyses a training set, it "
            "does not explain one input); import it from there (the old path will be removed in the next release).",
            DeprecationWarning,
            stacklevel=2,
        )
        from monai_saliency.analysis.morch import MorchSaliency

        return MorchSaliency
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
