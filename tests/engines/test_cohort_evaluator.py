"""SaliencyEvaluator with a CohortRun: a study that fails in post-processing/writing (or gives NaN logits) in a batch
of B > 1 costs only itself; the batch's other studies are committed with their predictions."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose, Lambdad

from monai_saliency.engines.cohort import CohortRun
from monai_saliency.transforms import SaveMapsd
from tests._evaluators import nifti_cohort_evaluator


def _refuse_study_b(img):
    if "b.nii" in str(img.meta["filename_or_obj"]):
        raise OSError("disk full")
    return img


def test_writing_failure_in_a_batch_costs_one_study(tmp_path, cnn2d):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "d"):
        values = rng.random((8, 8, 2)).astype(np.float32)
        if name == "d":
            values[:] = np.inf  # the network's logits become NaN/Inf
        nib.save(nib.Nifti1Image(values, np.eye(4)), str(data / f"{name}.nii"))
    cohort = CohortRun(data, tmp_path / "out", kinds=["nifti"])
    post = Compose([Lambdad("image", _refuse_study_b), SaveMapsd("image", tmp_path / "unused", folder_key="study_dir")])
    evaluator = nifti_cohort_evaluator(cohort, cnn2d, post, batch_size=4)
    evaluator.run()
    counts = cohort.finish()
    assert counts == {"ok": 2, "skipped": 0, "failed": 2, "not processed": 0}
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        ".cohort",
        "a",
        "c",
        "predictions.csv",
        "report.html",
        "run_manifest.json",
    ]
    assert [p.name for p in (out / "a").iterdir()] == ["a_image.nii.gz"]
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["study"] for r in rows] == ["a.nii", "c.nii"] and list(rows[0]) == [
        "study",
        "prob_0",
        "prob_1",
        "prob_2",
        "label",
    ]
    expected = cnn2d(
        torch.as_tensor(nib.load(str(data / "c.nii")).get_fdata(), dtype=torch.float32).permute(2, 0, 1)[None]
    )
    np.testing.assert_allclose(
        [float(rows[1][f"prob_{i}"]) for i in range(3)], expected.softmax(1)[0].detach(), atol=1e-5
    )
    errors = {f: e for f, e in evaluator.failures}
    assert set(errors) == {"b.nii", "d.nii"} and "disk full" in errors["b.nii"] and "NaN" in errors["d.nii"]
