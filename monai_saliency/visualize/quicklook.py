"""PNG quick-look of a 3D study: three orthogonal slices of the volume with a map blended (shown by a cohort run's
``report.html``)."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image

from monai_saliency.data.atomic import atomic_output, file_in_study_folder, study_stem
from monai_saliency.visualize.secondary_capture import OverlayStyle, render_orthogonal_overlay

__all__ = ["SaveQuickLookd"]


def _volume(x: Any, name: str) -> torch.Tensor:
    """``(X, Y, Z)`` float tensor of a ``(1, X, Y, Z)`` or ``(X, Y, Z)`` item."""
    t = torch.as_tensor(x).detach().float()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"{name} must be (1, X, Y, Z) or (X, Y, Z), got shape {tuple(t.shape)}.")
    return t.cpu()


class SaveQuickLookd(MapTransform):
    """Write ``<stem>_<output_postfix>.png``: axial, coronal and sagittal slices through the map's peak, the map
    blended over the volume (:func:`~monai_saliency.visualize.secondary_capture.render_orthogonal_overlay`), written
    atomically; the data pass through.

    Use it where the volume and the map share one grid (e.g. before ``Invertd``, on the network's input): the
    picture is a quick look, the NIfTI maps are the results.

    Args:
        keys: two keys, the volume and its map (``(1, X, Y, Z)`` or ``(X, Y, Z)``, same shape); the volume's affine
            (a MetaTensor's) places both.
        output_dir: destination folder when ``folder_key`` is None.
        output_postfix: suffix of the file name.
        style: blending and caption (:class:`OverlayStyle`); default: the map's key as caption, jet colormap.
        min_panel: the largest panel side is magnified to at least this many pixels.
        folder_key: key of the study's existing output folder (per-study convention of the cohort layer), or None.
        path_key: if set, the written path is stored under this key.

    Raises:
        ValueError: if ``keys`` is not exactly two keys; on call, a volume without source file name or shapes that
            differ.
        FileExistsError: on call, ``data[folder_key]`` is not an existing folder (or is a symlink).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike = ".",
        output_postfix: str = "quicklook",
        style: OverlayStyle | None = None,
        min_panel: int = 160,
        folder_key: str | None = None,
        path_key: str | None = None,
    ) -> None:
        super().__init__(keys)
        self.folder_key, self.path_key = folder_key, path_key
        if len(self.keys) != 2:
            raise ValueError(f"SaveQuickLookd needs two keys (volume, map), got {self.keys}.")
        self.style = style or OverlayStyle(method=str(self.keys[1]))
        self.output_dir, self.output_postfix, self.min_panel = Path(output_dir), output_postfix, min_panel

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.keys[0]]
        meta = image.meta if isinstance(image, MetaTensor) else {}
        src = meta.get("filename_or_obj")
        if not isinstance(src, (str, os.PathLike)) or not str(src):
            raise ValueError("the volume needs meta['filename_or_obj'] (load it with LoadImage / LoadVolumed).")
        affine = image.affine if isinstance(image, MetaTensor) else torch.eye(4)
        picture, _ = render_orthogonal_overlay(
            _volume(image, "volume"), _volume(d[self.keys[1]], "map"), affine.cpu(), self.style, self.min_panel
        )
        if self.folder_key is not None:
            path = file_in_study_folder(d[self.folder_key], src, self.output_postfix, ".png")
        else:
            path = self.output_dir / f"{study_stem(src)}_{self.output_postfix}.png"
        with atomic_output(path, protect=[src]) as tmp:
            Image.fromarray(np.ascontiguousarray(picture)).save(tmp, format="PNG", optimize=True)
        if self.path_key:
            d[self.path_key] = str(path)
        return d
