"""MONAI array transforms and their dictionary twins over ``monai_saliency.ops``."""

from __future__ import annotations
