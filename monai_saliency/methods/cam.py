"""Class activation maps: Grad-CAM, Grad-CAM++, Eigen-CAM and Signature Activation, batched, 2D and 3D.

Cost model (DESIGN §7): one forward pass plus a backward pass that runs only from the class score back
to the hooked activation. The hooked layer's output is replaced (during an explanation only) by a fresh
leaf tensor that requires grad, and the parameters are frozen for the call, so no graph is built for
the layers before the target layer, no input gradient and no weight gradient is computed. Eigen-CAM and
Signature Activation are gradient-free (one forward pass under ``no_grad``, then a batched eigendecomposition or the
DCT-sign energy of :mod:`monai_saliency.ops.signature`).

Every map is ``(B, 1, *spatial)`` at the input's spatial size (linear / bilinear / trilinear upsampling,
``align_corners=False``, as MONAI's ``default_upsampler``) and min-max normalised per item to ``[0, 1]``
(``normalize=False`` keeps raw values); a constant map (e.g. all-zero after the ReLU) gives zeros, never NaN.
Note that MONAI's ``default_normalizer`` maps ``(min, max) -> (1, 0)`` (it flips); ours maps it to ``(0, 1)``.

Targets: Grad-CAM and Grad-CAM++ back-propagate any target (``class_idx``, or ``target=`` a
:mod:`~monai_saliency.core.targets` target, e.g. ``RegionTarget(k)`` for a segmentation network: Seg-Grad-CAM).
Eigen-CAM and Signature Activation are class-agnostic: they read the layer's activations only, so a target is
validated and ignored (the map is the same for every target; a metric still scores it against the target).
Transformer layers: ``reshape_transform=TokenGrid(patch_size)`` (:mod:`monai_saliency.ops.tokens`) folds tokens
``(B, N, C)`` (with or without a class token) onto their 2D / 3D patch grid, for activations and gradients alike;
any callable ``tokens -> (B, C, *grid)`` (pytorch-grad-cam's convention) works too. Layers that are spatial already
(SwinUNETR's ``swinViT.layers*`` and ``encoder*`` stages) need none.

Per-item targets are selected with ``gather`` (``logits.gather(1, idx[:, None]).sum()``); MONAI's batched
Grad-CAM scores ``logits[:, idx]`` (a ``B x B`` block) so each item's map mixes every item's target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_saliency.core import ActivationHooks, TargetLike, as_target, frozen_parameters, require_autograd
from monai_saliency.methods.base import Explainer
from monai_saliency.ops.normalize import minmax_normalize
from monai_saliency.ops.precision import stable_eigh
from monai_saliency.ops.resize import RESIZE_MODES, upsample_maps
from monai_saliency.ops.signature import DEFAULT_MAX_ELEMENTS, check_signature_options, signature_map
from monai_saliency.ops.tokens import TokenGrid

__all__ = ["EigenCAM", "GradCAM", "GradCAMpp", "SignatureActivation", "upsample_maps"]


class _LeafHooks(ActivationHooks):
    """Forward hooks that, while capturing, make each hooked output differentiable at the least cost.

    Parameters are frozen and the input does not require grad during an explanation, so the first hooked
    layer's output carries no graph: it is replaced by ``leaf.clone()`` with
    ``leaf = output.detach().requires_grad_()`` and ``leaf`` is recorded (no graph is built before it).
    A hooked output that already requires grad (a layer downstream of another hooked layer) is recorded as
    is and replaced by its clone. Gradients w.r.t. the recorded tensors are exactly the gradients w.r.t.
    the layers' outputs; the clones let later in-place operations (``ReLU(inplace=True)``) run. Outside
    :meth:`capture` the hooks are inert. With ``detach=False`` (methods that need no gradient) they are the plain
    :class:`~monai_saliency.methods.base.ActivationHooks`.
    """

    def __init__(self, model: nn.Module, layer_names: str | Sequence[str], detach: bool = True) -> None:
        self.detach = detach
        super().__init__(model, layer_names)

    def _record(self, name: str, output: torch.Tensor) -> torch.Tensor:
        if not self.detach:
            return output
        if not output.is_floating_point():
            raise RuntimeError(f"layer {name!r} returned a non-float tensor ({output.dtype}); hook another layer.")
        return output if output.requires_grad else output.detach().requires_grad_(True)


class _CAMBase(Explainer):
    """Shared machinery of the CAM family (hooks, upsampling, normalisation, multi-layer fusion).

    With several ``target_layers`` the per-layer maps are upsampled, min-max normalised per item and
    averaged (then normalised again when ``normalize``), as pytorch-grad-cam does.
    """

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: str | Sequence[str],
        upsample_mode: str = "linear",
        normalize: bool = True,
        spatial_dims: int | None = None,
        detach_hooks: bool = True,
        reshape_transform: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        super().__init__(nn_module, target_layers=None, spatial_dims=spatial_dims)
        if upsample_mode not in RESIZE_MODES:
            raise ValueError(f"unknown upsample_mode {upsample_mode!r}; choose one of {RESIZE_MODES}.")
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(f"reshape_transform must be callable, got {type(reshape_transform).__name__}.")
        self.hooks = _LeafHooks(nn_module, target_layers, detach=detach_hooks)
        self.upsample_mode = upsample_mode
        self.normalize = normalize
        self.reshape_transform = reshape_transform

    def _reshape(self, act: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A hooked layer's output (or its gradient) as a feature map: ``reshape_transform`` applied, if any (a
        :class:`~monai_saliency.ops.tokens.TokenGrid` also gets the input's spatial size)."""
        if self.reshape_transform is None:
            return act
        if isinstance(self.reshape_transform, TokenGrid):
            out = self.reshape_transform(act, x.shape[2:])
        else:
            out = self.reshape_transform(act)
        if not isinstance(out, torch.Tensor) or out.ndim < 3 or out.shape[0] != act.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"reshape_transform must return (B, C, *spatial) feature maps, got {got}.")
        return out

    def _finish(self, layer_maps: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        ups = [upsample_maps(m, spatial, self.upsample_mode) for m in layer_maps]
        if len(ups) == 1:
            out = ups[0]
            return minmax_normalize(out) if self.normalize else out
        fused = torch.stack([minmax_normalize(m) for m in ups], 0).mean(0)
        return minmax_normalize(fused) if self.normalize else fused

    def _scores_and_grads(
        self, x: torch.Tensor, class_idx: TargetLike
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """Forward once; back-propagate each item's target score to the hooked activations only.

        Returns:
            ``(activations, gradients, per-item scores (B,), class indices (B,) or None)``, all detached; with a
            ``reshape_transform`` the activations and gradients are reshaped to ``(B, C, *grid)``.

        Raises:
            RuntimeError: under ``torch.inference_mode()``, or if a layer gets no gradient from the score.
        """
        require_autograd(type(self).__name__)
        with torch.enable_grad(), frozen_parameters(self.model):
            output, acts = self.forward_with_activations(x.detach())
            target = as_target(class_idx).bind(output.detach(), x.shape[0])
            scores = target(output)
            names = list(self.hooks.names)
            if not scores.requires_grad:
                raise RuntimeError(
                    f"the class score does not depend on layers {names} through autograd (the model detaches or "
                    "runs under no_grad after them); choose a layer on the differentiable path to the output."
                )
            grads = torch.autograd.grad(scores.sum(), [acts[n] for n in names], allow_unused=True)
        missing = [n for n, g in zip(names, grads) if g is None]
        if missing:
            raise RuntimeError(
                f"layers {missing} get no gradient from the class score; choose layers whose output reaches the "
                "classifier head (e.g. the last convolutional block)."
            )
        acts_d = {n: self._reshape(acts[n].detach(), x) for n in names}
        grads_d = {n: self._reshape(g.detach(), x) for n, g in zip(names, grads)}
        return acts_d, grads_d, scores.detach(), target.class_indices

    @staticmethod
    def _check_spatial(act: torch.Tensor, name: str, x: torch.Tensor | None = None) -> None:
        if act.ndim < 3:
            raise ValueError(
                f"layer {name!r} output has shape {tuple(act.shape)} with no spatial axes; CAM needs a feature map "
                "(B, C, *spatial): choose a convolutional layer before global pooling."
            )
        if x is not None and act.ndim != x.ndim:
            raise ValueError(
                f"layer {name!r} outputs shape {tuple(act.shape)} for an input {tuple(x.shape)}: not a feature map "
                "with the input's spatial axes. For transformer tokens (B, N, C) pass "
                "reshape_transform=TokenGrid(patch_size) (monai_saliency.ops.tokens); else choose another layer."
            )


class GradCAM(_CAMBase):
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k w_k A_k)`` with ``w_k`` the spatial mean of ``dS_c/dA_k``.

    Equals ``monai.visualize.GradCAM`` for a batch of one (up to MONAI's flipped normaliser), and is correct
    for ``B > 1`` with a different target per item.

    Args:
        nn_module: classifier returning ``(B, K)`` scores.
        target_layers: layer name(s) with a ``(B, C, *sp)`` output (``module.`` prefix optional).
        upsample_mode: ``"linear"`` (default, like MONAI) or ``"nearest"``.
        normalize: min-max normalise each item to ``[0, 1]`` (default True).
        spatial_dims: required number of spatial axes of the input, or None.
        reshape_transform: ``tokens -> (B, C, *grid)`` for transformer layers, e.g. ``TokenGrid(patch_size)``.

    Returns (on call):
        ``(B, 1, *spatial)`` maps at the input's size.

    Raises (on call):
        RuntimeError: if a target layer gets no gradient from the score.
        ValueError: if a target layer has no spatial axes.
    """

    def explain(self, x: torch.Tensor, class_idx: TargetLike = None) -> torch.Tensor:
        acts, grads, _, _ = self._scores_and_grads(x, class_idx)
        maps = []
        for name in self.hooks.names:  # loop over target layers (usually one), not over items
            a, g = acts[name], grads[name]
            self._check_spatial(a, name, x)
            weights = g.flatten(2).mean(2)[(...,) + (None,) * (a.ndim - 2)]
            maps.append(F.relu((weights * a).sum(1, keepdim=True)))
        return self._finish(maps, x)


class GradCAMpp(_CAMBase):
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19), batched.

    With ``g = dS_c/dA`` at channel ``k`` and position ``ij`` of the hooked layer::

        alpha_kij = g_kij^2 / (2 g_kij^2 + (sum_ab A_kab) g_kij^3)      (eq. 19)
        w_k       = sum_ij alpha_kij ReLU(g_kij)
        map       = ReLU(sum_k w_k A_k)

    This is the closed form the paper derives for ``Y_c = exp(S_c)`` (its higher derivatives are powers of the
    first one); like pytorch-grad-cam we use the gradients of ``S_c`` and drop the per-item factor ``exp(S_c)``
    of the weights, which cancels in the min-max normalisation and overflows for large logits (``exp_score=True``
    restores it, as MONAI does, for raw maps). Only positions with ``g > 0`` contribute, so the weights are
    computed in the equivalent stable form ``ReLU(g) / (2 + (sum_ab A_kab) g)`` (no ``g^2`` underflow, the same
    value for an item alone or in any batch); positions where the denominator vanishes (possible only when
    ``sum_ab A_kab < 0``, i.e. a layer with negative activations) contribute 0.

    Where MONAI (1.6.1) differs: its denominator is ``2 g^2 + sum_ab(A_kab g_kab^3)`` (the activation-weighted
    sum of ``g^3``, one number per channel) instead of eq. 19's ``2 g_kij^2 + (sum_ab A_kab) g_kij^3`` (the sum
    runs over the activations only, ``g_kij^3`` is per position), and it adds ``1e-7`` to it; for ``B > 1`` it
    also multiplies a ``B x B`` score block into the gradients. Per-item scores are selected with ``gather`` here.

    Args:
        nn_module: classifier returning ``(B, K)`` scores.
        target_layers: layer name(s) with a ``(B, C, *sp)`` output.
        upsample_mode: ``"linear"`` or ``"nearest"``.
        normalize: min-max normalise each item to ``[0, 1]``.
        spatial_dims: required number of spatial axes of the input, or None.
        exp_score: multiply the weights by ``exp(S_c)`` as in the paper/MONAI (only matters if not normalising).
        eps: added to eq. 19's full denominator ``2 g^2 + (sum A) g^3``. The default 0 is the paper's formula;
            pytorch-grad-cam adds ``1e-6`` (MONAI ``1e-7``), which shrinks ``alpha`` wherever ``g^2`` is not much
            larger than ``eps`` (small gradients), so its maps depend on the scale of the gradients.
        reshape_transform: ``tokens -> (B, C, *grid)`` for transformer layers, e.g. ``TokenGrid(patch_size)``.

    Returns (on call):
        ``(B, 1, *spatial)`` maps at the input's size.

    Raises:
        ValueError: if ``eps`` is negative or not finite.
    """

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: str | Sequence[str],
        upsample_mode: str = "linear",
        normalize: bool = True,
        spatial_dims: int | None = None,
        exp_score: bool = False,
        eps: float = 0.0,
        reshape_transform: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        if not (math.isfinite(eps) and eps >= 0.0):
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}.")
        super().__init__(
            nn_module, target_layers, upsample_mode, normalize, spatial_dims, reshape_transform=reshape_transform
        )
        self.exp_score = exp_score
        self.eps = float(eps)

    @staticmethod
    def weights(acts: torch.Tensor, grads: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
        """Eq. 19 channel weights ``w_k = sum_ij alpha_kij ReLU(g_kij)`` of activations and gradients ``(B, C, *sp)``.

        Args:
            acts: activations ``A``.
            grads: gradients ``g = dS_c/dA`` (same shape).
            eps: added to the full denominator ``2 g^2 + (sum A) g^3``.

        Returns:
            ``(B, C)`` weights, computed in at least float32.
        """
        dtype = torch.promote_types(acts.dtype, torch.float32)
        a, g = acts.to(dtype), grads.to(dtype)
        act_sum = a.flatten(2).sum(2)[(...,) + (None,) * (a.ndim - 2)]  # sum_ab A_kab, (B, C, 1, ...)
        pos = g > 0
        gp = torch.where(pos, g, torch.ones_like(g))
        # alpha * ReLU(g) = g^3 / (g^2 (2 + S g) + eps) = g / (2 + S g + eps / g^2) for g > 0, else 0
        denom = 2.0 + act_sum * gp
        if eps:
            denom = denom + eps / gp.square()
        ok = pos & (denom != 0)
        term = torch.where(ok, gp / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(g))
        return term.flatten(2).sum(2)

    def explain(self, x: torch.Tensor, class_idx: TargetLike = None) -> torch.Tensor:
        acts, grads, scores, _ = self._scores_and_grads(x, class_idx)
        maps = []
        for name in self.hooks.names:
            a, g = acts[name], grads[name]
            self._check_spatial(a, name, x)
            expand = (...,) + (None,) * (a.ndim - 2)
            weights = self.weights(a, g, self.eps)
            if self.exp_score:
                weights = weights * scores.to(weights.dtype).exp()[:, None]
            maps.append(F.relu((weights[expand] * a.to(weights.dtype)).sum(1, keepdim=True)).to(a.dtype))
        return self._finish(maps, x)


class EigenCAM(_CAMBase):
    """Eigen-CAM (Muhammad & Yeasin 2020): projection of a layer's activations on their first principal component.

    Class-agnostic and gradient-free: one forward pass under ``no_grad`` and one batched eigendecomposition.
    For each item the activations ``A`` ``(C, *sp)`` are read as an ``N x C`` matrix (``N`` positions), centred
    over the positions (``center=True``, as pytorch-grad-cam; ``False`` gives the paper's un-centred SVD), and
    projected on the first right singular vector (computed from the smaller Gram matrix). Its sign is
    arbitrary: it is fixed per item so the projection correlates positively with the channel-mean
    activation ``A.mean(0)``. Then ``ReLU`` (``relu=True``, pytorch-grad-cam's convention), upsampling and
    min-max normalisation.

    Args:
        nn_module: the network (its output is not used).
        target_layers: layer name(s) with a ``(B, C, *sp)`` output.
        upsample_mode: ``"linear"`` or ``"nearest"``.
        normalize: min-max normalise each item to ``[0, 1]``.
        spatial_dims: required number of spatial axes of the input, or None.
        center: centre the activation matrix over positions before the SVD.
        relu: keep only the positive part of the (sign-fixed) projection.
        reshape_transform: ``tokens -> (B, C, *grid)`` for transformer layers, e.g. ``TokenGrid(patch_size)``.

    Returns (on call):
        ``(B, 1, *spatial)`` maps; ``class_idx`` / ``target`` is validated and ignored (class-agnostic).
    """

    class_agnostic = True

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: str | Sequence[str],
        upsample_mode: str = "linear",
        normalize: bool = True,
        spatial_dims: int | None = None,
        center: bool = True,
        relu: bool = True,
        reshape_transform: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        super().__init__(nn_module, target_layers, upsample_mode, normalize, spatial_dims, False, reshape_transform)
        self.center = center
        self.relu = relu

    @staticmethod
    def projection(acts: torch.Tensor, center: bool = True) -> torch.Tensor:
        """Sign-fixed first-principal-component projection of activations ``(B, C, *sp)`` -> ``(B, 1, *sp)``.

        Args:
            acts: activations.
            center: centre over positions before the SVD.

        Returns:
            Projection whose Pearson correlation with ``acts.mean(1)`` is >= 0 for every item.
        """
        b, c = acts.shape[:2]
        work = acts if acts.dtype in (torch.float32, torch.float64) else acts.float()
        m = work.flatten(2).transpose(1, 2)  # (B, N, C)
        if center:
            m = m - m.mean(1, keepdim=True)
        n, c = m.shape[1:]
        # first principal direction from the smaller Gram matrix (batched eigh; 4-5x faster than a thin SVD)
        if n >= c:
            _, vecs = stable_eigh(m.transpose(1, 2) @ m)  # (B, C, C), ascending eigenvalues
            proj = (m @ vecs[..., -1:].to(m.dtype))[..., 0]  # M v1
        else:
            vals, vecs = stable_eigh(m @ m.transpose(1, 2))  # (B, N, N)
            proj = (vecs[..., -1] * vals[..., -1:].clamp_min(0).sqrt()).to(m.dtype)  # sigma1 u1 = M v1
        ref = work.mean(1).flatten(1)
        cov = ((proj - proj.mean(1, keepdim=True)) * (ref - ref.mean(1, keepdim=True))).sum(1)
        sign = torch.where(cov < 0, -1.0, 1.0).to(proj.dtype)
        proj = proj * sign[:, None]
        return proj.reshape(b, 1, *acts.shape[2:]).to(acts.dtype)

    def explain(self, x: torch.Tensor, class_idx: TargetLike = None) -> torch.Tensor:
        with torch.no_grad():
            _, acts = self.forward_with_activations(x)
        maps = []
        for name in self.hooks.names:
            a = self._reshape(acts[name], x)
            self._check_spatial(a, name, x)
            p = self.projection(a, self.center)
            maps.append(F.relu(p) if self.relu else p)
        return self._finish(maps, x)


class SignatureActivation(_CAMBase):
    """Signature Activation (seed 001, §6.1): class-agnostic saliency from one forward pass, no gradients.

    ``maps = SignatureActivation(model, "layer4")(x)`` gives ``(B, 1, *spatial)`` maps in ``[0, 1]`` at the input's
    size (a MetaTensor with the input's metadata when ``x`` is one). ``class_idx`` is accepted and ignored. The
    model runs once under ``torch.no_grad()`` (so this also works inside MONAI evaluators), its mode and parameters
    are left untouched. Each layer's map is :func:`~monai_saliency.ops.signature.signature_map` (DCT-sign energy,
    min-max, bilateral filter; the choices and their reasons are in that module's docstring), then upsampled and
    normalised as every CAM.

    * **Layer.** The paper says "the last convolutional layer"; the notebook and the paper's figures use the second
      to last stage of ConvNeXt-Large (``add_32``). No default is given here: ``target_layers`` is required. Use a
      layer that still has every spatial axis (for 3D video nets one that keeps the time axis, DESIGN §7).
    * **Resize.** The paper resizes the map to the input size without saying how; default ``upsample_mode="linear"``
      (bilinear / trilinear, ``align_corners=False``, like MONAI's CAM upsampler and OpenCV's ``INTER_LINEAR``),
      followed by a final min-max to ``[0, 1]``.
    * **Several layers.** Each layer's ``[0, 1]`` map (at input size) is computed as above; the maps are averaged with
      equal weights and the average is min-max normalised again.

    Args:
        nn_module: the network (returns class scores ``(B, K)``); DDP's ``module.`` prefix is accepted in names.
        target_layers: layer name(s) whose outputs ``(B, S, *sp)`` are used.
        dct_axes: ``"spatial"`` (default: the paper's DCT of the whole activation map, N-d for volumes and for the
            ``(T, H, W)`` of a video layer) or ``"frames"`` (2D DCT and 2D bilateral filter per frame of
            ``(B, C, T, H, W)`` inputs: the paper's per-frame angiogram view, Fig. 1 / Fig. 3).
        bilateral: True (default; the notebook's ``cv2.bilateralFilter(map, 2, 140, 140)`` moved to the ``[0, 1]``
            scale: :data:`~monai_saliency.ops.bilateral.BILATERAL_DEFAULTS`), False/None, or a dict overriding
            ``spatial_sigma``, ``range_sigma``, ``radius``, ``window``.
        upsample_mode: ``"linear"`` (default), ``"nearest"`` or ``"area"``.
        dct_scaling: ``"ortho"`` (default: the paper's IDCT, orthonormal as Hou et al.'s proof needs) or
            ``"notebook"`` (the authors' notebook: un-normalised inverse along the rows).
        zero_tol: relative threshold for zero DCT coefficients; None for ``8 * eps(dtype)`` (round-off level, so that
            constant channels give constant reconstructions instead of sign noise).
        max_elements: element budget of one temporary in the channel-chunked DCT (default ``2**24``: 64 MiB float32).
        reshape_transform: ``tokens -> (B, C, *grid)`` for transformer layers, e.g. ``TokenGrid(patch_size)``; the
            class-agnostic map ignores ``class_idx`` / ``target`` (validated only).

    Raises:
        ValueError: unknown layer (close names listed), unknown option values, a negative ``zero_tol`` or a
            non-positive ``max_elements``.
        TypeError: for a ``bilateral`` value that is neither a bool, None nor a dict.
    """

    class_agnostic = True

    def __init__(
        self,
        nn_module: nn.Module,
        target_layers: str | Sequence[str],
        dct_axes: str = "spatial",
        bilateral: bool | Mapping[str, Any] | None = True,
        upsample_mode: str = "linear",
        dct_scaling: str = "ortho",
        zero_tol: float | None = None,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        reshape_transform: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        check_signature_options(dct_axes, bilateral, upsample_mode, dct_scaling, zero_tol, max_elements)
        spatial_dims = 3 if dct_axes == "frames" else None
        super().__init__(nn_module, target_layers, upsample_mode, True, spatial_dims, False, reshape_transform)
        self.dct_axes = dct_axes
        self.bilateral = bilateral
        self.dct_scaling = dct_scaling
        self.zero_tol = zero_tol
        self.max_elements = max_elements

    def explain(self, x: torch.Tensor, class_idx: Any = None) -> torch.Tensor:
        """Compute ``(B, 1, *spatial)`` maps for a validated plain tensor (``class_idx`` is ignored).

        Args:
            x: input ``(B, C, *spatial)``.
            class_idx: ignored (the method is class-agnostic).

        Returns:
            ``(B, 1, *spatial)`` maps in ``[0, 1]``, the input's dtype.

        Raises:
            ValueError: if a target layer's output lost a spatial axis (e.g. after global pooling), or has a single
                voxel (no spatial information) while the input has more; NaN / Inf activations.
        """
        with torch.no_grad():
            _, acts = self.forward_with_activations(x)
            maps = []
            for name in self.hooks.names:  # loop over target layers (usually one)
                a = self._reshape(acts.pop(name), x)
                if a.ndim != x.ndim:
                    raise ValueError(
                        f"layer {name!r} outputs shape {tuple(a.shape)} but the input is {tuple(x.shape)}; "
                        "choose a layer that keeps every spatial axis (before global pooling / flattening), or pass "
                        "reshape_transform=TokenGrid(patch_size) for transformer tokens (B, N, C)."
                    )
                if a.shape[2:].numel() == 1 < x.shape[2:].numel():
                    raise ValueError(
                        f"layer {name!r} outputs a single voxel per channel (shape {tuple(a.shape)}), so its map "
                        "would be constant; choose an earlier layer (before global pooling) or a larger input."
                    )
                a = a if a.dtype in (torch.float32, torch.float64) else a.float()  # maps resized in float32
                opts = (self.dct_axes, self.bilateral, "linear", self.dct_scaling, self.zero_tol, self.max_elements)
                maps.append(signature_map(a, None, *opts))
            return self._finish(maps, x).to(x.dtype)
