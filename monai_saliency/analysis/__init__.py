"""Training-set analyses: maps of a fitted model over a whole training set (its volumes and targets), not
explanations of one input. Mørch saliency (:class:`MorchSaliency`) is the first."""

from __future__ import annotations

from monai_saliency.analysis.heads import RetrainableHead, TanhHead
from monai_saliency.analysis.morch import HESSIANS, ORDERS, MorchSaliency

__all__ = ["HESSIANS", "ORDERS", "MorchSaliency", "RetrainableHead", "TanhHead"]
