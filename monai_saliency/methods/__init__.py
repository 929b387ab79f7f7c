"""Saliency methods: each class wraps a model and returns maps (see ``base.Explainer``)."""

from __future__ import annotations

from monai_saliency.methods.base import (
    ActivationHooks,
    Explainer,
    check_input,
    find_layer,
    frozen_parameters,
    model_logits,
    select_class,
    wrap_like,
)
from monai_saliency.methods.gradients import VanillaGrad, input_gradients

__all__ = [
    "ActivationHooks",
    "Explainer",
    "check_input",
    "find_layer",
    "frozen_parameters",
    "model_logits",
    "select_class",
    "wrap_like",
    "VanillaGrad",
    "input_gradients",
]
