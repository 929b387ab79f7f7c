r"""Mørch saliency maps for networks on PCA-projected volumes (Mørch et al., ICNN 1995; seed 002).

A training-set analysis, not an explainer: it maps how much the training cost of a fitted (projection + head)
model depends on each voxel, from the training volumes and their targets, and gives one map per training set.
Its protocol: ``MorchSaliency(head, projection)(volumes, targets)`` (a volume), ``.cost_changes(...)`` (flat, several
orders in one pass) and ``.retrain(...)`` (eq. 4). The arithmetic is in ``_cost_changes.py``.

Setting
-------
Training volumes ``x_j`` (``I`` voxels inside the mask, ``j = 1..J``), centred by the mean volume ``c``:
``X`` is the ``J x I`` matrix of rows ``x_j - c``. (The paper writes ``x_j`` for ``x_j - c``, "without loss
of generality"; every ``x`` below is centred, which is also what zeroing a basis row acts on.)
Basis ``B`` (``I x K``, :class:`~monai_saliency.models.pca.PCAProjection`), projections ``V = X B`` (rows
``v_j``), a differentiable head ``F`` on the projections (eq. 1's tanh net, or any ``nn.Module`` mapping
``(N, K) -> (N,)``; see :mod:`monai_saliency.analysis.heads` for the capabilities a head may expose), residuals
``e_j = y_j - F(v_j)`` and the cost (eq. 2)

    E(B) = (1/J) sum_j (y_j - F(v_j))^2.

The saliency of voxel ``i`` is the change of ``E`` when row ``i`` of ``B`` (component ``i`` of every basis
vector, eq. 3) is zeroed. That changes every projection by ``dv_ji = -x_ji B_i`` (``B_i`` = row ``i``, a
``K``-vector), so with ``phi_i(t) = E(B - t e_i B_i^T)``:

* **exact without retraining** (eq. 11, ``order="exact"``):
  ``dE_c,i = phi_i(1) - phi_i(0) = (1/J) sum_j [dF_ji^2 - 2 e_j dF_ji]``, ``dF_ji = F(v_j + dv_ji) - F(v_j)``.
  Computed for all voxels at once, chunked over voxels under ``chunk_bytes``; written as a difference
  ``dF`` (never as ``E_new - E``) so no cancellation against ``E`` occurs. For the tanh net the first layer
  is linear: ``w_a^T dv_ji = -x_ji P_ia`` with ``P = B w^T`` (``I x A``), so only ``I*J*A`` tanh's are needed
  and ``tanh(z+d) - tanh(z) = tanh(d) (1 - tanh(z) tanh(z+d))`` keeps ``dF`` accurate in float32.
* **first order** (eq. 7/8/10 first term, ``order="first"``): with ``g_j = dF/dv (v_j)`` (the paper's
  ``s_jk``; for eq. 1 ``s_jk = sum_a W_a (1 - h_aj^2) w_ak``),
  ``dE/dB = X^T dE/dV = -(2/J) X^T (e * G)`` and
  ``dE_1,i = sum_k dE/dB_ik (-B_ik) = (2/J) sum_k B_ik [X^T (e * G)]_ik = (2/J) sum_j e_j x_ji (g_j . B_i)``.
* **second order** (``order="second"``): ``dE_2,i = dE_1,i + (1/2) phi_i''(0)`` with a Hessian model:

  - ``hessian="gauss_newton"`` (default): the Gauss-Newton Hessian of ``E`` in the *joint* perturbation
    of the ``K`` entries ``B_ik`` that are zeroed together:
    ``(1/2) phi'' ~ (1/J) sum_j x_ji^2 (g_j . B_i)^2``.
  - ``hessian="gauss_newton_diag"``: the seed's eq. 10, which keeps only the ``k = k'`` terms:
    ``(1/J) sum_k sum_j s_jk^2 x_ji^2 B_ik^2``.
  - ``hessian="exact"``: the full second derivative (Gauss-Newton plus the residual-curvature term
    ``-(1/J) sum_j e_j dv^T (d^2F/dv^2) dv``), i.e. the true second-order Taylor term of ``phi_i``.
    Closed form for the tanh net (``d^2F/dv^2 = sum_a W_a (-2 h (1-h^2)) w_a w_a^T``); per-example Hessians
    via ``torch.func`` for other heads (``J K^2`` memory, ``I J K^2`` work: small problems).
* **with retraining** (eq. 4, ``order="retrain"``, chosen voxels only): the head's parameters are re-fitted
  on the perturbed projections ``V - x_{:,i} B_i^T`` (warm start at the trained weights, damped Newton to a
  gradient tolerance, all chosen voxels batched) and ``dE_i = E(W~^i, B~^i) - E(W*, B)``. The reference
  ``E(W*, B)`` is re-fitted by the same routine from the same start, so an incompletely converged original
  fit does not show up as a spurious saliency. If the head was trained with a ridge penalty the same
  objective is re-minimised, and the *data* cost ``E`` (eq. 2) is reported.

Where the seed is inconsistent or ambiguous, and what is done here
-------------------------------------------------------------------
1. Cross-``k`` second-order terms. Eq. 5 expands ``E`` with blocks ``d^2E/db_k db_k^T`` only, and eq. 7 then
   argues the off-diagonal entries vanish "since we compute the saliency for one input channel at a time".
   That is true for ``i != i'`` but not for ``k != k'``: zeroing voxel ``i`` moves all ``K`` entries
   ``B_i1..B_iK`` at once, and the mixed derivatives ``d^2E/dB_ik dB_ik'`` are not zero. The consistent
   Gauss-Newton second-order term is ``(1/J) sum_j x_ji^2 (sum_k s_jk B_ik)^2``; eq. 10 has
   ``(1/J) sum_j x_ji^2 sum_k s_jk^2 B_ik^2``. Default: the consistent one; the seed's is
   ``hessian="gauss_newton_diag"``. (The first-order term is the same in both.)
2. Gauss-Newton factor. The text before eq. 9 writes ``d^2E/db db^T ~ sum_j dF/db dF/db^T``, without the
   ``2/J`` that eq. 2's ``1/J`` and the square give; eq. 9 and 10 carry it (``(2/J)``, then ``(1/2)(2/J) =
   1/J``). Eq. 9/10's factors are used.
3. Sign of eq. 8 vs eq. 10. With ``db_ki = -b_ki`` eq. 8 gives ``+(2/J) sum e s x b`` as in eq. 10: consistent.
4. Centring. Eq. 1 and 8-10 use ``x``; since the paper replaces ``x - c`` by ``x``, the centred inputs are used
   (zeroing a basis row does not touch ``c``).
5. Negative saliencies. The first/second-order estimates, ``dE_c`` (when the weights do not minimise ``E``:
   ridge, early stopping, pruning, footnote 7) and retraining with a penalty can be negative. Footnote 7
   interprets them as zero: ``clip_negative=True``. Default: kept (False), since the sign is informative.
6. Size. The paper's ``I = 128 x 128 x 48`` is 786,432 voxels, not the printed 768,432.
7. Interpolation. With fewer examples ``J`` than parameters (``~K A``) the unpenalised net interpolates
   (``E -> 0``, ``e -> 0``): the first-order term (proportional to ``e``) then vanishes and the saliency is
   all second order, and retraining finds another interpolating minimum (retrained changes ~0). The paper's
   observation that the first order suffices (Fig. 2/4) therefore needs non-negligible residuals (early
   stopping, pruning, or a ridge penalty: ``TanhNet.fit(weight_decay=...)``); the saliency is always the
   change of the data cost ``E`` of eq. 2. On the synthetic studies (``data/synthetic/pet_phantom.py``) ridge 0.1 gives
   NMSE(first vs exact) of 0.004-0.02, ridge 1e-3 gives ~0.9 (second order, joint GN: <1e-5).

Cost
----
All paths stream over the voxels in chunks whose temporaries stay below ``chunk_bytes``; the input volumes are
read in their own dtype and centred/cast per chunk (no ``J x I`` copy in the computation dtype).

* projections ``V = (X - c) B``: one ``J x I x K`` GEMM pass (needed by every order; NaN/Inf in ``X`` are
  detected from ``V``, so there is no separate pass over the volumes).
* first + second order (joint Gauss-Newton, default): one more GEMM pass, ``P = (G B^T) * X`` (``J x c`` per
  chunk) gives ``dE_1 = (2/J) e^T P`` and the GN term ``(1/J) |P_:i|^2``: in total two GEMMs of ``O(I J K)``,
  i.e. the minimum (``V`` and ``G B^T`` are both unavoidable). The seed's diagonal variant needs
  ``X^T (e G)`` and ``(X^2)^T G^2`` instead (also ``O(I J K)``). ``hessian="exact"`` adds ``O(I J A)`` (tanh
  net) or ``O(I J K^2)`` (generic head).
* exact ``dE_c``: ``I J A`` tanh evaluations for eq. 1 (``O(I J)`` head evaluations on ``K``-vectors
  otherwise).
* retraining: a batched damped-Newton fit per chosen voxel (``P^2`` memory per voxel, ``P`` = parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from monai_saliency.analysis import _cost_changes as cc
from monai_saliency.analysis.heads import TanhHead
from monai_saliency.core import evaluation_mode
from monai_saliency.models.pca import PCAProjection

__all__ = ["HESSIANS", "ORDERS", "MorchSaliency"]

ORDERS = ("first", "second", "exact", "retrain")
HESSIANS = ("gauss_newton", "gauss_newton_diag", "exact")


class MorchSaliency:
    """Saliency of every input voxel as the change of training cost when it is removed from the basis.

    A training-set analysis: it needs the volumes *and* their targets, and returns one map for the set (not one map
    per input, and no class). The head runs in eval mode during every computation (no dropout, no BatchNorm update),
    and its parameters, their ``requires_grad`` flags and every sub-module's train/eval flag are unchanged after it.

    Usage::

        pca = PCAProjection().fit(volumes, mask=brain)
        net = TanhNet(pca.k, hidden=8); net.fit(pca(volumes), y, weight_decay=1e-3)
        saliency = MorchSaliency(net, pca, order="second")
        vol = saliency(volumes, y)                       # (1, *spatial) MetaTensor, 0 outside the mask
        parts = saliency.cost_changes(volumes, y, orders=("first", "second", "exact"))   # flat (I,) each

    Args:
        head: the network on the projections, ``(N, K) -> (N,)`` or ``(N, 1)``; any differentiable module (autograd).
            A head implementing :class:`~monai_saliency.analysis.heads.TanhHead` (``tanh_parameters()``, e.g.
            :class:`~monai_saliency.models.TanhNet`) gets the closed forms of eq. 8-10 (see ``closed_form``); one
            implementing :class:`~monai_saliency.analysis.heads.RetrainableHead` is retrained on its own objective.
        projection: the fitted :class:`PCAProjection` the head was trained on.
        order: default order for :meth:`__call__`: ``"first"``, ``"second"``, ``"exact"`` or ``"retrain"``.
        hessian: second-order model: ``"gauss_newton"`` (consistent GN, default), ``"gauss_newton_diag"``
            (the seed's eq. 10) or ``"exact"`` (true second derivative).
        clip_negative: set negative saliencies to 0 (the paper's footnote 7). Default False (kept).
        closed_form: ``"auto"`` (closed form when the head implements ``TanhHead``, autograd otherwise), True or
            False.
        chunk_bytes: memory bound of the temporaries of one voxel chunk (64 MiB: larger chunks gain nothing and
            fall out of cache in the exact path).
        dtype: computation dtype; default the projection's (float64).
        weight_decay: ridge coefficient for retraining; default the head's ``fit_result.weight_decay`` (or 0).
        retrain_tol: gradient tolerance of the retraining.
        retrain_max_iter: maximum damped-Newton iterations of the retraining.

    Raises:
        TypeError: if ``projection`` is not a PCAProjection or ``head`` not an nn.Module.
        ValueError: for an unknown order/hessian, an unfitted projection, ``closed_form=True`` for a head without
            ``tanh_parameters()``, or a closed-form head whose input size is not K.
    """

    def __init__(
        self,
        head: nn.Module,
        projection: PCAProjection,
        order: str = "second",
        hessian: str = "gauss_newton",
        clip_negative: bool = False,
        closed_form: bool | str = "auto",
        chunk_bytes: int = 64 * 2**20,
        dtype: torch.dtype | None = None,
        weight_decay: float | None = None,
        retrain_tol: float = 1e-10,
        retrain_max_iter: int = 200,
    ) -> None:
        if not isinstance(head, nn.Module):
            raise TypeError(f"head must be a torch.nn.Module, got {type(head).__name__}.")
        if not isinstance(projection, PCAProjection):
            raise TypeError(f"projection must be a fitted PCAProjection, got {type(projection).__name__}.")
        if not projection.fitted:
            raise ValueError("the projection is not fitted; call projection.fit(volumes, mask) first.")
        _check_choice("order", order, ORDERS)
        _check_choice("hessian", hessian, HESSIANS)
        if closed_form not in ("auto", True, False):
            raise ValueError(f"closed_form must be 'auto', True or False, got {closed_form!r}.")
        has_closed_form = isinstance(head, TanhHead)
        if closed_form is True and not has_closed_form:
            raise ValueError(
                "closed_form=True needs a head with tanh_parameters() (the TanhHead protocol, e.g. TanhNet); use "
                "'auto' or False for other heads."
            )
        if chunk_bytes < 2**16:
            raise ValueError(f"chunk_bytes={chunk_bytes} is too small; use at least 64 KiB.")
        self.head = head
        self.projection = projection
        self.order = order
        self.hessian = hessian
        self.clip_negative = bool(clip_negative)
        self.closed_form = has_closed_form if closed_form == "auto" else bool(closed_form)
        self.chunk_bytes = int(chunk_bytes)
        self.dtype = dtype or projection.dtype
        self.weight_decay = weight_decay
        self.retrain_tol = retrain_tol
        self.retrain_max_iter = retrain_max_iter
        if self.closed_form:
            k_head = cc.TanhPath(head.tanh_parameters(), self.dtype).in_features
            if k_head != projection.k:
                raise ValueError(f"the head takes {k_head} projections but the basis has K={projection.k}.")

    # ------------------------------------------------------------------ public API
    def __call__(
        self,
        x: torch.Tensor,
        targets: torch.Tensor | Sequence[float],
        order: str | None = None,
        voxels: torch.Tensor | Sequence[int] | None = None,
    ) -> MetaTensor:
        """Saliency volume of a training set.

        Args:
            x: training volumes ``(J, *spatial)`` or ``(J, 1, *spatial)`` (those the projection was fitted on, or
                any other set, e.g. held-out volumes, for a test-cost saliency).
            targets: ``(J,)`` targets ``y_j``.
            order: override of the default order.
            voxels: for ``order="retrain"`` (required): indices into the masked voxels (0..I-1) to retrain for.

        Returns:
            ``(1, *spatial)`` MetaTensor with ``x``'s affine (else the projection's), 0 outside the mask (and at
            voxels not retrained for).

        Raises:
            ValueError, TypeError: see :meth:`cost_changes`.
        """
        order = order or self.order
        _check_choice("order", order, ORDERS)
        if order == "retrain":
            if voxels is None:
                raise ValueError("order='retrain' needs voxels=<indices of masked voxels>; it retrains once per voxel.")
            idx = _voxel_index(voxels, self.projection.n_voxels)
            vals = self.retrain(x, targets, idx)
            flat = torch.zeros(self.projection.n_voxels, dtype=vals.dtype)
            flat[idx] = vals
        else:
            flat = self.cost_changes(x, targets, orders=(order,))[order]
        vol = self.projection.to_volume(flat)[None]
        affine = _affine_of(x)
        if affine is not None:
            vol.affine = affine
        return vol

    def cost_changes(
        self,
        x: torch.Tensor,
        targets: torch.Tensor | Sequence[float],
        orders: Sequence[str] = ("first", "second", "exact"),
        voxel_range: tuple[int, int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-voxel cost changes for several orders in one pass (shared projections, residuals, gradients).

        Args:
            x: volumes ``(J, *spatial)``.
            targets: ``(J,)``.
            orders: any of ``"first"``, ``"second"``, ``"exact"`` (retraining: :meth:`retrain`).
            voxel_range: ``(lo, hi)`` to compute only mask-order voxels ``lo..hi-1`` (the projections still use every
                voxel); concatenating disjoint ranges equals the full result, which is how processes share the work.

        Returns:
            ``{order: (I,) tensor}`` in mask order (:meth:`PCAProjection.to_volume` maps to a volume); clipped at 0
            if ``clip_negative``.

        Raises:
            ValueError: fewer than 2 volumes, shapes not matching the projection, NaN/Inf, target count mismatch,
                a head output that is not one value per example, a closed-form head whose ``tanh_parameters()``
                do not reproduce its output, or an unknown order.
        """
        for o in orders:
            _check_choice("order", o, ORDERS[:3])
        with evaluation_mode(self.head):  # the cost of the trained head, without dropout
            st, path = self._prepare(x, targets)
            if voxel_range is not None:
                lo, hi = (int(v) for v in voxel_range)
                if not 0 <= lo <= hi <= st.n_vox:
                    raise ValueError(
                        f"voxel_range {voxel_range} must satisfy 0 <= lo <= hi <= {st.n_vox} (mask voxels)."
                    )
                st.raw, st.mean, st.b, st.n_vox = st.raw[:, lo:hi], st.mean[lo:hi], st.b[lo:hi], hi - lo
            out: dict[str, torch.Tensor] = {}
            if "first" in orders or "second" in orders:
                first, second_term = cc.first_second(st, path, self.hessian, self._chunk, "second" in orders)
                if "first" in orders:
                    out["first"] = first
                if "second" in orders:
                    out["second"] = first + second_term
            if "exact" in orders:
                out["exact"] = path.exact(st, self._chunk)
        if self.clip_negative:
            out = {k: v.clamp_min(0) for k, v in out.items()}
        return out

    def retrain(
        self, x: torch.Tensor, targets: torch.Tensor | Sequence[float], voxels: torch.Tensor | Sequence[int]
    ) -> torch.Tensor:
        """Eq. 4: cost change after zeroing each chosen voxel's basis row **and re-fitting the head**.

        All chosen voxels are re-fitted together (batched damped Newton, chunked under ``chunk_bytes``), warm
        started at the current weights; see the module docstring for the reference cost. The objective is the
        head's own (:class:`~monai_saliency.analysis.heads.RetrainableHead`), else the mean squared error plus
        ``weight_decay`` times the squared norm of every parameter.

        Args:
            x: training volumes ``(J, *spatial)``.
            targets: ``(J,)``.
            voxels: indices into the masked voxels (``0..I-1``).

        Returns:
            ``(n,)`` cost changes (clipped at 0 if ``clip_negative``).

        Raises:
            ValueError: bad voxel indices or inputs (see :meth:`cost_changes`).
        """
        idx = _voxel_index(voxels, self.projection.n_voxels)
        wd = self.weight_decay
        if wd is None:
            fr = getattr(self.head, "fit_result", None)
            wd = float(getattr(fr, "weight_decay", 0.0) or 0.0)
        with evaluation_mode(self.head):
            st, _ = self._prepare(x, targets)
            v, y = st.v.to(st.head_dtype), st.y.to(st.head_dtype)
            objective, theta0 = cc.training_objective(self.head, v, y, wd)
            data_cost, _ = cc.training_objective(self.head, v, y, 0.0)
            n_par = theta0.numel()
            itemsize = torch.finfo(self.dtype).bits // 8
            per_problem = itemsize * (4 * n_par * n_par + 8 * st.j * max(st.k, n_par))
            chunk = max(1, self.chunk_bytes // per_problem)
            opts = {"tol": self.retrain_tol, "max_iter": self.retrain_max_iter, "dtype": self.dtype}
            ref = cc.refit(objective, data_cost, theta0, st.v[None], **opts)[0]
            values = []
            for start in range(0, idx.numel(), chunk):
                sel = idx[start : start + chunk]
                vp = st.v[None] - st.xcols(sel).T[:, :, None] * st.b[sel][:, None, :]  # (n, J, K)
                values.append(cc.refit(objective, data_cost, theta0, vp, **opts) - ref)
        vals = torch.cat(values)
        return vals.clamp_min(0) if self.clip_negative else vals

    # ------------------------------------------------------------------ internals
    def _path(self) -> cc.AutogradPath | cc.TanhPath:
        """The head-specific arithmetic: closed forms from ``tanh_parameters()`` (read per call: the head may have
        been re-fitted) or autograd."""
        if self.closed_form:
            return cc.TanhPath(self.head.tanh_parameters(), self.dtype)
        return cc.AutogradPath(self.head, self.dtype)

    def _prepare(self, x: torch.Tensor, targets: Any) -> tuple[cc.State, cc.AutogradPath | cc.TanhPath]:
        pca = self.projection
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor of volumes (J, *spatial), got {type(x).__name__}.")
        xp = x.as_tensor() if isinstance(x, MetaTensor) else x
        if xp.ndim < 2 or xp.shape[0] < 2:
            raise ValueError(f"need at least 2 volumes (J, *spatial), got shape {tuple(xp.shape)}.")
        xp = pca.check_volumes(xp, "x")  # (J, *spatial)
        mask = pca.mask.to(xp.device)
        # raw voxels in the input's dtype: a view when the mask is full, else one masked copy; centring and the
        # cast to the computation dtype happen per voxel chunk, so no (J, I) float64 copy is ever made
        raw = xp.reshape(xp.shape[0], -1) if bool(mask.all()) else xp[:, mask]
        if not raw.is_floating_point():
            raw = raw.to(self.dtype)
        j = raw.shape[0]
        y = torch.as_tensor(targets).to(dtype=self.dtype, device=raw.device).reshape(-1)
        if y.numel() != j:
            raise ValueError(f"{j} volumes but {y.numel()} targets.")
        if not torch.isfinite(y).all():
            raise ValueError("targets contain NaN/Inf.")
        b, mean, centred = self._basis(raw.device)
        st = cc.State(raw, mean, b, y, centred)
        step = self._chunk(2 * j)
        v = torch.zeros(j, b.shape[1], dtype=self.dtype, device=raw.device)
        for s0 in range(0, st.n_vox, step):  # V = (X - c) B, one pass over the voxels
            v += st.xs(s0, s0 + step) @ b[s0 : s0 + step]
        if not torch.isfinite(v).all():  # NaN/Inf anywhere in X propagate into V: no separate pass over X
            raise ValueError(
                "volumes contain NaN or Inf inside the mask (or overflow the projection); clean them or exclude those "
                "voxels via the mask."
            )
        head_dtype = _param_dtype(self.head, self.dtype)
        with torch.no_grad():
            f = cc.head_out(self.head, v.to(head_dtype)).to(self.dtype)
        st.set_outputs(v, f, head_dtype)
        path = self._path()
        path.check_outputs(st)
        return st, path

    def _basis(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Basis and centring vector in the computation dtype (cached while the projection's buffers are unchanged)."""
        pca = self.projection
        key = (pca.basis.data_ptr(), pca.basis._version, pca.mean.data_ptr(), pca.mean._version, self.dtype, device)
        cache = getattr(self, "_basis_cache", None)
        if cache is None or cache[0] != key:
            b = pca.basis.to(device=device, dtype=self.dtype)
            mean = pca.mean.to(device=device, dtype=self.dtype)
            cache = (key, (b, mean, not bool(mean.any())))
            self._basis_cache = cache
        return cache[1]

    def _chunk(self, per_voxel_elems: int) -> int:
        """Voxels per chunk whose temporaries (``per_voxel_elems`` each) stay under ``chunk_bytes``."""
        itemsize = torch.finfo(self.dtype).bits // 8
        return max(1, self.chunk_bytes // max(1, per_voxel_elems * itemsize))


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _param_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return default


def _voxel_index(voxels: Any, n_vox: int) -> torch.Tensor:
    idx = torch.as_tensor(voxels).reshape(-1)
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise TypeError(f"voxels must be integer indices into the {n_vox} masked voxels, got dtype {idx.dtype}.")
    idx = idx.long()
    if idx.numel() == 0:
        raise ValueError("voxels is empty; give at least one index.")
    if bool(((idx < 0) | (idx >= n_vox)).any()):
        raise ValueError(f"voxel indices must lie in [0, {n_vox}) (voxels inside the mask).")
    return idx


def _affine_of(x: Any) -> torch.Tensor | None:
    """The grid of the volumes ``x``: a MetaTensor's affine (one for a collated batch, whose volumes must share it).

    Raises:
        ValueError: if the volumes of a collated batch lie on different grids.
    """
    if not isinstance(x, MetaTensor):
        return None
    aff = x.affine
    if aff.ndim == 3:
        if not torch.allclose(aff, aff[:1].expand_as(aff), rtol=1e-5, atol=1e-5):
            raise ValueError(
                "the volumes have different affines: the saliency of a fitted model is one map on one voxel grid, "
                "so resample every volume to the grid the projection was fitted on (e.g. with Spacingd / a template) "
                "first."
            )
        aff = aff[0]
    return aff
