from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_saliency.transforms import SaveMapsd, ScaleToUnit, ScaleToUnitd


def test_scale_to_unit_keeps_meta_and_handles_constant():
    m = MetaTensor(torch.tensor([[[-2.0, 0.0], [2.0, 6.0]]]), affine=torch.eye(4) * 3)
    out = ScaleToUnit()(m)
    torch.testing.assert_close(out.as_tensor(), torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, m.affine)
    assert torch.equal(ScaleToUnitd("a")({"a": torch.full((1, 2, 2), 5.0)})["a"], torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        ScaleToUnit()(torch.full((1, 2, 2), float("nan")))


def test_save_maps_one_file_per_key_named_after_input(tmp_path):
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    meta = {"filename_or_obj": str(tmp_path / "study7.nii.gz"), "affine": torch.as_tensor(affine)}
    a = MetaTensor(torch.rand(1, 4, 5, 6), meta=dict(meta))
    b = MetaTensor(torch.rand(1, 4, 5, 6), meta=dict(meta))
    SaveMapsd(["grad", "cam"], output_dir=tmp_path / "out")({"grad": a, "cam": b})
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["study7_cam.nii.gz", "study7_grad.nii.gz"]
    img = nib.load(str(tmp_path / "out" / "study7_grad.nii.gz"))
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(img.get_fdata(), a[0].numpy(), atol=1e-6)


def test_save_maps_2d_nifti_and_png(tmp_path):
    """2D maps (1, H, W) save as NIfTI (formerly "cannot find a suitable writer") and as 8-bit PNG (formerly all 0)."""
    from monai.transforms import LoadImage

    affine = torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0]))
    m = MetaTensor(torch.rand(1, 8, 9), affine=affine, meta={"filename_or_obj": str(tmp_path / "img3.png")})
    SaveMapsd("grad", output_dir=tmp_path / "nii")({"grad": m})
    img = nib.load(str(tmp_path / "nii" / "img3_grad.nii.gz"))
    assert img.shape == (8, 9)
    np.testing.assert_allclose(img.affine, affine.numpy())
    np.testing.assert_allclose(img.get_fdata(), m[0].numpy(), atol=1e-6)
    SaveMapsd("grad", output_dir=tmp_path / "png", output_ext=".png")({"grad": m})
    back = LoadImage(image_only=True)(str(tmp_path / "png" / "img3_grad.png"))  # MONAI's own PNG convention
    assert back.shape == (8, 9)
    np.testing.assert_allclose(back.numpy(), np.round(m[0].numpy() * 255), atol=1)
    assert back.max() > 200  # not truncated to 0/1


def test_save_maps_clear_errors_for_unsupported(tmp_path):
    meta = {"filename_or_obj": str(tmp_path / "x.nii.gz")}
    saver = SaveMapsd("g", output_dir=tmp_path, output_ext=".png")
    with pytest.raises(ValueError, match=r"2D maps .* shape \(1, 4, 5, 6\)"):
        saver({"g": MetaTensor(torch.rand(1, 4, 5, 6), meta=dict(meta))})
    with pytest.raises(ValueError, match="ScaleToUnitd"):
        saver({"g": MetaTensor(torch.rand(1, 4, 5) * 3, meta=dict(meta))})
    with pytest.raises(ValueError, match="no image writer for '.xyz'"):
        SaveMapsd("g", output_dir=tmp_path, output_ext=".xyz")
    assert not list(tmp_path.glob("x_g*"))


def test_save_maps_png_is_atomic(tmp_path, monkeypatch):
    """A PNG write that fails half-way leaves neither a partial file under the final name nor a temporary file."""
    from monai.data import PILWriter

    m = MetaTensor(torch.rand(1, 8, 9), meta={"filename_or_obj": str(tmp_path / "img.png")})
    saver = SaveMapsd("g", output_dir=tmp_path / "out", output_ext=".png")

    def broken(self, filename, verbose=False, **kwargs):
        Path(filename).write_bytes(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(PILWriter, "write", broken)
    with pytest.raises(RuntimeError, match="disk full"):  # MONAI wraps the writer's error
        saver({"g": m})
    assert not list((tmp_path / "out").iterdir())
    monkeypatch.undo()
    saver({"g": m})
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["img_g.png"]
