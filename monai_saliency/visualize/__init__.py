"""Overlays and figures of saliency maps: PNG overlays, cine GIFs and strips, 3D figures, DICOM Secondary Capture
overlays."""

from __future__ import annotations

from monai_saliency.visualize.cine import SaveCineGif, SaveCineGifd, cine_strip_png, save_cine_gif
from monai_saliency.visualize.overlay import save_overlay_png
from monai_saliency.visualize.quicklook import SaveQuickLookd
from monai_saliency.visualize.secondary_capture import (
    OverlayStyle,
    SaveOverlaySCd,
    render_cine_overlay,
    render_orthogonal_overlay,
    save_cine_overlay_sc,
    save_orthogonal_overlay_sc,
)
from monai_saliency.visualize.surface3d import save_surface_figure

__all__ = [
    "OverlayStyle",
    "SaveCineGif",
    "SaveCineGifd",
    "SaveOverlaySCd",
    "SaveQuickLookd",
    "cine_strip_png",
    "render_cine_overlay",
    "render_orthogonal_overlay",
    "save_cine_gif",
    "save_cine_overlay_sc",
    "save_orthogonal_overlay_sc",
    "save_overlay_png",
    "save_surface_figure",
]
