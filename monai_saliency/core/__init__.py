"""Model plumbing shared by explainers, analyses and metrics: layer lookup, activation hooks, class scores and
class selection, the eval-mode / frozen-parameter contexts, input checks and MetaTensor output.

Layering: ``ops`` <- ``core`` <- ``methods`` / ``analysis`` / ``metrics`` <- ``transforms`` / ``engines`` /
``visualize`` <- bundles; ``core`` imports nothing above ``ops``.
"""

from __future__ import annotations

from monai_saliency.core.hooks import ActivationHooks, first_output, replace_first_output
from monai_saliency.core.layers import find_layer
from monai_saliency.core.meta import check_input, wrap_like
from monai_saliency.core.modes import evaluation_mode, frozen_parameters, require_autograd
from monai_saliency.core.outputs import model_logits, select_class

__all__ = [
    "ActivationHooks",
    "check_input",
    "evaluation_mode",
    "find_layer",
    "first_output",
    "frozen_parameters",
    "model_logits",
    "replace_first_output",
    "require_autograd",
    "select_class",
    "wrap_like",
]
