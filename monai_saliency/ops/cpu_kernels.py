"""Optional fused CPU kernels (the C extension ``monai_saliency.ops._cpu_kernels``) with their checks.

Two kernels for small CPU tensors, where torch's per-op dispatch and MKL's GEMMs with 7- to 14-long inner dimensions
cost more than the arithmetic: the whole signature energy of one activation map (:func:`signature_energy`) and the
gathered bilateral filter of a small map (:func:`bilateral_gather`).

The extension is built by ``pip install`` when a C compiler is present and skipped otherwise; every caller keeps a
pure-torch path and uses these functions only when :func:`usable` says so (CPU, float32 / float64, contiguous,
extension loaded, not disabled). Setting the environment variable ``MONAI_SALIENCY_DISABLE_CPU_KERNELS=1`` before the
import turns them off (the results agree with the torch paths to round-off, see the tests).
"""

from __future__ import annotations

import math
import os

import torch

try:
    from monai_saliency.ops import _cpu_kernels as _ext
except ImportError:  # not built (no compiler at install time): callers use their torch paths
    _ext = None

__all__ = ["available", "set_enabled", "usable", "fused_energy_supported", "signature_energy", "bilateral_gather"]

MAX_BLOCK_AXIS = 64  # the C kernel's MS_MAX_AXIS
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}
_FUSED = _ext is not None and _ext.fused_supported()
_enabled = _ext is not None and os.environ.get("MONAI_SALIENCY_DISABLE_CPU_KERNELS", "0") in ("", "0")


def available() -> bool:
    """Whether the compiled kernels are loaded and enabled."""
    return _enabled


def set_enabled(flag: bool) -> bool:
    """Turn the kernels on or off at run time (for comparisons); returns the previous state.

    Raises:
        RuntimeError: when asked to enable kernels that were not built.
    """
    global _enabled
    if flag and _ext is None:
        raise RuntimeError("monai_saliency.ops._cpu_kernels was not built (no C compiler at install time).")
    previous, _enabled = _enabled, bool(flag)
    return previous


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can run on these tensors: enabled, all on CPU, one dtype (float32 or float64), contiguous,
    and not recording autograd history."""
    if not _enabled:
        return False
    dtype = tensors[0].dtype
    return dtype in _DTYPE_CODES and all(
        t.device.type == "cpu" and t.dtype == dtype and t.is_contiguous() and not t.requires_grad for t in tensors
    )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def fused_energy_supported() -> bool:
    """Whether :func:`signature_energy` runs here: kernels enabled and an x86-64 CPU with AVX2 and FMA (elsewhere its
    32-byte vector code would be slower than torch, so it is not built or not used)."""
    return _enabled and _FUSED


def signature_energy(
    a: torch.Tensor,
    block: tuple[int, ...],
    forward: torch.Tensor,
    inverse: torch.Tensor,
    tol: float,
) -> torch.Tensor | None:
    """Channel sum of ``IDCT(sign(DCT(A_s))) ** 2`` over the trailing block of ``a`` ``(B, S, O, P)``, fused: a few
    channels at a time stay in L1 through both transforms (no GEMM, no temporaries).

    Single-threaded (see :func:`monai_saliency.methods.signature._fused_energy` for when it is used).

    Args:
        a: contiguous ``(B, S, O, P)`` tensor, ``P = prod(block)``.
        block: the 1 to 3 axis lengths of the DCT block, ``prod(block) == P``.
        forward: per axis (in ``block`` order) its ``n x n`` DCT matrix with rows zero-padded to a multiple of 8,
            flattened and concatenated; dtype of ``a``.
        inverse: the same for the inverse matrices (``C^T``, possibly with the notebook scaling).
        tol: relative zero threshold: coefficients with ``|c| <= tol * ||A_s||`` count as 0.

    Returns:
        New ``(B, O, P)`` tensor, or None when a channel norm is not finite (NaN / Inf in ``a``).

    Raises:
        ValueError: when the kernel cannot run on these tensors or the sizes disagree.
    """
    _check(fused_energy_supported() and usable(a, forward, inverse) and a.ndim == 4, "signature_energy: bad arguments")
    _check(1 <= len(block) <= 3 and math.prod(block) == a.shape[3], "signature_energy: block does not match P")
    _check(all(1 <= n <= MAX_BLOCK_AXIS for n in block), f"signature_energy: block axes must be 1 to {MAX_BLOCK_AXIS}")
    padded = sum(-(-n // 8) * 8 * n for n in block)
    _check(forward.numel() == padded and inverse.numel() == padded, "signature_energy: matrix sizes")
    b, s, o, p = a.shape
    out = torch.empty((b, o, p), dtype=a.dtype)
    dims = (*block, 1, 1)[:3]
    finite = _ext.signature_energy(
        _DTYPE_CODES[a.dtype], a.data_ptr(), out.data_ptr(), b, s, o, len(block), dims, forward.data_ptr(),
        inverse.data_ptr(), float(tol),
    )
    return out if finite else None


def bilateral_gather(x: torch.Tensor, index: torch.Tensor, log_w: torch.Tensor, half_inv_var: float) -> torch.Tensor:
    """Bilateral filter of the rows of ``x`` ``(N, P)`` over precomputed neighbours:
    ``out(p) = sum_k w_k x(q_k) / sum_k w_k``, ``q_k = index[p * K + k]``,
    ``w_k = exp(log_w[k] - half_inv_var * (x(q_k) - x(p))^2)``.

    Args:
        x: contiguous ``(N, P)`` tensor.
        index: contiguous int64 ``(P * K,)`` neighbour indices in ``[0, P)``, the centre among each voxel's taps.
        log_w: contiguous ``(K,)`` log spatial weights (<= 0, the centre's 0), dtype of ``x``.
        half_inv_var: ``1 / (2 range_sigma^2)`` (>= 0, finite).

    Returns:
        New ``(N, P)`` tensor.

    Raises:
        ValueError: when the kernels cannot run on these tensors, the sizes disagree or an index is out of range.
    """
    _check(usable(x, log_w) and x.ndim == 2 and log_w.ndim == 1, "bilateral_gather: bad arguments")
    _check(
        index.dtype == torch.int64 and index.device.type == "cpu" and index.is_contiguous(),
        "bilateral_gather: index must be a contiguous int64 CPU tensor",
    )
    n, p = x.shape
    k = log_w.shape[0]
    _check(index.numel() == p * k and p > 0, "bilateral_gather: index size is not voxels x taps")
    out = torch.empty_like(x)
    in_range = _ext.bilateral(
        _DTYPE_CODES[x.dtype], x.data_ptr(), out.data_ptr(), index.data_ptr(), log_w.data_ptr(), n, p, k,
        float(half_inv_var),
    )
    _check(in_range, f"bilateral_gather: neighbour index outside [0, {p})")
    return out

