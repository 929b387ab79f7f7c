"""Overlays and figures of saliency maps: PNG overlays, cine GIFs and strips, 3D figures."""

from __future__ import annotations

from monai_saliency.visualize.cine import SaveCineGif, SaveCineGifd, cine_strip_png, save_cine_gif
from monai_saliency.visualize.overlay import save_overlay_png
from monai_saliency.visualize.surface3d import save_surface_figure

__all__ = ["SaveCineGif", "SaveCineGifd", "cine_strip_png", "save_cine_gif", "save_overlay_png", "save_surface_figure"]
