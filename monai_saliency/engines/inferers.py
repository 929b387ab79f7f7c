"""A MONAI inferer that returns the prediction and saliency maps of a batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
from monai.inferers import Inferer, SimpleInferer
from torch import nn

from monai_saliency.methods.base import Explainer, model_logits

__all__ = ["SaliencyInferer"]

ExplainerSpec = Union[Explainer, Callable[[nn.Module], Explainer]]


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else network


class SaliencyInferer(Inferer):
    """Run the network and one or more explainers on a batch, for any MONAI evaluator.

    Returns a dict ``{pred_key: scores (B, K), name: maps, ...}`` (``pred_key`` defaults to ``"logits"``); MONAI evaluators store it under
    ``"pred"``, and ``FlattenSubKeysd(keys="pred")`` lifts the entries to top-level keys for post transforms.
    Maps are MetaTensors carrying the batch's ``meta`` and ``applied_operations``, so ``Invertd`` and
    ``SaveImaged`` write them in the input's original geometry. Explainers enable autograd themselves, so the
    evaluator's ``torch.no_grad()`` needs no ``mode="train"`` workaround.

    Explainers may be given built (they must wrap the evaluator's network, or its ``.module``) or as
    factories ``network -> Explainer``, built on the first call: either way hooks are registered once, not per
    batch. Class-specific explainers explain the predicted class of each item unless ``class_idx`` is set.

    Args:
        explainers: an explainer, or a mapping ``name -> explainer or factory``.
        class_idx: None explains each item's predicted class; an int or (B,) tensor fixes the class.
        pred_key: key of the scores in the returned dict.
        inferer: inferer producing the scores (default ``SimpleInferer``); it runs under ``no_grad``.

    Raises:
        ValueError: if no explainer is given, or a built explainer wraps a different network.
    """

    def __init__(
        self,
        explainers: ExplainerSpec | Mapping[str, ExplainerSpec],
        class_idx: int | torch.Tensor | None = None,
        pred_key: str = "logits",
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__()
        specs = dict(explainers) if isinstance(explainers, Mapping) else {"saliency": explainers}
        if not specs:
            raise ValueError("give at least one explainer.")
        if pred_key in specs:
            raise ValueError(f"explainer name {pred_key!r} collides with pred_key; rename one of them.")
        self.specs = specs
        self.class_idx = class_idx
        self.pred_key = pred_key
        self.inferer = inferer or SimpleInferer()
        self._bound: dict[str, Explainer] = {}
        self._network: nn.Module | None = None

    def _bind(self, network: nn.Module) -> dict[str, Explainer]:
        if self._network is network:
            return self._bound
        self.close()
        bound = {}
        for name, spec in self.specs.items():
            explainer = spec if isinstance(spec, Explainer) else spec(network)
            if not isinstance(explainer, Explainer):
                raise TypeError(f"explainer {name!r} must be an Explainer or a factory returning one.")
            if _unwrap(explainer.model) is not _unwrap(network):
                raise ValueError(
                    f"explainer {name!r} wraps a different model than the evaluator's network; build it on the same "
                    "network object (e.g. '@network' in a bundle config) or pass a factory."
                )
            bound[name] = explainer
        self._bound, self._network = bound, network
        return bound

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Predict and explain ``inputs`` ``(B, C, *spatial)`` with ``network``.

        Returns:
            ``{pred_key: scores (B, K), name: maps}``.
        """
        explainers = self._bind(network)
        with torch.no_grad():
            scores = model_logits(self.inferer(inputs, network, *args, **kwargs))
        targets = scores.argmax(dim=1) if self.class_idx is None else self.class_idx
        out: dict[str, torch.Tensor] = {self.pred_key: scores}
        for name, explainer in explainers.items():
            out[name] = explainer(inputs, class_idx=None if explainer.class_agnostic else targets)
        return out

    def close(self) -> None:
        """Remove the hooks of explainers this inferer built from factories."""
        for name, explainer in self._bound.items():
            if not isinstance(self.specs[name], Explainer):
                explainer.close()
        self._bound, self._network = {}, None
