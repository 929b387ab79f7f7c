"""Viewer-ready saliency overlays as DICOM Secondary Capture (SC): the pictures a clinician opens in a PACS viewer.

* :func:`render_cine_overlay` draws every frame of a cine with its map blended on top, with the colour mapping and
  blending of the cine GIF (:mod:`monai_saliency.visualize.cine`: cine on its global [min, max], map min-max scaled
  over all frames, ``(1 - alpha) * grey + alpha * cmap(map)``), magnified by an integer factor to at least
  ``min_width`` pixels, above a caption band (bottom-left corner of the capture) with a colour bar of the map scale
  and the method and model names. The band is below the image, so no annotation covers the anatomy.
* :func:`render_orthogonal_overlay` draws the axial, coronal and sagittal slices through the map's peak (its
  largest value) with the map over a background volume (anatomy or mean scan), in radiological convention (patient
  right on the left, anterior and superior up), resampled to square pixels, with the same caption band.
* :class:`OverlayStyle` holds the opacity, colormap and caption (method, model) of both.
* :func:`save_cine_overlay_sc` / :func:`save_orthogonal_overlay_sc` write them with
  :func:`monai_saliency.data.dicom.secondary_capture.write_secondary_capture` (multi-frame true-colour SC with the
  source's frame timing; single-frame SC), in the source's patient and study (see that module for the identity of
  captures without a DICOM source, e.g. NIfTI inputs).
* :class:`SaveOverlaySCd` is the MONAI dictionary transform used by the angiogram bundle; it follows the per-study
  output convention (``folder_key``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from monai_saliency.data.atomic import source_paths
from monai_saliency.data.dicom.encoding import check_compression
from monai_saliency.data.dicom.secondary_capture import read_source_header, write_secondary_capture
from monai_saliency.visualize.cine import _check_pair, _frame_time, _overlay, _unit

__all__ = [
    "OverlayStyle",
    "SaveOverlaySCd",
    "caption_band",
    "render_cine_overlay",
    "render_orthogonal_overlay",
    "save_cine_overlay_sc",
    "save_orthogonal_overlay_sc",
]

_PAD = 4  # pixels around the caption's rows
_BAR_H = 8  # colour-bar height
_GAP = 2  # pixels between orthogonal panels
_CHUNK_PIXELS = 1 << 20  # frames are coloured in chunks of at most this many pixels (RGBA float64: 32 MB)


@dataclass(frozen=True)
class OverlayStyle:
    """How a map is drawn over its image, and the caption burned in under it.

    Attributes:
        method: the method's name (first caption row), e.g. ``"Signature Activation (spatial DCT)"``.
        model: the model's name (second caption row), e.g. ``"VideoLesionNet, features.stage3"``.
        alpha: opacity of the map, in [0, 1].
        cmap: matplotlib colormap of the map.

    Raises:
        ValueError: a bad alpha or an unknown colormap.
    """

    method: str = ""
    model: str = ""
    alpha: float = 0.45
    cmap: str = "jet"

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}.")
        if self.cmap not in matplotlib.colormaps:
            raise ValueError(f"unknown matplotlib colormap {self.cmap!r}.")

    @property
    def lines(self) -> list[str]:
        """The non-empty caption rows (method, model)."""
        return [t for t in (self.method, self.model) if t]


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text`` shortened with "..." until it fits ``width`` pixels (characters PIL's bitmap fallback font cannot
    draw, outside Latin-1, become "?")."""
    if not isinstance(font, ImageFont.FreeTypeFont):
        text = text.encode("latin-1", "replace").decode("latin-1")
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "..."


def caption_band(width: int, lines: Sequence[str], cmap: str = "jet", scale_label: str = "map") -> np.ndarray:
    """A black band ``(h, width, 3)`` uint8: ``"<scale_label> 0 [colour bar] 1"`` on top, then one text row per
    line (white, PIL's default font, shortened with "..." to fit).

    Args:
        width: band width in pixels (>= 64).
        lines: text rows, e.g. method and model.
        cmap: matplotlib colormap of the bar (0 on the left, 1 on the right).
        scale_label: word before the bar.

    Raises:
        ValueError: if ``width`` < 64 or ``cmap`` is unknown.
    """
    if width < 64:
        raise ValueError(f"the caption band needs at least 64 pixels of width, got {width}.")
    if cmap not in matplotlib.colormaps:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}.")
    font = ImageFont.load_default()
    row = int(font.getbbox("Ag")[3]) + 2
    height = _PAD + max(row, _BAR_H) + len(lines) * row + _PAD
    img = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    x = _PAD
    for word in (_fit(draw, scale_label, font, width // 4), "0"):
        draw.text((x, _PAD), word, fill=(255, 255, 255), font=font)
        x += int(draw.textlength(word, font=font)) + 3
    one = int(draw.textlength("1", font=font))
    bar_w = max(8, min(width // 2, width - x - one - 2 * _PAD))
    ramp = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, bar_w))[:, :3]
    bar = np.clip(np.rint(ramp * 255), 0, 255).astype(np.uint8)
    y_bar = _PAD + max(0, (row - _BAR_H) // 2)
    img.paste(Image.fromarray(np.repeat(bar[None], _BAR_H, 0)), (x, y_bar))
    draw.text((x + bar_w + 3, _PAD), "1", fill=(255, 255, 255), font=font)
    y = _PAD + max(row, _BAR_H)
    for line in lines:
        draw.text((_PAD, y), _fit(draw, str(line), font, width - 2 * _PAD), fill=(255, 255, 255), font=font)
        y += row
    return np.asarray(img, dtype=np.uint8)


def _magnification(width: int, min_width: int) -> int:
    return max(1, -(-int(min_width) // int(width)))


def render_cine_overlay(
    cine: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    style: OverlayStyle | None = None,
    min_width: int = 256,
) -> np.ndarray:
    """Every frame of a cine with its map blended on top, above a caption band: ``(T, s*H + band, s*W, 3)`` uint8.

    The image part (rows ``[0, s*H)``) is the cine GIF's overlay magnified by ``s = ceil(min_width / W)`` (pixel
    replication, so each source pixel keeps its colour); where the map is 0 a pixel is ``(1 - alpha) * grey + alpha *
    cmap(0)``.

    Args:
        cine: ``(T, H, W)`` (leading singleton axes allowed), any range.
        saliency: map of the same shape, min-max scaled over all frames.
        style: blending and caption (default :class:`OverlayStyle`).
        min_width: the image is magnified to at least this width (>= 64; the caption needs it).

    Raises:
        ValueError: different shapes, NaN/Inf, or ``min_width`` < 64.
    """
    style = style or OverlayStyle()
    if min_width < 64:
        raise ValueError(f"min_width must be at least 64 pixels (room for the caption), got {min_width}.")
    grey, sal = _check_pair(cine, saliency)
    t, h, w = grey.shape
    s = _magnification(w, min_width)
    step = max(1, _CHUNK_PIXELS // (h * w))  # bounded memory for long, large cines (e.g. 100 x 1024 x 1024)
    band = caption_band(s * w, style.lines, style.cmap)
    out = np.empty((t, s * h + band.shape[0], s * w, 3), dtype=np.uint8)  # filled in place: one full-size copy
    out[:, s * h :] = band
    for i in range(0, t, step):
        out[i : i + step, : s * h] = (
            _overlay(grey[i : i + step], sal[i : i + step], style.alpha, style.cmap).repeat(s, 1).repeat(s, 2)
        )
    return out


def _ras(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` reoriented to RAS voxel axes, and the voxel sizes along them."""
    ornt = nib.orientations.io_orientation(affine)
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))[ornt[:, 0].astype(int).argsort()]
    return nib.orientations.apply_orientation(volume, ornt), spacing


def _square_pixels(panel: np.ndarray, row_mm: float, col_mm: float, pixel_mm: float) -> np.ndarray:
    shape = (max(1, round(panel.shape[0] * row_mm / pixel_mm)), max(1, round(panel.shape[1] * col_mm / pixel_mm)))
    zoom = (shape[0] / panel.shape[0], shape[1] / panel.shape[1])
    return ndimage.zoom(panel, zoom, order=0, mode="nearest", grid_mode=True)  # nearest: every voxel keeps its value


def _as_volume(a: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"{name} must be a volume (X, Y, Z) (leading singleton axes allowed), got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf.")
    return arr


def render_orthogonal_overlay(
    volume: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    affine: torch.Tensor | np.ndarray,
    style: OverlayStyle | None = None,
    min_panel: int = 160,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Axial, coronal and sagittal slices through the map's peak, map over the volume, above a caption band.

    Both volumes are reoriented to RAS with the affine; panels are in radiological convention (axial and coronal:
    patient right on the left; sagittal: anterior on the left; superior / anterior up), resampled to square pixels
    (nearest voxel) and magnified so that the largest panel side is at least ``min_panel`` pixels. Grey and map are scaled over the
    whole volume (``[min, max]``), so the three panels share one window and one map scale.

    Args:
        volume: ``(X, Y, Z)`` background (anatomy or mean scan).
        saliency: map of the same shape.
        affine: ``(4, 4)`` voxel-to-world (RAS, mm) matrix of both.
        style: blending and caption (default :class:`OverlayStyle`); a third caption row names the peak voxel.
        min_panel: the largest panel side is magnified to at least this many pixels.

    Returns:
        ``(H, W, 3)`` uint8 picture and the peak's voxel index ``(i, j, k)`` in the input's axes.

    Raises:
        ValueError: different shapes, NaN/Inf or a bad affine.
    """
    style = style or OverlayStyle()
    vol, sal = _as_volume(volume, "volume"), _as_volume(saliency, "saliency")
    if vol.shape != sal.shape:
        raise ValueError(f"volume {vol.shape} and saliency {sal.shape} shapes differ; resample the map first.")
    aff = affine.detach().cpu().double().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine, float)
    if aff.shape != (4, 4) or not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be a finite invertible (4, 4) matrix, got {aff.tolist()}.")
    flat = int(np.argmax(sal))
    peak = tuple(int(v) for v in np.unravel_index(flat, sal.shape))
    (grey, sp), (heat, _) = _ras(_unit(vol), aff), _ras(_unit(sal), aff)
    index, _ = _ras(np.arange(sal.size).reshape(sal.shape), aff)  # where the peak voxel went
    i, j, k = (int(v[0]) for v in np.nonzero(index == flat))
    pixel = float(sp.min())
    cuts = [  # (panel grey, panel map, row mm, column mm): rows top-down, columns left-right on screen
        (grey[::-1, ::-1, k].T, heat[::-1, ::-1, k].T, sp[1], sp[0]),  # axial: anterior up, right on the left
        (grey[::-1, j, ::-1].T, heat[::-1, j, ::-1].T, sp[2], sp[0]),  # coronal: superior up, right on the left
        (grey[i, ::-1, ::-1].T, heat[i, ::-1, ::-1].T, sp[2], sp[1]),  # sagittal: superior up, anterior left
    ]
    panels = [(_square_pixels(g, r, c, pixel), _square_pixels(h, r, c, pixel)) for g, h, r, c in cuts]
    s = _magnification(max(max(g.shape) for g, _ in panels), min_panel)
    rgb = [
        _overlay(g[None].clip(0, 1), h[None].clip(0, 1), style.alpha, style.cmap)[0].repeat(s, 0).repeat(s, 1)
        for g, h in panels
    ]
    height = max(p.shape[0] for p in rgb)
    row = np.zeros((height, sum(p.shape[1] for p in rgb) + _GAP * (len(rgb) - 1), 3), dtype=np.uint8)
    x = 0
    for p in rgb:
        row[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + _GAP
    img = Image.fromarray(row)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x = 0
    for p, (left, right) in zip(rgb, (("R", "L"), ("R", "L"), ("A", "P"))):
        draw.text((x + 2, 1), left, fill=(255, 255, 255), font=font)
        draw.text(
            (x + p.shape[1] - 2 - int(draw.textlength(right, font=font)), 1), right, fill=(255, 255, 255), font=font
        )
        x += p.shape[1] + _GAP
    where = f"peak voxel ({peak[0]}, {peak[1]}, {peak[2]}): axial, coronal, sagittal"
    band = caption_band(max(row.shape[1], 64), [*style.lines, where], style.cmap)
    image = np.asarray(img, dtype=np.uint8)
    if band.shape[1] > image.shape[1]:
        image = np.pad(image, ((0, 0), (0, band.shape[1] - image.shape[1]), (0, 0)))
    return np.concatenate([image, band], axis=0), peak


def _descriptions(style: OverlayStyle, what: str) -> dict[str, str]:
    return {
        "series_description": f"Overlay: {style.method}" if style.method else "saliency overlay",
        "derivation_description": "; ".join([", ".join(style.lines), what] if style.lines else [what]),
    }


def save_cine_overlay_sc(
    cine: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    source: str | os.PathLike | None = None,
    style: OverlayStyle | None = None,
    frame_time_ms: float | None = None,
    body_part: str | None = None,
    min_width: int = 256,
    compression: str = "none",
) -> Path:
    """Render :func:`render_cine_overlay` and write it as a multi-frame true-colour Secondary Capture.

    Args:
        cine, saliency, style, min_width: see :func:`render_cine_overlay`.
        path: output ``.dcm``.
        source: the input file (DICOM: identity and frame timing are copied; otherwise a new study naming it); it
            and any MetaTensor source are never overwritten.
        frame_time_ms: frame time when the source carries none (NIfTI).
        body_part: BodyPartExamined when the source has none (e.g. ``"HEART"``).
        compression: pixel compression of the capture, ``"none"`` (default), ``"jpeg2000"``, ``"rle"``
            or ``"deflate"`` (see :func:`~monai_saliency.data.dicom.secondary_capture.write_secondary_capture`).

    Returns:
        The written path.
    """
    style = style or OverlayStyle()
    return write_secondary_capture(
        render_cine_overlay(cine, saliency, style, min_width),
        path,
        source=source,
        frame_time_ms=frame_time_ms,
        body_part=body_part,
        protect=source_paths(cine, saliency),
        compression=compression,
        **_descriptions(style, "the map blended over the source cine"),
    )


def save_orthogonal_overlay_sc(
    volume: torch.Tensor | np.ndarray,
    saliency: torch.Tensor | np.ndarray,
    affine: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    source: str | os.PathLike | None = None,
    source_name: str = "",
    style: OverlayStyle | None = None,
    body_part: str | None = None,
    protect: Sequence[str | os.PathLike] = (),
) -> Path:
    """Render :func:`render_orthogonal_overlay` and write it as a single-frame true-colour Secondary Capture.

    Args:
        volume, saliency, affine, style: see :func:`render_orthogonal_overlay`.
        path: output ``.dcm``.
        source: a DICOM file or series folder (identity copied, every instance of a series folder referenced), or
            None / a non-DICOM path (a new study named after ``source_name``).
        source_name: the study's name for a capture without a DICOM source.
        body_part: BodyPartExamined when the source has none (e.g. ``"BRAIN"``).
        protect: input files never to overwrite.

    Returns:
        The written path.
    """
    style = style or OverlayStyle()
    pixels, peak = render_orthogonal_overlay(volume, saliency, affine, style)
    references = None
    if source is not None and Path(source).is_dir():
        headers = [read_source_header(p) for p in sorted(Path(source).iterdir())]
        references = [h for h in headers if h is not None] or None
    where = f"axial, coronal and sagittal slices through its peak at voxel ({peak[0]}, {peak[1]}, {peak[2]})"
    return write_secondary_capture(
        pixels,
        path,
        source=source,
        source_name=source_name,
        references=references,
        body_part=body_part,
        protect=protect,
        **_descriptions(style, where),
    )


def _stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".dcm", ".dicom"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


class SaveOverlaySCd(MapTransform):
    """Write ``(cine, map)`` as a multi-frame true-colour Secondary Capture overlay, one file per study.

    The file is ``{output_dir}/{input name}_{output_postfix}.dcm`` (input name from the cine's
    ``meta["filename_or_obj"]``, ``.dcm``/``.nii.gz`` etc. stripped), or ``data[folder_key]/{input name}_{postfix}.dcm``
    when ``folder_key`` is set (the study's staging folder of the per-study output convention). A DICOM input gives
    its patient, study and frame timing to the capture; other inputs (NIfTI) get a new study naming the file and
    the cine's ``meta["frame_time_ms"]`` or ``frame_time_ms``. The data pass through.

    Args:
        keys: two keys, the cine and its map (``(1, T, H, W)`` or ``(T, H, W)``, same shape: after ``Invertd``).
        output_dir: destination folder when ``folder_key`` is None.
        output_postfix: suffix of the file name.
        method: burned-in method name, e.g. ``"Signature Activation (spatial DCT)"``.
        model: burned-in model name, e.g. ``"VideoLesionNet, features.stage3"``.
        alpha, cmap: blending of the map (see :class:`OverlayStyle`).
        min_width: the image is magnified to at least this width.
        frame_time_ms: frame time of inputs without one.
        body_part: BodyPartExamined of captures whose source has none (e.g. ``"HEART"``; None: unknown).
        folder_key: key of the study's existing output folder (per-study convention), or None.
        path_key: if set, the written path is stored under this key.
        compression: pixel compression, ``"none"`` (default), ``"jpeg2000"`` (lossless: a 512 x 512 x 48 overlay of
            a noisy cine takes about half its uncompressed 41 MB; the angiogram bundle's choice), ``"rle"``
            or ``"deflate"`` (:mod:`monai_saliency.data.dicom.encoding`).

    Raises:
        ValueError: if ``keys`` is not exactly two keys, a bad alpha, colormap or compression; on call, if the cine has no source file name or
            ``data[folder_key]`` is not an existing folder.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike = ".",
        output_postfix: str = "overlay",
        method: str = "",
        model: str = "",
        alpha: float = 0.45,
        cmap: str = "jet",
        min_width: int = 256,
        frame_time_ms: float = 1000.0 / 15.0,
        body_part: str | None = None,
        folder_key: str | None = None,
        path_key: str | None = None,
        compression: str = "none",
    ) -> None:
        super().__init__(keys)
        check_compression(compression)
        self.compression = compression
        if len(self.keys) != 2:
            raise ValueError(f"SaveOverlaySCd needs two keys (cine, saliency), got {self.keys}.")
        self.output_dir = Path(output_dir)
        self.output_postfix = output_postfix
        self.style = OverlayStyle(method, model, alpha, cmap)
        self.min_width = min_width
        self.frame_time_ms = frame_time_ms
        self.body_part = body_part
        self.folder_key, self.path_key = folder_key, path_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        cine, sal = d[self.keys[0]], d[self.keys[1]]
        meta = cine.meta if isinstance(cine, MetaTensor) else {}
        src = meta.get("filename_or_obj")
        if not isinstance(src, (str, os.PathLike)) or not str(src):
            raise ValueError("the cine needs meta['filename_or_obj'] (load it with LoadImage / read_xa_cine).")
        folder = self.output_dir
        if self.folder_key is not None:
            folder = Path(d[self.folder_key])
            if not folder.is_dir():
                raise ValueError(f"data[{self.folder_key!r}] = {folder} is not an existing folder.")
        path = save_cine_overlay_sc(
            cine,
            sal,
            folder / f"{_stem(src)}_{self.output_postfix}.dcm",
            source=src,
            style=self.style,
            frame_time_ms=_frame_time(meta, self.frame_time_ms),
            body_part=self.body_part,
            min_width=self.min_width,
            compression=self.compression,
        )
        if self.path_key:
            d[self.path_key] = str(path)
        return d
