"""Minimal, seeded classifier training used by the demo and to build the bundles' shipped weights."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fit_classifier", "accuracy"]


def fit_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 150,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` with Adam on cross-entropy over random mini-batches; returns it in eval mode.

    Args:
        model: classifier returning ``(B, K)`` logits.
        images: ``(N, C, *spatial)`` training inputs.
        labels: ``(N,)`` class indices.
        steps: optimisation steps.
        batch_size: mini-batch size.
        lr: Adam learning rate.
        seed: seed of the mini-batch sampling.

    Returns:
        The trained model (same object), in eval mode.

    Raises:
        ValueError: if images and labels disagree in length or ``steps < 1``.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=g)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` whose argmax prediction equals ``labels``."""
    return (model(images).argmax(1) == labels).float().mean().item()
