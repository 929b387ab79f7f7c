"""Cheap validity checks on tensors."""

from __future__ import annotations

import math

import torch

__all__ = ["all_finite"]


def all_finite(x: torch.Tensor) -> bool:
    """Whether every element of a floating-point tensor is finite (no NaN, no +-Inf).

    One ``aminmax`` reduction (NaN propagates into both results, +-Inf shows in one of them): on CPU 10-20x
    faster than ``torch.isfinite(x).all()``, which materialises a boolean tensor in several passes.

    Args:
        x: floating-point tensor (an empty tensor counts as finite).

    Returns:
        True when all elements are finite.
    """
    n = x.numel()
    if n <= 1:
        return n == 0 or math.isfinite(x.item())
    lo, hi = torch.aminmax(x.detach())
    return math.isfinite(lo.item()) and math.isfinite(hi.item())
