"""Reading XA DICOM or NIfTI cines in one pipeline, and writing derived XA maps for the DICOM ones.

Used by ``configs/inference.json`` (``"_target_": "scripts.cine_io.LoadCined"``); MONAI adds the bundle root to
``sys.path`` before a workflow runs.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, SaveImage
from monai.utils import ensure_tuple_rep

from monai_saliency.data.atomic import file_in_study_folder
from monai_saliency.data.checks import (
    DEFAULT_MAX_STUDY_MB,
    IntakeError,
    WrongKindError,
    check_cine_header,
    check_finite,
    check_study_size,
    parsing,
    read_dicom_header,
    read_nifti_header,
)
from monai_saliency.data.dicom.detect import is_dicom_file
from monai_saliency.data.dicom.encoding import check_compression
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

    The header is checked before any pixel is decoded (:mod:`monai_saliency.data.checks`): the kind of image, the
    frame size and the decoded size.

    * DICOM (by content, whatever the name, see :func:`is_dicom`): Modality XA only (CT, MR, PT, ... are refused by
      name), then :func:`monai_saliency.data.dicom.xa.read_xa_cine` with ``normalize=True`` (validated multi-frame
      XA in any transfer syntax with an installed decoder; display values after the Modality LUT, MONOCHROME1
      inverted, scaled by the representable range, e.g. stored values divided by ``2**BitsStored - 1``; no VOI
      window; meta carries ``frame_time_ms``, the angles and UIDs). Meta entries that are absent in the file
      (``None``) become ``""`` so that MONAI can collate them.
    * anything else (``.nii``/``.nii.gz``): a NIfTI cine, one 3D array whose *first* axis is the frame axis
      ``(T, H, W)``, marked as a cine by its header (``intent_name`` ``"cine"``, see
      :func:`monai_saliency.data.checks.mark_nifti_cine`; an unmarked 3D NIfTI is a volume and refused unless
      ``require_cine_marker=False``), read with ``LoadImage``, values divided by ``nifti_scale``.

    Args:
        keys: keys holding file paths.
        nifti_scale: divisor of NIfTI intensities (e.g. 4095 for 12-bit values stored as is).
        min_frame_size: smallest frame ``(H, W)`` (one int for both); frames are resized for the network, so this
            states how much up-sampling is accepted.
        max_study_mb: memory bound of one decoded study (float32) in MiB, checked from the header; ``None``: none.
        require_cine_marker: refuse unmarked 3D NIfTI files (volumes); False reads them as ``(T, H, W)`` cines.
        allow_missing_keys: skip absent keys.

    Raises (on call):
        monai_saliency.data.checks.IntakeError: its subclasses name the file and the reason: unreadable (a parser
            failed on a damaged file), wrong kind (not XA, not a marked 3D NIfTI cine, fewer than 2 frames), too
            small, too large, non-finite, or NIfTI intensities outside [0, 1] after ``nifti_scale`` (the message
            names the fix).
        XACineError: for a corrupt, truncated, single-frame or inconsistent XA DICOM file, colour or palette colour
            XA, or a transfer syntax without an installed decoder (named).
    """

    def __init__(
        self,
        keys: KeysCollection,
        nifti_scale: float = 1.0,
        min_frame_size: int | Sequence[int] = 16,
        max_study_mb: float | None = DEFAULT_MAX_STUDY_MB,
        require_cine_marker: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not nifti_scale > 0:
            raise ValueError(f"nifti_scale must be > 0, got {nifti_scale}.")
        if max_study_mb is not None and not max_study_mb > 0:
            raise ValueError(f"max_study_mb must be > 0 or None, got {max_study_mb}.")
        self.nifti_scale = float(nifti_scale)
        self.min_frame_size = tuple(int(m) for m in ensure_tuple_rep(min_frame_size, 2))
        self.max_study_mb = max_study_mb
        self.require_cine_marker = require_cine_marker
        self.nifti_loader = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)

    def load(self, path: str | os.PathLike) -> MetaTensor:
        """Load one file (see the class docstring)."""
        dicom = is_dicom(path)
        header = read_dicom_header(path) if dicom else read_nifti_header(path)
        check_cine_header(header, self.min_frame_size, self.require_cine_marker)
        check_study_size(header, self.max_study_mb)
        if dicom:
            with parsing(path, "decoded"):
                img = read_xa_cine(path, normalize=True)
            img.meta.update({k: "" for k, v in img.meta.items() if v is None})
            fix = "the file's BitsStored or pixel data is inconsistent"
        else:
            with parsing(path, "decoded"):
                img = self.nifti_loader(path)
            if img.ndim != 4 or img.shape[0] != 1:
                raise WrongKindError(
                    f"{path}: a NIfTI cine must be one 3D array (T, H, W) with the frame axis first, got shape "
                    f"{tuple(img.shape)} after adding a channel axis."
                )
            check_finite(img, path)
            img = img.float() / self.nifti_scale
            fix = f"after dividing by nifti_scale={self.nifti_scale:g}; set --nifti_scale (e.g. 4095 for 12-bit data)"
        lo, hi = float(img.min()), float(img.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise IntakeError(
                f"{path}: intensities span [{lo:.4g}, {hi:.4g}], but the network expects display intensities in "
                f"[0, 1] (vessels dark): {fix} or rescale the file."
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
        compression: pixel compression, ``"none"`` (default), ``"jpeg2000"`` (lossless, the bundle's
            ``dicom_compression``), ``"rle"`` or ``"deflate"`` (:mod:`monai_saliency.data.dicom.encoding`).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        description: str = "saliency map",
        allow_missing_keys: bool = False,
        folder_key: str | None = None,
        compression: str = "none",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        check_compression(compression)
        self.folder_key = folder_key
        self.savers = {
            key: SaveImage(output_dir=Path(output_dir), output_postfix=str(key), **_XA_SAVE_OPTIONS).set_options(
                init_kwargs={"description": description, "compression": compression}
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
