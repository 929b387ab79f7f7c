"""Input-gradient saliency: the shared gradient primitive and VanillaGrad."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn

from monai_saliency.methods.base import Explainer, frozen_parameters, model_logits, select_class
from monai_saliency.ops.normalize import reduce_channels

__all__ = ["input_gradients", "VanillaGrad"]


def input_gradients(
    model: nn.Module,
    x: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    freeze_params: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of each item's class score with respect to its input, in one forward and one backward pass.

    Uses ``torch.autograd.grad(score, x)``: no weight gradients are computed or accumulated into ``.grad``.
    Per-item scores are picked with ``gather`` and summed; items are independent as long as the model does
    not mix the batch (e.g. BatchNorm in train mode does).

    Args:
        model: network returning scores ``(B, K)``.
        x: plain float tensor ``(B, C, *spatial)``.
        class_idx: None (argmax per item), int, or ``(B,)`` indices.
        freeze_params: build no graph towards the weights during the call (flags restored after).

    Returns:
        ``(gradients (B, C, *spatial), logits (B, K) detached, class indices (B,))``.

    Raises:
        RuntimeError: if the class score does not depend on the input through autograd.
    """
    with torch.enable_grad(), frozen_parameters(model) if freeze_params else nullcontext():
        xg = x.detach().requires_grad_(True)
        logits = model_logits(model(xg))
        idx = select_class(logits, class_idx)
        if not logits.requires_grad:
            raise RuntimeError(
                "the model output does not require grad: the forward pass disables autograd or detaches; "
                "gradient methods need a differentiable path from the input to the score."
            )
        score = logits.gather(1, idx[:, None]).sum()
        (grad,) = torch.autograd.grad(score, xg, allow_unused=True)
    if grad is None:
        raise RuntimeError("the class score does not depend on the input; check the model's forward path.")
    return grad, logits.detach(), idx


class VanillaGrad(Explainer):
    """Plain input gradient (Simonyan et al. 2013): ``d score_c / d x``.

    Args:
        nn_module: classifier returning ``(B, K)`` scores.
        reduce: channel reduction of the ``(B, C, *spatial)`` gradient: ``"none"`` (default, raw signed
            gradient per channel) or one of ``"abs_sum"``, ``"l2"``, ``"mean"``, ``"max_abs"`` (``(B, 1, *spatial)``).
        freeze_params: skip the graph towards the weights (restored after each call).

    Returns (on call):
        ``(B, C, *spatial)`` gradients, or ``(B, 1, *spatial)`` when reduced.
    """

    def __init__(self, nn_module: nn.Module, reduce: str = "none", freeze_params: bool = True) -> None:
        super().__init__(nn_module)
        reduce_channels(torch.zeros(1, 1, 1), reduce)  # validates the mode early
        self.reduce = reduce
        self.freeze_params = freeze_params

    def explain(self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        grad, _, _ = input_gradients(self.model, x, class_idx, self.freeze_params)
        return reduce_channels(grad, self.reduce)
