"""The cost-change arithmetic of Mørch saliency (see :mod:`monai_saliency.analysis.morch` for the formulas).

Two interchangeable paths compute the head-specific quantities: :class:`AutogradPath` for any differentiable head
(autograd, ``torch.func``), :class:`TanhPath` for a head exposing the parameters of eq. 1
(:class:`~monai_saliency.analysis.heads.TanhHead`: closed forms). Everything else (chunking over voxels, the
first/second-order sums, retraining) is shared.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from monai.data import MetaTensor
from torch import nn

from monai_saliency.analysis.heads import RetrainableHead
from monai_saliency.core import frozen_parameters, require_autograd
from monai_saliency.models.tanh_net import damped_newton

__all__ = ["AutogradPath", "State", "TanhPath", "first_second", "head_out", "refit", "training_objective"]

#: ``chunk(per_voxel_elements) -> voxels per chunk`` under the memory bound of the caller.
Chunker = Callable[[int], int]


class State:
    """Shared quantities of one saliency computation: raw voxels ``(J, I)`` (input dtype), centring ``c``, basis,
    targets; then projections ``V``, outputs ``F`` and residuals ``e``."""

    def __init__(
        self, raw: torch.Tensor, mean: torch.Tensor, b: torch.Tensor, y: torch.Tensor, zero_mean: bool
    ) -> None:
        self.raw, self.mean, self.b, self.y = raw, mean, b, y
        self.j, self.n_vox = raw.shape
        self.k = b.shape[1]
        self.dtype = b.dtype
        self.centred_input = zero_mean  # PCAProjection(center=False): c = 0, nothing to subtract

    def xs(self, start: int, stop: int) -> torch.Tensor:
        """Centred voxels ``start:stop`` of every volume, ``(J, c)`` in the computation dtype (treat as read-only:
        without centring and with matching dtypes it is a view of the input)."""
        chunk = self.raw[:, start:stop]
        if self.centred_input:
            return chunk.to(self.dtype)
        return chunk.to(self.dtype, copy=True).sub_(self.mean[start:stop])

    def xcols(self, idx: torch.Tensor) -> torch.Tensor:
        """Centred voxels at indices ``idx``, ``(J, n)``."""
        return self.raw[:, idx].to(self.dtype) - self.mean[idx]

    def set_outputs(self, v: torch.Tensor, f: torch.Tensor, head_dtype: torch.dtype) -> None:
        self.v, self.f, self.e, self.head_dtype = v, f, self.y - f, head_dtype


def head_out(head: nn.Module, v: torch.Tensor) -> torch.Tensor:
    """The head's output ``(N,)`` on projections ``(N, K)``.

    Raises:
        ValueError: if the head does not return one value per example.
    """
    out = head(v)
    if isinstance(out, MetaTensor):
        out = out.as_tensor()
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim != 1 or out.shape[0] != v.shape[0]:
        raise ValueError(
            f"the head must return one value per example, (N,) or (N, 1); got {tuple(out.shape)} for {v.shape[0]} inputs. "
            "For a multi-output network wrap it to return the output of interest."
        )
    return out


class AutogradPath:
    """Head-specific quantities of any differentiable head, by autograd."""

    closed_form = False

    def __init__(self, head: nn.Module, dtype: torch.dtype) -> None:
        self.head, self.dtype = head, dtype

    def check_outputs(self, st: State) -> None:
        """Nothing to check: the head's own outputs are used throughout."""

    def input_gradient(self, st: State) -> torch.Tensor:
        """``G (J, K)``: ``dF/dv`` at every training projection (eq. 8's ``s_jk``)."""
        require_autograd("MorchSaliency with a head without tanh_parameters() (the autograd path)")
        vr = st.v.to(st.head_dtype).detach().requires_grad_(True)
        with torch.enable_grad(), frozen_parameters(self.head):
            out = head_out(self.head, vr)
            (g,) = torch.autograd.grad(out.sum(), vr)  # rows are per-example gradients (examples independent)
        return g.to(self.dtype)

    def hessian_per_voxel(self, st: State) -> int:
        """Extra temporaries per voxel (elements) of :meth:`residual_curvature`."""
        return st.j * st.k

    def hessian_parts(self, st: State) -> torch.Tensor:
        """``e_j F''(v_j)``: per-example Hessians ``(J, K, K)`` (``J K^2`` memory)."""
        from torch.func import hessian, vmap

        head = self.head

        def f1(v1: torch.Tensor) -> torch.Tensor:
            return head_out(head, v1[None])[0]

        with torch.enable_grad(), frozen_parameters(head):
            hs = vmap(hessian(f1))(st.v.to(st.head_dtype).detach())
        return (st.e[:, None, None] * hs.to(self.dtype)).contiguous()

    def residual_curvature(self, parts: torch.Tensor, xs: torch.Tensor, bs: torch.Tensor) -> torch.Tensor:
        """``sum_j e_j x_ji^2 B_i^T F''(v_j) B_i`` for a voxel chunk: ``(c,)``."""
        quad = torch.einsum("ck,jkl,cl->jc", bs, parts, bs)  # (J, c)
        return (xs * xs * quad).sum(0)

    def exact(self, st: State, chunk: Chunker) -> torch.Tensor:
        """``dE_c`` of eq. 11: the head evaluated on every perturbed projection, chunked over voxels."""
        j = st.j
        out = torch.empty(st.n_vox, dtype=self.dtype, device=st.b.device)
        step = chunk(j * st.k * 6)
        with torch.no_grad():
            for s in range(0, st.n_vox, step):
                bs, xt = st.b[s : s + step], st.xs(s, s + step).T.contiguous()
                vp = st.v[None] - xt[:, :, None] * bs[:, None, :]  # (c, J, K)
                c = vp.shape[0]
                fp = head_out(self.head, vp.reshape(c * j, st.k).to(st.head_dtype)).to(self.dtype).reshape(c, j)
                df = fp - st.f
                out[s : s + step] = (df * (df - 2 * st.e)).mean(1)
        return out


class TanhPath:
    """Closed forms for eq. 1, ``F(v) = sum_a W_a tanh(w_a . v + beta_a) + W_0``, from the head's declared
    parameters (:meth:`~monai_saliency.analysis.heads.TanhHead.tanh_parameters`)."""

    closed_form = True

    def __init__(
        self, params: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None], dtype: torch.dtype
    ) -> None:
        w, wout, b, c = (None if p is None else torch.as_tensor(p).detach() for p in params)
        if w.ndim != 2 or wout.shape != (w.shape[0],) or (b is not None and b.shape != (w.shape[0],)):
            raise ValueError(
                "tanh_parameters() must return (w (A, K), W (A,), beta (A,) or None, W_0 or None); got shapes "
                f"{[None if p is None else tuple(p.shape) for p in (w, wout, b, c)]}."
            )
        self.w, self.wout, self.b, self.c, self.dtype = w, wout, b, c, dtype

    @property
    def in_features(self) -> int:
        return self.w.shape[1]

    def hidden(self, v: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``h_ja = tanh(w_a . v_j + beta_a)``, ``(J, A)``, in ``dtype`` (default the parameters')."""
        dtype = dtype or self.w.dtype
        z = v.to(dtype) @ self.w.to(dtype).T
        if self.b is not None:
            z = z + self.b.to(dtype)
        return torch.tanh(z)

    def check_outputs(self, st: State) -> None:
        """Check the declared parameters against the head's own outputs on the training projections.

        Raises:
            ValueError: if eq. 1 with the declared parameters does not reproduce the head's output.
        """
        f = self.hidden(st.v) @ self.wout.to(self.w.dtype)
        if self.c is not None:
            f = f + self.c.to(self.w.dtype)
        f = f.to(st.f.dtype)
        tol = 1e-4 * float(st.f.abs().max().clamp_min(torch.finfo(self.w.dtype).tiny))
        if not torch.allclose(f, st.f, rtol=1e-4, atol=tol):
            raise ValueError(
                "the head's tanh_parameters() do not reproduce its output (eq. 1: F(v) = sum_a W_a tanh(w_a . v + "
                f"beta_a) + W_0); max difference {float((f - st.f).abs().max()):.3g}. Fix tanh_parameters(), or pass "
                "closed_form=False to use autograd."
            )

    def input_gradient(self, st: State) -> torch.Tensor:
        """``s_jk = sum_a W_a (1 - h_ja^2) w_ak`` (eq. 8), ``(J, K)``."""
        h = self.hidden(st.v)
        return (((1 - h * h) * self.wout.to(h.dtype)) @ self.w.to(h.dtype)).to(self.dtype)

    def hessian_per_voxel(self, st: State) -> int:
        return 0

    def hessian_parts(self, st: State) -> torch.Tensor:
        """``Q (J, A)``: ``e_j W_a tanh''(z_ja)``; ``P = B w^T`` is formed per chunk."""
        h = self.hidden(st.v).to(self.dtype)
        return st.e[:, None] * self.wout.to(self.dtype) * (-2.0 * h * (1 - h * h))

    def residual_curvature(self, parts: torch.Tensor, xs: torch.Tensor, bs: torch.Tensor) -> torch.Tensor:
        p = bs @ self.w.to(self.dtype).T  # (c, A)
        return (((xs * xs).T @ parts) * p * p).sum(1)

    def exact(self, st: State, chunk: Chunker) -> torch.Tensor:
        """``dE_c`` of eq. 11 with ``I J A`` tanh's (the first layer is linear in the perturbation)."""
        j = st.j
        out = torch.empty(st.n_vox, dtype=self.dtype, device=st.b.device)
        w, wout = self.w.to(self.dtype), self.wout.to(self.dtype)
        z = st.v @ w.T
        if self.b is not None:
            z = z + self.b.to(self.dtype)
        t = torch.tanh(z)  # (J, A)
        a = w.shape[0]
        stable = torch.finfo(self.dtype).bits < 64
        step = chunk(j * a * (4 if stable else 3) + a)
        for s in range(0, st.n_vox, step):
            p = st.b[s : s + step] @ w.T  # (c, A)
            xt = st.xs(s, s + step).T.contiguous()  # (c, J); contiguous: the broadcast below streams it
            d = xt[:, :, None] * p.neg_()[:, None, :]  # (c, J, A): w_a . dv_ji
            if stable:  # tanh(z+d) - tanh(z) = tanh(d) (1 - tanh(z) tanh(z+d)), no cancellation
                td = torch.tanh(d)
                diff = td.mul_(d.add_(z).tanh_().mul_(t).neg_().add_(1))
            else:  # float64: the plain difference is accurate to ~1e-16 / |d|
                diff = d.add_(z).tanh_().sub_(t)
            df = diff @ wout  # (c, J)
            out[s : s + step] = (df * (df - 2 * st.e)).mean(1)
        return out


def first_second(
    st: State, path: AutogradPath | TanhPath, hessian: str, chunk: Chunker, need_second: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """First-order cost changes ``(I,)`` and, if ``need_second``, the second-order term ``(I,)``."""
    j, n_vox, dtype = st.j, st.n_vox, st.dtype
    g = path.input_gradient(st)  # (J, K)
    joint = need_second and hessian in ("gauss_newton", "exact")
    hess_exact = path.hessian_parts(st) if need_second and hessian == "exact" else None
    # temporaries per voxel (elements): centred voxels (J), then (K) products or the (J) matrix M
    per_voxel = 2 * j + (3 * j if joint else 3 * st.k) + (path.hessian_per_voxel(st) if hess_exact is not None else 0)
    step = chunk(per_voxel)
    first = torch.empty(n_vox, dtype=dtype, device=st.b.device)
    second = torch.empty_like(first) if need_second else None
    eg = st.e[:, None] * g
    g2 = g * g
    for s in range(0, n_vox, step):
        xs = st.xs(s, s + step)  # (J, c)
        bs = st.b[s : s + step]  # (c, K)
        if joint:
            # one GEMM per chunk: P_ji = x_ji (g_j . B_i) = -dF_j/dt gives both orders
            p = (g @ bs.T).mul_(xs)  # (J, c)
            first[s : s + step] = (st.e @ p).mul_(2.0 / j)
            term = torch.linalg.vector_norm(p, dim=0).square_().mul_(1.0 / j)
            if hess_exact is not None:
                term = term - (1.0 / j) * path.residual_curvature(hess_exact, xs, bs)
            second[s : s + step] = term
            continue
        first[s : s + step] = (2.0 / j) * (bs * (xs.T @ eg)).sum(1)  # dE/dB = X^T dE/dV, no (c, J) temporary
        if need_second:  # the seed's eq. 10: k-diagonal Gauss-Newton
            second[s : s + step] = (1.0 / j) * (bs * bs * ((xs * xs).T @ g2)).sum(1)
    return first, second


def training_objective(
    head: nn.Module, v: torch.Tensor, y: torch.Tensor, weight_decay: float
) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor]:
    """The head's training objective ``objective(theta, v)`` over flat parameters, and the current ``theta``.

    A :class:`~monai_saliency.analysis.heads.RetrainableHead` supplies its own; any other head gets the mean squared
    error plus ``weight_decay`` times the squared norm of all its parameters (``functional_call``).
    """
    if isinstance(head, RetrainableHead):
        return head.objective_fn(v, y, weight_decay), head.flat_parameters()
    from torch.func import functional_call

    named = list(head.named_parameters())
    names, shapes, sizes = [n for n, _ in named], [p.shape for _, p in named], [p.numel() for _, p in named]
    buffers = dict(head.named_buffers())

    def objective(theta: torch.Tensor, vv: torch.Tensor = v) -> torch.Tensor:
        params = {n: t.reshape(shp) for n, t, shp in zip(names, torch.split(theta, sizes), shapes)}
        out = functional_call(head, {**params, **buffers}, (vv,)).reshape(-1)
        obj = (y.to(theta.dtype) - out).pow(2).mean()
        if weight_decay:
            obj = obj + weight_decay * theta.pow(2).sum()
        return obj

    return objective, torch.cat([p.detach().reshape(-1) for _, p in named])


def refit(
    objective: Callable,
    data_cost: Callable,
    theta0: torch.Tensor,
    vp: torch.Tensor,
    tol: float,
    max_iter: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Re-fit ``n`` problems (projections ``vp (n, J, K)``) from ``theta0``; return their data costs ``(n,)``."""
    n = vp.shape[0]
    vp = vp.to(theta0.dtype)
    theta = theta0[None].expand(n, -1).contiguous()
    theta, _, gmax, n_iter = damped_newton(objective, theta, vp, tol=tol, max_iter=max_iter)
    if bool((gmax > tol).any()):
        warnings.warn(
            f"retraining stopped after {n_iter} iterations with max |grad| {float(gmax.max()):.3g} > retrain_tol "
            f"{tol:g} for {int((gmax > tol).sum())} of {n} problems; raise retrain_max_iter or loosen retrain_tol "
            "(cost changes below the resulting error are not resolved).",
            RuntimeWarning,
            stacklevel=3,
        )
    return torch.func.vmap(data_cost)(theta, vp).to(dtype)
