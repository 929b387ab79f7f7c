"""Half-precision and inference-tensor handling shared by the explainers, transforms and metrics.

float16 / bfloat16 inputs are computed in float32 and the result is returned in the input's dtype: thresholds and
epsilons of the algorithms (``1e-8`` is 0 in float16), squared values (``(1e-4)**2`` underflows to 0 in float16) and
CPU FFTs (no half support) are only meaningful or available there. A half-precision *model* is run in its own dtype:
:func:`model_input_dtype` casts the float32 working tensor to the model's dtype at its input, so gradients with
respect to the input and recorded activations stay float32 (see :class:`~monai_saliency.core.ActivationHooks`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = [
    "HALF_DTYPES",
    "cast_back",
    "model_dtype",
    "model_input_dtype",
    "stable_eigh",
    "upcast",
    "working_tensor",
]

#: floating dtypes computed in float32.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is float16 / bfloat16, else ``x`` itself (no copy)."""
    return x.float() if x.dtype in HALF_DTYPES else x


def working_tensor(x: torch.Tensor) -> torch.Tensor:
    """The tensor an algorithm computes on: :func:`upcast` ``x``, and an ordinary copy of an inference tensor.

    A tensor created under ``torch.inference_mode()`` and used after it (e.g. a batch loaded there) cannot be saved
    for backward; its copy made outside inference mode can, so gradient methods accept it. Inside inference mode the
    tensor is returned as it is.
    """
    x = upcast(x)
    if x.is_inference() and not torch.is_inference_mode_enabled():
        x = x.clone()
    return x


def cast_back(y: torch.Tensor, dtype: torch.dtype, what: str = "result") -> torch.Tensor:
    """``y`` (computed in float32) in the half-precision ``dtype`` of the input it was computed from.

    Args:
        y: floating result.
        dtype: the input's dtype; ``y`` is returned unchanged unless it is float16 / bfloat16.
        what: name used in the error message.

    Returns:
        ``y`` in ``dtype``.

    Raises:
        ValueError: if finite values of ``y`` exceed the float16 range (they would become Inf).
    """
    if dtype not in HALF_DTYPES or not y.is_floating_point() or y.dtype == dtype:
        return y
    top = torch.finfo(dtype).max
    if y.numel() and float(y.detach().abs().amax()) > top:
        raise ValueError(
            f"the {what} holds values beyond the {dtype} range (|value| > {top:g}) and cannot be returned in the "
            "input's dtype; pass a float32 input (x.float()) or rescale it."
        )
    return y.to(dtype)


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (else buffer), or None if it has none."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


@contextmanager
def model_input_dtype(model: nn.Module) -> Iterator[None]:
    """Inside the block, floating tensors passed to a float16 / bfloat16 ``model`` are cast to its dtype.

    The explanation then computes in float32 around a half-precision network (input gradients flow back through the
    cast in float32). Models in any other dtype are left alone. The hook is removed on exit.
    """
    dtype = model_dtype(model)
    if dtype not in HALF_DTYPES:
        yield
        return

    def cast(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    handle = model.register_forward_pre_hook(cast)
    try:
        yield
    finally:
        handle.remove()


def stable_eigh(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched ``torch.linalg.eigh`` of symmetric PSD Gram matrices that does not fail on ill-conditioned ones.

    float32 LAPACK ``syevd`` can fail to converge on a Gram matrix of mostly dead (all-zero) channels with a few
    denormal entries (seen on a randomised CNN: 27 of 32 channels zero). The fast float32 call is tried first; on
    failure the decomposition is redone in float64 (exact for these inputs) and returned in float64.
    """
    try:
        return torch.linalg.eigh(gram)
    except torch.linalg.LinAlgError:
        if gram.dtype == torch.float64:
            raise
        return torch.linalg.eigh(gram.double())
