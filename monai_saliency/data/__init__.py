"""Synthetic data generators and medical-image I/O helpers (NIfTI, DICOM, atomic writes), and a DataLoader.

``PackedDataLoader`` (:mod:`monai_saliency.data.loader`) is exported lazily: importing a light module of this
package (``studies``, ``dicom.detect``, ...) does not import torch and MONAI through it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PackedDataLoader"]


def __getattr__(name: str) -> Any:
    if name == "PackedDataLoader":
        from monai_saliency.data.loader import PackedDataLoader

        return PackedDataLoader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
