"""The state a model is explained in: eval mode, frozen parameters, and autograd availability."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["evaluation_mode", "frozen_parameters", "require_autograd"]


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode inside the block and restore every sub-module's own train/eval flag on exit.

    An explanation of a network in training mode would otherwise update its BatchNorm running statistics and
    draw dropout masks (maps that change from call to call, batch items that depend on each other). Unlike
    ``model.train(flag)``, the restore keeps mixed modes (e.g. frozen BatchNorm layers in a training network).
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on every parameter, restoring each flag on exit.

    Input gradients then build no graph towards the weights (less memory, no weight-gradient work).
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def require_autograd(who: str) -> None:
    """Raise a clear error when gradients are requested under ``torch.inference_mode()``.

    Args:
        who: the method or function named in the message.

    Raises:
        RuntimeError: if inference mode is enabled (``torch.enable_grad()`` cannot lift it, unlike ``no_grad``).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{who} was called under torch.inference_mode(); gradients cannot be computed there: call it outside "
            "inference_mode (torch.no_grad() is fine, the method enables gradients itself)."
        )
