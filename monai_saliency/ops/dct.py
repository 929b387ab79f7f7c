"""Orthonormal DCT-II and its inverse (DCT-III) over any set of axes, computed with ``torch.fft``.

The one-axis transform uses Makhoul's reordering: for ``x`` of length ``N``,
``v = [x[0::2], reversed(x[1::2])]`` and ``DCT(x)_k = Re(exp(-i*pi*k/(2N)) * FFT(v)_k)``.
Multi-axis transforms apply the separable one-axis transform axis by axis, so every leading
(batch, channel) dimension is processed in one batched FFT call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["dct", "idct", "dctn", "idctn"]


def _check_float(x: torch.Tensor) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"DCT needs a floating-point tensor, got {x.dtype}; cast with x.float() first.")


def _twiddle(n: int, x: torch.Tensor, sign: float) -> torch.Tensor:
    k = torch.arange(n, device=x.device, dtype=x.dtype)
    return torch.polar(torch.ones_like(k), sign * math.pi * k / (2 * n))


def _ortho_scale(n: int, x: torch.Tensor) -> torch.Tensor:
    scale = torch.full((n,), math.sqrt(2.0 / n), device=x.device, dtype=x.dtype)
    scale[0] = math.sqrt(1.0 / n)
    return scale


def dct(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Orthonormal DCT-II along one axis (``scipy.fft.dct(x, type=2, norm="ortho", axis=dim)``).

    Args:
        x: real floating-point tensor of any shape.
        dim: axis to transform.

    Returns:
        Tensor of the same shape and dtype as ``x``.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
    """
    _check_float(x)
    xm = x.movedim(dim, -1)
    n = xm.shape[-1]
    v = torch.cat([xm[..., 0::2], xm[..., 1::2].flip(-1)], dim=-1)
    spectrum = torch.fft.fft(v, dim=-1)
    out = (spectrum * _twiddle(n, xm, -1.0)).real * _ortho_scale(n, xm)
    return out.movedim(-1, dim).contiguous()


def idct(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`dct` (orthonormal DCT-III) along one axis.

    Args:
        x: real floating-point tensor of DCT-II coefficients.
        dim: axis to transform.

    Returns:
        Tensor of the same shape and dtype as ``x``.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
    """
    _check_float(x)
    xm = x.movedim(dim, -1)
    n = xm.shape[-1]
    coeffs = xm / _ortho_scale(n, xm)
    # Z_k = X_k - i X_{N-k} (X_N = 0) is the twiddled FFT of the reordered signal.
    reversed_tail = torch.cat([torch.zeros_like(coeffs[..., :1]), coeffs[..., 1:].flip(-1)], dim=-1)
    spectrum = torch.complex(coeffs, -reversed_tail) * _twiddle(n, xm, 1.0)
    v = torch.fft.ifft(spectrum, dim=-1).real
    half = (n + 1) // 2
    out = torch.empty_like(xm)
    out[..., 0::2] = v[..., :half]
    out[..., 1::2] = v[..., half:].flip(-1)
    return out.movedim(-1, dim).contiguous()


def _normalize_dims(x: torch.Tensor, dims: int | Sequence[int] | None) -> list[int]:
    if dims is None:
        return list(range(x.ndim))
    dims = [dims] if isinstance(dims, int) else list(dims)
    norm = []
    for d in dims:
        if not -x.ndim <= d < x.ndim:
            raise ValueError(f"axis {d} is out of range for a tensor of rank {x.ndim}.")
        norm.append(d % x.ndim)
    if len(set(norm)) != len(norm):
        raise ValueError(f"repeated axes in {dims}.")
    return norm


def dctn(x: torch.Tensor, dims: int | Sequence[int] | None = None) -> torch.Tensor:
    """Orthonormal N-d DCT-II over ``dims`` (all axes when None), like ``scipy.fft.dctn(norm="ortho")``.

    Args:
        x: real floating-point tensor.
        dims: axes to transform; e.g. ``(-2, -1)`` for the spatial axes of ``(B, C, H, W)``.

    Returns:
        Tensor of the same shape and dtype as ``x``.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
        ValueError: if an axis is out of range or repeated.
    """
    _check_float(x)
    out = x
    for d in _normalize_dims(x, dims):
        out = dct(out, d)
    return out


def idctn(x: torch.Tensor, dims: int | Sequence[int] | None = None) -> torch.Tensor:
    """Inverse of :func:`dctn` (orthonormal N-d DCT-III), like ``scipy.fft.idctn(norm="ortho")``.

    Args:
        x: real floating-point tensor of coefficients.
        dims: axes to transform (all axes when None).

    Returns:
        Tensor of the same shape and dtype as ``x``.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
        ValueError: if an axis is out of range or repeated.
    """
    _check_float(x)
    out = x
    for d in _normalize_dims(x, dims):
        out = idct(out, d)
    return out
