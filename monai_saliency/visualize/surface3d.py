"""3D saliency figure in the spirit of Mørch et al. (1995), Figs. 1/3: an iso-surface of the most salient voxels
with three orthogonal anatomical slices on the walls of the box and the surface's shadows on them.

Usage::

    save_surface_figure(saliency_volume, "fig.png", anatomy=template, affine=affine, quantile=0.99, mask=brain)

The box is drawn in millimetres along the array axes (voxel index times the voxel size taken from the affine's
column norms; a rotation in the affine is not drawn). Each wall shows the anatomy slice through the saliency
peak, and the shadow of the salient set (its projection along the wall's normal) in a translucent colour.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from monai_saliency.data.atomic import atomic_output

__all__ = ["SurfaceParts", "save_surface_figure", "surface_components", "voxel_to_world"]


@dataclass
class SurfaceParts:
    """What the figure draws.

    Attributes:
        verts: ``(V, 3)`` iso-surface vertices in voxel-index coordinates.
        faces: ``(F, 3)`` triangles.
        level: iso-level used (voxels >= level are "salient").
        salient: bool ``(*spatial)`` salient set (inside the mask).
        shadows: ``[(Y, Z), (X, Z), (X, Y)]`` projections of ``salient`` along axes 0, 1, 2.
        peak: voxel index of the maximum (the walls' slice positions).
        spacing: voxel size per axis (mm) from the affine.
    """

    verts: np.ndarray
    faces: np.ndarray
    level: float
    salient: np.ndarray
    shadows: list[np.ndarray]
    peak: tuple[int, int, int]
    spacing: np.ndarray


def _as_3d(a: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D volume (X, Y, Z) or (1, X, Y, Z), got shape {arr.shape}.")
    if arr.dtype != bool and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf.")
    return arr


def voxel_to_world(verts: np.ndarray, affine: torch.Tensor | np.ndarray) -> np.ndarray:
    """Map ``(N, 3)`` voxel-index coordinates through a 4x4 affine."""
    a = np.asarray(affine, dtype=np.float64)
    return verts @ a[:3, :3].T + a[:3, 3]


def surface_components(
    volume: torch.Tensor | np.ndarray,
    level: float | None = None,
    quantile: float = 0.99,
    mask: torch.Tensor | np.ndarray | None = None,
    affine: torch.Tensor | np.ndarray | None = None,
) -> SurfaceParts:
    """Iso-surface (``skimage.measure.marching_cubes``), salient set and its shadows.

    Args:
        volume: ``(X, Y, Z)`` map.
        level: iso-level; default the ``quantile`` of the values inside ``mask`` (all voxels without one).
        quantile: in (0, 1), used when ``level`` is None.
        mask: optional bool ``(X, Y, Z)``; voxels outside never count as salient.
        affine: 4x4 voxel-to-world matrix (only its column norms, the voxel sizes, are used here).

    Returns:
        :class:`SurfaceParts`.

    Raises:
        ValueError: not 3D, NaN/Inf, a constant volume, a quantile outside (0, 1), a level outside the value
            range, an empty mask or a mask of another shape.
    """
    from skimage.measure import marching_cubes

    vol = _as_3d(volume, "volume").astype(np.float64)
    m = np.ones(vol.shape, dtype=bool) if mask is None else _as_3d(mask, "mask").astype(bool)
    if m.shape != vol.shape:
        raise ValueError(f"mask shape {m.shape} does not match the volume {vol.shape}.")
    if not m.any():
        raise ValueError("the mask selects no voxel.")
    inside = vol[m]
    lo, hi = float(inside.min()), float(inside.max())
    if hi <= lo:
        raise ValueError("the map is constant inside the mask; there is no salient set to draw.")
    if level is None:
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must lie in (0, 1), got {quantile}.")
        level = float(np.quantile(inside, quantile))
        level = min(level, hi - 1e-9 * (hi - lo))  # keep at least the peak above the level
    elif not lo < level <= hi:
        raise ValueError(f"level {level} must lie in ({lo:.4g}, {hi:.4g}], the map's range inside the mask.")
    work = np.where(m, vol, lo)  # outside the mask: never salient
    padded = np.pad(work, 1, constant_values=lo)  # closed surfaces at the box edges
    verts, faces, _, _ = marching_cubes(padded, level=level)
    verts = verts - 1.0
    salient = (work >= level) & m
    shadows = [salient.any(axis=a) for a in range(3)]
    peak = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(m, vol, -np.inf)), vol.shape))
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    return SurfaceParts(verts, faces, float(level), salient, shadows, peak, spacing)


def _grey(img: np.ndarray) -> np.ndarray:
    lo, hi = float(img.min()), float(img.max())
    g = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    rgba = np.empty((*img.shape, 4))
    rgba[..., :3] = g[..., None]
    rgba[..., 3] = 1.0
    return rgba


def _wall(ax, img: np.ndarray, shadow: np.ndarray, axis: int, pos: float, spacing: np.ndarray, color) -> None:
    """Draw a 2D slice (axes = the two remaining volume axes) on the plane ``axis = pos`` (mm)."""
    rgba = _grey(img)
    c = np.asarray(matplotlib.colors.to_rgb(color))
    rgba[shadow, :3] = 0.45 * rgba[shadow, :3] + 0.55 * c
    other = [a for a in range(3) if a != axis]
    n0, n1 = img.shape
    e0 = np.arange(n0 + 1) * spacing[other[0]] - 0.5 * spacing[other[0]]
    e1 = np.arange(n1 + 1) * spacing[other[1]] - 0.5 * spacing[other[1]]
    g0, g1 = np.meshgrid(e0, e1, indexing="ij")
    coords = [None, None, None]
    coords[other[0]], coords[other[1]], coords[axis] = g0, g1, np.full_like(g0, pos)
    stride = max(1, max(n0, n1) // 96)
    ax.plot_surface(
        *coords, facecolors=rgba, rstride=stride, cstride=stride, shade=False, linewidth=0, antialiased=False
    )


def save_surface_figure(
    volume: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    anatomy: torch.Tensor | np.ndarray | None = None,
    affine: torch.Tensor | np.ndarray | None = None,
    level: float | None = None,
    quantile: float = 0.99,
    mask: torch.Tensor | np.ndarray | None = None,
    title: str = "",
    color: str = "red",
    elev: float = 22.0,
    azim: float = -55.0,
    dpi: int = 110,
) -> Path:
    """Save the 3D figure as a PNG, atomically.

    Args:
        volume: ``(X, Y, Z)`` saliency map.
        path: destination ``.png``.
        anatomy: ``(X, Y, Z)`` background for the wall slices (default: the map itself).
        affine: 4x4 voxel-to-world matrix (voxel sizes for the box).
        level, quantile, mask: see :func:`surface_components`.
        title: figure title.
        color: colour of the surface and its shadows.
        elev, azim: view angles (degrees).
        dpi: resolution.

    Returns:
        The written path.

    Raises:
        ValueError: see :func:`surface_components`; an anatomy of another shape.
    """
    parts = surface_components(volume, level=level, quantile=quantile, mask=mask, affine=affine)
    vol = _as_3d(volume, "volume")
    anat = vol.astype(np.float64) if anatomy is None else _as_3d(anatomy, "anatomy").astype(np.float64)
    if anat.shape != vol.shape:
        raise ValueError(f"anatomy shape {anat.shape} does not match the volume {vol.shape}.")
    sp = parts.spacing
    size = np.array(vol.shape) * sp
    fig = Figure(figsize=(6.4, 5.6))  # object API: no pyplot state, no backend switch
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection="3d")
    px, py, pz = parts.peak
    lo = -0.5 * sp
    hi = size - 0.5 * sp
    _wall(ax, anat[px], parts.shadows[0], 0, lo[0], sp, color)  # sagittal slice on the x = min wall
    _wall(ax, anat[:, py], parts.shadows[1], 1, hi[1], sp, color)  # coronal slice on the y = max wall
    _wall(ax, anat[:, :, pz], parts.shadows[2], 2, lo[2], sp, color)  # axial slice on the floor
    if len(parts.faces):
        tri = (parts.verts * sp)[parts.faces]
        ax.add_collection3d(Poly3DCollection(tri, facecolor=color, edgecolor="none", alpha=0.75))
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect(tuple(size))
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    ax.view_init(elev=elev, azim=azim)
    if title:
        ax.set_title(title, fontsize=9)
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
