"""Round-off of the float32 DCT coefficients of Signature Activation (issue 24, part 3): the measurement behind the
default zero threshold ``monai_saliency.ops.signature.zero_tolerance``.

For random ReLU activations of realistic layer shapes, every channel's orthonormal DCT is computed in float32 by each
torch path of :mod:`monai_saliency.ops.signature` (the Kronecker GEMM of small blocks, the per-axis GEMMs of the
channels-last layout, :func:`monai_saliency.ops.dct.dctn` used by :func:`signature_reconstruction` (matrix products
for axes up to 64, FFTs beyond), and the FFT route of :mod:`monai_saliency.ops.dct` on every axis) and in float64 by ``scipy.fft.dctn``. Printed per shape and path, relative to the
channel norm ``||A_s||``:

* the largest float32 error ``max |c32 - c64| / ||A_s||``, in units of float32 ``eps``;
* the smallest real coefficient ``min |c64| / ||A_s||`` and how many real coefficients a threshold of ``k * eps``
  would zero, for the candidate ``k``.

Also the coefficients that are exactly zero in exact arithmetic (channels with one nonzero voxel at the centre of
odd-sized axes, constant channels): the largest computed ``|c| / ||A_s||`` (pure round-off), float32 and float64.

Run: ``python -m benchmarks.speed.roundoff_signature`` (a few seconds).
"""

from __future__ import annotations

import math

import scipy.fft as sfft
import torch

from monai_saliency.ops.dct import KRON_MAX, MATMUL_MAX, _dct_fft, dct_matrix, dctn
from monai_saliency.ops.signature import _forward_channels_last

SHAPES = [
    (512, 14, 14),
    (2048, 7, 7),
    (64, 28, 28),
    (256, 56, 56),
    (128, 4, 28, 28),
    (64, 8, 8, 8),
    (8, 96, 96),
    (512, 3, 3),
    (256, 2, 2),
    (64, 5),
    (16, 200),
    (2, 72, 72, 72),
]
CANDIDATES = (4, 8, 16, 64)


def relu_activations(shape: tuple[int, ...], items: int, seed: int) -> torch.Tensor:
    """ReLU of Gaussians with a random per-channel scale and bias (sparse and dense channels)."""
    g = torch.Generator().manual_seed(seed)
    s = shape[0]
    view = (items, s) + (1,) * (len(shape) - 1)
    bias = torch.randn(view, generator=g, dtype=torch.float64) * 0.5
    scale = torch.rand(view, generator=g, dtype=torch.float64) + 0.1
    return torch.relu(torch.randn(items, *shape, generator=g, dtype=torch.float64) + bias) * scale


def float32_paths(a32: torch.Tensor) -> dict[str, torch.Tensor]:
    """Float32 coefficients ``(B, S, *sp)`` of every torch path that applies to this shape."""
    nd = a32.ndim - 2
    dims = list(range(2, a32.ndim))
    block = a32.shape[2:]
    fft = a32
    for d in dims:
        fft = _dct_fft(fft, d)
    out = {"dctn": dctn(a32, dims), "fft": fft}
    p = math.prod(a32.shape[2:])
    if p <= KRON_MAX:
        kmat = dct_matrix(tuple(a32.shape[2:]), a32.dtype, a32.device)
        out["kron rows"] = (a32.reshape(*a32.shape[:2], p) @ kmat.T).reshape(a32.shape)
    if max(block) <= MATMUL_MAX:
        y, _ = _forward_channels_last(a32, nd, 1)  # (1, P, B*S) in the block layout
        out["channels-last"] = y.view(*a32.shape[2:], *a32.shape[:2]).permute(-2, -1, *range(nd)).contiguous()
    return out


def measure(shape: tuple[int, ...], items: int = 2, seed: int = 0) -> None:
    a64 = relu_activations(shape, items, seed)
    dims = tuple(range(2, a64.ndim))
    ref = torch.from_numpy(sfft.dctn(a64.numpy(), axes=dims, norm="ortho"))
    norms = torch.linalg.vector_norm(a64, dim=dims, keepdim=True).clamp_min(1e-300)
    rel = ref.abs() / norms
    real = rel[rel > 1e-12]  # coefficients that are exactly zero (single-voxel channels) have |c| ~ 1e-17
    eps = torch.finfo(torch.float32).eps
    counts = ", ".join(f"{k}eps: {int((real <= k * eps).sum())}" for k in CANDIDATES)
    print(
        f"{'x'.join(map(str, shape))} x{items} ({real.numel()} nonzero coefficients): min |c|/||A|| = "
        f"{real.min().item():.2e}; real coefficients zeroed at {counts}"
    )
    for name, c32 in float32_paths(a64.float()).items():
        err = ((c32.double() - ref).abs() / norms).flatten()
        q = torch.quantile(err[:: max(1, err.numel() // 10**6)], 0.9999).item()
        print(f"    {name:<14} max err {err.max().item() / eps:6.2f} eps   99.99% {q / eps:5.2f} eps")


def measure_exact_zeros(n: int, nd: int) -> None:
    """Coefficients that are exactly zero: one centred voxel (odd sizes: every odd frequency) and constant channels."""
    x = torch.zeros((1, 2) + (n,) * nd, dtype=torch.float64)
    x[(0, 0) + (n // 2,) * nd] = 1.0
    x[0, 1] = 0.37
    dims = tuple(range(2, 2 + nd))
    exact = torch.from_numpy(sfft.dctn(x.numpy(), axes=dims, norm="ortho"))
    zero = exact.abs() < 1e-12
    for dtype in (torch.float32, torch.float64):
        eps = torch.finfo(dtype).eps
        norms = torch.linalg.vector_norm(x, dim=dims, keepdim=True)
        worst = {}
        for name, c in float32_paths(x.to(dtype)).items():
            rel = (c.double().abs() / norms)[zero]
            worst[name] = rel.max().item() / eps
        print(
            f"  {n}^{nd} exact zeros ({int(zero.sum())}), {str(dtype)[6:]}: max |c|/||A|| in eps: "
            + ", ".join(f"{k} {v:.2f}" for k, v in worst.items())
        )


def main() -> None:
    torch.manual_seed(0)
    print("float32 vs float64 (scipy) DCT coefficients of random ReLU activations, relative to ||A_s||:")
    for shape in SHAPES:
        measure(shape)
    print("round-off of coefficients that are exactly zero:")
    for n, nd in ((7, 2), (13, 2), (15, 2), (97, 2), (7, 3), (9, 3)):
        measure_exact_zeros(n, nd)


if __name__ == "__main__":
    main()
