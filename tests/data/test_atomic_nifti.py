from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.nifti import save_nifti


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_output_replaces_and_sets_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_output_refuses_inputs_and_existing(tmp_path):
    src = tmp_path / "in.nii.gz"
    src.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="input"), atomic_output(src, protect=[str(src)]):
        pass
    with pytest.raises(FileExistsError, match="exists"), atomic_output(src, overwrite=False):
        pass
    assert src.read_bytes() == b"x"


@pytest.mark.parametrize("channels, spatial", [(1, (6, 7)), (1, (6, 7, 5)), (3, (6, 7, 5)), (2, (6, 7))])
def test_save_nifti_round_trips_through_monai_loader(tmp_path, channels, spatial):
    affine = np.array([[0.7, 0, 0, 1.0], [0, 1.3, 0, -2.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    data = torch.rand(channels, *spatial)
    path = save_nifti(data, tmp_path / "map.nii.gz", affine=affine)
    loaded = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    if channels > 1 and len(spatial) == 2:  # NIfTI pads 2D multi-channel to 3 spatial axes, as MONAI's writer does
        assert loaded.shape[-1] == 1
        loaded = loaded[..., 0]
    assert tuple(loaded.shape) == (channels, *spatial)
    np.testing.assert_allclose(loaded.numpy(), data.numpy(), atol=1e-6)
    np.testing.assert_allclose(nib.load(str(path)).affine, affine, atol=1e-6)


def test_save_nifti_uses_metatensor_affine_and_protects_its_source(tmp_path):
    src = tmp_path / "img.nii.gz"
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), affine), str(src))
    img = LoadImage(image_only=True, ensure_channel_first=True)(str(src))
    assert isinstance(img, MetaTensor)
    out = save_nifti(img + 1, tmp_path / "map.nii.gz")
    np.testing.assert_allclose(nib.load(str(out)).affine, affine)
    with pytest.raises(FileExistsError, match="input"):
        save_nifti(img, src)
    assert nib.load(str(src)).get_fdata().max() == 0


def test_save_nifti_bad_input(tmp_path):
    with pytest.raises(ValueError, match=".nii"):
        save_nifti(torch.zeros(1, 4, 4), tmp_path / "map.png")
    with pytest.raises(ValueError, match="channel-first"):
        save_nifti(torch.zeros(4), tmp_path / "map.nii.gz")
