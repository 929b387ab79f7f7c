"""The bundles' DataLoaders with ``batch_size > 1`` (collated MetaTensor batches, one affine per study): the same maps,
geometry and predictions as batch 1. The PET bundle has no DataLoader (one model fitted over a whole study)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from test_angiogram_bundle import SAMPLE as ANGIO_SAMPLE
from test_angiogram_bundle import _check_study
from test_gradient_saliency_3d import BUNDLE as GRAD3D
from test_gradient_saliency_3d import _check_maps, _rows

from tests._parallel_runs import session_run
from tests.bundles.conftest import run_inference

GRAD3D_METHODS = ("vanillagrad", "smoothgrad", "integratedgradients", "forgrad", "structured", "gradcam")


def _batch_run(bundle: str, data: Path, out: Path, batch_size: int) -> Callable[[], Path]:
    """A run of ``bundle`` over ``data`` into ``out`` with ``--dataloader#batch_size``, to call later (its output
    folder, once it succeeded)."""

    def run() -> Path:
        result = run_inference(bundle, data, out, "--dataloader#batch_size", str(batch_size))
        assert result.returncode == 0, result.stderr[-3000:]
        return out

    return run


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


def _five_studies(data: Path) -> list[Path]:
    """The four gradient samples and case_001's values under a moved affine, copied to ``data``."""
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
    return inputs


def _gradient(batch_size: int) -> Callable[[Path], Callable[[], tuple[list[Path], Path]]]:
    """The session run (see tests/_parallel_runs.py) of the gradient bundle over the five studies with
    ``batch_size``: its studies and output folder."""

    def build(root: Path) -> Callable[[], tuple[list[Path], Path]]:
        inputs = _five_studies(root / "studies")
        run = _batch_run("gradient_saliency_3d", root / "studies", root / f"out_b{batch_size}", batch_size)
        return lambda: (inputs, run())

    return build


session_run("bundle_batch_sizes.gradient_b1")(_gradient(1))
session_run("bundle_batch_sizes.gradient_b4")(_gradient(4))


@session_run("bundle_batch_sizes.angiogram_b3")
def _angiogram_b3(root: Path) -> Callable[[], Path]:
    """The angiogram bundle over its sample with batch size 3 (a session run, see tests/_parallel_runs.py)."""
    return _batch_run("angiogram_signature_activation", ANGIO_SAMPLE, root / "out_b3", 3)


def test_gradient_saliency_3d_batch_size_four(session_runs):
    """``--dataloader#batch_size 4`` over five studies (a full batch and a short one, each study with its own
    affine). SmoothGrad's noise (and FORGrad's over it) is seeded per study, so its maps are compared too."""
    outs = {b: session_runs(f"bundle_batch_sizes.gradient_b{b}") for b in (1, 4)}  # each over its copy of the studies
    for inputs, out in outs.values():
        for method in GRAD3D_METHODS:
            _check_maps(inputs, out, method)
    _assert_same_outputs(outs[1][1], outs[4][1], len(outs[1][0]), len(GRAD3D_METHODS))


def test_angiogram_batch_size_three(angio_sample_run, session_runs):
    """``--dataloader#batch_size 3`` over the five sample cines: a batch of three XA DICOM files and a short batch
    that mixes a DICOM and a NIfTI cine. The batch-1 run is the bundle's default run on its sample (the same
    studies, the default ``batch_size`` 1; shared for the session, see conftest.py)."""
    samples = sorted(p for p in ANGIO_SAMPLE.iterdir() if p.name.endswith((".dcm", ".nii.gz")))
    assert [p.suffix for p in samples[3:]] == [".dcm", ".gz"]
    default, one = angio_sample_run
    assert default.returncode == 0, default.stderr[-3000:]
    three = session_runs("bundle_batch_sizes.angiogram_b3")
    outs = {1: one, 3: three}
    for out in outs.values():
        for src in samples:
            _check_study(src, out)
    _assert_same_outputs(outs[1], outs[3], len(samples), 3)
    for src in samples[:4]:  # derived XA DICOM maps: the same up to one quantisation step
        name = f"{src.stem}_sigact_spatial.dcm"
        one, three = (pydicom.dcmread(outs[b] / src.stem / name).pixel_array.astype(np.int64) for b in (1, 3))
        assert np.abs(one - three).max() <= 1
