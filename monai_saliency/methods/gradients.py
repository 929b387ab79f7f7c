"""Input-gradient saliency: the shared gradient primitive, VanillaGrad, SmoothGrad and IntegratedGradients."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_saliency.core import (
    ClassTarget,
    Target,
    TargetLike,
    as_target,
    frozen_parameters,
    model_logits,
    model_output,
    require_autograd,
    resolve_target,
)
from monai_saliency.methods.base import Explainer
from monai_saliency.ops._cache import cached
from monai_saliency.ops.checks import all_finite
from monai_saliency.ops.item_noise import check_seed, item_keys, keyed_draws
from monai_saliency.ops.normalize import reduce_channels

__all__ = [
    "IG_METHODS",
    "IntegratedGradients",
    "SmoothGrad",
    "VanillaGrad",
    "input_gradients",
    "integration_rule",
    "target_gradients",
]


def target_gradients(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, freeze_params: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Target]:
    """Gradient of each item's target score with respect to its input, in one forward and one backward pass.

    Uses ``torch.autograd.grad(scores.sum(), x)``: no weight gradients are computed or accumulated into ``.grad``.
    Items are independent as long as the target scores each row from its own output row and the model does not
    mix the batch (e.g. BatchNorm in train mode does). A target that needs the clean output (the argmax class, the
    predicted region) is bound from this forward pass unless it is bound already.

    Args:
        model: the network.
        x: plain float tensor ``(B, C, *spatial)``.
        target: a class index spec (None: argmax per item, int, ``(B,)``) or a target
            (:mod:`monai_saliency.core.targets`).
        freeze_params: build no graph towards the weights during the call (flags restored after).

    Returns:
        ``(gradients (B, C, *spatial), model output detached, scores (B,) detached, bound target)``.

    Raises:
        RuntimeError: if the score does not depend on the input through autograd, or under
            ``torch.inference_mode()``.
    """
    require_autograd("a gradient method (input_gradients)")
    with torch.enable_grad(), frozen_parameters(model) if freeze_params else nullcontext():
        xg = x.detach().requires_grad_(True)
        output = model_output(model(xg))
        bound = as_target(target).bind(output.detach(), x.shape[0])
        scores = bound(output)
        if not output.requires_grad:
            raise RuntimeError(
                "the model output does not require grad: the forward pass disables autograd or detaches; "
                "gradient methods need a differentiable path from the input to the score."
            )
        (grad,) = torch.autograd.grad(scores.sum(), xg, allow_unused=True)
    if grad is None:
        raise RuntimeError("the target score does not depend on the input; check the model's forward path.")
    return grad, output.detach(), scores.detach(), bound


def input_gradients(
    model: nn.Module, x: torch.Tensor, class_idx: TargetLike = None, freeze_params: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradient of each item's class (or target) score with respect to its input (:func:`target_gradients`).

    Args:
        model: network returning scores ``(B, K)`` (or any output the target reads).
        x: plain float tensor ``(B, C, *spatial)``.
        class_idx: None (argmax per item), int, ``(B,)`` indices, or a target.
        freeze_params: build no graph towards the weights during the call (flags restored after).

    Returns:
        ``(gradients (B, C, *spatial), output detached, class indices (B,))``: the output is the logits ``(B, K)``
        for a class target; the class indices are the target's classes or output units (None for a callable).

    Raises:
        RuntimeError: if the score does not depend on the input through autograd, or under
            ``torch.inference_mode()``.
    """
    grad, output, _, bound = target_gradients(model, x, class_idx, freeze_params)
    if isinstance(bound, ClassTarget):
        output = model_logits(output)
    return grad, output, bound.class_indices


class _SharedGradient(Explainer):
    """A gradient explainer whose map is ``reduce_channels(raw, self.reduce)``: explainers of one class whose
    settings differ only in ``reduce`` compute the same raw map, shared by :class:`SaliencyInferer` (see
    :meth:`Explainer.shared_source`). Not shareable with a ``generator`` (its state changes with every call)."""

    reduce: str

    def shared_source(self) -> tuple[Hashable, Explainer] | None:
        settings = {k: v for k, v in vars(self).items() if k != "reduce"}
        if settings.get("generator") is not None:
            return None
        key = [type(self)]
        for k, v in sorted(settings.items()):  # the model and anything unhashable by identity
            key.append((k, v if isinstance(v, (int, float, str, bool, type(None))) else ("id", id(v))))
        return tuple(key), self

    def explain(
        self, x: torch.Tensor, class_idx: TargetLike = None, base_map: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        raw = self.raw_map(x, class_idx, **kwargs) if base_map is None else base_map
        return reduce_channels(raw, self.reduce)


class VanillaGrad(_SharedGradient):
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

    def raw_map(self, x: torch.Tensor, class_idx: TargetLike = None) -> torch.Tensor:
        grad, _, _, _ = target_gradients(self.model, x, class_idx, self.freeze_params)
        return grad


# ---------------------------------------------------------------------------------------------------------------------
# Chunked multi-pass gradient methods
# ---------------------------------------------------------------------------------------------------------------------

IG_METHODS = (
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "gausslegendre",
    "captum_trapezoid",
)


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def _chunked_input_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    n: int,
    make_inputs: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, range], torch.Tensor],
    weights: torch.Tensor | None,
    batch_size: int,
    square: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum over ``n`` passes of per-item input gradients, evaluated in chunks of ``batch_size`` inputs.

    The ``n * B`` model inputs are enumerated sample-major (flat index ``j = s * B + b``) and evaluated
    ``batch_size`` at a time, so peak memory is that of one forward+backward pass on ``batch_size`` inputs,
    whatever ``n`` and ``B``. The Python loop runs over chunks (the memory bound), not over samples or items.

    Args:
        model: classifier (parameters already frozen by the caller).
        x: ``(B, C, *spatial)``.
        target: the target bound to the batch ``x`` (:func:`~monai_saliency.core.resolve_target`).
        n: passes per item (noise samples or integration steps).
        make_inputs: ``(flat_index, sample_index, item_index, flat_range) -> (chunk, C, *spatial)`` model inputs;
            ``flat_range`` is ``flat_index`` as a host ``range`` (read without a device-to-host copy).
        weights: per-sample weights ``(n,)`` (None: 1/n, a mean).
        batch_size: model inputs per forward/backward pass.
        square: accumulate squared gradients instead of gradients.

    Returns:
        ``(accumulated gradients (B, C, *spatial), target scores of every pass (n * B,) in flat order)``.
    """
    b = x.shape[0]
    acc = torch.zeros_like(x)
    w = torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device) if weights is None else weights.to(x)
    total = n * b
    scores = torch.empty(total, dtype=x.dtype, device=x.device)
    for start in range(0, total, batch_size):  # loop over memory-bounded chunks
        stop = min(start + batch_size, total)
        flat = torch.arange(start, stop, device=x.device)
        s_idx, b_idx = flat // b, flat % b
        inputs = make_inputs(flat, s_idx, b_idx, range(start, stop))
        grad, _, chunk_scores, _ = target_gradients(model, inputs, target.rows(b_idx), freeze_params=False)
        scores[flat] = chunk_scores.to(x.dtype)
        if square:
            grad = grad * grad
        shape = (-1,) + (1,) * (grad.ndim - 1)
        acc.index_add_(0, b_idx, grad * w[s_idx].reshape(shape))
    return acc, scores


class SmoothGrad(_SharedGradient):
    """SmoothGrad (Smilkov et al. 2017): mean input gradient over Gaussian-perturbed copies of the input.

    ``n_samples * B`` noisy inputs are evaluated ``batch_size`` at a time (one forward and one input-only
    backward per chunk; ``batch_size`` bounds peak memory). Per-item noise standard deviation is
    ``stdev_spread * (max(x_b) - min(x_b))`` (the paper's relative noise level), or ``stdev`` when given.

    ``magnitude=True`` returns the mean of the *squared* gradients, ``E[(dS/dx)^2]`` (Smilkov et al.'s
    "magnitude" variant, captum's ``smoothgrad_sq``); ``False`` the mean signed gradient.

    The target is fixed once on the clean input (the argmax class per item when ``class_idx`` is None, a
    ``RegionTarget``'s predicted region), and every noisy copy is scored against it.

    Noise and reproducibility: with an integer ``seed`` (default 0), noise sample ``s`` of an item is drawn by a
    generator seeded from ``(seed, a digest of the item's values, s)`` (:mod:`monai_saliency.ops.item_noise`), so
    an item's map is the same alone or in any batch, at any position, for any ``batch_size``, and across runs,
    without touching the global RNG. Equal seeds give equal maps; another seed gives another Monte-Carlo draw.
    The draws are made on the input's device (CPU and CUDA streams differ). ``seed=None`` draws from the global
    torch RNG chunk by chunk (captum's behaviour: a map then depends on the RNG state, the batch and
    ``batch_size``); so does an explicit ``generator``.

    Args:
        nn_module: classifier returning ``(B, K)`` scores.
        n_samples: noisy copies per item.
        stdev_spread: noise std as a fraction of each item's value range.
        stdev: absolute noise std (overrides ``stdev_spread``).
        magnitude: average squared gradients instead of gradients.
        batch_size: model inputs per forward/backward pass (memory bound).
        reduce: channel reduction (``"none"`` keeps ``(B, C, *spatial)``; see ``reduce_channels``).
        seed: seed of the per-item noise (see above), or None for the global RNG.
        generator: a ``torch.Generator`` (on the input's device) to draw from chunk by chunk instead; overrides
            ``seed``. Reproducible for a fixed batch and ``batch_size`` only.

    Returns (on call):
        ``(B, C, *spatial)`` (or ``(B, 1, *spatial)`` when reduced). ``explain(x, class_idx, noise=...)``
        accepts injected noise ``(n_samples, B, C, *spatial)`` used as-is (for cross-checks).

    Raises:
        ValueError: for non-positive ``n_samples``/``batch_size``, negative noise, or injected noise of the wrong shape.
        TypeError: for a seed that is not an int or None.
    """

    def __init__(
        self,
        nn_module: nn.Module,
        n_samples: int = 25,
        stdev_spread: float = 0.15,
        stdev: float | None = None,
        magnitude: bool = False,
        batch_size: int = 32,
        reduce: str = "none",
        seed: int | None = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(nn_module)
        self.n_samples = _check_positive_int(n_samples, "n_samples")
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        if not stdev_spread >= 0 or (stdev is not None and not stdev >= 0):
            raise ValueError(f"noise levels must be >= 0, got stdev_spread={stdev_spread}, stdev={stdev}.")
        reduce_channels(torch.zeros(1, 1, 1), reduce)
        self.stdev_spread, self.stdev = float(stdev_spread), stdev
        self.magnitude = magnitude
        self.reduce = reduce
        self.seed = check_seed(seed)
        self.generator = generator

    def raw_map(
        self,
        x: torch.Tensor,
        class_idx: TargetLike = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b = x.shape[0]
        n = self.n_samples
        if noise is not None:
            if tuple(noise.shape) != (n, *x.shape):
                raise ValueError(f"injected noise must have shape {(n, *x.shape)}, got {tuple(noise.shape)}.")
            noise_flat = noise.to(x).reshape(n * b, *x.shape[1:])
        target = resolve_target(self.model, x, class_idx)
        if self.stdev is not None:
            std = torch.full((b,), float(self.stdev), dtype=x.dtype, device=x.device)
        else:
            flat = x.reshape(b, -1)
            std = self.stdev_spread * (flat.amax(1) - flat.amin(1))
        view = (-1,) + (1,) * (x.ndim - 1)
        keyed = noise is None and self.generator is None and self.seed is not None
        keys = item_keys(x) if keyed else []

        def make_inputs(flat_idx: torch.Tensor, s_idx: torch.Tensor, b_idx: torch.Tensor, flat: range) -> torch.Tensor:
            if noise is not None:
                return x[b_idx] + noise_flat[flat_idx]
            if keyed:  # per (item, sample): independent of the batch and of the chunking
                rows = [f % b for f in flat]  # b_idx and s_idx on the host, without reading them from the device
                samples = [f // b for f in flat]
                eps = keyed_draws(
                    torch.randn, self.seed, [keys[r] for r in rows], samples, x.shape[1:], x.dtype, x.device
                )
            else:
                shape = (flat_idx.numel(), *x.shape[1:])
                eps = torch.randn(shape, generator=self.generator, dtype=x.dtype, device=x.device)
            return x[b_idx] + eps * std[b_idx].reshape(view)

        with frozen_parameters(self.model):
            acc, _ = _chunked_input_gradients(
                self.model, x, target, n, make_inputs, None, self.batch_size, self.magnitude
            )
        return acc


def integration_rule(n_steps: int, method: str = "riemann_trapezoid") -> tuple[torch.Tensor, torch.Tensor]:
    """Integration points ``alpha`` in [0, 1] and weights for ``int_0^1 f(alpha) d alpha``.

    ``riemann_trapezoid`` is the composite trapezoid rule: ``n`` equally spaced points including both ends,
    weights ``1/(n-1)`` halved at the ends (they sum to 1). captum's ``riemann_trapezoid`` uses weights
    ``1/n`` halved at the ends, which sum to ``(n-1)/n``: its integral is biased low by ``1/n`` (a 2 %
    completeness error at ``n = 50`` even for a linear model). That variant is kept as
    ``"captum_trapezoid"`` for cross-checks. ``riemann_left/right/middle`` and ``gausslegendre`` equal captum's.

    Args:
        n_steps: number of points (> 1 for Riemann rules).
        method: one of :data:`IG_METHODS`.

    Returns:
        ``(alphas (n,), weights (n,))`` in float64.

    Raises:
        ValueError: for an unknown method or too few steps.
    """
    _check_positive_int(n_steps, "n_steps")
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n_steps)
        return torch.from_numpy(0.5 * (nodes + 1.0)), torch.from_numpy(0.5 * w)
    if method not in IG_METHODS:
        raise ValueError(f"unknown integration method {method!r}; choose one of {IG_METHODS}.")
    if n_steps < 2:
        raise ValueError("Riemann integration needs n_steps >= 2.")
    n = n_steps
    w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if method in ("riemann_trapezoid", "captum_trapezoid"):
        a = torch.linspace(0, 1, n, dtype=torch.float64)
        if method == "riemann_trapezoid":
            w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        w[0] /= 2
        w[-1] /= 2
    elif method == "riemann_left":
        a = torch.linspace(0, 1 - 1 / n, n, dtype=torch.float64)
    elif method == "riemann_middle":
        a = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n, dtype=torch.float64)
    else:
        a = torch.linspace(1 / n, 1, n, dtype=torch.float64)
    return a, w


class IntegratedGradients(Explainer):
    """Integrated Gradients (Sundararajan et al. 2017): ``(x - x0) * int_0^1 dS(x0 + a (x - x0))/dx da``.

    The ``n_steps * B`` path points are evaluated ``batch_size`` at a time (peak memory = one
    forward+backward on ``batch_size`` inputs). Integration rules: see :func:`integration_rule`
    (default the composite trapezoid rule; captum's biased trapezoid is available as ``"captum_trapezoid"``;
    ``gausslegendre`` is captum's default).

    After each call, :attr:`completeness_error` holds the per-item ``(B,)`` error
    ``sum(attribution) - (S(x) - S(x0))`` (captum's convergence delta), and :attr:`last_score_delta` the
    ``S(x) - S(x0)`` it is compared with.

    Args:
        nn_module: classifier returning ``(B, K)`` scores.
        n_steps: integration points.
        method: one of :data:`IG_METHODS`.
        baseline: ``x0``: a float (constant image, default 0), a tensor broadcastable to ``x``, or a callable
            ``x -> x0``.
        batch_size: model inputs per forward/backward pass (memory bound).
        reduce: channel reduction (``"none"`` keeps ``(B, C, *spatial)``).

    Returns (on call):
        ``(B, C, *spatial)`` attributions (or ``(B, 1, *spatial)`` when reduced).

    Raises:
        ValueError: for a bad ``n_steps``/``batch_size``/``method`` or a baseline that does not broadcast or
            holds NaN/Inf.
    """

    def __init__(
        self,
        nn_module: nn.Module,
        n_steps: int = 50,
        method: str = "riemann_trapezoid",
        baseline: float | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] = 0.0,
        batch_size: int = 32,
        reduce: str = "none",
    ) -> None:
        super().__init__(nn_module)
        self.alphas, self.weights = integration_rule(n_steps, method)
        self.n_steps, self.method = n_steps, method
        self.baseline = baseline
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        reduce_channels(torch.zeros(1, 1, 1), reduce)
        self.reduce = reduce
        self.completeness_error: torch.Tensor | None = None
        self.last_score_delta: torch.Tensor | None = None

    def _baseline(self, x: torch.Tensor) -> torch.Tensor:
        base = self.baseline(x) if callable(self.baseline) else self.baseline
        base = torch.as_tensor(base, dtype=x.dtype, device=x.device)
        try:
            base = torch.broadcast_to(base, x.shape)
        except RuntimeError as err:
            raise ValueError(
                f"baseline of shape {tuple(base.shape)} does not broadcast to the input {tuple(x.shape)}."
            ) from err
        if not all_finite(base):
            raise ValueError("the baseline holds NaN or Inf.")
        return base

    def explain(self, x: torch.Tensor, class_idx: TargetLike = None) -> torch.Tensor:
        b = x.shape[0]
        x0 = self._baseline(x)
        diff = x - x0
        target = resolve_target(self.model, x, class_idx)
        # the rule on the input's device: uploaded once per (rule, dtype, device), not on every call
        key = ("ig_rule", tuple(self.alphas.tolist()), tuple(self.weights.tolist()), x.dtype, str(x.device))
        alphas, weights = cached(key, lambda: torch.stack((self.alphas, self.weights)).to(x.device, x.dtype)).unbind(0)
        view = (-1,) + (1,) * (x.ndim - 1)

        def make_inputs(_flat: torch.Tensor, s_idx: torch.Tensor, b_idx: torch.Tensor, _range: range) -> torch.Tensor:
            return x0[b_idx] + alphas[s_idx].reshape(view) * diff[b_idx]

        with frozen_parameters(self.model):
            acc, scores = _chunked_input_gradients(
                self.model, x, target, self.n_steps, make_inputs, weights, self.batch_size
            )
        # S(x) and S(x0) for the completeness error: reuse the path's end points when the rule contains them
        scores = scores.reshape(self.n_steps, b)
        ends = []
        for a_end, x_end in ((1.0, x), (0.0, x0)):
            hit = (self.alphas == a_end).nonzero()
            if len(hit):
                ends.append(scores[int(hit[0])])
            else:
                with torch.no_grad():
                    ends.append(target(self.model(x_end)).to(x.dtype))
        attr = diff * acc
        self.last_score_delta = (ends[0] - ends[1]).detach()
        self.completeness_error = attr.reshape(b, -1).sum(1) - self.last_score_delta
        return reduce_channels(attr, self.reduce)
