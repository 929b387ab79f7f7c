"""The explainer protocol shared by every method: input checks, class selection, gradients under ``no_grad``
callers, and MetaTensor output. The model plumbing it uses (hooks, layer lookup, class scores, eval mode) lives in
:mod:`monai_saliency.core`.

Usage of every explainer::

    with Method(model, target_layers="features.relu") as explainer:
        maps = explainer(x, class_idx=None)   # x: (B, C, *spatial)
        maps = explainer(x, target=RegionTarget(1))   # a segmentation network's predicted region of class 1
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from monai_saliency import core as _core
from monai_saliency.ops.precision import cast_back, model_input_dtype, working_tensor

if TYPE_CHECKING:  # typing.Self needs Python 3.11; typing_extensions comes with torch
    from typing_extensions import Self

__all__ = ["Explainer", "wrapped_base_map", "wrapped_source"]

#: plumbing that lived here until it moved to :mod:`monai_saliency.core`; the old import path still works, with a
#: DeprecationWarning, for one release (``monai_saliency.methods`` itself keeps exporting them silently).
_MOVED_TO_CORE = frozenset(_core.__all__)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_CORE:
        warnings.warn(
            f"monai_saliency.methods.base.{name} moved to monai_saliency.core; import it from there (the old path "
            "will be removed in the next release).",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        nn_module: the network; its output (or the first item of its tuple / dict) is scored by the target: class
            scores ``(B, K)`` for ``class_idx``, any shape a target reads (:mod:`monai_saliency.core.targets`).
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
        self.hooks = _core.ActivationHooks(nn_module, target_layers) if target_layers is not None else None

    def __call__(
        self,
        x: torch.Tensor,
        class_idx: int | Sequence[int] | torch.Tensor | None = None,
        target: _core.TargetLike = None,
        **kwargs,
    ) -> torch.Tensor:
        """Explain a batch.

        Args:
            x: input ``(B, C, *spatial)``, float; a MetaTensor gives a MetaTensor map with the same metadata.
            class_idx: None (argmax per item), int, or a (B,) tensor; or a target (below). Ignored by class-agnostic
                methods.
            target: what to explain instead of a class: a :class:`~monai_saliency.core.targets.Target`
                (``ClassTarget``, ``RegionTarget`` for segmentation outputs, ``RegressionTarget``) or any callable
                ``output -> (B,)`` scores (see :mod:`monai_saliency.core.targets`); give ``class_idx`` or ``target``.
            kwargs: method-specific options.

        Returns:
            Maps of the input's spatial size: ``(B, 1, *spatial)`` or ``(B, C, *spatial)`` as the method documents.

        Raises:
            TypeError, ValueError: for invalid input (see :func:`~monai_saliency.core.check_input`), class indices or
                targets, or both ``class_idx`` and ``target``.
            RuntimeError: if the explainer was closed.
        """
        if self.hooks is not None and len(self.hooks) == 0:
            raise RuntimeError(f"this {type(self).__name__} was closed; create a new one.")
        if target is not None and class_idx is not None:
            raise ValueError("give class_idx or target, not both.")
        spec = target if target is not None else class_idx
        _core.as_target(spec)  # type errors before any forward pass; explain() gets the spec as given
        xt = _core.check_input(x, self.spatial_dims)
        # float16 / bfloat16 inputs are explained in float32 and the map is returned in their dtype
        with _core.evaluation_mode(self.model), model_input_dtype(self.model):
            maps = self.explain(working_tensor(xt), spec, **kwargs)
        return _core.wrap_like(cast_back(maps, xt.dtype, "map"), x)

    def explain(
        self, x: torch.Tensor, class_idx: int | Sequence[int] | torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """Compute the maps for a validated plain tensor (implemented by subclasses)."""
        raise NotImplementedError

    # --- shared base maps ------------------------------------------------------------------------------------------
    # An explainer whose map is a cheap function of a costly "raw" map (a channel reduction of a per-channel
    # gradient, FORGrad's low-pass of a SmoothGrad, the structured solver over a gradient) declares it through
    # shared_source(); SaliencyInferer then computes each distinct raw map once per batch (source.base_map) and
    # hands it to every explainer built on it as explain(x, class_idx, base_map=raw): the maps equal those of
    # independent calls, for one raw computation instead of several.

    def shared_source(self) -> tuple[Hashable, Explainer] | None:
        """The raw map this explainer's map is derived from, for sharing it between explainers.

        Returns:
            ``(key, source)``: ``source.base_map(x, class_idx)`` is the raw map and
            ``self(x, class_idx, base_map=raw)`` equals ``self(x, class_idx)``; explainers with equal keys share
            one raw map. None (the default) when the map is not derived from a shareable one.
        """
        return None

    def raw_map(self, x: torch.Tensor, class_idx: Any = None) -> torch.Tensor:
        """The raw map of a validated plain tensor (explainers that are a ``shared_source`` implement it)."""
        raise NotImplementedError(f"{type(self).__name__} has no raw map to share.")

    def base_map(self, x: torch.Tensor, class_idx: Any = None) -> torch.Tensor:
        """:meth:`raw_map` with the input checks, eval mode and working precision of :meth:`__call__`.

        Returns:
            A plain tensor in the working precision (float32 for half inputs), for ``explain(..., base_map=...)``.
        """
        xt = _core.check_input(x, self.spatial_dims)
        with _core.evaluation_mode(self.model), model_input_dtype(self.model):
            return self.raw_map(working_tensor(xt), class_idx)

    def forward_with_activations(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the model once, returning ``(output, {layer: activation})``: the model's output tensor as it is
        (class scores ``(B, K)``, a segmentation ``(B, K, *spatial)``, ...; see :func:`~monai_saliency.core.model_output`).

        Raises:
            RuntimeError: if a hooked layer did not run during the forward pass.
        """
        if self.hooks is None:
            raise RuntimeError(f"{type(self).__name__} needs target_layers.")
        with self.hooks.capture() as acts:
            output = _core.model_output(self.model(x))
            captured = dict(acts)
        missing = [n for n in self.hooks.names if n not in captured]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the forward pass; choose layers on the model's path.")
        return output, captured

    def close(self) -> None:
        """Remove the hooks from the model (idempotent)."""
        if self.hooks is not None:
            self.hooks.remove()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110  __del__ must never raise (it may run at interpreter shutdown)
            pass


def wrapped_source(base: Any) -> tuple[Hashable, Explainer] | None:
    """:meth:`Explainer.shared_source` of an explainer that wraps ``base`` and uses its map unreduced (FORGrad,
    StructuredGradient): ``base``'s raw map when ``base`` is a shareable explainer with ``reduce="none"``."""
    if isinstance(base, Explainer) and getattr(base, "reduce", None) == "none":
        return base.shared_source()
    return None


def wrapped_base_map(
    base: Any, x: torch.Tensor, class_idx: Any = None, base_map: torch.Tensor | None = None
) -> torch.Tensor:
    """The map of ``base`` (an explainer, or a callable ``(x, class_idx) -> map``) that a wrapping explainer
    (FORGrad, StructuredGradient) transforms, for a validated plain tensor ``x``: ``base_map`` when given (computed
    once and shared, see :meth:`Explainer.shared_source`), else computed.

    Returns:
        A plain tensor ``(B, C, *spatial)``.

    Raises:
        ValueError: if the map is not an input-space map of ``x``.
    """
    if base_map is not None:
        out = base_map
    else:
        out = base.explain(x, class_idx) if isinstance(base, Explainer) else base(x, class_idx)
    if hasattr(out, "as_tensor"):
        out = out.as_tensor()
    if out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:]:
        raise ValueError(
            f"the base explainer returned shape {tuple(out.shape)} for input {tuple(x.shape)}; an input-space "
            "map (B, C, *spatial) is needed (use reduce='none')."
        )
    return out
