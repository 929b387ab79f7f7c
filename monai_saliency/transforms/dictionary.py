"""Dictionary twins of the array transforms in :mod:`monai_saliency.transforms.array`, and :class:`SaveMapsd`.

Each ``...d`` transform applies its array transform to every key of a MONAI data dictionary (the input mapping is
not modified); :class:`SaveMapsd` writes one file per map key, atomically, values in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, image_writer
from monai.transforms import MapTransform, SaveImage, Transform
from monai.utils import TransformBackends

from monai_saliency.data.atomic import AtomicPILWriter, file_in_study_folder
from monai_saliency.data.nifti import AtomicNibabelWriter, check_map_dtype
from monai_saliency.models.pca import PCAProjection
from monai_saliency.transforms import array

__all__ = [
    "AntiAliasd",
    "FourierLowPassd",
    "ImageSignatured",
    "PCABackProjectd",
    "PCAProjectd",
    "SaveMapsd",
    "ScaleToUnitd",
    "StructuredProxd",
]

_EIGHT_BIT_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


def _registered_formats() -> set[str]:
    """File formats MONAI registers a writer for by name (not only through its ``*`` fallback)."""
    if not image_writer.SUPPORTED_WRITERS:
        image_writer.init()
    return {
        fmt for fmt, writers in image_writer.SUPPORTED_WRITERS.items() if fmt != image_writer.EXT_WILDCARD and writers
    }


class _KeyWise(MapTransform):
    """Apply one array transform to every key, in a new dict (the shared body of the dictionary twins).

    Args:
        keys: keys of the items to transform.
        transform: the array transform.
        allow_missing_keys: skip absent keys instead of raising.
    """

    def __init_subclass__(cls, twin: type[Transform] | None = None, **kwargs: Any) -> None:
        """Declare ``class Xd(_KeyWise, twin=X)``: the twin's ``backend`` becomes the class's."""
        super().__init_subclass__(**kwargs)
        if twin is not None:
            cls.backend = twin.backend

    def __init__(self, keys: KeysCollection, transform: Transform, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = transform

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the array transform to every key.

        Args:
            data: a mapping holding the keys (others are copied unchanged; the input mapping is not modified).

        Returns:
            A new dict with the results under the keys.

        Raises:
            KeyError: for a missing key unless ``allow_missing_keys``.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class FourierLowPassd(_KeyWise, twin=array.FourierLowPass):
    """Dictionary twin of :class:`~monai_saliency.transforms.array.FourierLowPass`.

    Args:
        keys: keys of the items to filter.
        sigma: cut-off radius in frequency bins, > 0.
        allow_missing_keys: skip absent keys instead of raising.
    """

    def __init__(self, keys: KeysCollection, sigma: float, allow_missing_keys: bool = False) -> None:
        self.filter = array.FourierLowPass(sigma)
        super().__init__(keys, self.filter, allow_missing_keys)


class StructuredProxd(_KeyWise, twin=array.StructuredProx):
    """Dictionary twin of :class:`~monai_saliency.transforms.array.StructuredProx` (same options).

    Args:
        keys: keys of the gradients to process.
        allow_missing_keys: skip absent keys.
        kwargs: options of :class:`~monai_saliency.transforms.array.StructuredProx`.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        self.prox = array.StructuredProx(**kwargs)
        super().__init__(keys, self.prox, allow_missing_keys)


class PCAProjectd(_KeyWise, twin=array.PCAProject):
    """Dictionary twin of :class:`~monai_saliency.transforms.array.PCAProject`.

    Args:
        keys: keys of the volumes to project.
        projection: a fitted :class:`~monai_saliency.models.pca.PCAProjection`.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(self, keys: KeysCollection, projection: PCAProjection, allow_missing_keys: bool = False) -> None:
        self.projector = array.PCAProject(projection)
        super().__init__(keys, self.projector, allow_missing_keys)


class PCABackProjectd(_KeyWise, twin=array.PCABackProject):
    """Dictionary twin of :class:`~monai_saliency.transforms.array.PCABackProject`.

    Args:
        keys: keys of the projection vectors.
        projection: a fitted :class:`~monai_saliency.models.pca.PCAProjection`.
        add_mean: add the training mean volume back.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(
        self, keys: KeysCollection, projection: PCAProjection, add_mean: bool = True, allow_missing_keys: bool = False
    ) -> None:
        self.back = array.PCABackProject(projection, add_mean)
        super().__init__(keys, self.back, allow_missing_keys)


class ScaleToUnitd(_KeyWise, twin=array.ScaleToUnit):
    """Dictionary twin of :class:`~monai_saliency.transforms.array.ScaleToUnit`.

    Args:
        keys: keys of the maps to scale.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        self.scaler = array.ScaleToUnit()
        super().__init__(keys, self.scaler, allow_missing_keys)


class ImageSignatured(MapTransform):
    """Dictionary twin of :class:`~monai_saliency.transforms.array.ImageSignature`.

    Args:
        keys: keys of the images.
        output_key: store the result under this key (only with a single key); None overwrites each key.
        allow_missing_keys: skip absent keys instead of raising.
        kwargs: options of :class:`~monai_saliency.transforms.array.ImageSignature`.

    Raises:
        ValueError: if ``output_key`` is given with several keys.
    """

    backend = array.ImageSignature.backend

    def __init__(
        self, keys: KeysCollection, output_key: str | None = None, allow_missing_keys: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_key is not None and len(self.keys) != 1:
            raise ValueError("output_key needs exactly one key; omit it to overwrite every key in place.")
        self.output_key = output_key
        self.signature = array.ImageSignature(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply :class:`~monai_saliency.transforms.array.ImageSignature` to every key.

        Args:
            data: a mapping holding the keys (others are copied unchanged; the input mapping is not modified).

        Returns:
            A new dict with the results under the keys (or under ``output_key``).

        Raises:
            KeyError: for a missing key unless ``allow_missing_keys``.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key if self.output_key is not None else key] = self.signature(d[key])
        return d


class SaveMapsd(MapTransform):
    """Save each map key to ``{output_dir}/{input name}_{key}{ext}``, atomically, in the map's own geometry.

    File names come from the map's ``filename_or_obj`` (the input it explains), so two methods never write to
    the same file and no output can take an input's name. NIfTI goes through :class:`AtomicNibabelWriter`
    (2D maps ``(C, H, W)`` and 3D maps ``(C, D, H, W)``); 8-bit image formats (``.png``, ``.jpg``, ``.bmp``, through
    :class:`~monai_saliency.data.atomic.AtomicPILWriter`) take
    2D maps with 1, 3 or 4 channels and values in [0, 1] (apply :class:`ScaleToUnitd` first), written as 0-255;
    other extensions use the writer MONAI registers for them.

    Args:
        keys: map keys to save.
        output_dir: destination folder (created).
        output_ext: file extension, default ``".nii.gz"``.
        writer: writer class (default atomic NIfTI for ``.nii``/``.nii.gz``, MONAI's choice otherwise).
        allow_missing_keys: skip absent keys.
        folder_key: if set, ``data[folder_key]`` is the study's existing output (staging) folder, given by the cohort
            layer (:mod:`monai_saliency.engines.cohort`); the maps go there as ``<stem>_<key><ext>`` (the input's
            stem, see :func:`~monai_saliency.data.atomic.study_stem`) and ``output_dir`` is not used.
        map_dtype: storage of NIfTI maps (see :class:`~monai_saliency.data.nifti.AtomicNibabelWriter`):
            ``"float32"`` (default, values as they are), ``"float16"`` (half-precision values) or ``"uint8"`` (256
            levels with ``scl_slope``/``scl_inter`` in the header, so readers get the values back within half a
            step, ``(max - min) / 510``). With ``.nii.gz`` (the default) the file is gzip-compressed: a smooth
            512 x 512 x 48 map took 42 MB as float32, 26 MB as float16 and 1.9 MB as uint8.

    Raises:
        ValueError: at construction if MONAI has no writer for ``output_ext``, for an unknown ``map_dtype``, or a
            ``map_dtype`` other than ``"float32"`` with a non-NIfTI ``output_ext``; when called, for a map an 8-bit
            image format cannot hold (not 2D, a channel count other than 1/3/4, values outside [0, 1]).
        FileExistsError: when called with ``folder_key``, if the folder is missing or a symlink, or the file exists
            as a symlink.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        output_ext: str = ".nii.gz",
        writer: type | str | None = None,
        allow_missing_keys: bool = False,
        folder_key: str | None = None,
        map_dtype: str = "float32",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.folder_key = folder_key
        ext = output_ext.lower()
        check_map_dtype(map_dtype)
        if map_dtype != "float32" and (writer is not None or ext not in (".nii", ".nii.gz")):
            raise ValueError(
                f"map_dtype={map_dtype!r} applies to NIfTI maps written by AtomicNibabelWriter (.nii.gz); got "
                f"output_ext={output_ext!r}, writer={writer!r}."
            )
        if writer is None and ext in (".nii", ".nii.gz"):
            writer = AtomicNibabelWriter
        if writer is None and ext in _EIGHT_BIT_EXTS:
            writer = AtomicPILWriter
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
        if map_dtype != "float32":
            for saver in self.savers.values():
                saver.set_options(init_kwargs={"map_dtype": map_dtype})

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
            if self.folder_key is None:
                d[key] = self.savers[key](d[key])
                continue
            source = d[key].meta.get("filename_or_obj") if isinstance(d[key], MetaTensor) else None
            path = str(file_in_study_folder(d[self.folder_key], source, str(key), self.output_ext))
            d[key] = self.savers[key](d[key], filename=path[: -len(self.output_ext)])
        return d


class AntiAliasd(_KeyWise, twin=array.AntiAlias):
    """Dictionary twin of :class:`~monai_saliency.transforms.array.AntiAlias`: MONAI's resize anti-aliasing filter,
    a few frames at a time; put it before ``Resized(spatial_size, anti_aliasing=False)``.

    Args:
        keys: keys of channel-first images ``(C, *spatial)``.
        spatial_size: the target size given to ``Resized`` (``-1`` keeps an axis).
        chunk: slices per chunk along the first spatial axis.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self, keys: KeysCollection, spatial_size: Sequence[int], chunk: int = 8, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, array.AntiAlias(spatial_size, chunk), allow_missing_keys)
