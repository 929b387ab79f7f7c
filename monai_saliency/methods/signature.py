"""Signature Activation (seed 001, §6.1): a class-agnostic, gradient-free saliency map from one forward pass.

For the activations ``A`` ``(B, S, *sp)`` of a target layer the map is::

    M = minmax( resize( B( minmax( 1/S * sum_s IDCT(Sig(A_s)) ** 2 ) ), input size ) ),   Sig(A_s) = sign(DCT(A_s))

with an orthonormal N-d DCT over the layer's spatial axes, ``B`` a bilateral filter and ``minmax`` the per-item
normalisation to ``[0, 1]`` (:func:`signature_map` is the post-processing on its own). Everything after the forward pass
runs batched in torch on the activation's device: one batched DCT / IDCT over all ``B x S`` channels (chunked over
channels under an explicit element budget), no Python loop over channels or batch items. On CPUs with AVX2, maps
whose DCT blocks have axes up to 64 and up to 4096 voxels (every usual CNN layer) go instead through one fused C
kernel (:mod:`monai_saliency.ops.cpu_kernels`, built when a compiler is present; same results to round-off), when
the input holds at most 2**17 activations or torch runs on at most 4 threads (the kernel is single-threaded).

Differences between the paper and the authors' published notebook (``dtak/signature-activation``), and the
choices made here:

* **DCT scaling.** The paper writes ``IDCT(sign(DCT(A_s)))``; the notebook computes
  ``idct(idct(S, axis=0), axis=1, norm="ortho")`` with scipy.fftpack, i.e. the first axis *un-normalised*.
  The forward scaling does not change a sign, but the un-normalised inverse weighs the ``k = 0`` row of the sign
  map by ``1/sqrt(2)`` relative to the orthonormal inverse (times a global ``sqrt(2N)`` that min-max removes).
  Default ``dct_scaling="ortho"`` follows the paper (and Hou et al. 2012, whose proposition needs an orthonormal
  transform); ``dct_scaling="notebook"`` reproduces the notebook exactly (the ``1/sqrt(2)`` weight on the DC
  row of the first axis of each frame, i.e. the rows/height axis ``-2``).
* **Layer.** The paper says "the last convolutional layer"; the notebook and the paper's figures use the second to
  last stage of ConvNeXt-Large (``add_32``). No default is given here: ``target_layers`` is required. Use a layer
  that still has every spatial axis (for 3D video nets one that keeps the time axis, DESIGN §7).
* **Bilateral filter.** The paper gives no parameters. The notebook min-max scales the map to 0..255 and calls
  ``cv2.bilateralFilter(map, 2, 140, 140)``: OpenCV takes ``radius = d // 2 = 1`` and keeps the window offsets with
  Euclidean norm ``<= radius``, i.e. 5 taps (centre and 4-neighbours), mirrored borders (``BORDER_REFLECT_101``);
  ``sigmaSpace = 140`` makes the spatial weights ``exp(-1 / (2 * 140**2)) = 0.99997``, practically flat. Here the
  map is min-max scaled to ``[0, 1]`` before filtering, so the same range sigma is ``140 / 255 = 0.549``;
  :data:`BILATERAL_DEFAULTS` is ``radius=1`` (ball window), ``spatial_sigma=140`` voxels, ``range_sigma=140/255``:
  on a 2D map, OpenCV's filter of the 0..255 map divided by 255 (float32 input; a uint8 input as well, up to its
  quantisation; tested). 3D maps (``dct_axes="spatial"`` over ``(T, H, W)`` or a volume) are filtered in 3D with
  the same rule, the ball of radius 1: 7 taps (centre and 6 face neighbours); ``dct_axes="frames"`` filters each
  frame in 2D with OpenCV's 5 taps (the range sigma relative to the clip's min-max, which keeps frames
  comparable). Singleton axes are not filtered (a ``(1, H, W)`` map is filtered as a 2D map); on an axis of length
  ``<= radius`` the radius is reduced to ``min(size) - 1``; ``bilateral=False`` skips the filter. A dict of
  options overrides single values (``radius=None`` derives the radius from ``spatial_sigma`` by OpenCV's
  ``round(1.5 * sigma)``).
* **Zero coefficients.** In floating point the DCT of a constant channel has round-off values at non-DC
  frequencies whose signs are random; taking ``sign`` of those would turn a constant channel into noise.
  Coefficients with ``|c| <= zero_tol * ||A_s||_2`` are treated as exact zeros (``sign(0) = 0``, as in
  ``numpy.sign``); default ``zero_tol = 8 * eps(dtype)`` (``9.5e-7`` in float32, ``1.8e-15`` in float64;
  :func:`zero_tolerance`). This keeps the map invariant to positive scaling of ``A`` and makes constant or all-zero
  activations give an all-zero map (never NaN). The value is measured (``benchmarks/speed/roundoff_signature.py``): on
  random ReLU activations (512x14x14, 2048x7x7, 64x28x28, 256x56x56, 128x4x28x28, 64x8x8x8, small 3x3 / 2x2 / 1D
  and FFT-sized 96x96 / 200 / 72x72x72 maps) the float32 coefficients of every torch path differ from scipy's
  float64 ones by at most ``1.86 eps * ||A_s||`` (99.99 % below ``1.4 eps``); coefficients that are zero in exact
  arithmetic (a single voxel at the centre of odd axes, constant channels or lines) come out at most ``0.73 eps``
  (float32) / ``1.5 eps`` (float64) on the torch paths and the C kernel. ``8 eps`` is 4x above all of them. A real
  coefficient below the threshold is zeroed; at ``|c| <~ 2 eps * ||A_s||`` float32 cannot resolve its sign in any
  case, and their count grows linearly with the threshold (512x14x14, two items: 3 of 200,704 coefficients below
  ``8 eps``, 20 below the former ``64 eps``; zeroing such coefficients moved float32 maps by 0.004 to 0.04 from
  float64 in the tests' inputs).
* **Resize.** The paper resizes ``M`` to the input size without saying how; default ``upsample_mode="linear"``
  (bilinear / trilinear, ``align_corners=False``, like MONAI's CAM upsampler and OpenCV's ``INTER_LINEAR``),
  followed by a final min-max to ``[0, 1]``.
* **Several layers.** With several ``target_layers`` each layer's ``[0, 1]`` map (at input size) is computed as
  above; the maps are averaged with equal weights and the average is min-max normalised again.
* **Video.** For an input ``(B, C, T, H, W)``: ``dct_axes="spatial"`` (default) takes the 3D DCT over the layer's
  ``(T, H, W)`` and filters in 3D; ``dct_axes="frames"`` takes a 2D DCT over ``(H, W)`` of each frame and filters each
  frame in 2D. In both modes min-max runs over the whole clip of an item (frames stay comparable), and the
  map is resized over ``(T, H, W)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_saliency.methods.base import Explainer
from monai_saliency.ops import cpu_kernels
from monai_saliency.ops.bilateral import bilateral_filter
from monai_saliency.ops.checks import all_finite
from monai_saliency.ops.dct import dct, dctn, idct, idctn
from monai_saliency.ops.normalize import minmax_normalize
from monai_saliency.ops.precision import upcast

__all__ = [
    "BILATERAL_DEFAULTS",
    "DCT_AXES",
    "DCT_SCALINGS",
    "ZERO_TOL_EPS",
    "SignatureActivation",
    "bilateral_filter_axes",
    "bilateral_options",
    "signature_energy",
    "signature_map",
    "signature_reconstruction",
    "zero_tolerance",
]

#: bilateral filter defaults on the ``[0, 1]`` scale: the notebook's ``cv2.bilateralFilter(map, 2, 140, 140)`` on
#: 0..255 (radius ``2 // 2 = 1``: 5 taps in 2D, 7 in 3D; spatial sigma 140 voxels; range sigma 140 / 255).
BILATERAL_DEFAULTS: dict[str, float | int] = {"spatial_sigma": 140.0, "range_sigma": 140.0 / 255.0, "radius": 1}
DCT_AXES = ("spatial", "frames")
DCT_SCALINGS = ("ortho", "notebook")
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}
_UPSAMPLE_MODES = ("linear", "nearest", "area")
#: default channel-chunk budget: elements of one ``(B, chunk, *sp)`` temporary (64 MiB in float32).
_DEFAULT_MAX_ELEMENTS = 1 << 24


#: trailing (H, W) blocks up to this many pixels are transformed with one cached Kronecker DCT matrix ...
_KRON_MAX = 64
#: ... and axes up to this length with per-axis DCT matrices; longer ones with the FFT-based ops.
_MATMUL_MAX = 64
#: blocks up to this many voxels go through the fused C kernel (its four lane buffers, 4 x 32 bytes per voxel, stay
#: within L2) ...
_FUSED_MAX_VOXELS = 4096
#: ... inputs up to this many activations always, larger ones while torch runs on at most this many threads
_FUSED_ALWAYS_ELEMENTS = 1 << 17
_FUSED_BATCH_MAX_THREADS = 4
#: constant matrices (DCT, resize) by shape, dtype and device, least recently used first; bounded in bytes so that
#: inputs of ever new sizes cannot grow it without limit
_CACHED_MATRICES: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_CACHE_MAX_BYTES = 32 << 20
#: a batched stack of DCT matrices larger than this is an expanded view of one matrix, neither copied nor cached
_STACK_MAX_BYTES = 1 << 20


_NON_FINITE_SIGNAL = "the signal (target layer's activations) contains NaN or Inf; check the model and its input."


class _NonFiniteNorms(ValueError):
    """Raised for a non-finite channel norm: a NaN / Inf in the channel, or a float32 overflow of finite values."""


def _nbytes(value: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    tensors = value if isinstance(value, tuple) else (value,)
    return sum(t.numel() * t.element_size() for t in tensors)


def _cached(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """The cached value of ``key``, built by ``build()`` on a miss.

    Values are built outside inference mode (a tensor created under ``torch.inference_mode()`` and cached there would
    break a later autograd caller that uses it). The cache keeps the most recently used values up to
    ``_CACHE_MAX_BYTES``; a value above a quarter of that is returned without being cached.
    """
    value = _CACHED_MATRICES.get(key)
    if value is not None:
        _CACHED_MATRICES.move_to_end(key)
        return value
    with torch.inference_mode(False):
        value = build()
    size = _nbytes(value)
    if size <= _CACHE_MAX_BYTES // 4:
        _CACHED_MATRICES[key] = value
        total = sum(_nbytes(v) for v in _CACHED_MATRICES.values())
        while total > _CACHE_MAX_BYTES:
            _, dropped = _CACHED_MATRICES.popitem(last=False)
            total -= _nbytes(dropped)
    return value


#: default relative zero threshold in units of the DCT's ``eps`` (measured round-off <= 1.86 eps; module docstring)
ZERO_TOL_EPS = 8.0


def _default_zero_tol(dtype: torch.dtype) -> float:
    return ZERO_TOL_EPS * torch.finfo(dtype).eps


def _kron_dct_matrix(sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``K = C_1 (x) ... (x) C_k`` with ``C_i`` the orthonormal DCT-II matrix of length ``sizes[i]``, built once from
    :func:`monai_saliency.ops.dct.dct` (``dct(eye(n), dim=0) = C``): ``vec(DCT(X)) = K vec(X)``, row-major ``vec``."""

    def build() -> torch.Tensor:
        mat = torch.ones(1, 1, dtype=torch.float64)
        for n in sizes:
            mat = torch.kron(mat, dct(torch.eye(n, dtype=torch.float64), dim=0))
        return mat.to(dtype=dtype, device=device)

    return _cached(("kron", tuple(sizes), dtype, str(device)), build)


def _batched_dct_matrix(n: int, batch: int, inverse: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(batch, n, n)`` contiguous stack of the DCT matrix ``C`` (or ``C^T`` for the inverse), cached: the left
    operand of a batched one-axis transform, built once rather than expanded and transposed on every call. A stack
    above ``_STACK_MAX_BYTES`` is an expanded view instead (its copy would cost more memory than it saves time)."""
    base = _kron_dct_matrix((n,), dtype, device)
    base = base.T if inverse else base
    if batch * n * n * base.element_size() > _STACK_MAX_BYTES:
        return base.expand(batch, n, n)
    return _cached(("batched", n, batch, inverse, dtype, str(device)), lambda: base.expand(batch, n, n).contiguous())


def _transform(x: torch.Tensor, dims: Sequence[int], inverse: bool) -> torch.Tensor:
    """Orthonormal N-d DCT (or its inverse) over ``dims``.

    The trailing ``(H, W)`` block of a deep layer is tiny (7x7, 14x14), where a chain of small FFT kernels is all
    overhead. There the same linear map is applied as matrix products with cached DCT matrices: one GEMM with the
    Kronecker matrix for ``H*W <= 64`` (2048x7x7: ~9x faster than :func:`dctn`), ``C_H @ X @ C_W^T`` for axes up to
    64 (512x14x14: ~4x faster). Any other axis (e.g. time) and longer axes use :func:`dctn` / :func:`idctn`.
    """
    nd = x.ndim
    dims = sorted(d % nd for d in dims)
    block = [d for d in dims if d >= nd - 2]
    sizes = tuple(x.shape[d] for d in block)
    if not block or block[-1] != nd - 1 or max(sizes) > _MATMUL_MAX:
        return idctn(x, dims) if inverse else dctn(x, dims)
    rest = [d for d in dims if d not in block]
    out = x
    if rest and not inverse:
        out = dctn(out, rest)
    p = math.prod(sizes)
    if p <= _KRON_MAX:
        kmat = _kron_dct_matrix(sizes, x.dtype, x.device)
        out = (out.reshape(-1, p) @ (kmat if inverse else kmat.T)).reshape(x.shape)
    else:
        mats = [_kron_dct_matrix((n,), x.dtype, x.device) for n in sizes]
        last = mats[-1] if inverse else mats[-1].T
        out = out @ last  # along W: forward X C_W^T, inverse Y C_W
        if len(mats) == 2:
            out = (mats[0].T if inverse else mats[0]) @ out  # along H: forward C_H X, inverse C_H^T Y
    if rest and inverse:
        out = idctn(out, rest)
    return out


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
    tol = _default_zero_tol(dtype) if zero_tol is None else float(zero_tol)
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
    xw = upcast(x)  # half precision: eps would make the zero threshold coarse
    tol = zero_tolerance(dct_scaling, zero_tol, xw.dtype)
    norm_dims = [d % x.ndim for d in dims]
    if dct_scaling == "notebook" and (x.ndim - 2 not in norm_dims or x.ndim - 1 not in norm_dims):
        raise ValueError("dct_scaling='notebook' needs a DCT over (at least) the last two axes (rows, columns).")

    def reconstruct(v: torch.Tensor) -> torch.Tensor:
        norms = _clamped_norms(torch.linalg.vector_norm(v, dim=norm_dims, keepdim=True))
        sig = _masked_sign(_transform(v, norm_dims, inverse=False), norms, tol)
        if dct_scaling == "notebook":
            sig[..., 0, :] *= 1.0 / math.sqrt(2.0)
        return _transform(sig, norm_dims, inverse=True)

    with torch.no_grad():
        return _on_finite_overflow(xw.detach(), norm_dims, reconstruct).to(x.dtype)


def _axis_transform(
    y: torch.Tensor, before: int, n: int, inverse: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    """One-axis orthonormal DCT (or inverse) of ``y`` viewed as ``(before, n, after)``, contracted from the left;
    returns ``(before, n, after)``.

    With the channels in the long contiguous ``after`` dimension this is one batched GEMM with a cached stack of the
    DCT matrix, without transposes, written into ``out`` (same size as ``y``) when given. Axes longer than
    ``_MATMUL_MAX`` use the FFT-based :func:`monai_saliency.ops.dct.dct` (a new tensor, ``out`` unused).
    """
    v = y.reshape(before, n, -1)
    if n > _MATMUL_MAX:
        return idct(v, dim=1) if inverse else dct(v, dim=1)
    mats = _batched_dct_matrix(n, before, inverse, y.dtype, y.device)
    return torch.bmm(mats, v, out=None if out is None else out.view(v.shape))


def _gram_energy(u: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    """``sum_s ((mat^T u_g)[:, s]) ** 2`` for every group ``g`` of ``u`` ``(G, n, S)``, as ``(G, n)``.

    The last inverse transform, the square and the channel sum fused: with the Gram matrices ``u_g u_g^T``
    (one batched GEMM whose output is tiny) the energy is ``diag(mat^T G_g mat)``, so the ``(G, n, S)``
    reconstruction is never written nor squared.
    """
    gram = u @ u.transpose(-1, -2)
    return ((gram @ mat) * mat).sum(-2)


def _energy_rows(a: torch.Tensor, n_dct: int, dct_scaling: str, tol: float) -> torch.Tensor:
    """Channel sum of the signature energy of a ``(B, S, *others, *block)`` chunk whose DCT block
    ``P = prod(block) <= _KRON_MAX``: channels as rows, one GEMM with the Kronecker DCT matrix forward, the
    inverse fused with the channel sum (:func:`_gram_energy`). Returns ``(B, *others, *block)``."""
    block = tuple(a.shape[a.ndim - n_dct :])
    p = math.prod(block)
    b, s = a.shape[:2]
    rows = a.reshape(b, s, -1, p).transpose(1, 2)  # (B, others, S, P); a view when others == 1
    kmat = _kron_dct_matrix(block, a.dtype, a.device)
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
    ``_MATMUL_MAX`` use the FFT-based :func:`monai_saliency.ops.dct.dct`.
    """
    block = a.shape[a.ndim - n_dct :]
    y, spare = a, None
    for n in reversed(block):
        rows = y.reshape(groups, -1, n)
        if n > _MATMUL_MAX:
            out = dct(rows, dim=-1).mT
        else:
            out = torch.bmm(_batched_dct_matrix(n, groups, False, a.dtype, a.device), rows.mT)
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
    max_elements: int = _DEFAULT_MAX_ELEMENTS,
) -> torch.Tensor:
    """Mean over channels of ``IDCT(sign(DCT(A_s))) ** 2`` (the bracket of the paper's eq. for ``M(I)``).

    The DCT runs over the trailing ``len(dims)`` axes. Small blocks (``prod <= 64``, e.g. 7x7) use one GEMM with a
    cached Kronecker DCT matrix on channel rows; larger ones move the channels to the last axis once and apply
    each one-axis DCT as a GEMM over all channels (axes longer than 64: FFT-based). Channels are processed in
    chunks of at most ``max_elements`` elements. Small maps on AVX2 CPUs use the fused C kernel instead
    (module docstring), which needs no chunking: it holds a few channels at a time. Half-precision activations are
    computed in float32. The energy is piecewise constant in the activations, so it is returned without an autograd
    graph.

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


def _fused_dct_matrices(
    block: tuple[int, ...], dct_scaling: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and inverse DCT matrices of the block axes in the layout of
    :func:`monai_saliency.ops.cpu_kernels.signature_energy` (rows zero-padded to a multiple of 8, concatenated),
    cached. With ``"notebook"`` the inverse of axis ``-2`` weighs the DC coefficient by ``1/sqrt(2)``."""

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        forward, inverse = [], []
        for axis, n in enumerate(block):
            c = _kron_dct_matrix((n,), torch.float64, torch.device("cpu"))
            inv = c.T.clone()
            if dct_scaling == "notebook" and axis == len(block) - 2:
                inv[:, 0] *= 1.0 / math.sqrt(2.0)
            rows = -(-n // 8) * 8
            forward.append(F.pad(c, (0, 0, 0, rows - n)).reshape(-1))
            inverse.append(F.pad(inv, (0, 0, 0, rows - n)).reshape(-1))
        return torch.cat(forward).to(dtype), torch.cat(inverse).to(dtype)

    return _cached(("fused", block, dct_scaling, dtype), build)


def _fused_energy(a: torch.Tensor, n_dct: int, dct_scaling: str, tol: float) -> torch.Tensor | None:
    """:func:`_channel_sum_energy` by the fused C kernel when it applies (AVX2 CPU, contiguous float32 / float64,
    block axes <= 64 and <= ``_FUSED_MAX_VOXELS`` voxels) and is expected to be faster, else None.

    The kernel is single-threaded. Measured on a 2-core AVX2 CPU against the torch path with two threads: one
    512x14x14 map 200 vs 415 us; batches of 2D blocks 2-3x faster (8x512x14x14, 8x2048x7x7, 2x256x4x14x14 frames);
    56x56 blocks on par or faster; 3D blocks with short axes (4x14x14, 8x8x8) within about 20 % either way. With
    more than ``_FUSED_BATCH_MAX_THREADS`` torch threads the torch path's GEMMs could catch up on inputs of more
    than ``_FUSED_ALWAYS_ELEMENTS`` activations, which then stay on it (not measured here: 2 cores).
    """
    block = tuple(a.shape[a.ndim - n_dct :])
    p = math.prod(block)
    fits = max(block) <= _MATMUL_MAX and p <= _FUSED_MAX_VOXELS
    faster = a.numel() <= _FUSED_ALWAYS_ELEMENTS or torch.get_num_threads() <= _FUSED_BATCH_MAX_THREADS
    if not (fits and faster and cpu_kernels.fused_energy_supported() and cpu_kernels.usable(a)):
        return None
    forward, inverse = _fused_dct_matrices(block, dct_scaling, a.dtype)
    b, s = a.shape[:2]
    energy = cpu_kernels.signature_energy(a.reshape(b, s, -1, p), block, forward, inverse, tol)
    if energy is None:
        raise _NonFiniteNorms(_NON_FINITE_SIGNAL)
    return energy.view(b, *a.shape[2:])


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
    fused = _fused_energy(a, n_dct, dct_scaling, tol)
    if fused is not None:
        return fused
    energy_of = _energy_rows if math.prod(a.shape[a.ndim - n_dct :]) <= _KRON_MAX else _energy_channels_last
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


def bilateral_filter_axes(
    m: torch.Tensor,
    n_filter: int,
    spatial_sigma: float,
    range_sigma: float,
    radius: int | None,
    window: str,
    check_finite: bool = True,
) -> torch.Tensor:
    """Bilateral-filter the trailing ``n_filter`` axes of ``m``, skipping singleton axes and shrinking the window
    radius to ``min(size) - 1`` on tiny maps.

    Args:
        m: floating-point tensor ``(*leading, *spatial)``; the leading axes are batched.
        n_filter: number of trailing axes to filter (1 to 3 of them longer than 1).
        spatial_sigma: spatial standard deviation, in voxels.
        range_sigma: range standard deviation, in the units of ``m``.
        radius: window radius in voxels; None for ``max(round(1.5 * spatial_sigma), 1)`` (OpenCV's rule).
        window: ``"ball"`` or ``"box"`` (see :func:`monai_saliency.ops.bilateral_filter`).
        check_finite: reject NaN / Inf in ``m`` (skip only when the caller knows ``m`` is finite).

    Returns:
        The filtered tensor, shaped like ``m`` (``m`` itself when no axis can be filtered).

    Raises:
        ValueError: for bad sigmas or window, or NaN / Inf in ``m`` when ``check_finite``.
    """
    if radius is None:
        radius = max(int(round(1.5 * spatial_sigma)), 1)
    lead, spatial = m.shape[: m.ndim - n_filter], m.shape[m.ndim - n_filter :]
    kept = [n for n in spatial if n > 1]
    if not kept:
        return m
    radius = min(int(radius), min(kept) - 1)
    if radius <= 0:
        return m
    flat = m.reshape(*lead, *kept)
    out = bilateral_filter(
        flat,
        spatial_sigma,
        range_sigma,
        radius=radius,
        spatial_dims=len(kept),
        window=window,
        check_finite=check_finite,
    )
    return out.reshape(m.shape)


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


def _linear_resize_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(n_out, n_in)`` matrix ``R`` with ``R @ x`` = 1D linear interpolation of ``x`` to ``n_out`` samples
    (``align_corners=False``), built once by interpolating the identity with ``F.interpolate`` itself."""

    def build() -> torch.Tensor:
        eye = torch.eye(n_in, dtype=torch.float64)[None]
        mat = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T.contiguous()
        return mat.to(dtype=dtype, device=device)

    return _cached(("resize", n_in, n_out, dtype, str(device)), build)


def _resize(m: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """Resize ``(B, 1, *sp)`` maps to ``size``.

    2D linear resizing of a small map is two matrix products with cached interpolation matrices (the same weights as
    ``F.interpolate``'s bilinear kernel, ~3x faster than it for one 14x14 -> 224x224 map).
    """
    if tuple(m.shape[2:]) == tuple(size):
        return m
    nd = m.ndim - 2
    if mode == "linear":
        if nd == 2 and m.shape[2] * m.shape[3] <= _MATMUL_MAX**2:
            b, _, h, w = m.shape
            rows = _linear_resize_matrix(h, size[0], m.dtype, m.device)
            cols = _linear_resize_matrix(w, size[1], m.dtype, m.device)
            tall = torch.mm(rows, m.reshape(h, w)) if b == 1 else torch.matmul(rows, m.reshape(b, h, w))  # (B, H, w)
            return torch.mm(tall.view(-1, w), cols.T).view(b, 1, size[0], size[1])  # the large product, one GEMM
        return F.interpolate(m, size=tuple(size), mode=_LINEAR[nd], align_corners=False)
    if mode == "area":
        return F.interpolate(m, size=tuple(size), mode="area")
    return F.interpolate(m, size=tuple(size), mode="nearest")


def bilateral_options(bilateral: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The complete bilateral filter options of a ``bilateral`` argument.

    Args:
        bilateral: True (:data:`BILATERAL_DEFAULTS`, ball window), False / None (no filter), or a dict overriding
            ``spatial_sigma``, ``range_sigma``, ``radius``, ``window``.

    Returns:
        ``{spatial_sigma, range_sigma, radius, window}``, or None for no filter.

    Raises:
        TypeError: for any other type.
        ValueError: for unknown keys or non-positive sigmas.
    """
    if bilateral is None or bilateral is False:
        return None
    opts: dict[str, Any] = {**BILATERAL_DEFAULTS, "window": "ball"}
    if bilateral is True:
        return opts
    if not isinstance(bilateral, Mapping):
        raise TypeError(f"bilateral must be True, False/None or a dict of options, got {type(bilateral).__name__}.")
    unknown = set(bilateral) - {"spatial_sigma", "range_sigma", "radius", "window"}
    if unknown:
        raise ValueError(
            f"unknown bilateral option(s) {sorted(unknown)}; use spatial_sigma, range_sigma, radius, window."
        )
    opts.update(bilateral)
    if not opts["spatial_sigma"] > 0 or not opts["range_sigma"] > 0:
        raise ValueError(f"bilateral sigmas must be > 0, got {opts}.")
    return opts


def signature_map(
    activations: torch.Tensor,
    spatial_size: Sequence[int] | None = None,
    dct_axes: str = "spatial",
    bilateral: bool | Mapping[str, Any] | None = True,
    upsample_mode: str = "linear",
    dct_scaling: str = "ortho",
    zero_tol: float | None = None,
    max_elements: int = _DEFAULT_MAX_ELEMENTS,
) -> torch.Tensor:
    """Signature Activation post-processing of one layer's activations (everything after the forward pass).

    Args:
        activations: ``(B, S, *sp)`` with 1 to 3 spatial axes.
        spatial_size: output spatial size (the input's); None keeps the layer's size.
        dct_axes: ``"spatial"`` (DCT and filter over all spatial axes) or ``"frames"`` (over the last two axes of
            each frame; needs 3 spatial axes ``(T, H, W)``).
        bilateral: True (defaults :data:`BILATERAL_DEFAULTS`), False/None (no filter), or a dict overriding
            ``spatial_sigma``, ``range_sigma`` (on the ``[0, 1]`` scale), ``radius``, ``window``.
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
    if dct_axes not in DCT_AXES:
        raise ValueError(f"dct_axes must be one of {DCT_AXES}, got {dct_axes!r}.")
    if upsample_mode not in _UPSAMPLE_MODES:
        raise ValueError(f"upsample_mode must be one of {_UPSAMPLE_MODES}, got {upsample_mode!r}.")
    if dct_axes == "frames" and nd != 3:
        raise ValueError(
            f"dct_axes='frames' needs activations (B, S, T, H, W); got {nd} spatial axes. Use dct_axes='spatial'."
        )
    opts = bilateral_options(bilateral)
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
            m = _resize(m, spatial_size, upsample_mode)
    return minmax_normalize(m).to(activations.dtype)


class SignatureActivation(Explainer):
    """Signature Activation (seed 001, §6.1): class-agnostic saliency from one forward pass, no gradients.

    ``maps = SignatureActivation(model, "layer4")(x)`` gives ``(B, 1, *spatial)`` maps in ``[0, 1]`` at the input's
    size (a MetaTensor with the input's metadata when ``x`` is one). ``class_idx`` is accepted and ignored. The
    model runs once under ``torch.no_grad()`` (so this also works inside MONAI evaluators), its mode and
    parameters are left untouched. Every default and its reason is in the module docstring; in short:

    Args:
        nn_module: the network (returns class scores ``(B, K)``); DDP's ``module.`` prefix is accepted in names.
        target_layers: layer name(s) whose outputs ``(B, S, *sp)`` are used; several layers -> equal-weight mean
            of their ``[0, 1]`` maps, min-max normalised again.
        dct_axes: ``"spatial"`` (default: the paper's DCT of the whole activation map, N-d for volumes and for the
            ``(T, H, W)`` of a video layer) or ``"frames"`` (2D DCT and 2D bilateral filter per frame of
            ``(B, C, T, H, W)`` inputs: the paper's per-frame angiogram view, Fig. 1 / Fig. 3).
        bilateral: True (default; the notebook's ``cv2.bilateralFilter(map, 2, 140, 140)`` moved to the ``[0, 1]``
            scale: radius 1 ball window (5 taps in 2D, 7 in 3D), range sigma 140/255, spatial sigma 140;
            :data:`BILATERAL_DEFAULTS`),
            False/None, or a dict overriding ``spatial_sigma``, ``range_sigma``, ``radius``, ``window``.
        upsample_mode: ``"linear"`` (default: bi/trilinear with ``align_corners=False``, as MONAI's CAM upsampler and
            OpenCV's ``INTER_LINEAR``; the paper does not say), ``"nearest"`` or ``"area"``.
        dct_scaling: ``"ortho"`` (default: the paper's IDCT, orthonormal as Hou et al.'s proof needs) or
            ``"notebook"`` (the authors' notebook: un-normalised inverse along the rows).
        zero_tol: relative threshold for zero DCT coefficients; None for ``8 * eps(dtype)`` (round-off level, so that
            constant channels give constant reconstructions instead of sign noise).
        max_elements: element budget of one temporary in the channel-chunked DCT (default ``2**24``: 64 MiB float32).

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
        max_elements: int = _DEFAULT_MAX_ELEMENTS,
    ) -> None:
        if dct_axes not in DCT_AXES:
            raise ValueError(f"dct_axes must be one of {DCT_AXES}, got {dct_axes!r}.")
        if upsample_mode not in _UPSAMPLE_MODES:
            raise ValueError(f"upsample_mode must be one of {_UPSAMPLE_MODES}, got {upsample_mode!r}.")
        zero_tolerance(dct_scaling, zero_tol)  # validate early
        bilateral_options(bilateral)
        if not max_elements > 0:
            raise ValueError(f"max_elements must be > 0, got {max_elements!r}.")
        super().__init__(nn_module, target_layers, spatial_dims=3 if dct_axes == "frames" else None)
        self.dct_axes = dct_axes
        self.bilateral = bilateral
        self.upsample_mode = upsample_mode
        self.dct_scaling = dct_scaling
        self.zero_tol = zero_tol
        self.max_elements = max_elements

    def explain(self, x: torch.Tensor, class_idx: Any = None, **kwargs: Any) -> torch.Tensor:
        """Compute ``(B, 1, *spatial)`` maps for a validated plain tensor (``class_idx`` is ignored).

        Args:
            x: input ``(B, C, *spatial)``.
            class_idx: ignored (the method is class-agnostic).
            kwargs: none are accepted; options are set in the constructor.

        Returns:
            ``(B, 1, *spatial)`` maps in ``[0, 1]``, the input's dtype.

        Raises:
            ValueError: if a target layer's output lost a spatial axis (e.g. after global pooling), or has a single
                voxel (no spatial information) while the input has more; NaN / Inf activations.
            TypeError: for keyword options.
        """
        if kwargs:
            raise TypeError(f"unexpected option(s) {sorted(kwargs)}; set options in the constructor.")
        with torch.no_grad():
            _, acts = self.forward_with_activations(x)
            maps = None
            for name in self.hooks.names:  # loop over target layers (usually one)
                act = acts[name]
                if act.ndim != x.ndim:
                    raise ValueError(
                        f"layer {name!r} outputs shape {tuple(act.shape)} but the input is {tuple(x.shape)}; "
                        "choose a layer that keeps every spatial axis (before global pooling / flattening)."
                    )
                if math.prod(act.shape[2:]) == 1 < math.prod(x.shape[2:]):
                    raise ValueError(
                        f"layer {name!r} outputs a single voxel per channel (shape {tuple(act.shape)}), so its map "
                        "would be constant; choose an earlier layer (before global pooling) or a larger input."
                    )
                m = signature_map(
                    act,
                    spatial_size=x.shape[2:],
                    dct_axes=self.dct_axes,
                    bilateral=self.bilateral,
                    upsample_mode=self.upsample_mode,
                    dct_scaling=self.dct_scaling,
                    zero_tol=self.zero_tol,
                    max_elements=self.max_elements,
                )
                maps = m if maps is None else maps + m
            del acts
        if len(self.hooks.names) > 1:
            maps = minmax_normalize(maps / len(self.hooks.names))
        return maps.to(x.dtype)
