from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from monai_saliency.data.dicom.parametric_map import read_parametric_map
from monai_saliency.data.nifti import save_nifti
from monai_saliency.data.synthetic.pet_phantom import make_pet_study
from monai_saliency.engines.sharding import shard_bounds
from tests._parallel_runs import Prefetched, run_together, session_run
from tests.bundles.conftest import load_bundle_scripts, metadata_offline, run_bundle

NAME = "pet_morch_saliency"
study_io = load_bundle_scripts(NAME, "study")
model_io = load_bundle_scripts(NAME, "model")
outputs = load_bundle_scripts(NAME, "outputs")
StudyError = study_io.StudyError

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / NAME
SAMPLE = BUNDLE / "sample_data"
MULTI = "['configs/inference.json','configs/multi_gpu_inference.json']"
ORDERS = ("first", "second", "exact")


def _first_series() -> Path:
    first = (SAMPLE / "targets.csv").read_text().splitlines()[1].split(",")[0]
    return SAMPLE / first


def _train_outside(folder: Path) -> subprocess.CompletedProcess:
    """The training config run from ``folder`` (not the bundle's), with ``--bundle_root`` and ``--model_dir``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "train.json")]
    cmd += ["--bundle_root", str(BUNDLE), "--model_dir", str(folder)]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def trainings(tmp_path_factory, background) -> Prefetched:
    """Two independent training runs, each its result and model folder: ``"bundle"`` from the bundle folder and
    ``"outside"`` from another folder; the first asked for runs at once, the other in the background (see
    conftest.py)."""
    models, outside = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("outside")
    return Prefetched(
        background,
        {
            "bundle": lambda: (
                run_bundle(NAME, "--config_file", "configs/train.json", "--model_dir", str(models)),
                models,
            ),
            "outside": lambda: (_train_outside(outside), outside),
        },
    )


@pytest.fixture(scope="module")
def trained(trainings):
    result, models = trainings("bundle")
    assert result.returncode == 0, result.stderr[-3000:]
    return models


@pytest.fixture(scope="module")
def with_trained(request, trained, tmp_path_factory, background) -> Prefetched:
    """The two inference runs with the trained model, each its result and output folder: ``"inferred"`` (one
    process) and ``"torchrun"`` (two, only when its slow test is selected); the first asked for runs at once, the
    other in the background (see tests/_parallel_runs.py)."""
    one, two = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("torchrun")
    inference = ("--config_file", "configs/inference.json", "--model_dir", str(trained), "--output_dir", str(one))
    calls = {"inferred": lambda: (run_bundle(NAME, *inference), one)}
    if any(item.name == "test_torchrun_two_processes_match_one" for item in request.session.items):
        multi = ("--config_file", MULTI, "--model_dir", str(trained), "--output_dir", str(two))
        calls["torchrun"] = lambda: (run_bundle(NAME, *multi, torchrun_procs=2), two)
    return Prefetched(background, calls)


@pytest.fixture(scope="module")
def inferred(with_trained):
    result, out = with_trained("inferred")
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "morch_maps"


def test_train_reproduces_the_shipped_model(trained):
    new = torch.load(trained / "model.pt", weights_only=True)
    shipped = torch.load(BUNDLE / "models" / "model.pt", weights_only=True)
    for part in ("pca", "net"):
        for key, value in shipped[part].items():
            torch.testing.assert_close(new[part][key], value, atol=1e-8, rtol=1e-6)
    assert new["train"]["converged"] and new["train"]["J"] == 64


def test_inference_outputs(inferred, trained):
    from monai.transforms import LoadImage

    names = {p.name for p in inferred.iterdir()}
    expected = {f"morch_{o}{ext}" for o in ORDERS for ext in (".nii.gz", ".dcm")}
    assert expected | {"morch_exact_3d.png", "morch_exact_overlay.dcm", "summary.csv", "summary.json"} == names
    ref = LoadImage(reader="PydicomReader", image_only=True)(str(_first_series()))  # MONAI's reader, not ours
    study = study_io.load_study(SAMPLE, progress=False)
    model = model_io.load_model(trained / "model.pt", study)
    mask = model.pca.mask.numpy()
    for o in ORDERS:
        img = nib.load(str(inferred / f"morch_{o}.nii.gz"))
        data = img.get_fdata()
        assert data.shape == tuple(ref.shape) and np.isfinite(data).all()
        np.testing.assert_allclose(img.affine, ref.affine.numpy(), atol=1e-4)
        assert (data[~mask] == 0).all() and np.abs(data[mask]).max() > 0
        pm = read_parametric_map(inferred / f"morch_{o}.dcm")
        np.testing.assert_allclose(pm[0].numpy(), data, rtol=1e-5, atol=1e-9 * np.abs(data).max())
        np.testing.assert_allclose(pm.affine.numpy(), img.affine, atol=1e-4)
        ds = pydicom.dcmread(str(inferred / f"morch_{o}.dcm"))
        refs = {i.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
        assert refs == {pydicom.dcmread(str(p)).SOPInstanceUID for p in _first_series().iterdir()}
    # the exact map is the cost change of literally zeroing one basis row (brute force at a few voxels)
    exact = nib.load(str(inferred / "morch_exact.nii.gz")).get_fdata()
    pca, net = model.pca, model.net
    y = study.targets - model.target_offset
    xc = pca.centred(study.images)
    coords = np.argwhere(mask)  # C order, as PCAProjection masks
    flat = exact[mask]
    for i in [int(np.argmax(flat)), 0, 777, len(flat) - 1]:
        b = pca.basis.clone()
        b[i] = 0
        with torch.no_grad():
            delta = float((y - net(xc @ b)).pow(2).mean() - (y - net(xc @ pca.basis)).pow(2).mean())
        assert exact[tuple(coords[i])] == pytest.approx(delta, rel=1e-4, abs=1e-7 * flat.max())
    summary = json.loads((inferred / "summary.json").read_text())
    rows = {r["order"]: r for r in summary["orders"]}
    assert rows["exact"]["roc_auc_vs_truth"] > 0.95 and rows["second"]["nmse_vs_exact"] < 1e-3
    assert not [p for p in SAMPLE.rglob("*morch*")]  # nothing written beside the inputs


session_run("metadata.pet_morch_saliency", __name__)(metadata_offline(NAME))


def test_metadata_verifies_offline(session_runs):
    """``python -m monai.bundle verify_metadata`` with the network made unreachable, against a local copy of the
    schema (verify_metadata may re-download it when absent): conftest.py's verify_metadata_offline, a session run."""
    result = session_runs("metadata.pet_morch_saliency")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verified with no error" in result.stdout + result.stderr


def test_corrupt_file_named_nonzero_exit_no_outputs(tmp_path, bundle_runner):
    data = tmp_path / "study"
    shutil.copytree(SAMPLE, data)
    bad = sorted((data / "sub-03" / "scan-02").iterdir())[4]
    bad.write_bytes(bad.read_bytes()[:300])
    out, models = tmp_path / "out", tmp_path / "models"
    inference, result = run_together(  # inference and training, independent: both at once
        lambda: bundle_runner(
            NAME, "--config_file", "configs/inference.json", "--dataset_dir", str(data), "--output_dir", str(out)
        ),
        lambda: bundle_runner(
            NAME, "--config_file", "configs/train.json", "--dataset_dir", str(data), "--model_dir", str(models)
        ),
    )
    assert inference.returncode != 0
    assert str(bad.relative_to(data)) in inference.stderr + inference.stdout
    assert not out.exists() or not any(out.iterdir())
    assert result.returncode != 0
    assert str(bad.relative_to(data)) in result.stderr + result.stdout
    assert not models.exists() or not any(models.iterdir())


@pytest.mark.slow
def test_torchrun_two_processes_match_one(inferred, with_trained):
    result, out = with_trained("torchrun")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1/2: computed voxels" in result.stdout + result.stderr  # rank 1 did its share
    out = out / "morch_maps"
    for o in ORDERS:
        a = nib.load(str(out / f"morch_{o}.nii.gz")).get_fdata()
        b = nib.load(str(inferred / f"morch_{o}.nii.gz")).get_fdata()
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)
    assert (out / "morch_exact.dcm").exists() and (out / "summary.json").exists()


# ------------------------------------------------------------------------------------------ in-process
def _nifti_study(folder: Path, seed: int = 1, json_targets: bool = True) -> Path:
    st = make_pet_study("graded", shape=(12, 14, 10), n_subjects=2, n_scans=4, seed=seed)
    affine = st.affine.clone()
    affine[:3, 3] += torch.tensor([3.0, -2.0, 5.0])
    entries = {}
    for n in range(st.images.shape[0]):
        name = f"scan_{n:02d}.nii.gz"
        save_nifti(st.images.as_tensor()[n][None], folder / name, affine=affine)
        entries[name] = float(st.targets[n])
    if json_targets:
        (folder / "targets.json").write_text(json.dumps(entries))
    else:
        (folder / "targets.csv").write_text("scan,target\n" + "".join(f"{k},{v}\n" for k, v in entries.items()))
    save_nifti(st.truth[None].to(torch.uint8), folder / "truth.nii.gz", affine=affine)
    return folder


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = _nifti_study(tmp_path_factory.mktemp("nifti_study"))
    study = study_io.load_study(folder, progress=False)
    model = model_io.fit_model(study, hidden=3, weight_decay=0.05)
    return folder, study, model


def test_nifti_study_end_to_end(small, tmp_path):
    folder, study, model = small
    assert study.kind == "nifti" and study.reference_series is None and study.mask is None
    assert model.pca.mask.sum() < model.pca.mask.numel()  # thresholded mean scan
    path = model_io.save_model(model, tmp_path / "m.pt")
    again = model_io.load_model(path, study)
    sal = model_io.build_saliency(again)
    maps = outputs.compute_maps(sal, study, again)
    ref = model_io.build_saliency(model).cost_changes(study.images, study.targets - model.target_offset)
    for o in ORDERS:
        torch.testing.assert_close(maps[o], ref[o])
    written = outputs.write_outputs(maps, study, again, tmp_path / "out", figure_order="first")
    assert not [k for k in written if k.endswith("dicom")]  # NIfTI study: no parametric map
    src = nib.load(str(folder / "scan_00.nii.gz"))
    for o in ORDERS:
        img = nib.load(str(written[f"{o}_nifti"]))
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
        assert img.shape == src.shape
    assert "roc_auc_vs_truth" in (tmp_path / "out" / "summary.csv").read_text().splitlines()[0]


def test_sharded_voxels_concatenate_to_the_full_result(small):
    _, study, model = small
    sal = model_io.build_saliency(model, chunk_bytes=2**16)
    y = study.targets - model.target_offset
    full = sal.cost_changes(study.images, y, orders=ORDERS)
    world = 3
    n = model.pca.n_voxels
    parts = [outputs.shard_cost_changes(sal, study.images, y, ORDERS, r, world) for r in range(world)]
    sizes = [shard_bounds(n, r, world) for r in range(world)]
    assert sizes[0][0] == 0 and sizes[-1][1] == n and all(a[1] == b[0] for a, b in itertools.pairwise(sizes))
    for o in ORDERS:
        torch.testing.assert_close(torch.cat([p[o] for p in parts]), full[o], rtol=1e-10, atol=1e-14)


def test_failed_write_leaves_no_outputs(small, tmp_path, monkeypatch):
    _, study, model = small
    maps = outputs.compute_maps(model_io.build_saliency(model), study, model)

    def boom(*args, **kwargs):
        raise RuntimeError("figure failed")

    import monai_saliency.visualize.surface3d as s3d

    monkeypatch.setattr(s3d, "save_surface_figure", boom)
    with pytest.raises(RuntimeError, match="figure failed"):
        outputs.write_outputs(maps, study, model, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_study_errors(small, tmp_path):
    _, study, _ = small
    with pytest.raises(StudyError, match="no targets.csv"):
        study_io.load_study(tmp_path, progress=False)
    other = _nifti_study(tmp_path / "csv", json_targets=False)
    assert study_io.load_study(other, progress=False).targets.shape == (8,)
    (other / "scan_03.nii.gz").unlink()
    with pytest.raises(StudyError, match="scan_03.nii.gz"):
        study_io.load_study(other, progress=False)
    shifted = _nifti_study(tmp_path / "shifted")
    img = nib.load(str(shifted / "scan_02.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine), str(shifted / "scan_02.nii.gz"))
    with pytest.raises(StudyError, match="scan_02.nii.gz.*grid"):
        study_io.load_study(shifted, progress=False)
    bad = _nifti_study(tmp_path / "badtarget", json_targets=False)
    (bad / "targets.csv").write_text("scan,target\nscan_00.nii.gz,high\nscan_01.nii.gz,1\n")
    with pytest.raises(StudyError, match="not a number"):
        study_io.load_study(bad, progress=False)
    sample_grid = study_io.load_study(SAMPLE, progress=False)
    with pytest.raises(StudyError, match="not on the grid"):
        model_io.load_model(BUNDLE / "models" / "model.pt", study)
    assert sample_grid.kind == "dicom" and sample_grid.reference_series == _first_series().resolve()


def test_packed_nifti_layout_of_save_pet_study_nifti(tmp_path):
    from monai_saliency.data.synthetic.pet_phantom import save_pet_study_nifti

    st = make_pet_study("rest_task", shape=(10, 12, 9), n_subjects=2, n_scans=2, seed=2)
    save_pet_study_nifti(st, tmp_path)
    study = study_io.load_study(tmp_path, progress=False)
    torch.testing.assert_close(study.images.as_tensor(), st.images.as_tensor())
    torch.testing.assert_close(study.targets, st.targets)
    torch.testing.assert_close(study.affine, st.affine)
    assert (study.mask == st.mask).all() and (study.truth == st.truth).all() and study.kind == "nifti"
    read = {"images.nii.gz", "study.json", "mask.nii.gz", "truth.nii.gz", "anatomy.nii.gz"}
    assert study.input_files == sorted((tmp_path / n).resolve() for n in read)


def test_old_engines_pet_bundle_path_warns_and_forwards():
    import monai_saliency.engines.pet_bundle as old

    with pytest.warns(DeprecationWarning, match="scripts.study.load_study"):
        assert old.load_study is study_io.load_study
    with pytest.warns(DeprecationWarning, match="engines.sharding"):
        assert old.shard_bounds is shard_bounds
    with pytest.warns(DeprecationWarning, match="roc_auc"):
        assert old.roc_auc(torch.tensor([0, 1, 1]), torch.tensor([0.1, 0.3, 0.2])) == 1.0


def test_runs_from_outside_the_bundle_folder(trainings):
    """``scripts`` is resolved after MONAI puts the bundle root on sys.path (``_target_``, not ``imports``)."""
    result, folder = trainings("outside")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (folder / "model.pt").is_file()


def test_folder_and_synthetic_studies_are_one_dataclass(small):
    from monai_saliency.data.synthetic.pet_phantom import PETStudy

    folder, study, _ = small
    assert type(study) is PETStudy and study.folder == folder and study.kind == "nifti"
    assert study.subjects is None and study.paradigm == "" and len(study.input_files) == 10  # 8 scans, targets, truth
    synthetic = make_pet_study("graded", shape=(8, 8, 8), n_subjects=1, n_scans=2, seed=0)
    assert type(synthetic) is PETStudy and synthetic.kind == "synthetic" and synthetic.input_files == []
