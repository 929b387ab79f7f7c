"""Targets: what an explanation explains, as one score per batch item.

A target is a callable ``target(output) -> (B,)`` on the model's output (a tensor, or a tuple / list / dict whose
first item is one). Every explainer and metric takes one wherever it takes ``class_idx`` (an int, a ``(B,)`` tensor
or None still work: they mean :class:`ClassTarget`), and every gradient method back-propagates the sum of the
per-item scores, so items stay independent and the batch is never split into items.

* :class:`ClassTarget`: the score of one class per item of a classifier's ``(B, K)`` output (argmax by default).
* :class:`RegionTarget`: the sum or mean of class ``k``'s logits (or probabilities) of a segmentation output
  ``(B, K, *spatial)`` inside a per-item mask, or inside the model's own predicted region of ``k`` when no mask is
  given (Seg-Grad-CAM, Vinogradova et al. 2020).
* :class:`RegressionTarget`: one output unit of a regressor ``(B,)`` / ``(B, K)``, with a sign.
* any other callable ``output -> (B,)`` (computed row by row: item ``i``'s score must depend on row ``i`` only).

Targets that depend on the explained input (the argmax class, the predicted region) are fixed once on the clean
input by :meth:`Target.bind` (:func:`resolve_target`): the noisy copies of SmoothGrad, the path of Integrated
Gradients and the perturbed inputs of a deletion curve are all scored against the clean input's class or region.
:meth:`Target.rows` hands each item's part to the rows of a chunk of such inputs.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from monai_saliency.core.outputs import item_indices, model_logits, model_output
from monai_saliency.ops.checks import host_all

__all__ = [
    "ClassTarget",
    "RegionTarget",
    "RegressionTarget",
    "Target",
    "as_target",
    "explainer_target",
    "resolve_target",
]

#: what explainers and metrics accept as a target: a class index spec (None, int, (B,)) or a callable.
TargetLike = Any

REDUCTIONS = ("sum", "mean")
ACTIVATIONS = ("none", "softmax", "sigmoid")
PREDICTIONS = ("auto", "argmax", "sigmoid")


def _in_range(given: Any, idx: torch.Tensor, k: int) -> bool:
    """Whether the indices ``idx`` (from ``given``) lie in ``[0, k)``: an int is checked on the host, None (the
    argmax) needs no check, a tensor costs one boolean to the host."""
    if given is None:
        return True
    if isinstance(given, numbers.Integral) and not isinstance(given, bool):
        return 0 <= int(given) < k
    return host_all((idx >= 0) & (idx < k))


class Target:
    """Base class of targets: one score per item of a model output.

    Subclasses implement :meth:`__call__`; a target whose scores depend on the explained input overrides
    :meth:`bind` and :meth:`rows` and sets :attr:`needs_output`.
    """

    #: :meth:`bind` needs the model's output on the clean input (argmax class, predicted region).
    needs_output: bool = False

    def __call__(self, output: Any) -> torch.Tensor:
        """Scores ``(B,)`` of a model output."""
        raise NotImplementedError

    def bind(self, output: torch.Tensor | None, batch_size: int) -> Target:
        """This target fixed for a batch of ``batch_size`` items, from the model's output on the clean batch (None
        when :attr:`needs_output` is False). A bound target returns itself."""
        return self

    def rows(self, index: torch.Tensor) -> Target:
        """The bound target for inputs whose row ``j`` is a copy of item ``index[j]`` (a chunk of noisy, path or
        perturbed inputs)."""
        return self

    def probabilities(self) -> Target:
        """The same target on probabilities instead of logits (the metrics' ``score="prob"``).

        Raises:
            ValueError: if the target has no probability version.
        """
        raise ValueError(
            f"{type(self).__name__} has no probability version: use score='logit' (the target's own score)."
        )

    @property
    def class_indices(self) -> torch.Tensor | None:
        """The class (or output unit) of each item ``(B,)`` once bound, or None if the target has none."""
        return None


def _check_rows(scores: torch.Tensor, n: int, what: str) -> torch.Tensor:
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.shape != (n,):
        raise ValueError(f"{what} returned scores of shape {tuple(scores.shape)} for a batch of {n}; expected ({n},).")
    return scores


class _IndexTarget(Target):
    """One output unit per item of a ``(B, K)`` output (shared by the class and regression targets)."""

    def __init__(self, index: int | Sequence[int] | torch.Tensor | None, name: str) -> None:
        if index is not None:  # type checks now; the length and the range are checked against the output
            item_indices(index, 1 if isinstance(index, int) else torch.as_tensor(index).numel(), None, name)
        self.index = index
        self.name = name
        self._idx: torch.Tensor | None = None

    @property
    def class_indices(self) -> torch.Tensor | None:
        return self._idx

    def _bound(self, idx: torch.Tensor) -> _IndexTarget:
        out = copy.copy(self)
        out._idx = idx
        return out

    def _outputs(self, output: Any) -> torch.Tensor:
        return model_logits(output)

    def bind(self, output: torch.Tensor | None, batch_size: int) -> _IndexTarget:
        if self._idx is not None:
            return self
        if self.index is None:
            if output is None:
                raise ValueError(f"{type(self).__name__}(None) picks the argmax: bind it with the model's output.")
            return self._bound(self._outputs(output).detach().argmax(dim=1))
        device = None if output is None else model_output(output).device
        return self._bound(item_indices(self.index, batch_size, device, self.name))

    def rows(self, index: torch.Tensor) -> _IndexTarget:
        return self if self._idx is None else self._bound(self._idx[index.to(self._idx.device)])

    def _pick(self, values: torch.Tensor, bound: _IndexTarget) -> torch.Tensor:
        b, k = values.shape
        idx = bound._idx.to(values.device)
        if idx.numel() != b:
            raise ValueError(f"{self.name} has {idx.numel()} entries for a batch of {b}.")
        if not _in_range(self.index, idx, k):
            raise ValueError(f"{self.name} {idx.tolist()} out of range for {k} outputs.")
        return values.gather(1, idx[:, None])[:, 0]


class ClassTarget(_IndexTarget):
    """The score of one class per item of a classifier's ``(B, K)`` output (``class_idx`` as before).

    Args:
        class_idx: None (the argmax on the explained input, per item), an int, or a length-B sequence / tensor.
        softmax: score the softmax probability instead of the logit.

    Raises:
        TypeError: for a non-integer index. A wrong length or an index outside ``[0, K)`` raises ValueError on use.
    """

    def __init__(self, class_idx: int | Sequence[int] | torch.Tensor | None = None, softmax: bool = False) -> None:
        super().__init__(class_idx, "class_idx")
        self.softmax = bool(softmax)
        self.needs_output = class_idx is None

    def __call__(self, output: Any) -> torch.Tensor:
        logits = self._outputs(output)
        bound = self.bind(logits, logits.shape[0])
        return self._pick(logits.softmax(1) if self.softmax else logits, bound)

    def probabilities(self) -> ClassTarget:
        out = copy.copy(self)
        out.softmax = True
        return out

    def __repr__(self) -> str:
        return f"ClassTarget(class_idx={self.index!r}, softmax={self.softmax})"


class RegressionTarget(_IndexTarget):
    """One output unit of a regression model, with a sign: ``sign * output[:, unit]``.

    Args:
        unit: output unit of a ``(B, K)`` output (an int or one per item); 0 for a ``(B,)`` or ``(B, 1)`` output.
        sign: ``1.0`` explains what raises the output, ``-1.0`` what lowers it.

    Raises:
        ValueError: for a sign other than +1 / -1; on use, for outputs that are not ``(B,)`` / ``(B, K)`` or a unit
            out of range.
    """

    def __init__(self, unit: int | Sequence[int] | torch.Tensor = 0, sign: float = 1.0) -> None:
        if unit is None:
            raise ValueError("RegressionTarget needs the output unit (an int or one per item); it has no argmax.")
        super().__init__(unit, "unit")
        if sign not in (1, -1):
            raise ValueError(f"sign must be 1.0 or -1.0, got {sign!r}.")
        self.sign = float(sign)

    def _outputs(self, output: Any) -> torch.Tensor:
        out = model_output(output)
        out = out[:, None] if out.ndim == 1 else out
        if out.ndim != 2:
            raise ValueError(
                f"RegressionTarget needs outputs (B,) or (B, K), got {tuple(out.shape)}; for a segmentation output "
                "use RegionTarget."
            )
        return out

    def __call__(self, output: Any) -> torch.Tensor:
        out = self._outputs(output)
        return self.sign * self._pick(out, self.bind(out, out.shape[0]))

    def __repr__(self) -> str:
        return f"RegressionTarget(unit={self.index!r}, sign={self.sign})"


class RegionTarget(Target):
    """Region score of a segmentation output ``(B, K, *spatial)``: class ``k``'s logits (or probabilities) summed
    or averaged inside a region of each item.

    The region is a per-item ``mask`` (boolean, or float weights), or, when no mask is given, the model's own
    predicted region of class ``k`` on the explained input (Seg-Grad-CAM, Vinogradova et al. 2020): the voxels
    whose argmax over the classes is ``k`` (``prediction="argmax"``, exclusive classes), or whose
    ``sigmoid(logit_k) > threshold`` (``"sigmoid"``, independent labels); ``"auto"`` uses the argmax for ``K > 1``
    and the sigmoid for one output channel. The region is fixed on the clean input (:meth:`bind`). An item whose
    region is empty raises, unless ``allow_empty=True`` (its score is then 0 and its map all zero).

    ``RegionTarget(k, mask)`` with ``reduction="sum"`` scores what pytorch-grad-cam's
    ``SemanticSegmentationTarget(k, mask)`` scores, for every item at once.

    Args:
        class_idx: class ``k`` (an int, or one per item).
        mask: ``(B, 1, *spatial)`` or ``(B, *spatial)`` region (bool or float weights; a batch axis of 1 serves
            every item) at the output's spatial size, or None for the predicted region.
        reduction: ``"sum"`` (default, as Seg-Grad-CAM) or ``"mean"`` (weighted mean over the region).
        activation: ``"none"`` (logits, default), ``"softmax"`` (over the classes) or ``"sigmoid"``.
        prediction: ``"auto"``, ``"argmax"`` or ``"sigmoid"`` (how the predicted region is read; see above).
        threshold: probability threshold of ``prediction="sigmoid"``.
        allow_empty: give empty regions the score 0 instead of raising.

    Raises:
        ValueError: for unknown options; on use, for outputs without spatial axes, a mask of another size, a class
            out of range, or an empty region.
    """

    def __init__(
        self,
        class_idx: int | Sequence[int] | torch.Tensor,
        mask: torch.Tensor | None = None,
        reduction: str = "sum",
        activation: str = "none",
        prediction: str = "auto",
        threshold: float = 0.5,
        allow_empty: bool = False,
    ) -> None:
        if class_idx is None:
            raise ValueError("RegionTarget needs the class whose region is explained (an int or one per item).")
        for value, name, choices in (
            (reduction, "reduction", REDUCTIONS),
            (activation, "activation", ACTIVATIONS),
            (prediction, "prediction", PREDICTIONS),
        ):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {choices}.")
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
        if mask is not None and not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a tensor or None, got {type(mask).__name__}.")
        if mask is not None:
            mask = model_output(mask)  # a MetaTensor label as a plain tensor
        self.class_idx = class_idx
        self.mask = mask
        self.reduction = reduction
        self.activation = activation
        self.prediction = prediction
        self.threshold = float(threshold)
        self.allow_empty = allow_empty
        self.needs_output = mask is None
        self._idx: torch.Tensor | None = None
        self._region: torch.Tensor | None = None

    @property
    def class_indices(self) -> torch.Tensor | None:
        return self._idx

    @property
    def region(self) -> torch.Tensor | None:
        """The bound region ``(B, *spatial)`` (bool or float weights), or None before :meth:`bind`."""
        return self._region

    @staticmethod
    def _outputs(output: Any) -> torch.Tensor:
        out = model_output(output)
        if out.ndim < 3:
            raise ValueError(
                f"RegionTarget needs a segmentation output (B, K, *spatial), got {tuple(out.shape)}; for class "
                "scores use ClassTarget (class_idx)."
            )
        return out

    def _uses_sigmoid(self, k: int) -> bool:
        return self.prediction == "sigmoid" or (self.prediction == "auto" and k == 1)

    def _class_map(self, out: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        b, k = out.shape[:2]
        if idx.numel() != b:
            raise ValueError(f"class_idx has {idx.numel()} entries for a batch of {b}.")
        if not _in_range(self.class_idx, idx, k):
            raise ValueError(f"class_idx {idx.tolist()} out of range for {k} output channels.")
        index = idx.to(out.device).reshape(b, 1, *[1] * (out.ndim - 2)).expand(b, 1, *out.shape[2:])
        return values.gather(1, index)[:, 0]

    def predicted_region(self, output: Any, class_idx: torch.Tensor) -> torch.Tensor:
        """The model's predicted region of each item's class ``(B, *spatial)`` (bool)."""
        out = self._outputs(output).detach()
        if self._uses_sigmoid(out.shape[1]):
            return self._class_map(out, class_idx, out.float().sigmoid()) > self.threshold
        top = out.argmax(1)
        return top == class_idx.to(out.device).reshape(-1, *[1] * (out.ndim - 2))

    def _mask_region(self, batch_size: int, out: torch.Tensor | None) -> torch.Tensor:
        """The mask as ``(B, *spatial)``: its channel axis dropped (a size-1 axis 1 of a mask with 3+ axes, or of a
        mask with the output's rank), its batch axis of 1 expanded."""
        mask = self.mask
        if mask.ndim < 2:
            raise ValueError(f"mask must be (B, 1, *spatial) or (B, *spatial), got shape {tuple(mask.shape)}.")
        if out is not None and mask.ndim == out.ndim and mask.shape[1] != 1:
            raise ValueError(f"mask must have one channel, got shape {tuple(mask.shape)}.")
        if mask.ndim >= 3 and mask.shape[1] == 1 and (out is None or mask.ndim == out.ndim):
            mask = mask[:, 0]
        if mask.shape[0] == 1 and batch_size > 1:
            mask = mask.expand(batch_size, *mask.shape[1:])
        if mask.shape[0] != batch_size:
            raise ValueError(f"mask has {mask.shape[0]} items for a batch of {batch_size}.")
        return mask.to(out.device) if out is not None else mask

    def bind(self, output: torch.Tensor | None, batch_size: int) -> RegionTarget:
        if self._region is not None:
            return self
        out = None if output is None else self._outputs(output)
        idx = item_indices(self.class_idx, batch_size, None if out is None else out.device, "class_idx")
        if self.mask is None:
            if out is None:
                raise ValueError("RegionTarget without a mask reads the predicted region: bind it with the output.")
            region = self.predicted_region(out, idx)
        else:
            region = self._mask_region(batch_size, out)
        if not self.allow_empty:
            empty = (region.reshape(batch_size, -1) != 0).sum(1) == 0
            if not host_all(~empty):  # one boolean to the host when the region lives on a device
                raise ValueError(
                    f"the region of class {idx[empty].tolist()} is empty for items {empty.nonzero()[:, 0].tolist()} "
                    "(the model predicts that class nowhere there, or the mask is empty); give a mask, another "
                    "class, or allow_empty=True (score 0, an all-zero map)."
                )
        bound = copy.copy(self)
        bound._idx, bound._region = idx, region
        return bound

    def rows(self, index: torch.Tensor) -> RegionTarget:
        if self._region is None:
            return self
        bound = copy.copy(self)
        bound._idx = self._idx[index.to(self._idx.device)]
        bound._region = self._region[index.to(self._region.device)]
        return bound

    def __call__(self, output: Any) -> torch.Tensor:
        out = self._outputs(output)
        bound = self.bind(out, out.shape[0])
        region = bound._region
        if tuple(region.shape) != (out.shape[0], *out.shape[2:]):
            raise ValueError(
                f"the region has shape {tuple(region.shape)} but the output {tuple(out.shape)}: the mask must be "
                f"({out.shape[0]}, 1, {', '.join(map(str, out.shape[2:]))}) at the output's spatial size."
            )
        activation = self.activation
        if activation == "_probability":
            activation = "sigmoid" if self._uses_sigmoid(out.shape[1]) else "softmax"
        if activation == "softmax":
            values = out.softmax(1)
        elif activation == "sigmoid":
            values = out.sigmoid()
        else:
            values = out
        sel = self._class_map(out, bound._idx, values)
        weights = region.to(device=sel.device, dtype=sel.dtype)
        total = (sel * weights).flatten(1).sum(1)
        if self.reduction == "mean":
            size = weights.flatten(1).sum(1)
            total = torch.where(size != 0, total / torch.where(size != 0, size, torch.ones_like(size)), 0.0)
        return total

    def probabilities(self) -> RegionTarget:
        """The same region scored on probabilities: the sigmoid for independent labels (``prediction="sigmoid"``,
        or one channel with ``"auto"``), else the softmax over the classes.

        """
        if self.activation != "none":
            return self
        out = copy.copy(self)
        if self.prediction == "sigmoid":
            out.activation = "sigmoid"
        elif self.prediction == "argmax":
            out.activation = "softmax"
        else:
            out.activation = "_probability"
        return out

    def __repr__(self) -> str:
        mask = "predicted" if self.mask is None else f"mask{tuple(self.mask.shape)}"
        return f"RegionTarget(class_idx={self.class_idx!r}, {mask}, {self.reduction}, activation={self.activation})"


class _CallableTarget(Target):
    """A user's callable ``output -> (B,)`` (row by row: the score of item ``i`` depends on row ``i`` only)."""

    def __init__(self, fn: Callable[[Any], torch.Tensor]) -> None:
        self.fn = fn

    def __call__(self, output: Any) -> torch.Tensor:
        scores = self.fn(output)
        if not isinstance(scores, torch.Tensor):
            raise TypeError(f"the target returned {type(scores).__name__}; it must return a (B,) tensor.")
        return _check_rows(scores, model_output(output).shape[0], "the target")

    def __repr__(self) -> str:
        return f"target {self.fn!r}"


def as_target(target: TargetLike) -> Target:
    """A :class:`Target` from a class index spec (None, int, length-B sequence / tensor: a :class:`ClassTarget`),
    a :class:`Target`, or a callable ``output -> (B,)``.

    Raises:
        TypeError: for anything else (a string, a float, an ``nn.Module``).
    """
    if isinstance(target, Target):
        return target
    if isinstance(target, (bool, float, str)):
        raise TypeError(
            f"class_idx / target must be an int, a (B,) tensor of ints, None, or a callable output -> (B,); got "
            f"{target!r}."
        )
    if target is None or isinstance(target, (numbers.Integral, torch.Tensor, Sequence)) or hasattr(target, "__array__"):
        return ClassTarget(target)  # ints, NumPy integers and arrays, tensors, sequences: class indices
    if isinstance(target, nn.Module):
        raise TypeError("a target must not be a network: pass the model as nn_module and a target callable here.")
    if callable(target):
        return _CallableTarget(target)
    raise TypeError(f"a target is a class index (int, (B,) ints, None) or a callable output -> (B,), got {target!r}.")


def resolve_target(model: nn.Module, x: torch.Tensor, target: TargetLike) -> Target:
    """``target`` bound to the batch ``x`` (B items): the model runs once, under ``no_grad``, only when the target
    needs its output (the argmax class, the predicted region).

    Args:
        model: the network (in the caller's mode).
        x: the clean input ``(B, C, *spatial)``.
        target: anything :func:`as_target` accepts.

    Returns:
        The bound :class:`Target`.
    """
    tgt = as_target(target)
    if not tgt.needs_output:
        return tgt.bind(None, x.shape[0])
    with torch.no_grad():
        return tgt.bind(model_output(model(x)), x.shape[0])


def explainer_target(target: Target) -> Any:
    """What an ``explainer(x, class_idx)`` callable receives for a bound target: the ``(B,)`` class indices of a
    class target (the protocol's ``class_idx``, for callables written before targets), else the target itself."""
    if isinstance(target, ClassTarget) and target.class_indices is not None:
        return target.class_indices
    return target
