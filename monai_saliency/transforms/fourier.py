"""Deprecated path of the Fourier low-pass transforms (removed in the next release): use ``monai_saliency.transforms``."""

from monai_saliency.transforms.utils import moved_names

__all__ = ["FourierLowPass", "FourierLowPassd"]  # noqa: F822 (served by __getattr__)
__getattr__ = moved_names(__name__, __all__)
