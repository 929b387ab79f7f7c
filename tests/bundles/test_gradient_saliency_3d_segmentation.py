"""gradient_saliency_3d's segmentation config: ``--target region --target_class 1`` explains the shipped tiny UNet's
predicted blob per study, maps and segmentation as NIfTI in each input's geometry. One bundle run (a subprocess,
about 15 s on a loaded machine) is shared by the assertions. Before targets the run failed (the SaliencyInferer
read the segmentation output as class scores: "expected class scores of shape (B, K)")."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_saliency.core import ClassTarget, RegionTarget
from monai_saliency.engines import SaliencyInferer, target_from_options
from monai_saliency.methods import GradCAM, VanillaGrad
from tests._parallel_runs import session_run
from tests.bundles.conftest import run_bundle

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "gradient_saliency_3d"
CONFIG = "configs/inference_segmentation.json"
METHODS = ("vanillagrad", "integratedgradients", "gradcam")


@session_run("gradient_saliency_3d_segmentation")
def _segmentation_run(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path]]:
    """The segmentation config on the sample, to call later (a session run: see tests/_parallel_runs.py)."""
    out = root / "out"
    args = ("--config_file", CONFIG, "--output_dir", str(out), "--target", "region", "--target_class", "1")
    return lambda: (run_bundle("gradient_saliency_3d", *args), out)


@pytest.fixture(scope="module")
def run(session_runs):
    result, out = session_runs("gradient_saliency_3d_segmentation")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_region_maps_in_the_input_geometry(run):
    labels = json.loads((BUNDLE / "sample_data" / "labels.json").read_text())
    for src in sorted((BUNDLE / "sample_data").glob("*.nii.gz")):
        stem = src.name[: -len(".nii.gz")]
        original = nib.load(str(src))
        seg_img = nib.load(str(run / stem / f"{stem}_segmentation.nii.gz"))
        assert seg_img.shape == original.shape
        np.testing.assert_allclose(seg_img.affine, original.affine, atol=1e-5)
        seg = seg_img.get_fdata() > 0.5
        assert seg.any() == bool(labels[stem])  # the blob is segmented in the positive studies only
        for method in METHODS:
            img = nib.load(str(run / stem / f"{stem}_{method}.nii.gz"))
            assert img.shape == original.shape
            np.testing.assert_allclose(img.affine, original.affine, atol=1e-5)
            values = img.get_fdata()
            assert np.isfinite(values).all()
            if not seg.any():  # class 1 predicted nowhere: nothing to explain, all-zero maps
                assert (values == 0).all()
                continue
            assert np.isclose(values.max(), 1) and values.min() == 0
            if method == "gradcam":  # Seg-Grad-CAM concentrates on the predicted region
                assert values[seg].mean() > 5 * values[~seg].mean()
    assert not list((BUNDLE / "sample_data").glob("*_gradcam*"))  # nothing written beside the inputs
    # a cohort run like the classifier's: one folder per study, recorded with checksums, no class prediction
    manifest = json.loads((run / "run_manifest.json").read_text())
    studies = {s["study"]: s for s in manifest["studies"]}
    assert sorted(studies) == sorted(p.name for p in (BUNDLE / "sample_data").glob("*.nii.gz"))
    assert all(s["status"] == "ok" and s["prediction"] is None and s["outputs"] for s in studies.values())


def test_inferer_with_a_target_keeps_the_segmentation():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(2, 1, 8, 8)
    target = RegionTarget(1, torch.ones(2, 1, 8, 8))
    inferer = SaliencyInferer({"grad": VanillaGrad(net), "cam": GradCAM(net, "0")}, target=target, returns="dict")
    out = inferer(x, net)
    assert out["logits"].shape == (2, 2, 8, 8)
    torch.testing.assert_close(out["grad"], VanillaGrad(net)(x, target=target))
    with pytest.raises(ValueError, match="not both"):
        SaliencyInferer(VanillaGrad(net), class_idx=0, target=target)


def test_target_from_options():
    assert target_from_options(None) is None
    region = target_from_options("region", "1")  # command-line values may come as strings
    assert isinstance(region, RegionTarget) and region.class_idx == 1 and region.allow_empty
    assert isinstance(target_from_options("class", 2), ClassTarget)
    assert target_from_options("regression", 1, sign=-1.0).sign == -1.0
    with pytest.raises(ValueError, match="target_class"):
        target_from_options("region")
    with pytest.raises(ValueError, match="unknown target"):
        target_from_options("box", 1)
