"""Deprecated path of the map scaling and saving transforms (removed in the next release): use ``monai_saliency.transforms``."""

from monai_saliency.transforms.utils import moved_names

__all__ = ["SaveMapsd", "ScaleToUnit", "ScaleToUnitd"]  # noqa: F822 (served by __getattr__)
__getattr__ = moved_names(__name__, __all__)
