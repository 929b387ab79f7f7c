"""Saliency overlays written as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monai_saliency.data.atomic import atomic_output

__all__ = ["save_overlay_png"]


def _as_2d(a: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2D slice (singleton axes allowed), got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf.")
    return arr.astype(np.float64)


def save_overlay_png(
    image: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    title: str = "",
    alpha: float = 0.45,
    cmap: str = "jet",
) -> Path:
    """Save the image (grey), the map, and the map over the image side by side as one PNG, atomically.

    Arrays are shown in array order (first axis down). The map is shown on its own [min, max] range.

    Args:
        image: 2D slice (singleton axes are squeezed).
        saliency: 2D map of the same shape.
        path: destination ``.png``.
        title: figure title.
        alpha: opacity of the map in the overlay.
        cmap: matplotlib colormap of the map.

    Returns:
        The written path.

    Raises:
        ValueError: if the shapes differ or an array is not 2D or not finite.
    """
    img, sal = _as_2d(image, "image"), _as_2d(saliency, "saliency")
    if img.shape != sal.shape:
        raise ValueError(f"image {img.shape} and saliency {sal.shape} shapes differ.")
    fig = Figure(figsize=(9, 3.3))  # object API: no pyplot state, no backend switch
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("input")
    im = axes[1].imshow(sal, cmap=cmap)
    axes[1].set_title("saliency")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    axes[2].imshow(img, cmap="gray")
    axes[2].imshow(sal, cmap=cmap, alpha=alpha)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return Path(path)
