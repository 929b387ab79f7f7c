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
