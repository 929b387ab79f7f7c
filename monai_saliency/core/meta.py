"""Input checks and MetaTensor output: a map carries the metadata of the input it explains."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import torch
from monai.data import MetaTensor

from monai_saliency.ops.checks import all_finite

__all__ = ["check_input", "wrap_like"]


def check_input(x: Any, spatial_dims: int | None = None) -> torch.Tensor:
    """Validate an explainer input and return it as a plain tensor (metadata stripped, no copy).

    Args:
        x: tensor ``(B, C, *spatial)``; a MetaTensor is accepted.
        spatial_dims: required number of spatial axes, or None for any number >= 1.

    Returns:
        ``x`` as a plain ``torch.Tensor``.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
        ValueError: for a wrong rank, an empty tensor, or NaN/Inf values.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape (B, C, *spatial), got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point input, got {x.dtype}; convert with x.float().")
    xt = x.as_tensor() if isinstance(x, MetaTensor) else x
    if xt.ndim < 3:
        raise ValueError(
            f"expected a batched input (B, C, *spatial) with at least one spatial axis, got shape {tuple(xt.shape)}; "
            "add the batch axis with x[None]."
        )
    if spatial_dims is not None and xt.ndim != spatial_dims + 2:
        raise ValueError(
            f"expected (B, C) + {spatial_dims} spatial axes (rank {spatial_dims + 2}), got shape {tuple(xt.shape)}."
        )
    if xt.numel() == 0:
        raise ValueError(f"input is empty: shape {tuple(xt.shape)}.")
    if not all_finite(xt):
        raise ValueError("input contains NaN or Inf; clean or mask it before explaining.")
    return xt


def wrap_like(maps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Return ``maps`` as a MetaTensor carrying ``like``'s metadata when ``like`` is a MetaTensor.

    The copy holds ``meta``, ``applied_operations``, ``is_batch`` and the spatial rank (deep-copied), so
    ``Invertd`` and ``SaveImage(d)`` treat the map exactly like the input it explains. A collated batch (``is_batch``,
    per-item affines ``(B, 4, 4)``, per-item lists of meta values and applied operations) stays one:
    ``decollate_batch`` gives each item's map with that item's own metadata. The metadata is copied attribute by
    attribute, as ``MetaTensor(like)`` does, but without the constructor's checks that read a single item's meta
    (they fail on batched meta).

    Args:
        maps: the maps ``(B, C', *spatial)``, a plain tensor (a MetaTensor's own metadata is replaced).
        like: the input the maps explain.

    Returns:
        ``maps`` itself when ``like`` is not a MetaTensor, else a MetaTensor sharing ``maps``' data.
    """
    if not isinstance(like, MetaTensor):
        return maps
    out = MetaTensor(maps.as_tensor() if isinstance(maps, MetaTensor) else maps)
    out.__dict__.update(deepcopy(like.__dict__))
    return out
