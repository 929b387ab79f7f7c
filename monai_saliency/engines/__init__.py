"""MONAI inferers and ignite handlers that run explainers inside workflows."""

from __future__ import annotations

from monai_saliency.engines.handlers import SaliencyHandler, overlay_rgb
from monai_saliency.engines.inferers import SaliencyInferer, target_from_options

__all__ = ["SaliencyHandler", "SaliencyInferer", "overlay_rgb", "target_from_options"]
