"""Writing saliency maps from dictionary pipelines: one file per map key, atomically, values in [0, 1]."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, SaveImage, Transform
from monai.utils import TransformBackends

from monai_saliency.data.nifti import AtomicNibabelWriter
from monai_saliency.ops.normalize import minmax_normalize

__all__ = ["ScaleToUnit", "ScaleToUnitd", "SaveMapsd"]


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
    the same file and no output can take an input's name. NIfTI goes through :class:`AtomicNibabelWriter`;
    other extensions use the writer MONAI registers for them.

    Args:
        keys: map keys to save.
        output_dir: destination folder (created).
        output_ext: file extension, default ``".nii.gz"``.
        writer: writer class (default atomic NIfTI for ``.nii``/``.nii.gz``, MONAI's choice otherwise).
        allow_missing_keys: skip absent keys.
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
        if writer is None and output_ext.lower() in (".nii", ".nii.gz"):
            writer = AtomicNibabelWriter
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
            )
            for key in self.keys
        }

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.savers[key](d[key])
        return d
