"""Storage of saved maps (``SaveMapsd(map_dtype=...)``) read back by nibabel and MONAI, and the frame-chunked
anti-aliasing filter (``AntiAliasd``) against MONAI's anti-aliased ``Resized``."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch
from monai.transforms import Compose, Invertd, LoadImage, Resized

from monai_saliency.transforms import AntiAliasd, SaveMapsd


def _smooth_maps(n: int = 2) -> list[dict]:
    """Items ``{"map": (1, T, H, W)}`` with different ranges and affines, as a MONAI DataLoader collates them."""
    t, h, w = 6, 40, 32
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij"))
    items = []
    for i in range(n):
        frames = torch.stack([torch.exp(-((grid[0] - 0.1 * k) ** 2 + grid[1] ** 2) * (2 + i)) for k in range(t)])
        affine = torch.diag(torch.tensor([0.3 + 0.1 * i, 0.3, 1.0 + i, 1.0], dtype=torch.float64))
        meta = {"filename_or_obj": f"/data/case_{i}.nii.gz", "affine": affine}
        items.append({"map": MetaTensor((frames * (3 + i) - 1.0)[None], meta=meta)})  # range [-1, 2 + i]
    batch = next(iter(DataLoader(Dataset(items), batch_size=n)))
    return decollate_batch(batch)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = {}
    items = _smooth_maps()
    for dtype in ("float32", "float16", "uint8"):
        folder = tmp_path_factory.mktemp(dtype)
        for item in items:
            SaveMapsd("map", folder, map_dtype=dtype)(item)
        out[dtype] = [folder / f"case_{i}_map.nii.gz" for i in range(len(items))]
    return items, out


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_maps_read_back_within_the_quantisation_step(written, dtype):
    items, files = written
    for item, path in zip(items, files[dtype]):
        x = item["map"][0].numpy().astype(np.float64)
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip-compressed
        img = nib.load(str(path))
        back = img.get_fdata()
        np.testing.assert_allclose(img.affine, item["map"].affine.numpy())
        if dtype == "float32":
            np.testing.assert_array_equal(back, x.astype(np.float32))
        elif dtype == "float16":
            np.testing.assert_array_equal(back, x.astype(np.float16))  # exactly the half-precision values
            assert img.get_data_dtype() == np.float32
        else:
            assert img.get_data_dtype() == np.uint8
            raw = np.asarray(img.dataobj.get_unscaled())
            assert raw.dtype == np.uint8 and raw.max() - raw.min() >= 250  # the 256 levels are used
            slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
            step = (x.max() - x.min()) / 255
            assert slope == pytest.approx(step, rel=0.02), (slope, step)  # scl_slope in the header
            np.testing.assert_allclose(raw * slope + inter, back)
            assert np.abs(back - x).max() <= step / 2 + 1e-6
        # MONAI's reader applies the header scaling too
        monai_back = LoadImage(image_only=True)(str(path)).numpy()
        np.testing.assert_allclose(monai_back, back, atol=1e-6)


def test_uint8_maps_are_much_smaller(written):
    _, files = written
    sizes = {k: sum(p.stat().st_size for p in v) for k, v in files.items()}
    assert sizes["uint8"] < sizes["float16"] < sizes["float32"], sizes
    assert sizes["uint8"] * 3 < sizes["float32"], sizes


def test_map_dtype_errors(tmp_path):
    with pytest.raises(ValueError, match="map_dtype must be one of"):
        SaveMapsd("map", tmp_path, map_dtype="int7")
    with pytest.raises(ValueError, match="applies to NIfTI"):
        SaveMapsd("map", tmp_path, output_ext=".png", map_dtype="uint8")


def test_constant_uint8_map_is_stored_exactly(tmp_path):
    m = MetaTensor(torch.full((1, 3, 8, 8), 0.25), meta={"filename_or_obj": "c.nii.gz"})
    SaveMapsd("m", tmp_path, map_dtype="uint8")({"m": m})
    np.testing.assert_allclose(nib.load(str(tmp_path / "c_m.nii.gz")).get_fdata(), 0.25, atol=1e-7)


@pytest.mark.parametrize("chunk", [1, 3, 50])
def test_anti_alias_in_chunks_equals_monai_anti_aliased_resize(chunk):
    size = [-1, 16, 12]
    img = MetaTensor(torch.rand(1, 7, 64, 48), meta={"filename_or_obj": "x.nii.gz"})
    reference = Resized("image", size, mode="trilinear", anti_aliasing=True)({"image": img.clone()})["image"]
    ours = Compose([AntiAliasd("image", size, chunk=chunk), Resized("image", size, mode="trilinear")])
    out = ours({"image": img.clone()})
    np.testing.assert_allclose(out["image"].numpy(), reference.numpy(), atol=1e-6)
    # only the resize is recorded, so Invertd restores the input's shape as before
    assert [op["class"] for op in out["image"].applied_operations] == ["Resize"]
    back = Invertd("map", ours, orig_keys="image", nearest_interp=False)({**out, "map": out["image"].clone()})
    assert back["map"].shape == img.shape


def test_anti_alias_leaves_upsampling_alone_and_checks_rank():
    img = torch.rand(1, 4, 8, 8)
    assert AntiAliasd("image", [-1, 16, 16])({"image": img})["image"] is img
    with pytest.raises(ValueError, match="does not match"):
        AntiAliasd("image", [16, 16])({"image": img})
    with pytest.raises(ValueError, match="chunk"):
        AntiAliasd("image", [16, 16], chunk=0)
