"""Saliency methods: each class wraps a model and returns maps (see ``base.Explainer``)."""

from __future__ import annotations

from monai_saliency.methods.base import (
    ActivationHooks,
    Explainer,
    check_input,
    evaluation_mode,
    find_layer,
    frozen_parameters,
    model_logits,
    select_class,
    wrap_like,
)
from monai_saliency.methods.cam import EigenCAM, GradCAM, GradCAMpp, SignatureActivation
from monai_saliency.methods.forgrad import FORGrad
from monai_saliency.methods.gradients import IntegratedGradients, SmoothGrad, VanillaGrad, input_gradients
from monai_saliency.methods.morch import MorchSaliency
from monai_saliency.methods.structured import StructuredGradient

__all__ = [
    "ActivationHooks",
    "Explainer",
    "check_input",
    "evaluation_mode",
    "find_layer",
    "frozen_parameters",
    "model_logits",
    "select_class",
    "wrap_like",
    "EigenCAM",
    "GradCAM",
    "GradCAMpp",
    "FORGrad",
    "IntegratedGradients",
    "SmoothGrad",
    "VanillaGrad",
    "input_gradients",
    "MorchSaliency",
    "SignatureActivation",
    "StructuredGradient",
]
