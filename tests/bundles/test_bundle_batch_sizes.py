"""The bundles' DataLoaders with ``batch_size > 1`` (collated MetaTensor batches, one affine per study): the same maps,
geometry and predictions as batch 1. The PET bundle has no DataLoader (one model fitted over a whole study)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from test_angiogram_bundle import SAMPLE as ANGIO_SAMPLE
from test_angiogram_bundle import _check_study
from test_gradient_saliency_3d import BUNDLE as GRAD3D
from test_gradient_saliency_3d import _check_maps, _rows

GRAD3D_METHODS = ("vanillagrad", "smoothgrad", "integratedgradients", "forgrad", "structured", "gradcam")


def _run_batch_sizes(bundle_runner, bundle: str, data: Path, tmp_path: Path, sizes, *extra: str) -> dict[int, Path]:
    """Run ``bundle`` over ``data`` once per batch size; return each run's output folder."""
    outs = {}
    for batch_size in sizes:
        out = tmp_path / f"out_b{batch_size}"
        result = bundle_runner(
            bundle,
            "--config_file",
            "configs/inference.json",
            "--dataset_dir",
            str(data),
            "--output_dir",
            str(out),
            "--dataloader#batch_size",
            str(batch_size),
            *extra,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outs[batch_size] = out
    return outs


def _assert_same_outputs(ref: Path, other: Path, n_studies: int, maps_per_study: int) -> None:
    """Same NIfTI maps (values and affines) and the same predictions in both output folders."""
    names = sorted(p.relative_to(ref).as_posix() for p in ref.glob("*/*.nii.gz"))  # one folder per study
    assert names == sorted(p.relative_to(other).as_posix() for p in other.glob("*/*.nii.gz"))
    assert len(names) == n_studies * maps_per_study
    for name in names:
        a, b = nib.load(str(ref / name)), nib.load(str(other / name))
        np.testing.assert_array_equal(b.affine, a.affine)
        # maps stored as scaled uint8 (the angiogram bundle's --map_dtype): a 1e-7 difference may flip one rounding
        step = float(a.dataobj.slope) if a.get_data_dtype() == np.uint8 else 0.0
        np.testing.assert_allclose(b.get_fdata(), a.get_fdata(), atol=1e-5 + step, err_msg=name)
    rows = {r[0]: np.array(r[1:], dtype=float) for r in _rows(ref / "predictions.csv")}
    other_rows = {r[0]: np.array(r[1:], dtype=float) for r in _rows(other / "predictions.csv")}
    assert sorted(other_rows) == sorted(rows) and len(rows) == n_studies
    for name, probs in rows.items():
        np.testing.assert_allclose(other_rows[name], probs, atol=1e-5)


def test_gradient_saliency_3d_batch_size_four(tmp_path, bundle_runner):
    """``--dataloader#batch_size 4`` over five studies (a full batch and a short one, each study with its own
    affine). SmoothGrad's noise (and FORGrad's over it) is seeded per study, so its maps are compared too."""
    data = tmp_path / "studies"
    data.mkdir()
    inputs = []
    for name in ("case_000", "case_001", "case_002", "case_003"):
        shutil.copy(GRAD3D / "sample_data" / f"{name}.nii.gz", data / f"{name}.nii.gz")
        inputs.append(data / f"{name}.nii.gz")
    img = nib.load(str(GRAD3D / "sample_data" / "case_001.nii.gz"))
    moved = img.affine.copy()
    moved[:3, 3] += (3.0, -2.0, 5.0)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), str(data / "case_004.nii.gz"))
    inputs.append(data / "case_004.nii.gz")
    outs = _run_batch_sizes(bundle_runner, "gradient_saliency_3d", data, tmp_path, (1, 4))
    for out in outs.values():
        for method in GRAD3D_METHODS:
            _check_maps(inputs, out, method)
    _assert_same_outputs(outs[1], outs[4], len(inputs), len(GRAD3D_METHODS))


def test_angiogram_batch_size_three(tmp_path, bundle_runner):
    """``--dataloader#batch_size 3`` over the five sample cines: a batch of three XA DICOM files and a short batch
    that mixes a DICOM and a NIfTI cine."""
    samples = sorted(p for p in ANGIO_SAMPLE.iterdir() if p.name.endswith((".dcm", ".nii.gz")))
    assert [p.suffix for p in samples[3:]] == [".dcm", ".gz"]
    outs = _run_batch_sizes(bundle_runner, "angiogram_signature_activation", ANGIO_SAMPLE, tmp_path, (1, 3))
    for out in outs.values():
        for src in samples:
            _check_study(src, out)
    _assert_same_outputs(outs[1], outs[3], len(samples), 3)
    for src in samples[:4]:  # derived XA DICOM maps: the same up to one quantisation step
        name = f"{src.stem}_sigact_spatial.dcm"
        one, three = (pydicom.dcmread(outs[b] / src.stem / name).pixel_array.astype(np.int64) for b in (1, 3))
        assert np.abs(one - three).max() <= 1
