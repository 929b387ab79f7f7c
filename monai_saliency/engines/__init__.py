"""MONAI inferers and ignite handlers that run explainers inside workflows."""

from __future__ import annotations

from monai_saliency.engines.handlers import SaliencyHandler, overlay_rgb
from monai_saliency.engines.inferers import SaliencyInferer, explain_all, select_explainers, target_from_options
from monai_saliency.engines.temporal import TemporalWindowInferer, TemporalWindows, temporal_windows

__all__ = [
    "SaliencyHandler",
    "SaliencyInferer",
    "TemporalWindowInferer",
    "TemporalWindows",
    "explain_all",
    "overlay_rgb",
    "select_explainers",
    "target_from_options",
    "temporal_windows",
]
