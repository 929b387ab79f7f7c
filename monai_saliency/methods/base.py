"""The explainer protocol shared by every method: input checks, layer hooks, class selection,
gradients under ``no_grad`` callers, and MetaTensor output.

Usage of every explainer::

    with Method(model, target_layers="features.relu") as explainer:
        maps = explainer(x, class_idx=None)   # x: (B, C, *spatial)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from copy import deepcopy
from typing import Any

import torch
from monai.data import MetaTensor
from torch import nn

from monai_saliency.ops.checks import all_finite
from monai_saliency.ops.precision import cast_back, model_input_dtype, upcast, working_tensor

__all__ = [
    "Explainer",
    "ActivationHooks",
    "check_input",
    "find_layer",
    "select_class",
    "model_logits",
    "frozen_parameters",
    "evaluation_mode",
    "wrap_like",
    "require_autograd",
]


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


def find_layer(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """Find a sub-module by its dotted name, tolerating DDP/DataParallel's ``module.`` prefix.

    Args:
        model: the network.
        name: dotted name as printed by ``model.named_modules()``, with or without ``module.``.

    Returns:
        ``(resolved_name, module)``.

    Raises:
        ValueError: if no layer matches; the message lists the closest names.
    """
    modules = dict(model.named_modules())
    candidates = [name, f"module.{name}"]
    if name.startswith("module."):
        candidates.append(name[len("module.") :])
    for cand in candidates:
        if cand and cand in modules:
            return cand, modules[cand]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f" Closest names: {close}." if close else f" Available layers start with: {names[:8]}."
    raise ValueError(f"layer {name!r} not found in {type(model).__name__}.{hint}")


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
                raise RuntimeError(f"layer {name!r} returned {type(out).__name__}, not a tensor; hook another layer.")
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
        raise ValueError(f"the model returned {type(output).__name__}; expected class scores (B, K).")
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
    if bool(((idx < 0) | (idx >= k)).any()):
        raise ValueError(f"class_idx {idx.tolist()} out of range for {k} classes.")
    return idx


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


class Explainer:
    """Base class of every saliency method.

    Subclasses implement :meth:`explain` on a validated plain tensor; :meth:`__call__` adds input checks
    and MetaTensor output. Hooks (when ``target_layers`` is given) are registered once here and removed by
    :meth:`close` or on leaving a ``with`` block. The model runs in eval mode during a call (as MONAI's CAM
    classes do: no BatchNorm statistics updated, no dropout), and its parameters, their ``requires_grad`` flags,
    its buffers and every sub-module's train/eval flag are the same after a call as before; gradient methods
    enable autograd themselves, so calls work inside ``torch.no_grad()`` (MONAI evaluators), but not under
    ``torch.inference_mode()`` (a clear error; gradient-free methods work there). An inference tensor passed outside
    inference mode is copied to an ordinary tensor. float16 / bfloat16 inputs are explained in float32 (a
    half-precision model receives its own dtype at its input) and the map is returned in the input's dtype.

    Args:
        nn_module: the network; it must return class scores ``(B, K)`` (or a tuple/dict whose first item does).
        target_layers: layer name(s) whose activations the method needs, or None.
        spatial_dims: required number of spatial axes of the input, or None for any.
    """

    #: class-agnostic methods ignore ``class_idx``.
    class_agnostic: bool = False

    def __init__(
        self, nn_module: nn.Module, target_layers: str | Sequence[str] | None = None, spatial_dims: int | None = None
    ) -> None:
        if not isinstance(nn_module, nn.Module):
            raise TypeError(f"nn_module must be a torch.nn.Module, got {type(nn_module).__name__}.")
        self.model = nn_module
        self.spatial_dims = spatial_dims
        self.hooks = ActivationHooks(nn_module, target_layers) if target_layers is not None else None

    def __call__(
        self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """Explain a batch.

        Args:
            x: input ``(B, C, *spatial)``, float; a MetaTensor gives a MetaTensor map with the same metadata.
            class_idx: None (argmax per item), int, or a (B,) tensor. Ignored by class-agnostic methods.
            kwargs: method-specific options.

        Returns:
            Maps of the input's spatial size: ``(B, 1, *spatial)`` or ``(B, C, *spatial)`` as the method documents.

        Raises:
            TypeError, ValueError: for invalid input (see :func:`check_input`) or class indices.
            RuntimeError: if the explainer was closed.
        """
        if self.hooks is not None and len(self.hooks) == 0:
            raise RuntimeError(f"this {type(self).__name__} was closed; create a new one.")
        xt = check_input(x, self.spatial_dims)
        # float16 / bfloat16 inputs are explained in float32 and the map is returned in their dtype
        with evaluation_mode(self.model), model_input_dtype(self.model):
            maps = self.explain(working_tensor(xt), class_idx, **kwargs)
        return wrap_like(cast_back(maps, xt.dtype, "map"), x)

    def explain(
        self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """Compute the maps for a validated plain tensor (implemented by subclasses)."""
        raise NotImplementedError

    def forward_with_activations(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the model once, returning ``(logits (B, K), {layer: activation})``.

        Raises:
            RuntimeError: if a hooked layer did not run during the forward pass.
        """
        if self.hooks is None:
            raise RuntimeError(f"{type(self).__name__} needs target_layers.")
        with self.hooks.capture() as acts:
            logits = model_logits(self.model(x))
            captured = dict(acts)
        missing = [n for n in self.hooks.names if n not in captured]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the forward pass; choose layers on the model's path.")
        return logits, captured

    def close(self) -> None:
        """Remove the hooks from the model (idempotent)."""
        if self.hooks is not None:
            self.hooks.remove()

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
