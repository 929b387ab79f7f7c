"""Reading XA DICOM or NIfTI cines in one pipeline, and writing derived XA maps for the DICOM ones.

Used by ``configs/inference.json`` (``"_target_": "scripts.cine_io.LoadCined"``); MONAI adds the bundle root to
``sys.path`` before a workflow runs.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, SaveImage

from monai_saliency.data.atomic import file_in_study_folder
from monai_saliency.data.dicom.detect import is_dicom_file
from monai_saliency.data.dicom.xa import read_xa_cine
from monai_saliency.data.dicom.xa_writer import XADerivedWriter

__all__ = ["DICOM_SUFFIXES", "LoadCined", "SaveXADerivedd", "is_dicom"]

DICOM_SUFFIXES = (".dcm", ".dicom")
# SaveImage options shared by every derived XA map: one file per study and key, beside the others, source geometry
_XA_SAVE_OPTIONS: dict[str, Any] = {
    "output_ext": ".dcm",
    "writer": XADerivedWriter,
    "separate_folder": False,
    "resample": False,
    "print_log": False,
}


def is_dicom(path: Any) -> bool:
    """True if ``path`` is a DICOM file by its content (``is_dicom_file``: PACS exports are ``IM000001``), or names
    one by a DICOM suffix (so that a truncated or corrupt ``.dcm`` gets the DICOM reader's clear error)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    return is_dicom_file(path) or str(path).lower().endswith(DICOM_SUFFIXES)


class LoadCined(MapTransform):
    """Load a cine from an XA DICOM file or a NIfTI file as ``MetaTensor (1, T, H, W)`` display intensities in [0, 1].

    * DICOM (by content, whatever the name, see :func:`is_dicom`): :func:`monai_saliency.data.dicom.xa.read_xa_cine`
      with ``normalize=True`` (validated multi-frame XA in any transfer syntax with an installed decoder; display
      values after the Modality LUT, MONOCHROME1 inverted, scaled by the representable range, e.g. stored values
      divided by ``2**BitsStored - 1``; no VOI window; meta carries ``frame_time_ms``, the angles and UIDs). Meta
      entries that are absent in the file (``None``) become ``""`` so that MONAI can collate them.
    * anything else (``.nii``/``.nii.gz``): ``LoadImage`` of a 3D array whose *first* axis is the frame axis
      ``(T, H, W)``, values divided by ``nifti_scale``.

    Args:
        keys: keys holding file paths.
        nifti_scale: divisor of NIfTI intensities (e.g. 4095 for 12-bit values stored as is).
        allow_missing_keys: skip absent keys.

    Raises (on call):
        XACineError: for a corrupt, truncated, single-frame or non-XA DICOM file, colour or palette colour XA, or a
            transfer syntax without an installed decoder (named).
        ValueError: for a NIfTI that is not 3D, has fewer than 2 frames, or whose scaled intensities leave [0, 1]
            (the message names the fix).
    """

    def __init__(self, keys: KeysCollection, nifti_scale: float = 1.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not nifti_scale > 0:
            raise ValueError(f"nifti_scale must be > 0, got {nifti_scale}.")
        self.nifti_scale = float(nifti_scale)
        self.nifti_loader = LoadImage(image_only=True, ensure_channel_first=True)

    def load(self, path: str | os.PathLike) -> MetaTensor:
        """Load one file (see the class docstring)."""
        if is_dicom(path):
            img = read_xa_cine(path, normalize=True)
            img.meta.update({k: "" for k, v in img.meta.items() if v is None})
            return img
        img = self.nifti_loader(path)
        if img.ndim != 4 or img.shape[0] != 1:
            raise ValueError(
                f"{path}: a NIfTI cine must be one 3D array (T, H, W) with the frame axis first, got shape "
                f"{tuple(img.shape)} after adding a channel axis."
            )
        if img.shape[1] < 2:
            raise ValueError(
                f"{path}: a cine needs at least 2 frames on the first axis, got shape {tuple(img.shape[1:])}; "
                "store NIfTI cines as (T, H, W) with the frame axis first."
            )
        img = img.float() / self.nifti_scale
        lo, hi = float(img.min()), float(img.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(
                f"{path}: intensities span [{lo:.4g}, {hi:.4g}] after dividing by nifti_scale={self.nifti_scale:g}; "
                "the network expects display intensities in [0, 1] (vessels dark). Set --nifti_scale (e.g. 4095 "
                "for 12-bit data) or rescale the file."
            )
        return img

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.load(d[key])
        return d


class SaveXADerivedd(MapTransform):
    """Save each map key as a derived multi-frame XA (``{output_dir}/{study}_{key}.dcm``) when its source is DICOM.

    Maps of NIfTI studies pass through unchanged (they get NIfTI only). The map must be in the source geometry
    (after ``Invertd``); see :class:`monai_saliency.data.dicom.xa_writer.XADerivedWriter`.

    Args:
        keys: map keys.
        output_dir: destination folder.
        description: DerivationDescription written into the DICOM.
        allow_missing_keys: skip absent keys.
        folder_key: if set, ``data[folder_key]`` is the study's output (staging) folder from the cohort layer; the
            file goes there as ``<stem>_<key>.dcm`` (see :class:`monai_saliency.transforms.SaveMapsd`).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        description: str = "saliency map",
        allow_missing_keys: bool = False,
        folder_key: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.folder_key = folder_key
        self.savers = {
            key: SaveImage(output_dir=Path(output_dir), output_postfix=str(key), **_XA_SAVE_OPTIONS).set_options(
                init_kwargs={"description": description}
            )
            for key in self.keys
        }

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            m = d[key]
            source = m.meta.get("filename_or_obj") if isinstance(m, MetaTensor) else None
            if source is None or not is_dicom(source):
                continue
            if self.folder_key is None:
                d[key] = self.savers[key](m)
            else:
                path = str(file_in_study_folder(d[self.folder_key], source, str(key), ".dcm"))
                d[key] = self.savers[key](m, filename=path[: -len(".dcm")])
        return d
