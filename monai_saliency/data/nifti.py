"""NIfTI output in the input's geometry, written atomically (a function and a MONAI ``ImageWriter``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor, NibabelWriter

from monai_saliency.data.atomic import atomic_output, source_paths

__all__ = ["MAP_DTYPES", "AtomicNibabelWriter", "check_map_dtype", "save_nifti"]


def save_nifti(
    image: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    affine: torch.Tensor | np.ndarray | None = None,
    protect: Iterable[str | os.PathLike] = (),
    overwrite: bool = True,
) -> Path:
    """Write a channel-first image ``(C, *spatial)`` as NIfTI, atomically, with the given or carried affine.

    One channel is written as a plain 2D/3D image; several channels follow MONAI's NIfTI convention
    (spatial axes padded to 3, channels last), so a 2D multi-channel map reads back as ``(C, H, W, 1)``.

    Args:
        image: ``(C, *spatial)``; a MetaTensor contributes its affine (and the input file it came from is
            protected from being overwritten).
        path: destination ``.nii`` or ``.nii.gz``.
        affine: 4x4 voxel-to-world matrix; default the MetaTensor's affine, else identity.
        protect: further input files never to overwrite.
        overwrite: replace an existing output.

    Returns:
        The written path.

    Raises:
        ValueError: if ``image`` is not channel-first with 1 to 3 spatial axes, or the suffix is not NIfTI.
        FileExistsError: see :func:`atomic_output`.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(f"NIfTI output needs a .nii or .nii.gz name, got {path.name!r}.")
    if image.ndim not in (2, 3, 4):
        raise ValueError(
            f"expected a channel-first image (C, *spatial) with 1-3 spatial axes, got {tuple(image.shape)}."
        )
    if affine is None and isinstance(image, MetaTensor):
        affine = image.affine
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    data = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    data = data.astype(np.float32)
    if data.shape[0] == 1:
        data = data[0]
    else:  # MONAI's NIfTI convention: spatial axes padded to 3, channels last
        spatial = data.shape[1:] + (1,) * (3 - (data.ndim - 1))
        data = np.moveaxis(data, 0, -1).reshape(*spatial, data.shape[0])
    nifti = nib.Nifti1Image(data, affine)
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    with atomic_output(path, protect=[*source_paths(image), *protect], overwrite=overwrite) as tmp:
        nib.save(nifti, str(tmp))
    return path


#: storage types of saved maps (see :class:`AtomicNibabelWriter`)
MAP_DTYPES = ("float32", "float16", "uint8")


def check_map_dtype(map_dtype: str) -> str:
    """``map_dtype`` if it is one of :data:`MAP_DTYPES`.

    Raises:
        ValueError: otherwise.
    """
    if map_dtype not in MAP_DTYPES:
        raise ValueError(f"map_dtype must be one of {MAP_DTYPES}, got {map_dtype!r}.")
    return map_dtype


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`atomic_output`: no partial file is ever visible.

    Use it with ``SaveImage(d)(..., writer=AtomicNibabelWriter)`` (or ``"monai_saliency.data.nifti.AtomicNibabelWriter"``
    in a bundle config).

    Args:
        map_dtype: how values are stored: ``"float32"`` (as they are, default), ``"float16"`` (rounded to half
            precision, about 3 significant digits; NIfTI-1 has no half type, so they are stored as float32 whose low
            13 mantissa bits are zero, which gzip compresses to about 60 % of the float32 file) or ``"uint8"`` (256
            levels between the map's minimum and maximum, with ``scl_slope``/``scl_inter`` in the header chosen by
            nibabel: every NIfTI reader applying them, nibabel and MONAI included, gets the values back within half
            a step, ``(max - min) / 510``).
        kwargs: as ``NibabelWriter``.

    Raises:
        ValueError: an unknown ``map_dtype``.
    """

    def __init__(self, output_dtype: Any = np.float32, map_dtype: str = "float32", **kwargs: Any) -> None:
        super().__init__(output_dtype=output_dtype, **kwargs)
        self.map_dtype = check_map_dtype(map_dtype)

    def create_backend_obj(self, data_array: Any, affine: Any = None, dtype: Any = None, **kwargs: Any) -> Any:
        """``NibabelWriter.create_backend_obj``, then the ``map_dtype`` storage (see the class docstring)."""
        if self.map_dtype != "float32":
            dtype = np.float32
            data_array = np.asarray(data_array, dtype=np.float32)
            if self.map_dtype == "float16":
                data_array = data_array.astype(np.float16).astype(np.float32)
        img = super().create_backend_obj(data_array, affine=affine, dtype=dtype, **kwargs)
        if self.map_dtype == "uint8":
            img.set_data_dtype(np.uint8)  # nibabel scales to 0..255 on saving and records scl_slope / scl_inter
        return img

    def set_metadata(self, meta_dict: Mapping | None, resample: bool = True, **options) -> None:
        """Take the affine from ``meta_dict``; resample to the original affine only if ``resample``.

        ``NibabelWriter`` always goes through MONAI's resampler, which fails on 2D maps ``(1, H, W)`` even when
        nothing is to be resampled; without ``resample`` the data are written as they are, with their affine.

        Args:
            meta_dict: metadata with ``affine`` (and ``original_affine``, ``spatial_shape`` for resampling).
            resample: resample to ``original_affine`` (MONAI's behaviour).
            options: as ``NibabelWriter.set_metadata``.
        """
        if resample:
            super().set_metadata(meta_dict, resample=True, **options)
            return
        _, affine, _ = self.get_meta_info(meta_dict)
        if self.output_dtype is None and hasattr(self.data_obj, "dtype"):
            self.output_dtype = self.data_obj.dtype
        self.affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)

    def write(self, filename: os.PathLike | str, verbose: bool = False, **obj_kwargs) -> None:
        """Write to a temporary file beside ``filename`` and rename it into place.

        Args:
            filename: destination ``.nii`` / ``.nii.gz``.
            verbose: log the progress.
            obj_kwargs: passed to ``NibabelWriter.write``.
        """
        with atomic_output(filename) as tmp:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
