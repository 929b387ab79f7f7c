"""The explainer protocol inside MONAI machinery: evaluators (no_grad), Invertd and SaveImaged."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from monai.data import DataLoader, Dataset, decollate_batch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    Orientationd,
    SaveImaged,
    Spacingd,
)

from monai_saliency.methods.gradients import VanillaGrad


def test_supervised_evaluator_produces_gradient_maps(cnn2d, evaluator_maps):
    images = torch.randn(4, 2, 16, 16)
    preds = evaluator_maps(cnn2d, VanillaGrad(cnn2d), images)  # SupervisedEvaluator runs under torch.no_grad()
    assert preds.shape == (2, 2, 16, 16)
    torch.testing.assert_close(preds, VanillaGrad(cnn2d)(images[2:]))
    assert all(p.grad is None for p in cnn2d.parameters())


def test_invertd_and_saveimaged_restore_input_geometry(tmp_path, cnn3d):
    affine = np.array([[1.5, 0, 0, -10.0], [0, 2.0, 0, 5.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])
    shape = (20, 15, 12)
    volume = np.random.default_rng(0).random(shape).astype(np.float32)
    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), str(path))

    pre = Compose(
        [
            LoadImaged("image"),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="LPS"),
            Spacingd("image", pixdim=(1.0, 1.0, 1.0)),
        ]
    )
    batch = next(iter(DataLoader(Dataset([{"image": str(path)}], transform=pre), batch_size=1)))
    assert batch["image"].shape[2:] != shape  # resampled, so inversion has real work to do
    with VanillaGrad(cnn3d, reduce="abs_sum") as explainer:
        batch["saliency"] = explainer(batch["image"])
    ops = batch["saliency"].applied_operations
    assert [o["class"] for o in ops[0]] == [o["class"] for o in batch["image"].applied_operations[0]]

    out_dir = tmp_path / "out"
    post = Compose(
        [
            Invertd(keys="saliency", transform=pre, orig_keys="image", nearest_interp=False),
            SaveImaged(keys="saliency", output_dir=str(out_dir), output_postfix="saliency", separate_folder=False),
        ]
    )
    item = decollate_batch(batch)[0]
    # the map carries the input's transform trace itself: inverting it alone restores the original grid
    alone = pre.inverse({"image": item["saliency"]})["image"]
    assert tuple(alone.shape) == (1, *shape)
    np.testing.assert_allclose(alone.affine.numpy(), affine, atol=1e-5)
    item = post(item)
    assert tuple(item["saliency"].shape) == (1, *shape)
    written = nib.load(str(out_dir / "case_saliency.nii.gz"))
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    assert written.shape == shape
    assert np.isfinite(written.get_fdata()).all() and written.get_fdata().max() > 0
