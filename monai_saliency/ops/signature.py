"""Signature Activation's tensor math (seed 001, §6.1): the DCT-sign energy of a layer's activations and its
post-processing; the explainer is :class:`monai_saliency.methods.cam.SignatureActivation`.

For the activations ``A`` ``(B, S, *sp)`` of a target layer the map is::

    M = minmax( resize( B( minmax( 1/S * sum_s IDCT(Sig(A_s)) ** 2 ) ), input size ) ),   Sig(A_s) = sign(DCT(A_s))

with an orthonormal N-d DCT over the layer's spatial axes, ``B`` a bilateral filter and ``minmax`` the per-item
normalisation to ``[0, 1]`` (:func:`signature_map` is the post-processing on its own). Everything after the forward pass
runs batched in pure torch on the activation's device: one batched DCT / IDCT over all ``B x S`` channels (the matrix
products of :mod:`monai_saliency.ops.dct` for axes up to 64, its FFTs for longer ones; chunked over channels under an
explicit element budget), no Python loop over channels or batch items.

Differences between the paper and the authors' published notebook (``dtak/signature-activation``), and the
choices made here:

* **DCT scaling.** The paper writes ``IDCT(sign(DCT(A_s)))``; the notebook computes
  ``idct(idct(S, axis=0), axis=1, norm="ortho")`` with scipy.fftpack, i.e. the first axis *un-normalised*.
  The forward scaling does not change a sign, but the un-normalised inverse weighs the ``k = 0`` row of the sign
  map by ``1/sqrt(2)`` relative to the orthonormal inverse (times a global ``sqrt(2N)`` that min-max removes).
  Default ``dct_scaling="ortho"`` follows the paper (and Hou et al. 2012, whose proposition needs an orthonormal
  transform); ``dct_scaling="notebook"`` reproduces the notebook exactly (the ``1/sqrt(2)`` weight on the DC
  row of the first axis of each frame, i.e. the rows/height axis ``-2``).
* **Bilateral filter.** The notebook's ``cv2.bilateralFilter(map, 2, 140, 140)`` on ``[0, 1]`` (``BILATERAL_DEFAULTS``).
* **Zero coefficients.** In floating point the DCT of a constant channel has round-off values at non-DC frequencies
  whose signs are random; taking ``sign`` of those would turn a constant channel into noise. Coefficients with
  ``|c| <= zero_tol * ||A_s||_2`` are treated as exact zeros (``sign(0) = 0``, as in ``numpy.sign``); default
  ``zero_tol = 8 * eps(dtype)`` (``9.5e-7`` in float32, ``1.8e-15`` in float64; :func:`zero_tolerance`). This keeps the
  map invariant to positive scaling of ``A`` and makes constant or all-zero activations give an all-zero map (never
  NaN). Measured (``benchmarks/speed/roundoff_signature.py``): on random ReLU activations (512x14x14, 2048x7x7,
  64x28x28, 256x56x56, 128x4x28x28, 64x8x8x8, small 3x3 / 2x2 / 1D and FFT-sized 96x96 / 200 / 72x72x72 maps) the
  float32 coefficients of every torch path differ from scipy's float64 ones by at most ``1.86 eps * ||A_s||`` (99.99 %
  below ``1.4 eps``); coefficients that are zero in exact arithmetic (a single voxel at the centre of odd axes, constant
  channels or lines) come out at most ``0.73 eps`` (float32) / ``2.2 eps`` (float64, 7x7x7
  :func:`~monai_saliency.ops.dct.dctn`) on every torch path. ``8 eps`` is 3.6x above all of them. A real coefficient
  below the threshold is zeroed; at ``|c| <~ 2 eps * ||A_s||`` float32 cannot resolve its sign in any case, and their
  count grows linearly with the threshold (512x14x14, two items: 3 of 200,704 coefficients below ``8 eps``, 20 below the
  former ``64 eps``; zeroing such coefficients moved float32 maps by 0.004 to 0.04 from float64 in the tests' inputs).
* **Video.** For an input ``(B, C, T, H, W)``: ``dct_axes="spatial"`` (default) takes the 3D DCT over the layer's
  ``(T, H, W)`` and filters in 3D; ``dct_axes="frames"`` takes a 2D DCT over ``(H, W)`` of each frame and filters each
  frame in 2D. In both modes min-max runs over the whole clip of an item (frames stay comparable), and the
  map is resized over ``(T, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from monai_saliency.ops.bilateral import bilateral_filter_axes, bilateral_options
from monai_saliency.ops.checks import all_finite
from monai_saliency.ops.dct import KRON_MAX, MATMUL_MAX, batched_dct_matrix, dct, dct_matrix, dctn, idct, idctn
from monai_saliency.ops.normalize import minmax_normalize
from monai_saliency.ops.precision import upcast
from monai_saliency.ops.resize import RESIZE_MODES, upsample_maps

__all__ = [
    "DCT_AXES",
    "DCT_SCALINGS",
    "DEFAULT_MAX_ELEMENTS",
    "ZERO_TOL_EPS",
    "check_signature_options",
    "signature_energy",
    "signature_map",
    "signature_reconstruction",
    "zero_tolerance",
]

DCT_AXES = ("spatial", "frames")
DCT_SCALINGS = ("ortho", "notebook")
#: default relative zero threshold in units of the DCT's ``eps`` (measured round-off <= 1.86 eps; module docstring)
ZERO_TOL_EPS = 8.0
#: default channel-chunk budget: elements of one ``(B, chunk, *sp)`` temporary (64 MiB in float32).
DEFAULT_MAX_ELEMENTS = 1 << 24

_NON_FINITE_SIGNAL = "the signal (target layer's activations) contains NaN or Inf; check the model and its input."


class _NonFiniteNorms(ValueError):
    """Raised for a non-finite channel norm: a NaN / Inf in the channel, or a float32 overflow of finite values."""


def _clamped_norms(norms: torch.Tensor) -> torch.Tensor:
    """Channel norms ``||A_s||`` (a temporary, clamped in place) made safe to divide by: all-zero channels get the
    smallest normal number."""
    if not all_finite(norms):  # a NaN / Inf anywhere in a channel (or an overflow) makes its norm non-finite
        raise _NonFiniteNorms(_NON_FINITE_SIGNAL)
    return norms.clamp_min_(torch.finfo(norms.dtype).tiny)


def _masked_sign(
    coeffs: torch.Tensor, norms: torch.Tensor, zero_tol: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``sign(c)`` with ``|c| <= zero_tol * ||A_s||`` set to 0; ``coeffs`` (a temporary) is scaled in place and the
    result goes to ``out`` when given.

    ``hardshrink(c / ||A_s||, zero_tol)`` followed by ``sign`` is three cheap passes (``|c| <= ||A_s||`` for an
    orthonormal DCT, so the quotient cannot overflow); the equivalent ``sign(c) * (|c| > threshold)`` goes through a
    boolean mask and is ~6x slower on CPU. A zero channel has zero coefficients, which stay 0 whatever its
    (clamped) norm.
    """
    return torch.hardshrink(coeffs.div_(norms), zero_tol, out=out).sign_()


def _unit_max_scaled(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """``x`` with every group over ``dims`` scaled by a power of two so that its largest ``|x|`` lies in ``[0.5, 1)``.

    The scaling is exact and positive per group, and the signature of a group depends only on the signs of its DCT
    coefficients relative to its norm: the result is unchanged, but norms of finite values cannot overflow.
    """
    _, exponent = torch.frexp(x.abs().amax(dim=tuple(dims), keepdim=True))
    return x * torch.exp2(-exponent.to(x.dtype))


def _on_finite_overflow(
    x: torch.Tensor, dims: Sequence[int], compute: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``compute(x)``, repeated on :func:`_unit_max_scaled` ``x`` when a norm overflowed although ``x`` is finite
    (float32 values above ~1e19); NaN / Inf in ``x`` raise ``ValueError``."""
    try:
        return compute(x)
    except _NonFiniteNorms:
        if not all_finite(x):
            raise ValueError(_NON_FINITE_SIGNAL) from None
    return compute(_unit_max_scaled(x, dims))


def zero_tolerance(dct_scaling: str, zero_tol: float | None, dtype: torch.dtype = torch.float32) -> float:
    """The relative zero threshold of the DCT coefficients, after checking the signature options.

    Args:
        dct_scaling: ``"ortho"`` or ``"notebook"``.
        zero_tol: a threshold ``>= 0``, or None for ``8 * eps(dtype)`` (:data:`ZERO_TOL_EPS`): 4x the largest
            round-off measured on the DCT coefficients (``1.86 eps * ||A_s||``; module docstring).
        dtype: the dtype the DCT is computed in.

    Returns:
        The threshold.

    Raises:
        ValueError: for an unknown ``dct_scaling`` or a negative / NaN ``zero_tol``.
    """
    if dct_scaling not in DCT_SCALINGS:
        raise ValueError(f"dct_scaling must be one of {DCT_SCALINGS}, got {dct_scaling!r}.")
    tol = ZERO_TOL_EPS * torch.finfo(dtype).eps if zero_tol is None else float(zero_tol)
    if not tol >= 0:
        raise ValueError(f"zero_tol must be >= 0 or None, got {zero_tol!r}.")
    return tol


def signature_reconstruction(
    x: torch.Tensor, dims: Sequence[int], dct_scaling: str = "ortho", zero_tol: float | None = None
) -> torch.Tensor:
    """The image-signature reconstruction ``IDCT(sign(DCT(x)))`` over ``dims`` (Hou et al. 2012; seed 001, Def. 6.1).

    Every other axis is batched. Coefficients with ``|c| <= zero_tol * ||x||_2`` (norm over ``dims``) count as exact
    zeros, so a constant signal gives a constant reconstruction and an all-zero signal gives zeros. Half-precision
    inputs are computed in float32. The reconstruction is piecewise constant in ``x`` (its gradient is zero wherever
    it exists), so it is returned without an autograd graph.

    Args:
        x: floating-point tensor.
        dims: axes of the transform.
        dct_scaling: ``"ortho"`` (orthonormal inverse, the paper) or ``"notebook"`` (the authors' notebook: the
            ``k = 0`` row of axis ``-2`` weighted by ``1/sqrt(2)``; needs the last two axes in ``dims``).
        zero_tol: relative zero threshold; None for ``8 * eps(dtype)``.

    Returns:
        Tensor shaped like ``x``, same dtype.

    Raises:
        ValueError: for an unknown ``dct_scaling``, a negative ``zero_tol``, ``"notebook"`` without the last two axes,
            or NaN / Inf values in ``x``.
    """
    xw = upcast(x)
    tol = zero_tolerance(dct_scaling, zero_tol, xw.dtype)
    norm_dims = [d % x.ndim for d in dims]
    if dct_scaling == "notebook" and (x.ndim - 2 not in norm_dims or x.ndim - 1 not in norm_dims):
        raise ValueError("dct_scaling='notebook' needs a DCT over (at least) the last two axes (rows, columns).")

    def reconstruct(v: torch.Tensor) -> torch.Tensor:
        norms = _clamped_norms(torch.linalg.vector_norm(v, dim=norm_dims, keepdim=True))
        sig = _masked_sign(dctn(v, norm_dims), norms, tol)
        if dct_scaling == "notebook":
            sig[..., 0, :] *= 1.0 / math.sqrt(2.0)
        return idctn(sig, norm_dims)

    with torch.no_grad():
        return _on_finite_overflow(xw.detach(), norm_dims, reconstruct).to(x.dtype)


def _axis_transform(
    y: torch.Tensor, before: int, n: int, inverse: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    """One-axis orthonormal DCT (or inverse) of ``y`` viewed as ``(before, n, after)``, contracted from the left;
    returns ``(before, n, after)``.

    With the channels in the long contiguous ``after`` dimension this is one batched GEMM with a cached stack of the
    DCT matrix, without transposes, written into ``out`` (same size as ``y``) when given. Axes longer than
    ``MATMUL_MAX`` use the FFT-based :func:`monai_saliency.ops.dct.dct` (a new tensor, ``out`` unused).
    """
    v = y.reshape(before, n, -1)
    if n > MATMUL_MAX:
        return idct(v, dim=1) if inverse else dct(v, dim=1)
    mats = batched_dct_matrix(n, before, inverse, y.dtype, y.device)
    return torch.bmm(mats, v, out=None if out is None else out.view(v.shape))


def _gram_energy(u: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    """``sum_s ((mat^T u_g)[:, s]) ** 2`` for every group ``g`` of ``u`` ``(G, n, S)``, as ``(G, n)``.

    The last inverse transform, the square and the channel sum in one step: with the Gram matrices ``u_g u_g^T``
    (one batched GEMM whose output is tiny) the energy is ``diag(mat^T G_g mat)``, so the ``(G, n, S)``
    reconstruction is never written nor squared.
    """
    gram = u @ u.transpose(-1, -2)
    return ((gram @ mat) * mat).sum(-2)


def _energy_rows(a: torch.Tensor, n_dct: int, dct_scaling: str, tol: float) -> torch.Tensor:
    """Channel sum of the signature energy of a ``(B, S, *others, *block)`` chunk whose DCT block
    ``P = prod(block) <= KRON_MAX``: channels as rows, one GEMM with the Kronecker DCT matrix forward, the
    inverse combined with the channel sum (:func:`_gram_energy`). Returns ``(B, *others, *block)``."""
    block = tuple(a.shape[a.ndim - n_dct :])
    p = math.prod(block)
    b, s = a.shape[:2]
    rows = a.reshape(b, s, -1, p).transpose(1, 2)  # (B, others, S, P); a view when others == 1
    kmat = dct_matrix(block, a.dtype, a.device)
    norms = _clamped_norms(torch.linalg.vector_norm(rows, dim=-1, keepdim=True))
    sig = _masked_sign(rows @ kmat.T, norms, tol)
    if dct_scaling == "notebook":
        sig.view(*sig.shape[:-1], *block)[(Ellipsis, 0, slice(None))] *= 1.0 / math.sqrt(2.0)
    energy = _gram_energy(sig.reshape(-1, s, p).transpose(-1, -2), kmat)
    return energy.reshape(b, *a.shape[2:])


def _forward_channels_last(a: torch.Tensor, n_dct: int, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DCT over the trailing ``n_dct`` axes of ``(B, S, *others, *block)``, returned as a new contiguous
    ``(groups, prod(block), B * S * prod(others) / groups)`` tensor: ``groups`` equal runs of the ``(B, S, *others)``
    index, each in the ``(*block, run)`` layout. Also returns a second tensor of that size to reuse as work space.

    Each step contracts the current last axis and puts the transformed axis first: ``C @ Y^T`` with ``Y`` the
    ``(rest, n)`` row-major view of a group, one GEMM that reads the transposed operand in place. After the last block
    axis the channels trail the block without any transposing copy (which costs as much as a GEMM here). The groups
    make every product a batched GEMM, which MKL runs one batch per thread: a single ``14 x 14 @ 14 x 7168`` product
    barely gains from a second thread, two halves in one batched call take ~35 % less time. Axes longer than
    ``MATMUL_MAX`` use the FFT-based :func:`monai_saliency.ops.dct.dct`.
    """
    block = a.shape[a.ndim - n_dct :]
    y, spare = a, None
    for n in reversed(block):
        rows = y.reshape(groups, -1, n)
        if n > MATMUL_MAX:
            out = dct(rows, dim=-1).mT
        else:
            out = torch.bmm(batched_dct_matrix(n, groups, False, a.dtype, a.device), rows.mT)
        spare, y = (y if y is not a and y.is_contiguous() else None), out
    y = y.contiguous().view(groups, math.prod(block), -1)
    return y, torch.empty_like(y) if spare is None else spare.view(y.shape)


def _gemm_groups(a: torch.Tensor) -> int:
    """Runs of ``(B, S)`` to batch the DCT products over (see :func:`_forward_channels_last`): whole items when the
    batch divides evenly, else channel runs of a single item; 1 on accelerators (one kernel either way)."""
    if a.device.type != "cpu":
        return 1
    threads = torch.get_num_threads()
    return math.gcd(threads, a.shape[0]) if a.shape[0] > 1 else math.gcd(threads, a.shape[1])


def _energy_channels_last(a: torch.Tensor, n_dct: int, dct_scaling: str, tol: float) -> torch.Tensor:
    """Channel sum of the signature energy of a ``(B, S, *others, *block)`` chunk, computed in the grouped
    ``(G, *block, run)`` layout of :func:`_forward_channels_last`: every inverse one-axis DCT is then a batched GEMM
    over the long trailing axis (:func:`_axis_transform`), written into a reused work buffer (fresh multi-megabyte
    temporaries cost page faults on every call). Returns ``(B, *others, *block)``. (Fusing the last inverse into Gram
    matrices, as :func:`_energy_rows` does, measured slower here: the Gram products are batched GEMMs with 14x14
    outputs.)"""
    nd = a.ndim
    b, s = a.shape[:2]
    block = tuple(a.shape[nd - n_dct :])
    others = tuple(a.shape[2 : nd - n_dct])
    p = math.prod(block)
    groups = _gemm_groups(a)
    norms = torch.linalg.vector_norm(a.reshape(groups, 1, -1, p), dim=-1)  # (G, 1, run): the layout's trailing order
    y, spare = _forward_channels_last(a, n_dct, groups)
    y, spare = _masked_sign(y, _clamped_norms(norms), tol, out=spare), y
    if dct_scaling == "notebook":
        y.view(groups, *block, -1)[(slice(None),) * (n_dct - 1) + (0,)] *= 1.0 / math.sqrt(2.0)
    for axis, n in enumerate(block):
        y, spare = _axis_transform(y, groups * math.prod(block[:axis]), n, inverse=True, out=spare), y
    if b % groups == 0:  # groups of whole items
        energy = torch.linalg.vector_norm(y.view(groups, p, b // groups, s, -1), dim=3).square_()  # (G, P, B/G, O)
        return energy.permute(0, 2, 3, 1).reshape(b, *others, *block)
    energy = torch.linalg.vector_norm(y.view(groups, p, 1, s // groups, -1), dim=3).square_().sum(0)  # (P, 1, O)
    return energy.permute(1, 2, 0).reshape(b, *others, *block)


def signature_energy(
    activations: torch.Tensor,
    dims: Sequence[int],
    dct_scaling: str = "ortho",
    zero_tol: float | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> torch.Tensor:
    """Mean over channels of ``IDCT(sign(DCT(A_s))) ** 2`` (the bracket of the paper's eq. for ``M(I)``).

    The DCT runs over the trailing ``len(dims)`` axes. Small blocks (``prod <= 64``, e.g. 7x7) use one GEMM with a
    cached Kronecker DCT matrix on channel rows; larger ones move the channels to the last axis once and apply
    each one-axis DCT as a GEMM over all channels (axes longer than 64: FFT-based). Channels are processed in
    chunks of at most ``max_elements`` elements. Half-precision activations are computed in float32. The energy is
    piecewise constant in the activations, so it is returned without an autograd graph.

    Args:
        activations: floating-point tensor ``(B, S, *sp)``.
        dims: axes (of ``activations``) the DCT runs over: the trailing spatial axes, e.g. ``(-2, -1)``.
        dct_scaling: ``"ortho"`` (paper) or ``"notebook"`` (DC row of axis ``-2`` weighted by ``1/sqrt(2)``).
        zero_tol: coefficients with ``|c| <= zero_tol * ||A_s||_2`` count as zero; None for ``8 * eps(dtype)``.
        max_elements: element budget of one temporary; channels are processed in chunks that fit it.

    Returns:
        ``(B, *sp)`` tensor, same dtype as ``activations``.

    Raises:
        ValueError: for an unknown ``dct_scaling``, a negative ``zero_tol``, a non-positive ``max_elements``,
            ``dims`` that are not the trailing spatial axes, ``"notebook"`` with a one-axis DCT, or NaN / Inf.
    """
    a = upcast(activations)
    n_dct, tol = _energy_arguments(a, dims, dct_scaling, zero_tol, max_elements)
    with torch.no_grad():
        energy = _channel_sum_energy(a.detach(), n_dct, dct_scaling, tol, max_elements)
    return energy.div_(a.shape[1]).to(activations.dtype)


def _energy_arguments(
    activations: torch.Tensor, dims: Sequence[int], dct_scaling: str, zero_tol: float | None, max_elements: int
) -> tuple[int, float]:
    """Validate :func:`signature_energy`'s arguments; returns the number of DCT axes and the zero tolerance."""
    tol = zero_tolerance(dct_scaling, zero_tol, activations.dtype)
    if max_elements <= 0:
        raise ValueError(f"max_elements must be > 0, got {max_elements!r}.")
    nd = activations.ndim
    norm_dims = sorted({d % nd for d in dims})
    n_dct = len(norm_dims)
    if not n_dct or norm_dims != list(range(nd - n_dct, nd)) or norm_dims[0] < 2:
        raise ValueError(f"dims must be the trailing spatial axes of (B, S, *sp) activations, got {list(dims)}.")
    if dct_scaling == "notebook" and n_dct < 2:
        raise ValueError("dct_scaling='notebook' needs a DCT over (at least) the last two axes (rows, columns).")
    if activations.numel() == 0:
        raise ValueError(f"activations are empty: shape {tuple(activations.shape)}.")
    return n_dct, tol


def _channel_sum_energy(a: torch.Tensor, n_dct: int, dct_scaling: str, tol: float, max_elements: int) -> torch.Tensor:
    """``S`` times :func:`signature_energy`, on validated arguments (``n_dct`` trailing axes, ``S >= 1`` channels);
    a new contiguous tensor."""
    block_dims = range(a.ndim - n_dct, a.ndim)
    return _on_finite_overflow(
        a, block_dims, lambda v: _channel_sum_energy_of(v, n_dct, dct_scaling, tol, max_elements)
    )


def _channel_sum_energy_of(
    a: torch.Tensor, n_dct: int, dct_scaling: str, tol: float, max_elements: int
) -> torch.Tensor:
    energy_of = _energy_rows if math.prod(a.shape[a.ndim - n_dct :]) <= KRON_MAX else _energy_channels_last
    s = a.shape[1]
    chunk = max(1, min(s, max_elements * s // max(a.numel(), 1)))
    if chunk == s:
        total = energy_of(a, n_dct, dct_scaling, tol)
    else:
        total = None
        for start in range(0, s, chunk):  # loop over memory-bounded channel chunks, not over channels
            part = energy_of(a[:, start : start + chunk], n_dct, dct_scaling, tol)
            total = part if total is None else total + part
    return total.contiguous()


def _bilateral_on_unit_range(m: torch.Tensor, n_filter: int, opts: Mapping[str, Any]) -> torch.Tensor:
    """The paper's min-max to ``[0, 1]`` followed by the bilateral filter, up to the positive affine map that the
    final min-max removes.

    The filter commutes with ``x -> (x - lo) / span`` once its range sigma is taken times ``span``; for a single item
    that product is one number, which saves rescaling the map (a constant map is returned as it is).
    """
    if m.shape[0] == 1:
        lo, hi = torch.aminmax(m)
        span = hi.item() - lo.item()  # only scales sigma: Python's float64 difference is exact enough
        if not span > 0:  # constant; NaN cannot occur (finite activations give a finite energy)
            return m
        sigma = opts["range_sigma"] * span
    else:
        m, sigma = minmax_normalize(m), opts["range_sigma"]
    # m is finite: the activations were checked
    return bilateral_filter_axes(m, n_filter, opts["spatial_sigma"], sigma, opts["radius"], opts["window"], False)


def check_signature_options(
    dct_axes: str,
    bilateral: bool | Mapping[str, Any] | None,
    upsample_mode: str,
    dct_scaling: str,
    zero_tol: float | None,
    max_elements: int,
) -> dict[str, Any] | None:
    """Check the options of :func:`signature_map` (and of the explainer, at construction).

    Args:
        dct_axes: one of :data:`DCT_AXES`.
        bilateral: see :func:`bilateral_options`.
        upsample_mode: one of :data:`monai_saliency.ops.resize.RESIZE_MODES`.
        dct_scaling: one of :data:`DCT_SCALINGS`.
        zero_tol: a threshold ``>= 0`` or None.
        max_elements: a positive element budget.

    Returns:
        The complete bilateral options (None for no filter).

    Raises:
        ValueError: for an unknown value, a negative / NaN ``zero_tol``, a non-positive ``max_elements`` or bad
            bilateral keys / sigmas.
        TypeError: for a ``bilateral`` value that is neither a bool, None nor a dict.
    """
    if dct_axes not in DCT_AXES:
        raise ValueError(f"dct_axes must be one of {DCT_AXES}, got {dct_axes!r}.")
    if upsample_mode not in RESIZE_MODES:
        raise ValueError(f"upsample_mode must be one of {RESIZE_MODES}, got {upsample_mode!r}.")
    zero_tolerance(dct_scaling, zero_tol)
    if not max_elements > 0:
        raise ValueError(f"max_elements must be > 0, got {max_elements!r}.")
    return bilateral_options(bilateral)


def signature_map(
    activations: torch.Tensor,
    spatial_size: Sequence[int] | None = None,
    dct_axes: str = "spatial",
    bilateral: bool | Mapping[str, Any] | None = True,
    upsample_mode: str = "linear",
    dct_scaling: str = "ortho",
    zero_tol: float | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> torch.Tensor:
    """Signature Activation post-processing of one layer's activations (everything after the forward pass).

    Args:
        activations: ``(B, S, *sp)`` with 1 to 3 spatial axes.
        spatial_size: output spatial size (the input's); None keeps the layer's size.
        dct_axes: ``"spatial"`` (DCT and filter over all spatial axes) or ``"frames"`` (over the last two axes of
            each frame; needs 3 spatial axes ``(T, H, W)``).
        bilateral: True (defaults :data:`~monai_saliency.ops.bilateral.BILATERAL_DEFAULTS`), False/None (no filter),
            or a dict overriding ``spatial_sigma``, ``range_sigma`` (on the ``[0, 1]`` scale), ``radius``, ``window``.
        upsample_mode: ``"linear"`` (bi/trilinear, ``align_corners=False``), ``"nearest"`` or ``"area"``.
        dct_scaling: ``"ortho"`` (paper) or ``"notebook"`` (authors' notebook scaling; see module docstring).
        zero_tol: relative threshold below which DCT coefficients count as zero (see module docstring).
        max_elements: element budget of one temporary in the channel-chunked DCT.

    Returns:
        ``(B, 1, *spatial_size)`` maps in ``[0, 1]`` (all zeros for an item whose map is constant).

    Raises:
        ValueError: for a bad rank, empty activations, an output size that does not match or has a zero axis, an
            unknown mode, ``"frames"`` without a time axis, bad ``bilateral`` options, or NaN / Inf activations.
        TypeError: for non-floating activations or a bad ``bilateral`` value.
    """
    if not isinstance(activations, torch.Tensor) or not activations.is_floating_point():
        raise TypeError("activations must be a floating-point tensor (B, S, *spatial).")
    nd = activations.ndim - 2
    if not 1 <= nd <= 3:
        raise ValueError(
            f"activations must be (B, S, *spatial) with 1 to 3 spatial axes, got shape {tuple(activations.shape)}; "
            "choose a convolutional layer before global pooling / flattening."
        )
    opts = check_signature_options(dct_axes, bilateral, upsample_mode, dct_scaling, zero_tol, max_elements)
    if dct_axes == "frames" and nd != 3:
        raise ValueError(
            f"dct_axes='frames' needs activations (B, S, T, H, W); got {nd} spatial axes. Use dct_axes='spatial'."
        )
    a = activations if activations.dtype in (torch.float32, torch.float64) else activations.float()
    n_dct = 2 if dct_axes == "frames" else nd
    if spatial_size is not None and len(spatial_size) != nd:
        raise ValueError(
            f"the layer has {nd} spatial axes but the output size {tuple(spatial_size)} has {len(spatial_size)}; "
            "choose a layer that keeps every spatial axis of the input."
        )
    if spatial_size is not None and min(int(n) for n in spatial_size) < 1:
        raise ValueError(f"spatial_size must be positive, got {tuple(spatial_size)}.")
    n_dct, tol = _energy_arguments(a, range(a.ndim - n_dct, a.ndim), dct_scaling, zero_tol, max_elements)
    # inference mode drops the autograd bookkeeping of ~40 small ops (~10 % of the time on a 14x14 map); the map is
    # not differentiable in the activations anyway (sign). The last min-max runs outside, so the result is an
    # ordinary tensor that callers may modify in place.
    with torch.inference_mode():
        m = _channel_sum_energy(a, n_dct, dct_scaling, tol, max_elements)  # the mean's scale is moot
        m = minmax_normalize(m) if opts is None else _bilateral_on_unit_range(m, n_dct, opts)
        m = m.unsqueeze(1)
        if spatial_size is not None:
            m = upsample_maps(m, spatial_size, upsample_mode)
    return minmax_normalize(m).to(activations.dtype)
