"""Optional fused CPU kernels (the C extension ``monai_saliency.ops._cpu_kernels``) with their checks.

The extension is built by ``pip install`` when a C compiler is present and skipped otherwise; every caller keeps a
pure-torch path and uses these functions only when :func:`usable` says so (CPU, float32 / float64, contiguous,
extension loaded, not disabled). Setting the environment variable ``MONAI_SALIENCY_DISABLE_CPU_KERNELS=1`` before the
import turns them off (the results agree with the torch paths to round-off, see the tests).
"""

from __future__ import annotations

import os

import torch

try:
    from monai_saliency.ops import _cpu_kernels as _ext
except ImportError:  # not built (no compiler at install time): callers use their torch paths
    _ext = None

__all__ = ["available", "set_enabled", "usable", "masked_sign", "channel_energy", "bilateral_gather"]

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}
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


def masked_sign(coeffs: torch.Tensor, tol: float, out: torch.Tensor) -> bool:
    """``out = sign(c)`` where ``|c| > tol * ||c[g, :, j]||``, else 0, for ``coeffs`` ``(G, R, C)``: the norm of each
    column ``j`` of each group ``g`` (one channel's DCT coefficients; by Parseval its activation norm).

    Args:
        coeffs: contiguous ``(G, R, C)`` tensor.
        tol: relative zero threshold (>= 0).
        out: contiguous tensor of the same shape and dtype (may be ``coeffs`` itself).

    Returns:
        False when a column norm is not finite (NaN / Inf in ``coeffs``); ``out`` is then undefined.

    Raises:
        ValueError: when the kernels cannot run on these tensors or the shapes disagree.
    """
    _check(usable(coeffs, out) and coeffs.ndim == 3 and out.shape == coeffs.shape, "masked_sign: bad arguments")
    g, r, c = coeffs.shape
    return _ext.masked_sign(_DTYPE_CODES[coeffs.dtype], coeffs.data_ptr(), out.data_ptr(), g, r, c, float(tol))


def channel_energy(y: torch.Tensor, sum_groups: bool) -> torch.Tensor:
    """Sum of squares over the channel axis of ``y`` ``(G, R, B, S, O)``.

    Args:
        y: contiguous ``(groups, rows, items, channels, others)`` tensor.
        sum_groups: also sum over the groups (they hold channel runs of the same items).

    Returns:
        New ``(B, O, R)`` tensor when ``sum_groups``, else ``(G * B, O, R)``.

    Raises:
        ValueError: when the kernels cannot run on ``y`` or it is not 5-d.
    """
    _check(usable(y) and y.ndim == 5, "channel_energy: bad arguments")
    g, r, b, s, o = y.shape
    out = torch.empty((b if sum_groups else g * b, o, r), dtype=y.dtype)
    _ext.channel_energy(_DTYPE_CODES[y.dtype], y.data_ptr(), out.data_ptr(), g, r, b, s, o, sum_groups)
    return out


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

