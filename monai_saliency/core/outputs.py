"""Model outputs as tensors, class scores from them, and the class explained for each batch item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor

from monai_saliency.ops.checks import host_all

__all__ = ["item_indices", "model_logits", "model_output", "select_class"]


def model_output(output: Any) -> torch.Tensor:
    """The tensor a model returns (or the first item of its tuple / list / dict), as a plain tensor.

    Raises:
        ValueError: if that is not a tensor.
    """
    if isinstance(output, dict):
        output = next(iter(output.values()))
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"the model returned {type(output).__name__}; expected a tensor (B, ...).")  # noqa: TRY004 (kept)
    return output.as_tensor() if isinstance(output, MetaTensor) else output


def model_logits(output: Any) -> torch.Tensor:
    """Extract the class scores ``(B, K)`` from a model output (tensor, or first item of a tuple/list/dict).

    Raises:
        ValueError: if the output is not a tensor of shape (B, K) or (B,).
    """
    output = model_output(output)
    if output.ndim == 1:
        output = output[:, None]
    if output.ndim != 2:
        raise ValueError(
            f"expected class scores of shape (B, K), got {tuple(output.shape)}; for a segmentation network explain "
            "a region score instead: target=RegionTarget(class_idx, mask=None) (monai_saliency.core.targets)."
        )
    return output


def item_indices(
    index: int | Sequence[int] | torch.Tensor, batch_size: int, device: torch.device | str | None, name: str
) -> torch.Tensor:
    """One integer index per item from an int (same for all) or a length-B sequence / tensor (the range is checked
    by the caller, against the output it indexes).

    Args:
        index: the index or indices.
        batch_size: number of items B.
        device: device of the result.
        name: the option's name, for error messages.

    Returns:
        Long tensor ``(B,)``.

    Raises:
        TypeError: for a non-integer index.
        ValueError: for a wrong length.
    """
    if isinstance(index, bool):
        raise TypeError(f"{name} must be an int, a (B,) tensor of ints, or None.")
    if isinstance(index, int):
        idx = torch.full((batch_size,), index, dtype=torch.long, device=device)
    else:
        idx = torch.as_tensor(index, device=device)
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {idx.dtype}.")
        idx = idx.long().reshape(-1)
        if idx.numel() == 1:
            idx = idx.expand(batch_size)
        if idx.numel() != batch_size:
            raise ValueError(f"{name} has {idx.numel()} entries for a batch of {batch_size}.")
    return idx


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
    if isinstance(class_idx, int) and not isinstance(class_idx, bool):
        if not 0 <= class_idx < k:  # checked on the host: no device round trip
            raise ValueError(f"class_idx {class_idx} out of range for {k} classes.")
        return item_indices(class_idx, b, logits.device, "class_idx")
    idx = item_indices(class_idx, b, logits.device, "class_idx")
    if not host_all((idx >= 0) & (idx < k)):  # one boolean to the host when the indices live on a device
        raise ValueError(f"class_idx {idx.tolist()} out of range for {k} classes.")
    return idx
