"""Structured gradients (seed 000): a sparse, group-sparse, TV-regularised proxy of an input gradient.

For each item the gradient ``g`` ``(C, *spatial)`` (channels = the degrees of freedom grouped at a location)
is replaced by::

    s* = argmin_s 1/2 ||s - g~||^2 + lam_grp sum_p ||s[:, p]||_2 + lam_l1 ||s||_1 + lam_tv TV(s)

**Scale convention** (both solvers): ``g~ = g / max|g|`` per item, so the lambdas are relative to the largest
gradient entry (the seed's defaults assume an O(1) gradient). The returned structured gradient is
``max|g| * s*`` (gradient units); the reported objective is in the normalised units. A zero gradient gives
a zero map. The scalar map is ``||s||_2`` across channels, min-max normalised per item to [0, 1]; it is computed
from the normalised solution ``s*`` (the same map, since the scale is one positive number per item), so tiny
gradients cannot underflow in the squares.

Precision: float16 / bfloat16 gradients are solved in float32 (the seed's ``eps = 1e-8`` is 0 in float16, and the
thresholds ``lam`` are coarse there) and ``s`` is returned in their dtype.

Solvers:

- ``"seed"``: the seed's cycle literally, ``steps`` times: group shrink -> ``tv_iters`` explicit TV-flow
  steps of size ``tv_step`` -> soft threshold (:func:`~monai_saliency.ops.prox.solve_structured_seed`).
  As in the seed, ``lam_tv`` does not appear in that cycle and the shrinkages are re-applied each cycle,
  so it does not minimise the stated objective; its objective value is reported for comparison.
- ``"exact"``: minimises the objective with accelerated projected gradient on the dual (FISTA) to a
  certified relative duality gap ``tol`` (:func:`~monai_saliency.ops.prox.solve_structured_exact`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import nn

from monai_saliency.methods.base import Explainer, wrapped_base_map, wrapped_source
from monai_saliency.ops.checks import all_finite
from monai_saliency.ops.normalize import minmax_normalize
from monai_saliency.ops.precision import upcast
from monai_saliency.ops.prox import (
    _check_lambda,
    l2_norm,
    solve_structured_exact,
    solve_structured_seed,
    structured_objective,
)

__all__ = ["StructuredGradient", "structured_map", "structured_prox"]

SOLVERS = ("seed", "exact")


def structured_prox(
    g: torch.Tensor,
    lambda_grp: float = 0.05,
    lambda_l1: float = 0.01,
    lambda_tv: float = 0.2,
    tv_iters: int = 5,
    tv_step: float = 0.15,
    steps: int = 12,
    solver: str = "seed",
    eps: float = 1e-8,
    tol: float = 1e-4,
    max_iter: int = 1000,
    normalized: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Structured proxy of a batch of gradients ``(B, C, *sp)`` under the module's scale convention.

    Args:
        g: gradients ``(B, C, *sp)``, finite floats.
        lambda_grp, lambda_l1, lambda_tv: relative weights (>= 0).
        tv_iters, tv_step, steps, eps: the seed solver's knobs (``T_tv``, ``eta_tv``, cycles, epsilon).
        solver: ``"seed"`` or ``"exact"``.
        tol, max_iter: the exact solver's relative duality-gap tolerance and iteration cap.
        normalized: return ``s* = s / max|g|`` (normalised units; float32 for half-precision ``g``) instead of ``s``.

    Returns:
        ``(s (B, C, *sp) in gradient units and g's dtype, info)`` with ``info["objective"]`` ``(B,)`` (normalised
        units), ``info["scale"]`` ``(B,)`` = ``max|g|``, and for ``"exact"`` also ``gap``, ``iterations``,
        ``converged``.

    Raises:
        ValueError: for an unknown solver, negative weights/steps, a wrong rank, or NaN/Inf gradients.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}.")
    for v, n in ((lambda_grp, "lambda_grp"), (lambda_l1, "lambda_l1"), (lambda_tv, "lambda_tv"), (tv_step, "tv_step")):
        _check_lambda(v, n)
    for v, n in ((tv_iters, "tv_iters"), (steps, "steps")):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{n} must be an integer >= 0, got {v!r}.")
    if g.ndim < 3:
        raise ValueError(f"expected gradients (B, C, *spatial), got shape {tuple(g.shape)}.")
    if not g.is_floating_point() or not all_finite(g):
        raise ValueError("gradients must be finite floating-point values (no NaN/Inf).")
    b = g.shape[0]
    gw = upcast(g.detach())  # half precision: solved in float32
    scale = gw.abs().reshape(b, -1).amax(1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    gn = gw / safe.reshape((-1,) + (1,) * (g.ndim - 1))
    if solver == "seed":
        sn = solve_structured_seed(gn, lambda_grp, lambda_l1, steps, tv_iters, tv_step, eps)
        info: dict[str, Any] = {}
    else:
        sn, info = solve_structured_exact(gn, lambda_grp, lambda_l1, lambda_tv, tol=tol, max_iter=max_iter)
    info["objective"] = structured_objective(sn, gn, lambda_grp, lambda_l1, lambda_tv)
    info["scale"] = scale
    if normalized:
        return sn, info
    return (sn * scale.reshape((-1,) + (1,) * (g.ndim - 1))).to(g.dtype), info


def prox_options(
    lambda_grp: float,
    lambda_l1: float,
    lambda_tv: float,
    tv_iters: int,
    tv_step: float,
    steps: int,
    solver: str,
    eps: float,
    tol: float,
    max_iter: int,
) -> dict[str, Any]:
    """The keyword options of :func:`structured_prox` as a dict, validated now (so a bad option fails early).

    Args:
        lambda_grp, lambda_l1, lambda_tv, tv_iters, tv_step, steps, solver, eps, tol, max_iter: as in
            :func:`structured_prox`.

    Returns:
        ``{name: value}`` to pass as ``structured_prox(g, **options)``.

    Raises:
        ValueError: for an option that :func:`structured_prox` rejects.
    """
    options = {
        "lambda_grp": lambda_grp,
        "lambda_l1": lambda_l1,
        "lambda_tv": lambda_tv,
        "tv_iters": tv_iters,
        "tv_step": tv_step,
        "steps": steps,
        "solver": solver,
        "eps": eps,
        "tol": tol,
        "max_iter": max_iter,
    }
    structured_prox(torch.zeros(1, 1, 2), **options)
    return options


def structured_map(sn: torch.Tensor) -> torch.Tensor:
    """The scalar map ``(B, 1, *sp)``: ``||s||_2`` over channels, min-max normalised per item, computed from the
    normalised solution ``sn`` of ``structured_prox(..., normalized=True)`` (the same map as from ``s``, since the
    scale is one positive number per item, but tiny gradients cannot underflow in the squares)."""
    return minmax_normalize(l2_norm(sn, dim=1, keepdim=True))


class StructuredGradient(Explainer):
    """Structured gradients over any input-space explainer's ``(B, C, *spatial)`` map (seed 000).

    Args:
        explainer: an :class:`Explainer` returning ``(B, C, *spatial)`` (e.g. ``VanillaGrad(model)``) or a callable
            ``(x, class_idx) -> (B, C, *sp)`` together with ``nn_module``.
        lambda_grp: group-lasso weight (relative, see the module's scale convention).
        lambda_l1: l1 weight.
        lambda_tv: TV weight (used by ``"exact"`` and in the reported objective; not by the literal seed cycle).
        tv_iters: TV-flow steps per seed cycle.
        tv_step: TV-flow step size.
        steps: seed cycles.
        solver: ``"seed"`` (literal cycle) or ``"exact"`` (minimiser to tolerance ``tol``).
        output: ``"map"`` (default): ``(B, 1, *sp)`` scalar map ``||s||_2`` over channels, min-max normalised;
            ``"structured"``: the ``(B, C, *sp)`` structured gradient ``s``.
        eps: the seed's epsilon.
        tol: relative duality-gap tolerance of ``"exact"``.
        max_iter: iteration cap of ``"exact"``.
        nn_module: the model when ``explainer`` is a plain callable.

    After each call :attr:`last_info` holds the solver's info (``objective`` (B,), ``scale``; ``gap`` etc. for exact).

    Raises:
        ValueError: for negative weights, an unknown solver/output.
        TypeError: if the model cannot be determined.
    """

    def __init__(
        self,
        explainer: Explainer | Callable[..., torch.Tensor],
        lambda_grp: float = 0.05,
        lambda_l1: float = 0.01,
        lambda_tv: float = 0.2,
        tv_iters: int = 5,
        tv_step: float = 0.15,
        steps: int = 12,
        solver: str = "seed",
        output: str = "map",
        eps: float = 1e-8,
        tol: float = 1e-4,
        max_iter: int = 1000,
        nn_module: nn.Module | None = None,
    ) -> None:
        model = nn_module if nn_module is not None else getattr(explainer, "model", None)
        if not isinstance(model, nn.Module):
            raise TypeError("StructuredGradient needs the model: pass an Explainer or nn_module=...")
        super().__init__(model)
        if not callable(explainer):
            raise TypeError(f"explainer must be callable, got {type(explainer).__name__}.")
        if output not in ("map", "structured"):
            raise ValueError(f"unknown output {output!r}; choose 'map' or 'structured'.")
        self.options = prox_options(
            lambda_grp, lambda_l1, lambda_tv, tv_iters, tv_step, steps, solver, eps, tol, max_iter
        )
        self.base = explainer
        self.output = output
        self.last_info: dict[str, Any] | None = None

    def shared_source(self) -> tuple[Hashable, Explainer] | None:
        return wrapped_source(self.base)

    def base_maps(self, x: torch.Tensor, class_idx: Any = None, base_map: torch.Tensor | None = None) -> torch.Tensor:
        """The base explainer's ``(B, C, *sp)`` map for a validated plain tensor, or ``base_map`` if given."""
        return wrapped_base_map(self.base, x, class_idx, base_map)

    def explain(self, x: torch.Tensor, class_idx: Any = None, base_map: torch.Tensor | None = None) -> torch.Tensor:
        g = self.base_maps(x, class_idx, base_map)
        sn, info = structured_prox(g, normalized=True, **self.options)
        self.last_info = info
        if self.output == "structured":
            return sn * info["scale"].reshape((-1,) + (1,) * (g.ndim - 1))
        return structured_map(sn)
