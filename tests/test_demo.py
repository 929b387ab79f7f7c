from __future__ import annotations

import nibabel as nib
import numpy as np

from monai_saliency.demo import DEMO_AFFINE, main, run_demo


def test_demo_writes_nifti_with_input_affine_and_png(tmp_path):
    result = run_demo(tmp_path, steps=60, seed=0)
    inp, sal = nib.load(str(result["input"])), nib.load(str(result["saliency"]))
    np.testing.assert_allclose(inp.affine, DEMO_AFFINE, atol=1e-6)
    np.testing.assert_allclose(sal.affine, inp.affine, atol=1e-6)
    assert sal.shape == inp.shape == (64, 64)
    values = sal.get_fdata()
    assert values.min() == 0 and np.isclose(values.max(), 1)
    assert result["overlay"].stat().st_size > 10_000
    # the classifier looks at the blob: far more saliency inside it than its area share
    assert result["saliency_inside_blob"] > 5 * result["blob_area_fraction"]


def test_demo_cli(tmp_path, capsys):
    main(["--output-dir", str(tmp_path), "--steps", "20"])
    out = capsys.readouterr().out
    assert "saliency.nii.gz" in out and (tmp_path / "overlay.png").exists()
