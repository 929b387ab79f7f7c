"""make_pet_study's real-data options: a given anatomy (PhantomAnatomy), real noise fields (noise_bank) and the
region centre; the defaults stay bit-identical (the PET bundle's sample data is generated with them)."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

from monai_saliency.data.synthetic.pet_phantom import PhantomAnatomy, _noise_tiles, make_pet_study


def _digest(study) -> str:
    h = hashlib.sha256()
    for t in (study.images.as_tensor(), study.mask, study.truth, study.targets, study.anatomy):
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def test_defaults_unchanged():
    """Digests of the default studies, recorded before the options were added."""
    assert _digest(make_pet_study("graded", shape=(20, 22, 16), seed=3)) == "b50883bf30cd033f"
    assert _digest(make_pet_study("rest_task", shape=(20, 22, 16), seed=3)) == "a91f03abfd2d0218"


def _anatomy(shape=(14, 16, 10)) -> PhantomAnatomy:
    rng = np.random.default_rng(0)
    mask = np.zeros(shape, bool)
    mask[2:-2, 2:-2, 1:-1] = True
    grey = np.where(mask, rng.uniform(0, 1, shape), 0.0)
    flow = np.where(mask, 0.35 + 0.65 * grey, 0.0)
    return PhantomAnatomy(flow=flow, mask=mask, grey=grey, voxel_size=(4.0, 4.0, 8.0))


def test_anatomy_and_region_centre():
    """With no displacement, blur, noise or global flow, task minus rest of one subject is exactly the planted
    activation ``activation * region * (0.4 + 0.6 grey)``, centred where asked."""
    anat = _anatomy()
    centre = (0.3, -0.4, 0.2)
    kw = {
        "anatomy_shift": 0,
        "resolution_fwhm": 0,
        "noise": 0,
        "global_flow_sd": 0,
        "n_subjects": 1,
        "n_scans": 2,
        "seed": 1,
    }
    st = make_pet_study("rest_task", anatomy=anat, region_centre=centre, activation=0.2, **kw)
    assert tuple(st.images.shape[1:]) == anat.shape and np.allclose(np.diag(st.affine)[:3], [4, 4, 8])
    assert np.array_equal(st.mask.numpy(), anat.mask)
    diff = (st.images[1] - st.images[0]).numpy().astype(np.float64)
    # independent region: Gaussian with half maximum at 0.2 x the brain half-axes around the centre
    axes = [(np.arange(n) + 0.5) / n * 2 - 1 for n in anat.shape]
    g = np.stack(np.meshgrid(*axes, indexing="ij"))
    half = 0.2 * np.array([0.78, 0.88, 0.8]).reshape(3, 1, 1, 1)
    region = 2.0 ** -((((g - np.reshape(centre, (3, 1, 1, 1))) / half) ** 2).sum(0))
    expected = 0.2 * region * (0.4 + 0.6 * anat.grey)
    np.testing.assert_allclose(diff, expected, atol=2e-6)  # float32 images
    assert np.array_equal(st.truth.numpy(), (region >= 0.5) & anat.mask)


def test_anatomy_is_displaced_per_subject():
    anat = _anatomy()
    st = make_pet_study("graded", anatomy=anat, anatomy_shift=1.5, noise=0, n_subjects=2, n_scans=2, seed=2)
    a, b = st.images[0].numpy(), st.images[2].numpy()  # two subjects
    assert np.abs(a - b).max() > 0.05


def test_noise_tiles_are_flipped_fields_of_the_bank():
    """Brute force: every tile of every volume is one bank field, flipped along some axes."""
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((4, 3, 5, 2))
    vols = _noise_tiles(np.random.default_rng(1), bank, n=3, shape=(7, 9, 5))
    assert vols.shape == (3, 7, 9, 5)
    used = set()
    for v, bx, by, bz in itertools.product(range(3), range(3), range(2), range(3)):
        tile = vols[v, 3 * bx : 3 * bx + 3, 5 * by : 5 * by + 5, 2 * bz : 2 * bz + 2]
        hits = [
            (f, fl)
            for f in range(4)
            for fl in itertools.product((False, True), repeat=3)
            if np.array_equal(
                tile,
                np.flip(bank[f], [a for a in range(3) if fl[a]])[: tile.shape[0], : tile.shape[1], : tile.shape[2]],
            )
        ]
        assert hits, (v, bx, by, bz)
        used.add(hits[0][0])
    assert used == {0, 1, 2, 3}  # independent draws use every field


def test_noise_bank_replaces_the_synthetic_noise():
    anat = _anatomy()
    bank = np.random.default_rng(3).standard_normal((5, 4, 4, 3))
    kw = {"anatomy": anat, "n_subjects": 2, "n_scans": 4, "seed": 4, "activation": 0.0}
    clean = make_pet_study("graded", noise=0, **kw).images.numpy()
    noisy = make_pet_study("graded", noise=0.1, noise_bank=bank, **kw).images.numpy()
    resid = (noisy - clean) / 0.1  # the same draws before the noise, so the difference is the tiled bank
    gap = np.abs(resid[:, :4, :4, :3].reshape(-1, 1) - bank.reshape(1, -1)).min(1)
    assert gap.max() < 1e-4  # float32 images: every noise value is a bank value
    assert np.abs(resid).max() > 0.5


def test_bad_options():
    anat = _anatomy()
    with pytest.raises(ValueError, match="differs from the anatomy"):
        make_pet_study(anatomy=anat, shape=(10, 10, 10))
    with pytest.raises(ValueError, match="noise_bank"):
        make_pet_study(shape=(12, 12, 10), noise_bank=np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="noise_bank"):
        make_pet_study(shape=(12, 12, 10), noise_bank=np.full((2, 4, 4, 4), np.nan))
    with pytest.raises(ValueError, match="region_centre"):
        make_pet_study(shape=(12, 12, 10), region_centre=(0.0, 0.0))
    with pytest.raises(ValueError, match="one shape"):
        PhantomAnatomy(
            flow=np.zeros((4, 4, 4)), mask=np.ones((4, 4, 5), bool), grey=np.zeros((4, 4, 4)), voxel_size=(1, 1, 1)
        )
    with pytest.raises(ValueError, match="voxel_size"):
        PhantomAnatomy(
            flow=np.zeros((4, 4, 4)), mask=np.ones((4, 4, 4), bool), grey=np.zeros((4, 4, 4)), voxel_size=(1, 0, 1)
        )
