"""Forward hooks that record layer outputs during an explanation only."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from monai.data import MetaTensor
from torch import nn

from monai_saliency.core.layers import find_layer
from monai_saliency.ops.precision import upcast

__all__ = ["ActivationHooks", "first_output", "replace_first_output"]


def first_output(output: Any) -> Any:
    """The tensor a layer returns, or the first item of the tuple / list it returns."""
    return output[0] if isinstance(output, (tuple, list)) and len(output) else output


def replace_first_output(output: Any, new: torch.Tensor) -> Any:
    """``output`` with its tensor (or the first item of its tuple / list) replaced by ``new``: the return value of a
    forward hook that hands the rest of the network another tensor."""
    if isinstance(output, list):
        return [new, *output[1:]]
    if isinstance(output, tuple) and len(output):
        return (new, *output[1:])
    return new


class ActivationHooks:
    """Forward hooks on named layers, registered once and removed by handle.

    Activations are kept only inside :meth:`capture`, so the model runs normally (and holds no
    extra memory) between explanations. While capturing, each hooked layer's output is recorded and the rest of
    the network receives a copy of it: a later in-place operation (``ReLU(inplace=True)`` after a convolution)
    changes the copy, never the recorded activation (one copy of the layer's output per forward pass).

    Args:
        model: the network.
        layer_names: dotted layer names (``module.`` prefix optional).

    Raises:
        ValueError: if a layer is not found, or no layer is given.
    """

    def __init__(self, model: nn.Module, layer_names: str | Sequence[str]) -> None:
        names = [layer_names] if isinstance(layer_names, str) else list(layer_names)
        if not names:
            raise ValueError("give at least one target layer name.")
        self.names: list[str] = []
        self.activations: dict[str, torch.Tensor] = {}
        self._capturing = False
        self._handles = []
        for name in names:
            resolved, module = find_layer(model, name)
            self.names.append(resolved)
            self._handles.append(module.register_forward_hook(self._make_hook(resolved)))

    def _record(self, name: str, output: torch.Tensor) -> torch.Tensor:
        """The tensor to record for a layer's (plain) output; subclasses may swap it for one that tracks grad."""
        return output

    def _make_hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if not self._capturing:
                return None
            out = first_output(output)
            if not isinstance(out, torch.Tensor):
                raise RuntimeError(f"layer {name!r} returned {type(out).__name__}, not a tensor; hook another layer.")  # noqa: TRY004 (kept)
            plain = out.as_tensor() if isinstance(out, MetaTensor) else out
            recorded = self._record(name, upcast(plain))  # a half-precision model's activations in float32
            self.activations[name] = recorded
            passed_on = recorded.to(plain.dtype) if recorded.dtype != plain.dtype else recorded.clone()
            return replace_first_output(output, passed_on)

        return hook

    @contextmanager
    def capture(self) -> Iterator[dict[str, torch.Tensor]]:
        """Record the hooked layers' outputs during the enclosed block; the record is dropped on exit
        (copy what you need inside the block), so no activation outlives an explanation."""
        self.activations.clear()
        self._capturing = True
        try:
            yield self.activations
        finally:
            self._capturing = False
            self.activations.clear()

    def clear(self) -> None:
        """Drop references to recorded activations."""
        self.activations.clear()

    def remove(self) -> None:
        """Remove every hook from the model (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.activations.clear()

    def __len__(self) -> int:
        return len(self._handles)
