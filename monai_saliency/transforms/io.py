"""Writing saliency maps from dictionary pipelines: one file per map key, atomically, values in [0, 1]."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, image_writer
from monai.transforms import MapTransform, SaveImage, Transform
from monai.utils import TransformBackends

from monai_saliency.data.io import AtomicNibabelWriter
from monai_saliency.ops.normalize import minmax_normalize

__all__ = ["ScaleToUnit", "ScaleToUnitd", "SaveMapsd"]

_EIGHT_BIT_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


def _registered_formats() -> set[str]:
    """File formats MONAI registers a writer for by name (not only through its ``*`` fallback)."""
    if not image_writer.SUPPORTED_WRITERS:
        image_writer.init()
    return {
        fmt for fmt, writers in image_writer.SUPPORTED_WRITERS.items() if fmt != image_writer.EXT_WILDCARD and writers
    }


class ScaleToUnit(Transform):
    """Min-max scale one channel-first map ``(C, *spatial)`` to [0, 1] (zeros for a constant map), metadata kept."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Scale ``img``.

        Args:
            img: ``(C, *spatial)`` map (tensor, MetaTensor or array); a MetaTensor stays one, an array stays one.

        Returns:
            The scaled map, float32.

        Raises:
            ValueError: if the map holds NaN/Inf.
        """
        data = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        scaled = minmax_normalize(data.float()[None])[0]
        if isinstance(img, MetaTensor):
            return MetaTensor(scaled, meta=img.meta, applied_operations=img.applied_operations)
        return scaled.numpy() if isinstance(img, np.ndarray) else scaled


class ScaleToUnitd(MapTransform):
    """Dictionary twin of :class:`ScaleToUnit`."""

    backend = ScaleToUnit.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = ScaleToUnit()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d


class SaveMapsd(MapTransform):
    """Save each map key to ``{output_dir}/{input name}_{key}{ext}``, atomically, in the map's own geometry.

    File names come from the map's ``filename_or_obj`` (the input it explains), so two methods never write to
    the same file and no output can take an input's name. NIfTI goes through :class:`AtomicNibabelWriter`
    (2D maps ``(C, H, W)`` and 3D maps ``(C, D, H, W)``); 8-bit image formats (``.png``, ``.jpg``, ``.bmp``) take
    2D maps with 1, 3 or 4 channels and values in [0, 1] (apply :class:`ScaleToUnitd` first), written as 0-255;
    other extensions use the writer MONAI registers for them.

    Args:
        keys: map keys to save.
        output_dir: destination folder (created).
        output_ext: file extension, default ``".nii.gz"``.
        writer: writer class (default atomic NIfTI for ``.nii``/``.nii.gz``, MONAI's choice otherwise).
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: at construction if MONAI has no writer for ``output_ext``; when called, for a map an 8-bit
            image format cannot hold (not 2D, a channel count other than 1/3/4, values outside [0, 1]).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        output_ext: str = ".nii.gz",
        writer: type | str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        ext = output_ext.lower()
        if writer is None and ext in (".nii", ".nii.gz"):
            writer = AtomicNibabelWriter
        if writer is None and ext.lstrip(".") not in _registered_formats():
            raise ValueError(
                f"MONAI registers no image writer for {output_ext!r} (known: {sorted(_registered_formats())}); use "
                "'.nii.gz' or '.png', or pass writer=."
            )
        self.eight_bit = ext in _EIGHT_BIT_EXTS
        self.output_ext = output_ext
        self.savers = {
            key: SaveImage(
                output_dir=output_dir,
                output_postfix=str(key),
                output_ext=output_ext,
                separate_folder=False,
                resample=False,
                writer=writer,
                print_log=False,
                savepath_in_metadict=True,
                scale=255 if self.eight_bit else None,
                output_dtype=np.uint8 if self.eight_bit else np.float32,
            )
            for key in self.keys
        }

    def _check_eight_bit(self, key: Hashable, img: torch.Tensor | np.ndarray) -> None:
        data = torch.as_tensor(img.as_tensor() if isinstance(img, MetaTensor) else img)
        if data.ndim != 3 or data.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"{self.output_ext} holds 2D maps (C, H, W) with 1, 3 or 4 channels; map {key!r} has shape "
                f"{tuple(data.shape)}. Use output_ext='.nii.gz' for 3D or multi-channel maps."
            )
        if not bool(torch.isfinite(data).all()) or data.min() < 0 or data.max() > 1:
            raise ValueError(
                f"{self.output_ext} stores values in [0, 1] as 0-255; map {key!r} lies outside [0, 1] (or holds "
                "NaN/Inf): apply ScaleToUnitd first."
            )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.eight_bit:
                self._check_eight_bit(key, d[key])
            d[key] = self.savers[key](d[key])
        return d
