from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from monai_saliency.ops.dct import dct, dctn, idct, idctn


@pytest.mark.parametrize(
    "shape, dims",
    [((2, 3, 7, 8), (-2, -1)), ((2, 2, 5, 6, 9), (2, 3, 4)), ((3, 1, 16, 15), (2, 3)), ((5,), None), ((4, 6), (0,))],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dctn_matches_scipy_and_round_trips(shape, dims, dtype):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=gen, dtype=dtype)
    y = dctn(x, dims)
    ref = scipy.fft.dctn(x.double().numpy(), axes=dims, norm="ortho")
    rel = np.abs(y.double().numpy() - ref).max() / np.abs(ref).max()
    assert y.dtype == dtype and y.shape == x.shape
    assert rel < 1e-4
    back = idctn(y, dims)
    assert (back - x).abs().max().item() < (1e-5 if dtype == torch.float32 else 1e-12)
    ref_inv = scipy.fft.idctn(x.double().numpy(), axes=dims, norm="ortho")
    assert np.abs(idctn(x, dims).double().numpy() - ref_inv).max() / np.abs(ref_inv).max() < 1e-4


def test_dct_is_orthonormal_and_matches_basis():
    n = 9
    eye = torch.eye(n, dtype=torch.float64)
    mat = dct(eye, dim=0)  # columns are DCT of unit vectors = the DCT matrix
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    ref = np.sqrt(2 / n) * np.cos(np.pi * k * (2 * i + 1) / (2 * n))
    ref[0] /= np.sqrt(2)
    np.testing.assert_allclose(mat.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(mat.numpy() @ mat.numpy().T, np.eye(n), atol=1e-12)


def test_single_axis_and_length_one():
    x = torch.randn(3, 1, dtype=torch.float64)
    assert torch.allclose(dct(x, dim=1), x)
    assert torch.allclose(idct(dct(x, 0), 0), x)


def test_bad_input():
    with pytest.raises(TypeError, match="floating-point"):
        dctn(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="out of range"):
        dctn(torch.ones(3, 3), dims=(2,))
    with pytest.raises(ValueError, match="repeated"):
        dctn(torch.ones(3, 3), dims=(1, -1))


@pytest.mark.parametrize(
    "shape, dims",
    [
        ((2, 65, 3, 64), (1, 2, 3)),  # FFT route on a leading axis, matrices on a middle and the last axis
        ((70, 5, 7), (0, 1, 2)),  # FFT on axis 0, Kronecker matrix on the trailing 5x7 block
        ((2, 3, 4, 9, 7), (2, 3, 4)),  # a leading axis by a matrix (moved last), Kronecker block
        ((3, 8, 66), (-2, -1)),  # matrix on -2, FFT on -1
        ((2, 6, 5), (1,)),  # matrix on -2 alone
        ((4, 5, 3), (0, 2)),  # matrices on non-adjacent axes
    ],
)
def test_matrix_and_fft_routes_match_scipy(shape, dims):
    """Every route of the one DCT (per-axis matrices on any axis, the Kronecker block, FFTs beyond 64 samples) is the
    orthonormal DCT of scipy, forward and inverse, also with autograd (the transform is orthonormal)."""
    from monai_saliency.ops.dct import _dct_fft

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    y = dctn(x, dims)
    np.testing.assert_allclose(
        y.detach().numpy(), scipy.fft.dctn(x.detach().numpy(), axes=dims, norm="ortho"), atol=1e-12
    )
    inv = idctn(x.detach(), dims)
    np.testing.assert_allclose(inv.numpy(), scipy.fft.idctn(x.detach().numpy(), axes=dims, norm="ortho"), atol=1e-12)
    fft = x.detach()
    for d in dims:
        fft = _dct_fft(fft, d)
    np.testing.assert_allclose(y.detach().numpy(), fft.numpy(), atol=1e-12)
    y.square().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy(), atol=1e-12)


def test_dct_matrix_is_the_kronecker_product_and_cached():
    from monai_saliency.ops.dct import dct_matrix

    c5, c7 = dct_matrix(5, torch.float64, "cpu"), dct_matrix(7, torch.float64, "cpu")
    k = dct_matrix((5, 7), torch.float64, "cpu")
    np.testing.assert_allclose(k.numpy(), np.kron(c5.numpy(), c7.numpy()), atol=1e-15)
    np.testing.assert_allclose(c7.numpy(), scipy.fft.dct(np.eye(7), axis=0, norm="ortho"), atol=1e-15)
    assert dct_matrix((5, 7), torch.float64, "cpu") is k
