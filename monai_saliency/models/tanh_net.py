"""The two-layer tanh network of Mørch et al. (1995), eq. 1, on PCA projections, with least-squares training.

``F(v) = sum_a W_a tanh(w_a^T v [+ beta_a]) [+ W_0]`` maps a projection vector ``v`` (``K`` numbers, see
:class:`monai_saliency.models.pca.PCAProjection`) to one output. Eq. 1 of the paper has no biases; they are
optional here (``bias`` for the hidden units, ``output_bias`` for the output). Without an output bias ``F(0)=0``,
so centre the targets (e.g. graded levels ``y - mean(y)``, or ±1 labels of balanced classes).

Training minimises eq. 2, ``E = (1/J) sum_j (y_j - F(v_j))^2`` (plus an optional ridge penalty
``weight_decay * (|w|^2 + |W|^2)`` on the weights, biases excluded), full batch, with L-BFGS (strong Wolfe line
search) until the largest gradient component is below ``tol``. Initial weights come from a seeded generator.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["FitResult", "TanhNet", "damped_newton", "tanh_net_forward"]


def tanh_net_forward(
    v: torch.Tensor,
    w: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    """Functional eq. 1, batched over leading parameter axes.

    Args:
        v: projections ``(..., N, K)``.
        w: input weights ``(..., A, K)``.
        W: output weights ``(..., A)``.
        b: hidden biases ``(..., A)`` or None.
        c: output bias ``(...)`` or None.

    Returns:
        ``(..., N)`` outputs.
    """
    z = v @ w.transpose(-1, -2)
    if b is not None:
        z = z + b.unsqueeze(-2)
    out = (torch.tanh(z) * W.unsqueeze(-2)).sum(-1)
    if c is not None:
        out = out + c.unsqueeze(-1)
    return out


def damped_newton(
    objective: Callable[..., torch.Tensor],
    theta: torch.Tensor,
    *args: torch.Tensor,
    tol: float = 1e-9,
    max_iter: int = 200,
    damping: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Minimise ``n`` independent smooth objectives at once with Levenberg-damped Newton steps.

    Each problem ``m`` has its own parameter vector ``theta[m]`` and damping ``lambda_m``; a step solves
    ``(H_m + lambda_m I) d = -g_m`` with the exact Hessian (Cholesky; ``lambda_m`` grows until it succeeds),
    is accepted if the objective decreases (then ``lambda_m /= 3``) and rejected otherwise (``lambda_m *= 4``).
    Near a minimum the steps are Newton steps (quadratic convergence), so gradient tolerances far below
    L-BFGS's reach are met in a few dozen iterations for the few hundred parameters of eq. 1.

    Args:
        objective: ``objective(theta_m, *args_m)`` maps one parameter vector ``(P,)`` (and that problem's slices
            of ``args``) to a scalar; must be ``torch.func``-transformable.
        theta: starting points ``(n, P)``.
        args: per-problem data, batched along axis 0 (``n`` rows each).
        tol: stop when every problem's largest absolute gradient component is <= tol.
        max_iter: maximum iterations.
        damping: initial ``lambda`` relative to the mean absolute Hessian diagonal.

    Returns:
        ``(theta (n, P), objective values (n,), max |grad| (n,), iterations)``.
    """
    from torch.func import grad, hessian, vmap

    f0, g0, h0 = vmap(objective), vmap(grad(objective)), vmap(hessian(objective))

    def f(t: torch.Tensor) -> torch.Tensor:
        return f0(t, *args)

    def gfun(t: torch.Tensor) -> torch.Tensor:
        return g0(t, *args)

    def hfun(t: torch.Tensor) -> torch.Tensor:
        return h0(t, *args)

    theta = theta.detach().clone()
    _n, p = theta.shape
    eye = torch.eye(p, dtype=theta.dtype, device=theta.device)
    with torch.enable_grad():
        val = f(theta)
        g = gfun(theta)
        scale = None
        lam = None
        it = 0
        for it in range(1, max_iter + 1):
            gmax = g.abs().amax(dim=1)
            active = gmax > tol
            if not bool(active.any()):
                it -= 1
                break
            h = hfun(theta)
            if scale is None:
                scale = h.diagonal(dim1=1, dim2=2).abs().mean(dim=1).clamp_min(torch.finfo(theta.dtype).tiny)
                lam = damping * scale
            for _ in range(60):  # grow lambda where the damped Hessian is not positive definite
                chol, info = torch.linalg.cholesky_ex(h + lam[:, None, None] * eye)
                bad = info != 0
                if not bool(bad.any()):
                    break
                lam = torch.where(bad, lam * 4, lam)
            step = -torch.cholesky_solve(g[:, :, None], chol)[:, :, 0]
            step = torch.where(active[:, None], step, torch.zeros_like(step))
            cand = theta + step
            cval = f(cand)
            ok = active & torch.isfinite(cval) & (cval <= val)
            theta = torch.where(ok[:, None], cand, theta)
            val = torch.where(ok, cval, val)
            lam = torch.where(ok, lam / 3, torch.where(active, lam * 4, lam)).clamp_min(torch.finfo(theta.dtype).tiny)
            g = torch.where(ok[:, None], gfun(theta), g)
    return theta.detach(), val.detach(), g.abs().amax(dim=1).detach(), it


@dataclass
class FitResult:
    """Outcome of :meth:`TanhNet.fit`.

    Attributes:
        cost: final data cost ``E`` (eq. 2).
        objective: final minimised objective (``E`` plus the ridge penalty).
        grad_max: largest absolute gradient component of the objective at the end.
        n_iter: L-BFGS iterations used.
        converged: ``grad_max <= tol``.
        weight_decay: ridge coefficient used.
        tol: gradient tolerance used.
    """

    cost: float
    objective: float
    grad_max: float
    n_iter: int
    converged: bool
    weight_decay: float
    tol: float


class TanhNet(nn.Module):
    """``F(v) = sum_a W_a tanh(w_a^T v + beta_a) + W_0`` (eq. 1; biases optional).

    Args:
        in_features: ``K``, the number of projections.
        hidden: ``A``, the number of tanh units.
        bias: learn hidden biases ``beta_a`` (not in eq. 1).
        output_bias: learn an output bias ``W_0`` (not in eq. 1).
        dtype: parameter dtype (float64 by default: the saliency differences are small).
        seed: seed of the initial weights (same seed, same network).

    Attributes:
        weight_in: ``(A, K)`` rows ``w_a``.
        weight_out: ``(A,)`` entries ``W_a``.
        bias_in: ``(A,)`` or None.
        bias_out: scalar or None.
        fit_result: :class:`FitResult` of the last :meth:`fit`, or None.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 8,
        bias: bool = False,
        output_bias: bool = False,
        dtype: torch.dtype = torch.float64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if in_features < 1 or hidden < 1:
            raise ValueError(f"in_features and hidden must be >= 1, got {in_features}, {hidden}.")
        self.in_features, self.hidden = int(in_features), int(hidden)
        g = torch.Generator().manual_seed(seed)
        self.weight_in = nn.Parameter(
            torch.randn(hidden, in_features, generator=g, dtype=dtype) / math.sqrt(in_features)
        )
        self.weight_out = nn.Parameter(torch.randn(hidden, generator=g, dtype=dtype) / math.sqrt(hidden))
        self.bias_in = nn.Parameter(torch.zeros(hidden, dtype=dtype)) if bias else None
        self.bias_out = nn.Parameter(torch.zeros((), dtype=dtype)) if output_bias else None
        self.seed = seed
        self.fit_result: FitResult | None = None

    def _check_v(self, v: torch.Tensor) -> torch.Tensor:
        if v.ndim != 2 or v.shape[1] != self.in_features:
            raise ValueError(f"projections must be (N, {self.in_features}), got {tuple(v.shape)}.")
        return v.to(self.weight_in.dtype)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Outputs ``(N,)`` for projections ``(N, K)``."""
        v = self._check_v(v)
        return tanh_net_forward(v, self.weight_in, self.weight_out, self.bias_in, self.bias_out)

    def hidden_activations(self, v: torch.Tensor) -> torch.Tensor:
        """``h_{ja} = tanh(w_a^T v_j + beta_a)``: ``(N, A)``."""
        v = self._check_v(v)
        z = v @ self.weight_in.T
        if self.bias_in is not None:
            z = z + self.bias_in
        return torch.tanh(z)

    def input_gradient(self, v: torch.Tensor) -> torch.Tensor:
        """Closed-form ``dF/dv``: ``s_{jk} = sum_a W_a (1 - h_{ja}^2) w_{a,k}`` (the paper's ``s_jk``), ``(N, K)``."""
        h = self.hidden_activations(v)
        return ((1 - h * h) * self.weight_out) @ self.weight_in

    def tanh_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The parameters of eq. 1, detached: ``(w (A, K), W (A,), beta (A,) or None, W_0 or None)``.

        This is the :class:`~monai_saliency.analysis.heads.TanhHead` capability: Mørch saliency then uses the closed
        forms of eq. 8-10 instead of autograd.
        """
        params = (self.weight_in, self.weight_out, self.bias_in, self.bias_out)
        return tuple(None if p is None else p.detach() for p in params)

    def penalty(self) -> torch.Tensor:
        """``|w|^2 + |W|^2`` (biases excluded)."""
        return self.weight_in.pow(2).sum() + self.weight_out.pow(2).sum()

    def fit(
        self,
        v: torch.Tensor,
        y: torch.Tensor,
        weight_decay: float = 0.0,
        tol: float = 1e-9,
        max_iter: int | None = None,
        optimizer: str = "auto",
        reinit: bool = True,
    ) -> FitResult:
        """Full-batch least squares (eq. 2) to a gradient tolerance.

        Args:
            v: training projections ``(J, K)``.
            y: targets ``(J,)`` (graded levels for regression, ±1 for classification).
            weight_decay: ridge coefficient on the weights (0: plain eq. 2).
            tol: stop when the largest absolute gradient component of the objective is <= tol.
            max_iter: maximum iterations (default 300 for Newton, 20000 for L-BFGS).
            optimizer: ``"newton"`` (:func:`damped_newton`, exact Hessian), ``"lbfgs"`` (torch L-BFGS, strong
                Wolfe line search) or ``"auto"`` (Newton up to 3000 parameters).
            reinit: restart from the seeded initial weights (scaled to the data) instead of the current ones.

        Returns:
            :class:`FitResult` (also stored as ``self.fit_result``). A warning is issued if ``tol`` was not reached.

        Raises:
            ValueError: for mismatched shapes, fewer than 2 examples, NaN/Inf data or an unknown optimizer.
        """
        v = self._check_v(v).detach()
        y = torch.as_tensor(y).to(v).reshape(-1).detach()
        if y.shape[0] != v.shape[0]:
            raise ValueError(f"{v.shape[0]} projections but {y.shape[0]} targets.")
        if v.shape[0] < 2:
            raise ValueError("need at least 2 training examples.")
        if not (torch.isfinite(v).all() and torch.isfinite(y).all()):
            raise ValueError("projections or targets contain NaN/Inf.")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        n_par = sum(p.numel() for p in self.parameters())
        if optimizer == "auto":
            optimizer = "newton" if n_par <= 3000 else "lbfgs"
        if optimizer not in ("newton", "lbfgs"):
            raise ValueError(f"optimizer must be 'newton', 'lbfgs' or 'auto', got {optimizer!r}.")
        if reinit:
            self._reinit(v, y)
        if optimizer == "newton":
            theta, _, gmax, n_iter = damped_newton(
                self.objective_fn(v, y, weight_decay), self.flat_parameters()[None], tol=tol, max_iter=max_iter or 300
            )
            self.load_flat_parameters(theta[0])
            grad_max = float(gmax[0])
        else:
            grad_max, n_iter = self._fit_lbfgs(v, y, weight_decay, tol, max_iter or 20000)
        with torch.no_grad():
            cost = float((y - self(v)).pow(2).mean())
            obj = cost + weight_decay * float(self.penalty())
        res = FitResult(cost, obj, grad_max, n_iter, grad_max <= tol, float(weight_decay), float(tol))
        if not res.converged:
            warnings.warn(
                f"TanhNet.fit ({optimizer}) stopped after {n_iter} iterations with max |grad| {grad_max:.3g} > tol {tol:g}; "
                "raise max_iter or loosen tol.",
                RuntimeWarning,
                stacklevel=2,
            )
        self.fit_result = res
        return res

    def _fit_lbfgs(
        self, v: torch.Tensor, y: torch.Tensor, weight_decay: float, tol: float, max_iter: int
    ) -> tuple[float, int]:
        params = list(self.parameters())
        opt = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=max_iter,
            max_eval=int(max_iter * 1.25) + 10,
            tolerance_grad=tol,
            tolerance_change=0.0,
            history_size=50,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            obj = (y - self(v)).pow(2).mean()
            if weight_decay:
                obj = obj + weight_decay * self.penalty()
            obj.backward()
            return obj

        with torch.enable_grad():
            opt.step(closure)
            closure()
        grad_max = max(float(p.grad.abs().max()) for p in params)
        n_iter = int(opt.state[params[0]].get("n_iter", 0))
        for p in params:
            p.grad = None
        return grad_max, n_iter

    # ------------------------------------------------------------------ flat parameter view
    def flat_parameters(self) -> torch.Tensor:
        """All parameters as one detached vector ``(P,)``: ``w`` (row-major), ``W``, then the biases present."""
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])

    def unflatten(
        self, theta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Split ``(..., P)`` into ``(w (..., A, K), W (..., A), b or None, c or None)``."""
        a, k = self.hidden, self.in_features
        lead = theta.shape[:-1]
        w = theta[..., : a * k].reshape(*lead, a, k)
        W = theta[..., a * k : a * k + a]
        pos = a * k + a
        b = c = None
        if self.bias_in is not None:
            b = theta[..., pos : pos + a]
            pos += a
        if self.bias_out is not None:
            c = theta[..., pos]
        return w, W, b, c

    @torch.no_grad()
    def load_flat_parameters(self, theta: torch.Tensor) -> None:
        """Copy a flat vector (as from :meth:`flat_parameters`) into the parameters."""
        pos = 0
        for p in self.parameters():
            p.copy_(theta[pos : pos + p.numel()].reshape(p.shape))
            pos += p.numel()

    def objective_fn(
        self, v: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The training objective as a function of the flat parameters (``torch.func``-transformable).

        Called as ``objective(theta)`` it uses the given ``v``; ``objective(theta, v_m)`` uses other projections
        (e.g. per-problem ``v_m`` batched through :func:`damped_newton`'s ``args``).
        """
        a, k = self.hidden, self.in_features

        def objective(theta: torch.Tensor, vv: torch.Tensor = v) -> torch.Tensor:
            w, W, b, c = self.unflatten(theta)
            e = y - tanh_net_forward(vv, w, W, b, c)
            obj = e.pow(2).mean()
            if weight_decay:
                obj = obj + weight_decay * theta[: a * k + a].pow(2).sum()
            return obj

        return objective

    @torch.no_grad()
    def _reinit(self, v: torch.Tensor, y: torch.Tensor) -> None:
        g = torch.Generator().manual_seed(self.seed)
        k, a = self.in_features, self.hidden
        scale_v = float(v.pow(2).sum(1).mean().sqrt()) or 1.0  # typical |v|: pre-activations start at O(1)
        scale_y = float(y.std()) or 1.0
        self.weight_in.copy_(torch.randn(a, k, generator=g, dtype=torch.float64).to(self.weight_in) / scale_v)
        self.weight_out.copy_(
            torch.randn(a, generator=g, dtype=torch.float64).to(self.weight_out) * scale_y / math.sqrt(a)
        )
        if self.bias_in is not None:
            self.bias_in.zero_()
        if self.bias_out is not None:
            self.bias_out.copy_(y.mean())

    def extra_repr(self) -> str:
        return f"K={self.in_features}, A={self.hidden}, bias={self.bias_in is not None}, output_bias={self.bias_out is not None}"
