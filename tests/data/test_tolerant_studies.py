from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader
from monai.transforms import Lambdad

from monai_saliency.data.studies import list_studies
from monai_saliency.data.tolerant import FAILED_KEY, TolerantDataset, tolerant_collate


def _load(path):
    if "bad" in path:
        raise OSError(f"cannot read {path}")
    return torch.ones(1, 4, 4)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_failures_travel_with_their_names(num_workers):
    data = [{"image": "a.nii"}, {"image": "bad.nii"}, {"image": "c.nii"}]
    ds = TolerantDataset(data, transform=Lambdad("image", _load))
    loader = DataLoader(ds, batch_size=2, collate_fn=tolerant_collate, num_workers=num_workers)
    batches = list(loader)
    assert batches[0]["image"].shape == (1, 1, 4, 4)
    assert batches[0][FAILED_KEY] == [("bad.nii", "OSError: cannot read bad.nii")]
    assert FAILED_KEY not in batches[1] and batches[1]["image"].shape == (1, 1, 4, 4)


def test_all_failed_batch_is_empty_but_reported():
    out = tolerant_collate([{FAILED_KEY: [("x", "e")]}])
    assert out == {FAILED_KEY: [("x", "e")]}


def test_list_studies(tmp_path):
    for name in ("b.nii.gz", "a.nii", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert [p.split("/")[-1] for p in list_studies(tmp_path)] == ["a.nii", "b.nii.gz"]
    with pytest.raises(ValueError, match="no studies"):
        list_studies(tmp_path, ["*.dcm"])
    with pytest.raises(FileNotFoundError, match="dataset_dir"):
        list_studies(tmp_path / "missing")


def test_studies_of_different_shapes_in_one_batch_are_named(nibabel_files):
    """batch_size > 1 over studies the preprocessing leaves at their own sizes: a clear error that names them and
    the fix, not torch's stack error with MONAI's hint to pad (padding would change the maps)."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized

    data = [{"image": str(f)} for f in nibabel_files]
    native = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])
    loader = DataLoader(TolerantDataset(data, transform=native), batch_size=2, collate_fn=tolerant_collate)
    with pytest.raises(ValueError, match="different shapes") as err:
        next(iter(loader))
    message = str(err.value)
    assert "anatomical.nii (1, 33, 41, 25)" in message and "reoriented_anat_moved.nii (1, 21, 26, 22)" in message
    assert "--dataloader#batch_size 1" in message
    resized = Compose([*native.transforms, Resized("image", spatial_size=(6, 6, 6))])
    batch = next(iter(DataLoader(TolerantDataset(data, transform=resized), batch_size=3, collate_fn=tolerant_collate)))
    assert batch["image"].shape == (3, 1, 6, 6, 6) and batch["image"].affine.shape == (3, 4, 4)
