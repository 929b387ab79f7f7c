from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_saliency.models.pca import PCAProjection
from monai_saliency.transforms import PCABackProject, PCABackProjectd, PCAProject, PCAProjectd


@pytest.fixture
def volumes() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 6, 7, 5, generator=g, dtype=torch.float64) + 3.0
    mask = torch.zeros(6, 7, 5, dtype=torch.bool)
    mask[1:5, 1:6, 1:4] = True
    return x, mask


def test_lossless_reconstruction_and_orthonormal_basis(volumes):
    x, mask = volumes
    pca = PCAProjection().fit(x, mask)
    assert pca.k == x.shape[0] - 1  # centring removes one dimension
    b = pca.basis
    torch.testing.assert_close(b.T @ b, torch.eye(pca.k, dtype=b.dtype), atol=1e-12, rtol=0)
    recon = pca.back_project(pca(x))
    torch.testing.assert_close(recon.as_tensor()[:, mask], x[:, mask], atol=1e-10, rtol=0)
    assert (recon.as_tensor()[:, ~mask] == 0).all()
    # mean of the training projections is zero (centring)
    torch.testing.assert_close(pca(x).mean(0), torch.zeros(pca.k, dtype=torch.float64), atol=1e-10, rtol=0)


def test_matches_numpy_svd_subspace_and_singular_values(volumes):
    x, mask = volumes
    pca = PCAProjection(n_components=4).fit(x, mask)
    xm = x[:, mask].numpy()
    xc = xm - xm.mean(0)
    u, s, _ = np.linalg.svd(xc.T, full_matrices=False)
    np.testing.assert_allclose(pca.singular_values.numpy(), s[:4], rtol=1e-10)
    # same subspace: projector equality (signs/rotations irrelevant)
    p_ref = u[:, :4] @ u[:, :4].T
    p = (pca.basis @ pca.basis.T).numpy()
    np.testing.assert_allclose(p, p_ref, atol=1e-10)
    # truncated reconstruction error = energy of the dropped singular values
    err = ((pca.back_project(pca(x)).as_tensor()[:, mask].numpy() - xm) ** 2).sum()
    np.testing.assert_allclose(err, (s[4:] ** 2).sum(), rtol=1e-8)


def test_mask_restricts_voxels_and_outside_is_ignored(volumes):
    x, mask = volumes
    pca = PCAProjection().fit(x, mask)
    y = x.clone()
    y[:, ~mask] = float("nan")  # outside the mask nothing is read
    torch.testing.assert_close(pca(y), pca(x))
    assert pca.n_voxels == int(mask.sum())
    # a (J, 1, *spatial) input and a (1, *spatial) mask work as well
    pca2 = PCAProjection().fit(x[:, None], mask[None])
    torch.testing.assert_close(pca2(x[:, None]), pca(x))


def test_geometry_kept_and_state_dict_roundtrip(volumes):
    x, mask = volumes
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64))
    pca = PCAProjection().fit(MetaTensor(x, affine=affine), mask)
    vol = pca.to_volume(torch.ones(pca.n_voxels, dtype=torch.float64))
    assert isinstance(vol, MetaTensor) and tuple(vol.shape) == tuple(mask.shape)
    torch.testing.assert_close(vol.affine.double(), affine)
    assert (vol.as_tensor() == mask.double()).all()
    other = PCAProjection()
    other.load_state_dict(pca.state_dict())
    torch.testing.assert_close(other(x), pca(x))


def test_deterministic_sign(volumes):
    x, mask = volumes
    b = PCAProjection().fit(x, mask).basis
    pivot = b.abs().argmax(0)
    assert (b[pivot, torch.arange(b.shape[1])] > 0).all()
    torch.testing.assert_close(PCAProjection().fit(x, mask).basis, b)


def test_bad_inputs(volumes):
    x, mask = volumes
    with pytest.raises(ValueError, match="at least 2"):
        PCAProjection().fit(x[:1], mask)
    with pytest.raises(ValueError, match="does not match"):
        PCAProjection().fit(x, mask[:-1])
    with pytest.raises(ValueError, match="selects no voxel"):
        PCAProjection().fit(x, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="exceeds the rank"):
        PCAProjection(n_components=10).fit(x, mask)
    bad = x.clone()
    bad[0, 2, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        PCAProjection().fit(bad, mask)
    with pytest.raises(ValueError, match="rank 0"):
        PCAProjection().fit(torch.ones(4, 3, 3), None)
    pca = PCAProjection().fit(x, mask)
    with pytest.raises(ValueError, match="shape"):
        pca(x[:, :-1])
    with pytest.raises(RuntimeError, match="not fitted"):
        PCAProjection()(x)


def test_transforms_roundtrip(volumes):
    x, mask = volumes
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64))
    pca = PCAProjection().fit(MetaTensor(x, affine=affine), mask)
    item = MetaTensor(x[3:4], affine=affine)
    v = PCAProject(pca)(item)
    assert v.shape == (pca.k,)
    torch.testing.assert_close(v, pca(x)[3])
    back = PCABackProject(pca)(v)
    assert tuple(back.shape) == (1, *mask.shape)
    torch.testing.assert_close(back.as_tensor()[0][mask], x[3][mask], atol=1e-10, rtol=0)
    d = PCAProjectd("img", pca)({"img": item, "label": 1})
    torch.testing.assert_close(d["img"], v)
    assert d["label"] == 1
    d2 = PCABackProjectd("img", pca)(d)
    torch.testing.assert_close(d2["img"].as_tensor(), back.as_tensor())
    with pytest.raises(ValueError, match="expected one volume"):
        PCAProject(pca)(x[:2])


def test_uncentred_basis_spans_the_volumes(volumes):
    x, mask = volumes
    pca = PCAProjection(center=False).fit(x, mask)
    assert pca.k == x.shape[0] and not pca.mean.any()
    torch.testing.assert_close(pca.back_project(pca(x)).as_tensor()[:, mask], x[:, mask], atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="at most 10"):
        PCAProjection(n_components=11, center=False).fit(x, mask)
