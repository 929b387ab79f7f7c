"""MONAI inferers and ignite handlers that run explainers inside workflows."""

from __future__ import annotations

from monai_saliency.engines.handlers import SaliencyHandler, overlay_rgb
from monai_saliency.engines.inferers import SaliencyInferer, explain_all, select_explainers, target_from_options

__all__ = [
    "SaliencyHandler",
    "SaliencyInferer",
    "explain_all",
    "overlay_rgb",
    "select_explainers",
    "target_from_options",
]
