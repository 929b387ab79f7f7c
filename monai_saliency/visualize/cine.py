"""Cine (video) saliency pictures: an animated GIF overlay and a PNG strip of a few frames.

* :func:`save_cine_gif` writes one GIF frame per cine frame: the cine (left) and the cine with its map overlaid
  (right), plus a thin progress bar along the bottom that shows where the frame sits in the run. The bar also
  guarantees that consecutive GIF frames differ, so the GIF keeps exactly ``T`` frames (Pillow merges identical
  consecutive frames and adds up their durations).
* :func:`cine_strip_png` draws a few frames side by side (top row) with their overlays (bottom row).
* :class:`SaveCineGif` / :class:`SaveCineGifd` are the MONAI transform forms used by the angiogram bundle.

GIF timing: the format stores frame delays in centiseconds, so ``frame_time_ms`` is rounded to a multiple of
10 ms (66.7 ms -> 70 ms) and raised to at least 20 ms (browsers slow shorter delays to 100 ms). The cine is shown on
its own [min, max] range over all frames (one window for the whole run, so contrast wash-in stays visible); the map
is min-max scaled over all frames to [0, 1] (a constant map shows as zero). Every file is written atomically
through :func:`monai_saliency.data.atomic.atomic_output` (no partial file on an error, never over an input).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from PIL import Image

from monai_saliency.data.atomic import atomic_output, file_in_study_folder, source_paths, study_stem

__all__ = [
    "FIXED_PALETTE_LEVELS",
    "SaveCineGif",
    "SaveCineGifd",
    "cine_strip_png",
    "fixed_palette",
    "gif_frame_ms",
    "save_cine_gif",
]

_BAR = 3  # progress-bar height in output pixels
_BAR_GREYS = (40, 230)  # progress bar: background and filled part
#: the fixed GIF palette's layout: (plain grey levels, grey levels of the blend, map levels of the blend);
#: 40 + 9 * 24 = 256 entries
FIXED_PALETTE_LEVELS = (40, 9, 24)


def gif_frame_ms(frame_time_ms: float) -> int:
    """The delay a GIF stores for ``frame_time_ms``: rounded to 10 ms, at least 20 ms.

    Raises:
        ValueError: if ``frame_time_ms`` is not a positive finite number.
    """
    if not (np.isfinite(frame_time_ms) and frame_time_ms > 0):
        raise ValueError(f"frame_time_ms must be a positive number, got {frame_time_ms}.")
    return int(max(20, 10 * round(float(frame_time_ms) / 10.0)))


def _as_cine(a: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = a.detach().cpu().float().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)
    while arr.ndim > 3 and arr.shape[0] == 1:  # (1, T, H, W) or (1, 1, T, H, W)
        arr = arr[0]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"{name} must be a cine (T, H, W) (leading singleton axes allowed), got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf; clean it before drawing.")
    return arr.astype(np.float64)


def _unit(arr: np.ndarray) -> np.ndarray:
    lo, hi = arr.min(), arr.max()
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _unit_(arr: np.ndarray) -> np.ndarray:
    """:func:`_unit` in place (``arr`` is a float copy the caller owns): no second full-size array."""
    lo, hi = arr.min(), arr.max()
    arr -= lo
    if hi > lo:
        arr /= hi - lo
    return arr


def _check_pair(cine: Any, saliency: Any) -> tuple[np.ndarray, np.ndarray]:
    c, s = _as_cine(cine, "cine"), _as_cine(saliency, "saliency")
    if c.shape != s.shape:
        raise ValueError(
            f"cine {c.shape} and saliency {s.shape} shapes differ; resize the map to the cine (e.g. Invertd) first."
        )
    return _unit_(c), _unit_(s)


def _overlay(grey: np.ndarray, sal: np.ndarray, alpha: float, cmap: str) -> np.ndarray:
    """``(T, H, W)`` [0, 1] arrays -> ``(T, H, W, 3)`` uint8 overlays (vectorised over frames)."""
    heat = matplotlib.colormaps[cmap](sal)[..., :3]
    rgb = (1.0 - alpha) * grey[..., None] + alpha * heat
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def fixed_palette(
    alpha: float = 0.45, cmap: str = "jet", levels: tuple[int, int, int] = FIXED_PALETTE_LEVELS
) -> np.ndarray:
    """The fixed GIF palette of the cine overlay: ``(P + G * M, 3)`` uint8 colours.

    The first ``P`` entries are the greys ``rint(255 * k / (P - 1))`` (the plain cine and the progress bar); entry
    ``P + i * M + j`` is the exact 8-bit blend ``(1 - alpha) * g_i + alpha * cmap(s_j)`` of grey level
    ``g_i = i / (G - 1)`` and map level ``s_j = j / (M - 1)``. Because the overlay is this known two-parameter blend,
    a pixel's index is computed directly from its grey and map values (:func:`_fixed_indices`: both rounded to the
    nearest level), with no colour search. With the default levels ``(40, 9, 24)``, ``alpha=0.45`` and ``jet``, an
    overlay pixel's colour differs from its exact 8-bit blend by at most 21 of 255 levels per channel (mean 5.1 over
    uniformly spread grey and map values) and a plain-cine pixel by at most 3.3 (half a grey step).

    Args:
        alpha: opacity of the map, in [0, 1].
        cmap: matplotlib colormap of the map.
        levels: ``(P, G, M)``, each at least 2, with ``P + G * M <= 256``.

    Raises:
        ValueError: levels that do not fit a 256-colour palette.
    """
    p, g, m = (int(v) for v in levels)
    if min(p, g, m) < 2 or p + g * m > 256:
        raise ValueError(f"palette levels (P, G, M) must be >= 2 with P + G * M <= 256, got {levels}.")
    plain = np.rint(np.linspace(0.0, 255.0, p))[:, None].repeat(3, 1)
    grey = np.linspace(0.0, 1.0, g)[:, None, None]
    heat = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, m))[None, :, :3]
    blend = np.rint(((1.0 - alpha) * grey + alpha * heat) * 255.0).reshape(g * m, 3)
    return np.clip(np.concatenate([plain, blend]), 0, 255).astype(np.uint8)


def _level(arr: np.ndarray, n: int) -> np.ndarray:
    """``[0, 1]`` values -> the index of the nearest of ``n`` evenly spaced levels (uint8)."""
    return np.rint(arr * (n - 1)).astype(np.uint8)


def _fixed_indices(grey: np.ndarray, sal: np.ndarray, levels: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Palette indices of :func:`fixed_palette` for ``[0, 1]`` arrays: (plain cine, overlay), same shape, uint8."""
    p, g, m = levels
    over = _level(grey, g).astype(np.intp) * m + _level(sal, m) + p
    return _level(grey, p), over.astype(np.uint8)


def _box_reduce(arr: np.ndarray, k: int) -> np.ndarray:
    """``(T, H, W)`` averaged over ``k x k`` blocks (edges padded by replication): ``(T, ceil(H/k), ceil(W/k))``."""
    if k == 1:
        return arr
    t, h, w = arr.shape
    hp, wp = -(-h // k) * k, -(-w // k) * k
    out = np.empty((t, hp // k, wp // k), dtype=arr.dtype)
    for i in range(0, t, 8):  # a few frames at a time: no padded full-size copy
        block = np.pad(arr[i : i + 8], ((0, 0), (0, hp - h), (0, wp - w)), mode="edge")
        out[i : i + 8] = block.reshape(block.shape[0], hp // k, k, wp // k, k).mean(axis=(2, 4))
    return out


def _gif_layout(
    h: int, w: int, panels: int, scale: int | None, max_width: int, max_side: int | None
) -> tuple[int, int]:
    """``(scale, k)``: magnification and box-reduction factor of ``panels`` side-by-side ``h x w`` panels (a
    progress bar added below)."""
    width = panels * w
    if scale is None:
        scale = max(1, max_width // width)
        k = max(1, -(-width // max_width))
    else:
        k = 1

    def side(s: int, k: int) -> int:
        return max(-(-h // k) * s + _BAR, panels * -(-w // k) * s)

    if max_side is not None:
        while scale > 1 and side(scale, k) > max_side:
            scale -= 1
        while side(scale, k) > max_side:
            k += 1
    return int(scale), k


def save_cine_gif(
    cine: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    frame_time_ms: float | None = None,
    fps: float | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    side_by_side: bool = True,
    scale: int | None = None,
    max_width: int = 512,
    protect: Sequence[str | os.PathLike] = (),
    max_side: int | None = 512,
    palette: str = "median",
) -> Path:
    """Write an animated GIF of a cine with its saliency map overlaid, one GIF frame per cine frame, atomically.

    Args:
        cine: ``(T, H, W)`` (leading singleton axes allowed), any range; shown grey on its global [min, max].
        saliency: map of the same shape; min-max scaled over all frames.
        path: destination ``.gif``.
        frame_time_ms: time between frames (DICOM FrameTime); default 1000 / ``fps``, or 66.7 ms (15 frames/s).
        fps: frames per second, the alternative to ``frame_time_ms`` (give at most one).
        alpha: opacity of the map in the overlay, in [0, 1].
        cmap: matplotlib colormap of the map.
        side_by_side: show the plain cine on the left of the overlay (default) or the overlay only.
        scale: integer pixel magnification; default the largest that keeps the GIF at most ``max_width`` wide (>= 1).
        max_width: width cap used when ``scale`` is None; wider cines are reduced (``k x k`` box average) to fit.
        protect: input files never to overwrite (a MetaTensor's source file is protected automatically).
        max_side: cap of the GIF's longest side in pixels, progress bar included (default 512; None: no cap). A
            ``scale`` that would exceed it is lowered (down to 1), then the cine and map are reduced by a ``k x k``
            box average (the smallest ``k`` that fits), so a 512 x 512 clinical cine gives a 512-pixel-wide
            side-by-side GIF of a few MB instead of a 3072-pixel one of 100 MB. Frame count and timing are kept.
        palette: how each frame's 256 colours are chosen: ``"median"`` (PIL's median cut, default: exact when a
            frame has at most 256 colours), ``"octree"`` (fast octree without dithering: on noisy clinical cines
            about 4x smaller files, at a mean error of ~3 of 255 levels) or ``"fixed"`` (the angiogram bundle's
            choice: one palette for every frame, :func:`fixed_palette`, each pixel's index computed from its grey and
            map values, no colour quantisation: several times faster than ``"octree"``; at most 21 of 255 levels
            from the exact blend per channel, 3.3 on the plain cine, for the default ``alpha`` and ``cmap``).

    Returns:
        The written path.

    Raises:
        ValueError: for wrong shapes, NaN/Inf, a bad alpha, scale, cmap, frame time or ``max_side`` (< 16), or both
            ``fps`` and ``frame_time_ms``.
        FileExistsError: if ``path`` is a protected input.
    """
    if frame_time_ms is not None and fps is not None:
        raise ValueError("give frame_time_ms or fps, not both.")
    if fps is not None:
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}.")
        frame_time_ms = 1000.0 / fps
    delay = gif_frame_ms(1000.0 / 15.0 if frame_time_ms is None else frame_time_ms)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
    if cmap not in matplotlib.colormaps:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}.")
    if scale is not None and (int(scale) != scale or scale < 1):
        raise ValueError(f"scale must be a positive integer, got {scale}.")
    if palette not in ("median", "octree", "fixed"):
        raise ValueError(f"palette must be 'median', 'octree' or 'fixed', got {palette!r}.")
    if max_side is not None and max_side < 16:
        raise ValueError(f"max_side must be at least 16 pixels (or None), got {max_side}.")
    grey, sal = _check_pair(cine, saliency)
    t, h, w = grey.shape
    panels = 2 if side_by_side else 1
    scale, k = _gif_layout(h, w, panels, scale, max_width, max_side)
    grey, sal = _box_reduce(grey, k), _box_reduce(sal, k)
    hr, wr = grey.shape[1:]
    width = panels * wr * scale
    fixed = palette == "fixed"
    levels = FIXED_PALETTE_LEVELS
    # RGB frames, or palette indices of the fixed palette (one byte a pixel, no colour search)
    frames = np.empty((t, hr * scale + _BAR, width) + (() if fixed else (3,)), dtype=np.uint8)
    for i in range(0, t, 8):  # a few frames at a time: bounded memory for clinical cines
        g, s = grey[i : i + 8], sal[i : i + 8]
        if fixed:
            plain, over = _fixed_indices(g, s, levels)
        else:
            over = _overlay(g, s, alpha, cmap)
            plain = np.repeat(np.rint(g * 255).astype(np.uint8)[..., None], 3, -1)
        if side_by_side:
            over = np.concatenate([plain, over], axis=2)
        frames[i : i + 8, : hr * scale] = over.repeat(scale, 1).repeat(scale, 2)
    del grey, sal
    background, done = _BAR_GREYS
    if fixed:  # the nearest plain greys
        background, done = (int(v) for v in _level(np.asarray(_BAR_GREYS) / 255.0, levels[0]))
    bar = frames[:, hr * scale :]
    bar[:] = background
    filled = np.arange(width)[None, :] < ((np.arange(t) + 1) * width // t)[:, None]  # (T, W)
    bar[np.broadcast_to(filled[:, None], bar.shape[:3])] = done
    images = [Image.fromarray(f) for f in frames]  # PIL's GIF writer takes one image per frame
    if fixed:
        colours = fixed_palette(alpha, cmap, levels).tobytes()
        for im in images:
            im.putpalette(colours)  # an "L" image becomes "P" with this palette; the indices are kept
    if palette == "octree":
        images = [im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE) for im in images]
    with atomic_output(path, protect=[*source_paths(cine, saliency), *protect]) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=delay,
            loop=0,
            disposal=1,
            optimize=False,
        )
    return Path(path)


def cine_strip_png(
    cine: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    frames: Sequence[int] | int = 4,
    alpha: float = 0.45,
    cmap: str = "jet",
    title: str = "",
    frame_time_ms: float | None = None,
    protect: Sequence[str | os.PathLike] = (),
) -> Path:
    """Save a few frames side by side (top row) with their map overlays (bottom row) as one PNG, atomically.

    Args:
        cine: ``(T, H, W)`` (leading singleton axes allowed).
        saliency: map of the same shape (min-max scaled over all frames, so frames are comparable).
        path: destination ``.png``.
        frames: frame indices to show, or how many evenly spaced frames (first to last).
        alpha: opacity of the map.
        cmap: matplotlib colormap.
        title: figure title.
        frame_time_ms: if given, columns are labelled with the time in ms as well as the frame index.
        protect: input files never to overwrite.

    Returns:
        The written path.

    Raises:
        ValueError: for wrong shapes, NaN/Inf, a bad alpha or cmap, or frame indices out of range.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
    if cmap not in matplotlib.colormaps:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}.")
    grey, sal = _check_pair(cine, saliency)
    t = grey.shape[0]
    if isinstance(frames, (int, np.integer)):
        if frames < 1:
            raise ValueError(f"need at least one frame to show, got {frames}.")
        idx = np.unique(np.linspace(0, t - 1, min(int(frames), t)).round().astype(int)).tolist()
    else:
        idx = [int(i) for i in frames]
        if not idx or min(idx) < -t or max(idx) >= t:
            raise ValueError(f"frame indices must be a non-empty list within [-{t}, {t - 1}], got {list(frames)}.")
        idx = [i % t for i in idx]
    fig = Figure(figsize=(2.0 * len(idx), 4.2))  # object API: no pyplot state, no backend switch
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(idx), squeeze=False)
    for c, i in enumerate(idx):  # a handful of panels to draw
        axes[0, c].imshow(grey[i], cmap="gray", vmin=0, vmax=1)
        axes[1, c].imshow(grey[i], cmap="gray", vmin=0, vmax=1)
        axes[1, c].imshow(sal[i], cmap=cmap, vmin=0, vmax=1, alpha=alpha)
        label = f"frame {i}" + (f" ({i * frame_time_ms:.0f} ms)" if frame_time_ms else "")
        axes[0, c].set_title(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("cine", fontsize=8)
    axes[1, 0].set_ylabel("saliency", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_output(path, protect=[*source_paths(cine, saliency), *protect]) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return Path(path)


def _frame_time(meta: Mapping[str, Any] | None, default: float) -> float:
    value = (meta or {}).get("frame_time_ms", default)
    if isinstance(value, (list, tuple)):
        value = value[0]
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return value if np.isfinite(value) and value > 0 else default


class SaveCineGif(Transform):
    """MONAI transform: write the GIF overlay of ``(cine, saliency)`` to ``{output_dir}/{input name}_{postfix}.gif``.

    The input name comes from the cine's ``meta["filename_or_obj"]`` (``".nii.gz"``/``".dcm"`` etc. stripped); the
    frame time from its ``meta["frame_time_ms"]`` (XA cines read by :mod:`monai_saliency.data.dicom.xa` carry it),
    else ``frame_time_ms``.

    Args:
        output_dir: destination folder.
        output_postfix: suffix of the file name.
        frame_time_ms: default time between frames.
        kwargs: passed to :func:`save_cine_gif` (``alpha``, ``cmap``, ``side_by_side``, ``scale``, ``max_width``,
            ``max_side``, ``palette``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        output_postfix: str = "overlay",
        frame_time_ms: float = 1000.0 / 15.0,
        **kwargs: Any,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.output_postfix = output_postfix
        self.frame_time_ms = frame_time_ms
        self.kwargs = kwargs

    def __call__(self, cine: torch.Tensor, saliency: torch.Tensor, folder: str | os.PathLike | None = None) -> Path:
        """Write the GIF and return its path.

        Args:
            cine: the cine, its ``meta["filename_or_obj"]`` names the file.
            saliency: its map.
            folder: the study's output (staging) folder from the cohort layer, written to instead of ``output_dir``.

        Raises:
            ValueError: if the cine carries no source file name, or see :func:`save_cine_gif`.
            FileExistsError: ``folder`` is missing or a symlink, or the file exists as a symlink.
        """
        meta = cine.meta if isinstance(cine, MetaTensor) else {}
        src = meta.get("filename_or_obj")
        if not isinstance(src, (str, os.PathLike)) or not str(src):
            raise ValueError("the cine needs meta['filename_or_obj'] (load it with LoadImage / read_xa_cine).")
        if folder is not None:
            path = file_in_study_folder(folder, src, self.output_postfix, ".gif")
        else:
            path = self.output_dir / f"{study_stem(src)}_{self.output_postfix}.gif"
        return save_cine_gif(cine, saliency, path, frame_time_ms=_frame_time(meta, self.frame_time_ms), **self.kwargs)


class SaveCineGifd(MapTransform):
    """Dictionary twin of :class:`SaveCineGif`: ``keys`` = (cine key, saliency key); the data pass through.

    Args:
        keys: two keys, the cine and its map (both ``(1, T, H, W)`` or ``(T, H, W)``, same shape).
        output_dir, output_postfix, frame_time_ms, kwargs: see :class:`SaveCineGif`.
        path_key: if set, the written path is stored under this key.
        folder_key: if set, ``data[folder_key]`` is the study's output (staging) folder from the cohort layer; the
            GIF goes there as ``<stem>_<output_postfix>.gif`` and ``output_dir`` is not used.

    Raises:
        ValueError: if ``keys`` is not exactly two keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        output_postfix: str = "overlay",
        frame_time_ms: float = 1000.0 / 15.0,
        path_key: str | None = None,
        folder_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys)
        self.folder_key = folder_key
        if len(self.keys) != 2:
            raise ValueError(f"SaveCineGifd needs two keys (cine, saliency), got {self.keys}.")
        self.writer = SaveCineGif(output_dir, output_postfix, frame_time_ms, **kwargs)
        self.path_key = path_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        folder = d[self.folder_key] if self.folder_key is not None else None
        path = self.writer(d[self.keys[0]], d[self.keys[1]], folder)
        if self.path_key:
            d[self.path_key] = str(path)
        return d
