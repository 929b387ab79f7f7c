from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_saliency.transforms.io import SaveMapsd, ScaleToUnit, ScaleToUnitd


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
