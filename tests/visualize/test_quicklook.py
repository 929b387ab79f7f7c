"""Issue #22: :class:`SaveQuickLookd`, the 3D bundle's PNG quick-look per study (three orthogonal slices, map blended)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from monai_saliency.visualize import OverlayStyle, SaveQuickLookd, render_orthogonal_overlay


def _item(tmp_path, shape=(12, 10, 8)):
    affine = torch.diag(torch.tensor([2.0, 1.5, 3.0, 1.0]))
    image = MetaTensor(torch.rand(1, *shape), affine=affine, meta={"filename_or_obj": str(tmp_path / "s 1.nii.gz")})
    sal = torch.zeros(1, *shape)
    sal[0, 7, 3, 5] = 1.0  # one hot voxel: the slices go through it
    folder = tmp_path / "study"
    folder.mkdir()
    return {"image": image, "map": sal, "study_dir": str(folder)}, folder


def test_writes_the_orthogonal_overlay_png_in_the_study_folder(tmp_path):
    data, folder = _item(tmp_path)
    out = SaveQuickLookd(["image", "map"], folder_key="study_dir", path_key="ql")(data)
    path = folder / "s 1_quicklook.png"
    assert out["ql"] == str(path) and [p.name for p in folder.iterdir()] == [path.name]  # no temporary file left
    style = OverlayStyle("map")  # caption: the map's key
    expected, peak = render_orthogonal_overlay(data["image"][0], data["map"][0], data["image"].affine, style, 160)
    assert peak == (7, 3, 5)
    with Image.open(path) as png:
        np.testing.assert_array_equal(np.asarray(png), expected)  # PNG is lossless: exactly the rendered picture
    assert out["image"] is data["image"] and out["map"] is data["map"]  # data pass through


def test_output_dir_without_folder_key_and_clear_errors(tmp_path):
    data, _ = _item(tmp_path)
    SaveQuickLookd(["image", "map"], output_dir=tmp_path / "o", output_postfix="ql")(data)
    assert (tmp_path / "o" / "s 1_ql.png").is_file()
    with pytest.raises(ValueError, match="two keys"):
        SaveQuickLookd(["image"])
    with pytest.raises(FileExistsError, match="not an existing folder"):
        SaveQuickLookd(["image", "map"], folder_key="study_dir")({**data, "study_dir": str(tmp_path / "none")})
    with pytest.raises(ValueError, match="shapes differ"):
        SaveQuickLookd(["image", "map"], folder_key="study_dir")({**data, "map": torch.zeros(1, 4, 4, 4)})
    with pytest.raises(ValueError, match="filename_or_obj"):
        SaveQuickLookd(["image", "map"], folder_key="study_dir")({**data, "image": torch.rand(1, 12, 10, 8)})
