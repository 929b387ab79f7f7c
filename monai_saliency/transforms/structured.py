"""Deprecated path of the structured prox transforms (removed in the next release): use ``monai_saliency.transforms``."""

from monai_saliency.transforms.utils import moved_names

__all__ = ["StructuredProx", "StructuredProxd"]  # noqa: F822 (served by __getattr__)
__getattr__ = moved_names(__name__, __all__)
