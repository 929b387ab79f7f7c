"""Input handling shared by the array transforms."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

from monai_saliency.ops.checks import all_finite

__all__ = ["channel_first_float"]


def channel_first_float(img: torch.Tensor | np.ndarray, what: str = "image", check_finite: bool = True) -> torch.Tensor:
    """Plain floating tensor view of a channel-first ``(C, *spatial)`` input (integers become float32).

    Args:
        img: tensor, MetaTensor or array ``(C, *spatial)``.
        what: name used in error messages.
        check_finite: reject NaN/Inf.

    Returns:
        A plain ``torch.Tensor`` (no copy for float tensors).

    Raises:
        ValueError: without a spatial axis, or with NaN/Inf when ``check_finite``.
    """
    data = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
    if data.ndim < 2:
        raise ValueError(f"expected a channel-first {what} (C, *spatial), got shape {tuple(data.shape)}.")
    if not data.is_floating_point():
        data = data.float()
    if check_finite and not all_finite(data):
        raise ValueError(f"the {what} holds NaN or Inf; clean it first.")
    return data
