"""benchmarks/experiments/_morch_data.py: the MNI152 anatomy (nilearn) and the functional.nii noise (nibabel) load
offline from the installed packages, and agree with independent computations (brute-force block means, scipy's
detrend)."""

from __future__ import annotations

import socket

import nibabel as nib
import numpy as np
import pytest
from scipy import signal


@pytest.fixture
def offline(monkeypatch):
    """Any network connection fails: the loaders must read only installed files."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_mni152_anatomy_offline(offline):
    from benchmarks.experiments._morch_data import MNI_REGIONS, mni152_anatomy, mni_file, normalised_centre

    anatomy, affine = mni152_anatomy()
    assert anatomy.shape == (39, 48, 21) and anatomy.voxel_size == (4.0, 4.0, 8.0)
    assert 12000 < int(anatomy.mask.sum()) < 18000  # ~1.9 L intracranial volume / 128 mm^3
    assert anatomy.grey.min() >= 0 and anatomy.grey.max() <= 1 and anatomy.flow.max() <= 1.0 + 1e-12
    assert np.all(anatomy.flow[~anatomy.mask] == 0) and anatomy.flow[anatomy.mask].min() >= 0.1 - 1e-12
    # brute force: one coarse voxel is the mean of its 4 x 4 x 8 block of the 1 mm grey-matter map, and the affine
    # maps its index to the mean MNI position of that block
    img = nib.load(str(mni_file("gm")))
    gm = np.asarray(img.dataobj, dtype=np.float64) / 255
    i, j, k = np.argwhere(anatomy.mask & (anatomy.grey > 0.3))[100]
    ijk0 = np.linalg.solve(img.affine, affine @ np.array([i, j, k, 1.0]))[:3] - np.array([1.5, 1.5, 3.5])
    a, b, c = (round(v) for v in ijk0)
    assert np.allclose(ijk0, [a, b, c])
    assert anatomy.grey[i, j, k] == pytest.approx(gm[a : a + 4, b : b + 4, c : c + 8].mean(), abs=1e-12)
    # the planted regions are inside the brain, where the seed's clusters are
    for paradigm, mm in MNI_REGIONS.items():
        centre = normalised_centre(mm, affine, anatomy.shape)
        assert np.all(np.abs(centre) < 1)
        ijk = np.round((centre + 1) / 2 * np.array(anatomy.shape) - 0.5).astype(int)
        assert anatomy.mask[tuple(ijk)], paradigm


def test_functional_noise_bank_offline(offline):
    from benchmarks.experiments._morch_data import functional_file, functional_noise_bank

    bank, info = functional_noise_bank()
    assert bank.shape == (20, 17, 21, 3) and info["voxel_size"] == (4.0, 4.0, 8.0) and info["frames"] == 20
    assert bank.std() == pytest.approx(1.0, rel=1e-9)
    data = np.asarray(nib.load(str(functional_file())).dataobj, dtype=np.float64)
    ref = signal.detrend(data, axis=-1, type="linear") / data.mean(-1, keepdims=True)  # independent detrend
    ref = np.moveaxis(ref, -1, 0)
    np.testing.assert_allclose(bank * info["relative_sd"], ref, atol=1e-10)
    assert 0.001 < info["relative_sd"] < 0.05  # fMRI noise: ~1 % of the signal
    assert info["lag1_autocorr_x"] > 0.2  # real noise is spatially correlated, unlike white noise


def test_missing_package_file_is_a_clear_error():
    from benchmarks.experiments._morch_data import _package_file

    with pytest.raises(FileNotFoundError, match="not installed"):
        _package_file("no_such_package_xyz", "data.nii")
    with pytest.raises(FileNotFoundError, match="missing from the installed nibabel"):
        _package_file("nibabel", "tests", "data", "no_such_file.nii")
