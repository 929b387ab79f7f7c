"""Model plumbing shared by explainers, analyses and metrics: layer lookup, activation hooks, class scores, targets
(class, region, regression: :mod:`monai_saliency.core.targets`), the eval-mode / frozen-parameter contexts, input
checks and MetaTensor output.

Layering: ``ops`` <- ``core`` <- ``methods`` / ``analysis`` / ``metrics`` <- ``transforms`` / ``engines`` /
``visualize`` <- bundles; ``core`` imports nothing above ``ops``.
"""

from __future__ import annotations

from monai_saliency.core.hooks import ActivationHooks, first_output, replace_first_output
from monai_saliency.core.layers import find_layer
from monai_saliency.core.meta import check_input, wrap_like
from monai_saliency.core.modes import evaluation_mode, frozen_parameters, require_autograd
from monai_saliency.core.outputs import model_logits, model_output, select_class
from monai_saliency.core.targets import (
    ClassTarget,
    RegionTarget,
    RegressionTarget,
    Target,
    TargetLike,
    as_target,
    explainer_target,
    resolve_target,
)

__all__ = [
    "ActivationHooks",
    "ClassTarget",
    "RegionTarget",
    "RegressionTarget",
    "Target",
    "TargetLike",
    "as_target",
    "check_input",
    "evaluation_mode",
    "explainer_target",
    "find_layer",
    "first_output",
    "frozen_parameters",
    "model_logits",
    "model_output",
    "replace_first_output",
    "require_autograd",
    "resolve_target",
    "select_class",
    "wrap_like",
]
