"""Orthonormal DCT-II and its inverse (DCT-III) over any set of axes: the package's one DCT.

Two routes compute the same linear map, chosen per axis by its length:

* axes of at most :data:`MATMUL_MAX` samples: a product with the cached ``N x N`` DCT matrix (:func:`dct_matrix`);
  a trailing ``(H, W)`` block of at most :data:`KRON_MAX` voxels: one product with the Kronecker matrix
  ``C_H (x) C_W``. The maps of deep CNN layers are 7x7 to 56x56, where a chain of small FFT kernels is all overhead
  (one GEMM is ~9x faster than the FFT route on 2048x7x7, the per-axis products ~4x on 512x14x14).
* longer axes: ``torch.fft`` with Makhoul's reordering: for ``x`` of length ``N``,
  ``v = [x[0::2], reversed(x[1::2])]`` and ``DCT(x)_k = Re(exp(-i*pi*k/(2N)) * FFT(v)_k)``.

Multi-axis transforms apply the separable one-axis transform axis by axis; every leading (batch, channel) dimension
is processed in one batched call. The matrices are built once in float64 from the FFT route and kept in a cache
bounded in bytes (:mod:`monai_saliency.ops._cache`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_saliency.ops._cache import cached

__all__ = ["KRON_MAX", "MATMUL_MAX", "batched_dct_matrix", "dct", "dct_matrix", "dctn", "idct", "idctn"]

#: axes up to this length are transformed by matrix products, longer ones by FFTs
MATMUL_MAX = 64
#: trailing (H, W) blocks up to this many voxels are transformed with one Kronecker matrix
KRON_MAX = 64
#: a batched stack of DCT matrices larger than this is an expanded view of one matrix, neither copied nor cached
_STACK_MAX_BYTES = 1 << 20


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


def _dct_fft(x: torch.Tensor, dim: int) -> torch.Tensor:
    """FFT route of :func:`dct`."""
    xm = x.movedim(dim, -1)
    n = xm.shape[-1]
    v = torch.cat([xm[..., 0::2], xm[..., 1::2].flip(-1)], dim=-1)
    spectrum = torch.fft.fft(v, dim=-1)
    out = (spectrum * _twiddle(n, xm, -1.0)).real * _ortho_scale(n, xm)
    return out.movedim(-1, dim).contiguous()


def _idct_fft(x: torch.Tensor, dim: int) -> torch.Tensor:
    """FFT route of :func:`idct`."""
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


def dct_matrix(sizes: int | Sequence[int], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``C`` of length ``n`` (``DCT(x) = C @ x``), or for several sizes the Kronecker
    product ``C_1 (x) ... (x) C_k`` (``vec(DCT(X)) = K vec(X)``, row-major ``vec``); built once in float64 with the FFT
    route and cached.

    Args:
        sizes: axis length(s).
        dtype: floating dtype of the matrix.
        device: its device.

    Returns:
        ``(prod(sizes), prod(sizes))`` matrix (not to be modified: it is shared).
    """
    sizes = (int(sizes),) if isinstance(sizes, int) else tuple(int(n) for n in sizes)
    device = torch.device(device)

    def build() -> torch.Tensor:
        mat = torch.ones(1, 1, dtype=torch.float64)
        for n in sizes:
            mat = torch.kron(mat, _dct_fft(torch.eye(n, dtype=torch.float64), 0))
        return mat.to(dtype=dtype, device=device)

    return cached(("kron", sizes, dtype, str(device)), build)


def batched_dct_matrix(n: int, batch: int, inverse: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(batch, n, n)`` contiguous stack of the DCT matrix ``C`` (or ``C^T`` for the inverse), cached: the left
    operand of a batched one-axis transform, built once rather than expanded and transposed on every call. A stack
    above 1 MiB is an expanded view instead (its copy would cost more memory than it saves time).

    Args:
        n: axis length.
        batch: number of stacked copies.
        inverse: stack ``C^T`` instead of ``C``.
        dtype: floating dtype.
        device: device.

    Returns:
        ``(batch, n, n)`` tensor (not to be modified).
    """
    base = dct_matrix(n, dtype, device)
    base = base.T if inverse else base
    if batch * n * n * base.element_size() > _STACK_MAX_BYTES:
        return base.expand(batch, n, n)
    return cached(("batched", n, batch, inverse, dtype, str(device)), lambda: base.expand(batch, n, n).contiguous())


def _axis(x: torch.Tensor, dim: int, inverse: bool) -> torch.Tensor:
    """One-axis transform by the route that fits the axis length; ``dim`` in ``[0, x.ndim)``."""
    n = x.shape[dim]
    if n > MATMUL_MAX:
        return _idct_fft(x, dim) if inverse else _dct_fft(x, dim)
    mat = dct_matrix(n, x.dtype, x.device)
    if dim == x.ndim - 1:
        return x @ (mat if inverse else mat.T)  # forward X C^T, inverse Y C
    if dim == x.ndim - 2:
        return (mat.T if inverse else mat) @ x  # forward C X, inverse C^T Y
    return (x.movedim(dim, -1) @ (mat if inverse else mat.T)).movedim(-1, dim).contiguous()


def dct(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Orthonormal DCT-II along one axis (``scipy.fft.dct(x, type=2, norm="ortho", axis=dim)``).

    Args:
        x: real floating-point tensor of any shape.
        dim: axis to transform.

    Returns:
        Tensor of the same shape and dtype as ``x``.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
        ValueError: if ``dim`` is out of range.
    """
    _check_float(x)
    return _axis(x, _normalize_dims(x, dim)[0], inverse=False)


def idct(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`dct` (orthonormal DCT-III) along one axis.

    Args:
        x: real floating-point tensor of DCT-II coefficients.
        dim: axis to transform.

    Returns:
        Tensor of the same shape and dtype as ``x``.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
        ValueError: if ``dim`` is out of range.
    """
    _check_float(x)
    return _axis(x, _normalize_dims(x, dim)[0], inverse=True)


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


def _transform(x: torch.Tensor, dims: int | Sequence[int] | None, inverse: bool) -> torch.Tensor:
    """N-d transform over ``dims``: the trailing ``(H, W)`` axes of a small block with one Kronecker product, every
    other axis on its own (forward: leading axes first, then ``W``, ``H``; the inverse in reverse order)."""
    nd = x.ndim
    dims = sorted(_normalize_dims(x, dims))
    p = x.shape[-2] * x.shape[-1] if nd >= 2 else 0
    kron = nd >= 2 and dims[-2:] == [nd - 2, nd - 1] and p <= KRON_MAX
    lead = dims[:-2] if kron else [d for d in dims if d < nd - 2]
    trail = [] if kron else [d for d in (nd - 1, nd - 2) if d in dims]
    out = x
    if not inverse:
        for d in lead + trail:
            out = _axis(out, d, inverse=False)
    if kron:
        kmat = dct_matrix(x.shape[-2:], x.dtype, x.device)
        out = (out.reshape(-1, p) @ (kmat if inverse else kmat.T)).reshape(x.shape)
    if inverse:
        for d in trail + lead:
            out = _axis(out, d, inverse=True)
    return out


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
    return _transform(x, dims, inverse=False)


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
    return _transform(x, dims, inverse=True)
