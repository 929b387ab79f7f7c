"""What a head on the projections can offer a training-set analysis beyond being a differentiable ``nn.Module``.

:class:`~monai_saliency.analysis.morch.MorchSaliency` works for any differentiable head ``(N, K) -> (N,)`` through
autograd. A head may expose two optional capabilities, found by duck typing on the methods below (no ``isinstance``
on a concrete class):

* :class:`TanhHead`: the head *is* Mørch's eq. 1 network and hands over its parameters; the closed forms of
  eq. 8-10 and the ``I J A``-tanh exact cost change are then used (:class:`~monai_saliency.models.TanhNet` implements
  it). The declared parameters are checked against the head's own output before they are used.
* :class:`RetrainableHead`: the head has its own training objective as a function of a flat parameter vector (e.g. a
  ridge penalty on the weights but not the biases); retraining (eq. 4) then re-minimises that objective instead of a
  ridge penalty on every parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

__all__ = ["RetrainableHead", "TanhHead"]


@runtime_checkable
class TanhHead(Protocol):
    """A head ``F(v) = sum_a W_a tanh(w_a . v + beta_a) + W_0`` (Mørch et al. 1995, eq. 1) that exposes its
    parameters, so that the closed-form derivatives apply."""

    def tanh_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The parameters of eq. 1, detached.

        Returns:
            ``(w (A, K), W (A,), beta (A,) or None, W_0 (scalar) or None)``.
        """
        ...


@runtime_checkable
class RetrainableHead(Protocol):
    """A head with its own training objective over a flat parameter vector (``torch.func``-transformable)."""

    def flat_parameters(self) -> torch.Tensor:
        """The current parameters as one detached vector ``(P,)``."""
        ...

    def objective_fn(
        self, v: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``objective(theta, v)``: the training cost on projections ``v`` (``(J, K)``) with targets ``y``; with
        ``weight_decay=0`` it must be the mean squared error of eq. 2 (the analysis reports that data cost)."""
        ...
