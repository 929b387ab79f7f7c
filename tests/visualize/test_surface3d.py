from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_saliency.visualize.surface3d import save_surface_figure, surface_components, voxel_to_world

SHAPE = (20, 22, 14)
AFFINE = np.array([[2.0, 0, 0, -19.0], [0, 1.5, 0, 4.0], [0, 0, 3.0, -10.0], [0, 0, 0, 1]])


def _ball(centre=(9.0, 11.0, 6.0), radius_mm=7.0):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).astype(float)
    world = voxel_to_world(idx.reshape(-1, 3), AFFINE).reshape(*SHAPE, 3)
    c = voxel_to_world(np.array([centre]), AFFINE)[0]
    dist = np.linalg.norm(world - c, axis=-1)
    return radius_mm - dist, c  # positive inside the ball


def test_isosurface_is_the_sphere_in_world_coordinates():
    vol, centre = _ball()
    parts = surface_components(vol, level=0.0, affine=AFFINE)
    r = np.linalg.norm(voxel_to_world(parts.verts, AFFINE) - centre, axis=1)
    assert len(parts.faces) > 50
    np.testing.assert_allclose(r, 7.0, atol=0.25)  # linear interpolation of a smooth field: sub-voxel accurate
    np.testing.assert_allclose(parts.spacing, [2.0, 1.5, 3.0])


def test_salient_set_shadows_and_peak_match_brute_force():
    rng = np.random.default_rng(0)
    vol = rng.random(SHAPE)
    mask = np.zeros(SHAPE, bool)
    mask[2:-2, 3:-3, 1:-1] = True
    parts = surface_components(torch.as_tensor(vol)[None], quantile=0.95, mask=torch.as_tensor(mask))
    inside = vol[mask]
    assert parts.level == pytest.approx(np.quantile(inside, 0.95))
    expected = (vol >= parts.level) & mask
    np.testing.assert_array_equal(parts.salient, expected)
    assert abs(expected.sum() - 0.05 * mask.sum()) <= 1
    for axis in range(3):  # shadow = does any voxel along the normal belong to the salient set
        brute = np.zeros([n for a, n in enumerate(SHAPE) if a != axis], bool)
        for i in range(SHAPE[axis]):
            brute |= np.take(expected, i, axis=axis)
        np.testing.assert_array_equal(parts.shadows[axis], brute)
    masked = np.where(mask, vol, -np.inf)
    assert parts.peak == np.unravel_index(masked.argmax(), SHAPE)
    # a mask-outside maximum never counts
    vol2 = vol.copy()
    vol2[0, 0, 0] = 10.0
    assert not surface_components(vol2, quantile=0.95, mask=mask).salient[0, 0, 0]


def test_figure_is_written(tmp_path):
    vol, _ = _ball()
    anatomy = np.cos(np.linspace(0, 6, vol.size)).reshape(SHAPE)
    path = save_surface_figure(vol, tmp_path / "fig.png", anatomy=anatomy, affine=AFFINE, quantile=0.9, title="ball")
    img = np.asarray(Image.open(path))
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    red = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.sum() > 200  # the surface and its shadows are drawn
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_bad_inputs():
    vol, _ = _ball()
    with pytest.raises(ValueError, match="3D"):
        surface_components(vol[0])
    with pytest.raises(ValueError, match="constant"):
        surface_components(np.ones(SHAPE))
    with pytest.raises(ValueError, match="NaN"):
        surface_components(np.full(SHAPE, np.nan))
    with pytest.raises(ValueError, match="quantile"):
        surface_components(vol, quantile=1.0)
    with pytest.raises(ValueError, match="level"):
        surface_components(vol, level=100.0)
    with pytest.raises(ValueError, match="selects no voxel"):
        surface_components(vol, mask=np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match="anatomy shape"):
        save_surface_figure(vol, "unused.png", anatomy=np.zeros((3, 3, 3)))
