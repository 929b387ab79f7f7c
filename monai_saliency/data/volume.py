"""Loading one 3D volume per study, refusing by name what is not one (``LoadVolume``/``LoadVolumed``).

Replaces ``LoadImaged`` + ``EnsureChannelFirstd`` in a 3D bundle: the header is checked before any pixel is decoded
(:mod:`monai_saliency.data.checks`), so a 2D image, a 4D or multi-channel file, a NIfTI cine, a volume too small
for the network or too large for memory is refused with a named error instead of being silently reshaped by
``Resized`` or taking the machine's memory.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, Transform
from monai.utils import ensure_tuple_rep

from monai_saliency.data.checks import (
    DEFAULT_MAX_STUDY_MB,
    StudyHeader,
    WrongKindError,
    check_finite,
    check_min_size,
    check_study_size,
    parsing,
    read_nifti_header,
)

__all__ = ["LoadVolume", "LoadVolumed", "check_volume_header"]


def check_volume_header(header: StudyHeader, min_size: Sequence[int]) -> None:
    """Refuse a NIfTI header that does not describe one 3D scalar volume of at least ``min_size``.

    Args:
        header: from :func:`monai_saliency.data.checks.read_nifti_header`.
        min_size: smallest size of each of the 3 spatial axes.

    Raises:
        WrongKindError: a 2D image (fewer than 3 axes, or a 3D array with a single-voxel axis), a 4D or
            multi-channel file, or a file marked as a cine.
        StudyTooSmallError: a spatial axis below ``min_size``.
    """
    path, shape = header.path, header.shape
    if len(shape) < 3 or 1 in shape[:3]:
        raise WrongKindError(f"{path} is a 2D image (shape {shape}); this bundle takes 3D volumes.")
    if any(s != 1 for s in shape[3:]):
        raise WrongKindError(
            f"{path} is a 4D or multi-channel image (shape {shape}); this bundle takes one 3D volume with one "
            "channel - split the series or choose the channel first."
        )
    if header.is_cine:
        raise WrongKindError(f"{path} is marked as a cine (NIfTI intent_name 'cine'), not a 3D volume.")
    check_min_size(shape[:3], min_size, path, "spatial axes")


class LoadVolume(Transform):
    """Read a NIfTI file as one 3D volume ``MetaTensor (1, X, Y, Z)`` after checking its header.

    Checks, in order, before decoding: a NIfTI name and header, real scalar data type, data not truncated
    (``.nii``), 3D with one channel (a ``(X, Y, Z, 1)`` file is one channel), not a cine, each axis
    ``>= min_size``, decoded float32 size ``<= max_study_mb``; after decoding (MONAI's ``LoadImage``): finite values.

    Args:
        min_size: smallest size of each spatial axis (one int for all three); the network input is resized, so
            this states how much up-sampling the bundle accepts.
        max_study_mb: memory bound of one decoded study in MiB (``None``: no bound).

    Raises (on call):
        monai_saliency.data.checks.IntakeError: its subclasses name the file and the reason (unreadable, wrong
            kind, too small, too large, non-finite).
    """

    def __init__(self, min_size: int | Sequence[int] = 8, max_study_mb: float | None = DEFAULT_MAX_STUDY_MB) -> None:
        self.min_size = tuple(int(m) for m in ensure_tuple_rep(min_size, 3))
        if max_study_mb is not None and not max_study_mb > 0:
            raise ValueError(f"max_study_mb must be > 0 or None, got {max_study_mb}.")
        self.max_study_mb = max_study_mb
        self.reader = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        header = read_nifti_header(path)
        check_volume_header(header, self.min_size)
        check_study_size(header, self.max_study_mb)
        with parsing(path, "decoded"):
            img = self.reader(str(path))
        if img.ndim != 4 or img.shape[0] != 1:  # the header said one 3D channel: anything else is a reader surprise
            raise WrongKindError(f"{path}: read an array of shape {tuple(img.shape)}, expected (1, X, Y, Z).")
        check_finite(img, path)
        return img


class LoadVolumed(MapTransform):
    """Dictionary version of :class:`LoadVolume`: each key's file path becomes its checked volume.

    Args:
        keys: keys holding file paths.
        min_size, max_study_mb: see :class:`LoadVolume`.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        min_size: int | Sequence[int] = 8,
        max_study_mb: float | None = DEFAULT_MAX_STUDY_MB,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume(min_size=min_size, max_study_mb=max_study_mb)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
