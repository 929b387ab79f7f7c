"""MONAI transforms over ``monai_saliency.ops``: array transforms in :mod:`.array`, their dictionary twins (and
:class:`SaveMapsd`) in :mod:`.dictionary`, shared helpers in :mod:`.utils`."""

from __future__ import annotations

from monai_saliency.transforms.array import (
    AntiAlias,
    FourierLowPass,
    ImageSignature,
    PCABackProject,
    PCAProject,
    ScaleToUnit,
    StructuredProx,
)
from monai_saliency.transforms.dictionary import (
    AntiAliasd,
    FourierLowPassd,
    ImageSignatured,
    PCABackProjectd,
    PCAProjectd,
    SaveMapsd,
    ScaleToUnitd,
    StructuredProxd,
)

__all__ = [
    "AntiAlias",
    "AntiAliasd",
    "FourierLowPass",
    "FourierLowPassd",
    "ImageSignature",
    "ImageSignatured",
    "PCABackProject",
    "PCABackProjectd",
    "PCAProject",
    "PCAProjectd",
    "SaveMapsd",
    "ScaleToUnit",
    "ScaleToUnitd",
    "StructuredProx",
    "StructuredProxd",
]
