"""Deprecated path of the PCA projection transforms (removed in the next release): use ``monai_saliency.transforms``."""

from monai_saliency.transforms.utils import moved_names

__all__ = ["PCABackProject", "PCABackProjectd", "PCAProject", "PCAProjectd"]  # noqa: F822 (served by __getattr__)
__getattr__ = moved_names(__name__, __all__)
