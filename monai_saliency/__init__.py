"""monai_saliency: saliency maps for MONAI models that can be trusted, in 2D, 3D and video."""

from __future__ import annotations

__version__ = "0.1.0"
