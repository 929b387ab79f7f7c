"""Class scores from a model output, and the class explained for each batch item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor

from monai_saliency.ops.checks import host_all

__all__ = ["model_logits", "select_class"]


def model_logits(output: Any) -> torch.Tensor:
    """Extract the class scores ``(B, K)`` from a model output (tensor, or first item of a tuple/list/dict).

    Raises:
        ValueError: if the output is not a tensor of shape (B, K) or (B,).
    """
    if isinstance(output, dict):
        output = next(iter(output.values()))
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"the model returned {type(output).__name__}; expected class scores (B, K).")  # noqa: TRY004 (kept)
    if isinstance(output, MetaTensor):
        output = output.as_tensor()
    if output.ndim == 1:
        output = output[:, None]
    if output.ndim != 2:
        raise ValueError(
            f"expected class scores of shape (B, K), got {tuple(output.shape)}; for segmentation networks wrap the "
            "model so it returns one score per class (e.g. the mean logit inside a region)."
        )
    return output


def select_class(logits: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    """Resolve ``class_idx`` into one class index per item.

    Args:
        logits: scores ``(B, K)``.
        class_idx: None (argmax per item), an int (same class for all), or a length-B sequence/tensor.

    Returns:
        Long tensor ``(B,)`` on the logits' device.

    Raises:
        ValueError: for a wrong length or an index outside ``[0, K)``.
        TypeError: for a non-integer index.
    """
    b, k = logits.shape
    if class_idx is None:
        return logits.detach().argmax(dim=1)
    if isinstance(class_idx, bool):
        raise TypeError("class_idx must be an int, a (B,) tensor of ints, or None.")
    if isinstance(class_idx, int):
        if not 0 <= class_idx < k:  # checked on the host: no device round trip
            raise ValueError(f"class_idx {class_idx} out of range for {k} classes.")
        idx = torch.full((b,), class_idx, dtype=torch.long, device=logits.device)
    else:
        idx = torch.as_tensor(class_idx, device=logits.device)
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"class_idx must hold integers, got dtype {idx.dtype}.")
        idx = idx.long().reshape(-1)
        if idx.numel() == 1:
            idx = idx.expand(b)
        if idx.numel() != b:
            raise ValueError(f"class_idx has {idx.numel()} entries for a batch of {b}.")
    if not host_all((idx >= 0) & (idx < k)):  # one boolean to the host when the indices live on a device
        raise ValueError(f"class_idx {idx.tolist()} out of range for {k} classes.")
    return idx
