from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from monai_saliency.data.synthetic.pet_phantom import (
    load_pet_study_nifti,
    make_pet_study,
    read_pet_study_images,
    save_pet_study_nifti,
)

SHAPE = (24, 28, 20)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    r = rankdata(scores)
    p = labels.sum()
    n = labels.size - p
    return float((r[labels].sum() - p * (p + 1) / 2) / (p * n))


@pytest.fixture(scope="module")
def graded():
    return make_pet_study("graded", shape=SHAPE, seed=3)


@pytest.fixture(scope="module")
def rest_task():
    return make_pet_study("rest_task", shape=SHAPE, seed=4)


def test_design_and_shapes(graded, rest_task):
    for st in (graded, rest_task):
        assert tuple(st.images.shape) == (64, *SHAPE) and st.images.dtype == torch.float32
        assert st.mask.dtype == torch.bool and st.truth.dtype == torch.bool
        assert st.truth.any() and not (st.truth & ~st.mask).any()
        assert torch.isfinite(st.images).all()
        assert (torch.bincount(st.subjects) == 8).all()
    lv = graded.targets.reshape(8, 8)
    assert (lv.sort(dim=1).values == torch.arange(1, 9).double()).all()  # every level once per subject
    assert not (lv == lv[0]).all()  # random order per subject
    assert (rest_task.targets.reshape(8, 8).sum(1) == 0).all()  # 4 rest, 4 task
    # truth regions where the docs say: occipital = posterior (low y), motor = superior (high z)
    cy = torch.nonzero(graded.truth).float().mean(0)
    cz = torch.nonzero(rest_task.truth).float().mean(0)
    assert cy[1] < SHAPE[1] * 0.3
    assert cz[2] > SHAPE[2] * 0.6


def test_activation_follows_the_paradigm(graded, rest_task):
    for st in (graded, rest_task):
        x = st.images[:, st.mask].as_tensor().double()
        y = st.targets
        # remove the subject means (as a paired analysis does), then correlate every voxel with the target
        x = x - x.reshape(8, 8, -1).mean(1, keepdim=True).repeat_interleave(8, 0).reshape(64, -1)
        xc = x - x.mean(0)
        yc = y - y.mean()
        r = (xc * yc[:, None]).sum(0) / (xc.norm(dim=0) * yc.norm())
        assert auc(st.truth[st.mask].numpy(), r.numpy()) > 0.9
        assert r[st.truth[st.mask]].mean() > 0.3


def test_seed_determinism():
    a = make_pet_study("rest_task", shape=(12, 12, 10), seed=1, n_subjects=2, n_scans=2)
    b = make_pet_study("rest_task", shape=(12, 12, 10), seed=1, n_subjects=2, n_scans=2)
    c = make_pet_study("rest_task", shape=(12, 12, 10), seed=2, n_subjects=2, n_scans=2)
    torch.testing.assert_close(a.images, b.images)
    assert not torch.allclose(a.images, c.images)


def test_nifti_roundtrip(graded, tmp_path):
    save_pet_study_nifti(graded, tmp_path / "study")
    back = load_pet_study_nifti(tmp_path / "study")
    torch.testing.assert_close(back.images.as_tensor(), graded.images.as_tensor())
    torch.testing.assert_close(back.affine, graded.affine)
    torch.testing.assert_close(back.images.affine.double(), graded.affine)
    assert (back.mask == graded.mask).all() and (back.truth == graded.truth).all()
    assert back.paradigm == "graded"
    torch.testing.assert_close(back.targets, graded.targets)
    torch.testing.assert_close(back.subjects, graded.subjects)
    with pytest.raises(FileNotFoundError):
        load_pet_study_nifti(tmp_path / "nothing")


def test_bad_arguments():
    with pytest.raises(ValueError, match="paradigm"):
        make_pet_study("finger")
    with pytest.raises(ValueError, match="3D"):
        make_pet_study(shape=(32, 32))
    with pytest.raises(ValueError, match="even"):
        make_pet_study("rest_task", n_scans=3, shape=(12, 12, 10))
    with pytest.raises(ValueError, match="non-negative"):
        make_pet_study(noise=-1, shape=(12, 12, 10))


def test_morch_saliency_localises_the_motor_region(rest_task):
    from monai_saliency.analysis import MorchSaliency
    from monai_saliency.models.pca import PCAProjection
    from monai_saliency.models.tanh_net import TanhNet

    st = rest_task
    pca = PCAProjection().fit(st.images, st.mask)
    net = TanhNet(pca.k, 4, seed=0)
    net.fit(pca(st.images), st.targets, weight_decay=0.1)
    out = MorchSaliency(net, pca).cost_changes(st.images, st.targets, orders=("first", "exact"))
    truth = st.truth[st.mask].numpy()
    assert auc(truth, out["exact"].numpy()) > 0.85
    # with non-negligible residuals the first order is close to the exact change (the paper's Fig. 2/4 claim)
    nmse = float(((out["first"] - out["exact"]) ** 2).sum() / (out["exact"] ** 2).sum())
    assert nmse < 0.1


def _rotated_affine() -> torch.Tensor:
    c, s = np.cos(0.5), np.sin(0.5)
    a = np.array([[2 * c, -2 * s, 0, -10.0], [2 * s, 2 * c, 0, 5.0], [0, 0, 3.125, -20.0], [0, 0, 0, 1]])
    return torch.as_tensor(a)


@pytest.mark.parametrize("rotated", [False, True])
def test_pet_dicom_series_roundtrip(graded, tmp_path, rotated):
    import pydicom
    from monai.transforms import LoadImage

    from monai_saliency.data.dicom.pet_series import read_pet_series, write_pet_series

    vol = graded.images.as_tensor()[5]
    affine = _rotated_affine() if rotated else graded.affine
    paths = write_pet_series(vol, tmp_path / "pt", affine)
    assert len(paths) == vol.shape[2]
    ds = pydicom.dcmread(str(paths[0]))
    assert ds.Modality == "PT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    back, _dss = read_pet_series(tmp_path / "pt")
    tol = float(vol.abs().max()) / 32000
    torch.testing.assert_close(back[0], vol, atol=tol, rtol=0)
    torch.testing.assert_close(back.affine.double(), affine.double(), atol=1e-6, rtol=0)
    # MONAI's DICOM reader sees the same voxels and geometry
    m = LoadImage(reader="PydicomReader", image_only=True)(str(tmp_path / "pt"))
    torch.testing.assert_close(torch.as_tensor(m).float(), vol, atol=tol, rtol=0)
    torch.testing.assert_close(m.affine.double(), affine.double(), atol=1e-4, rtol=0)


def test_parametric_map_references_the_series(graded, tmp_path):
    import pydicom

    from monai_saliency.data.dicom.parametric_map import read_parametric_map, write_parametric_map
    from monai_saliency.data.dicom.pet_series import read_pet_series, write_pet_series

    write_pet_series(graded.images.as_tensor()[0], tmp_path / "pt", graded.affine)
    _, dss = read_pet_series(tmp_path / "pt")
    sal = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0))
    out = write_parametric_map(sal[None], dss, tmp_path / "map" / "saliency.dcm")
    pm = pydicom.dcmread(str(out))
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    refs = {r.SeriesInstanceUID for r in pm.ReferencedSeriesSequence}
    assert dss[0].SeriesInstanceUID in refs
    assert pm.FrameOfReferenceUID == dss[0].FrameOfReferenceUID
    back = read_parametric_map(out)
    torch.testing.assert_close(back[0], sal, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.affine.double(), graded.affine, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="does not match"):
        write_parametric_map(sal[:-1], dss, tmp_path / "bad.dcm")
    with pytest.raises(FileExistsError):
        write_parametric_map(sal, dss, tmp_path / "pt" / "slice_0001.dcm")  # never over a source file
    bad = sal.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        write_parametric_map(bad, dss, tmp_path / "nan.dcm")


def test_study_dicom_layout(tmp_path):
    from monai_saliency.data.dicom.pet_series import read_pet_series
    from monai_saliency.data.synthetic.pet_phantom import save_pet_study_dicom

    st = make_pet_study("rest_task", shape=(12, 12, 10), seed=1, n_subjects=2, n_scans=2)
    folders = save_pet_study_dicom(st, tmp_path)
    assert len(folders) == 4
    vols = [read_pet_series(f) for f in folders]
    assert vols[0][1][0].StudyInstanceUID == vols[1][1][0].StudyInstanceUID != vols[2][1][0].StudyInstanceUID
    assert "target=1" in vols[1][1][0].SeriesDescription
    tol = float(st.images.abs().max()) / 32000
    torch.testing.assert_close(torch.stack([v[0][0] for v in vols]), st.images.as_tensor(), atol=tol, rtol=0)


def test_read_pet_study_images_is_the_one_packed_reader(tmp_path):
    st = make_pet_study("rest_task", shape=(8, 9, 8), n_subjects=2, n_scans=2, seed=3)
    save_pet_study_nifti(st, tmp_path)
    images, info = read_pet_study_images(tmp_path)
    torch.testing.assert_close(images.as_tensor(), st.images.as_tensor())
    torch.testing.assert_close(images.affine.double(), st.affine)
    assert info["targets"] == st.targets.tolist() and info["paradigm"] == "rest_task"
    (tmp_path / "study.json").write_text('{"targets": [1, 2, 3]}')
    with pytest.raises(ValueError, match="4 scans in the images but 3 targets"):
        read_pet_study_images(tmp_path)
    (tmp_path / "study.json").unlink()
    with pytest.raises(FileNotFoundError, match="study.json is missing"):
        read_pet_study_images(tmp_path)
