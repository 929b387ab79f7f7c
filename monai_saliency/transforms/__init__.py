"""MONAI array transforms and their dictionary twins over ``monai_saliency.ops``."""

from __future__ import annotations

from monai_saliency.transforms.fourier import FourierLowPass, FourierLowPassd
from monai_saliency.transforms.io import SaveMapsd, ScaleToUnit, ScaleToUnitd
from monai_saliency.transforms.pca import PCABackProject, PCABackProjectd, PCAProject, PCAProjectd
from monai_saliency.transforms.signature import ImageSignature, ImageSignatured
from monai_saliency.transforms.structured import StructuredProx, StructuredProxd

__all__ = [
    "FourierLowPass",
    "FourierLowPassd",
    "SaveMapsd",
    "ScaleToUnit",
    "ScaleToUnitd",
    "PCABackProject",
    "PCABackProjectd",
    "PCAProject",
    "PCAProjectd",
    "ImageSignature",
    "ImageSignatured",
    "StructuredProx",
    "StructuredProxd",
]
