"""The angiogram bundle's clinical-size path: model_clinical.pt, configs/inference_clinical.json, the sample cines."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.stats
import torch
from PIL import Image

from monai_saliency._deprecation import bundle_scripts
from monai_saliency.data.dicom.xa import read_xa_cine
from monai_saliency.data.dicom.xa_writer import write_xa_cine
from monai_saliency.data.synthetic.angiogram_clinical import make_clinical_angiogram_dataset
from monai_saliency.methods import GradCAM
from monai_saliency.metrics.roc_auc import roc_auc
from monai_saliency.models.video import VideoLesionNet
from tests._parallel_runs import session_run
from tests.bundles.conftest import run_bundle

NAME = "angiogram_signature_activation"
BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / NAME
CONFIGS = "['configs/inference.json','configs/inference_clinical.json']"
METHODS = ("sigact_spatial", "sigact_frames", "gradcam")


def _scripts(name: str):
    return bundle_scripts(NAME, name)


def test_model_file_small_and_loads_scripted_and_traced():
    path = BUNDLE / "models" / "model_clinical.pt"
    assert path.stat().st_size < 5 * 2**20
    network = json.loads((BUNDLE / "configs" / "inference_clinical.json").read_text())["network_def"]
    kwargs = {k: v for k, v in network.items() if k != "_target_"}
    report = json.loads((BUNDLE / "docs" / "model_clinical.json").read_text())
    assert kwargs == _scripts("train_clinical").NETWORK == report["network"]  # the network the weights were trained as
    net = VideoLesionNet(**kwargs).eval()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # strict: every key matches
    x = torch.rand(2, 1, 8, 128, 128)
    with torch.no_grad():
        ref = net(x)
        scripted = torch.jit.script(net)
        traced = torch.jit.trace(net, x)
        np.testing.assert_allclose(scripted(x).numpy(), ref.numpy(), atol=1e-5)
        np.testing.assert_allclose(traced(x).numpy(), ref.numpy(), atol=1e-5)
    assert net.features.stage3(net.features[:5](x)).shape[-2:] == (16, 16)  # stem stride 2: H / 8


def test_model_report_states_held_out_auc():
    report = json.loads((BUNDLE / "docs" / "model_clinical.json").read_text())
    test = report["test"]
    assert test["n_pos"] + test["n_neg"] >= 200 and test["low"] <= test["auc"] <= test["high"]
    assert report["clinical_timing_test"]["n_pos"] + report["clinical_timing_test"]["n_neg"] >= 200
    assert report["config"]["shape"] == [128, 128] and report["config"]["threads"] == 1
    assert report["model_bytes"] == (BUNDLE / "models" / "model_clinical.pt").stat().st_size
    for split in ("test", "clinical_timing_test"):  # the model carries information: DeLong 95 % CI above chance
        assert report[split]["low"] > 0.5 and report[split]["auc"] >= 0.75, (split, report[split])


def test_model_clinical_beats_chance_on_fresh_cines():
    """The shipped weights themselves (not only their report) on cines from a seed no training run used.

    96 cines at the training setting (128 x 128, 8 frames at 2.5 frames/s). Under chance (AUC 0.5) the Mann-Whitney
    AUC has standard error ``sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg))`` (~0.06 for 48/48); the bar ``0.5 + 3 SE``
    (~0.68) is passed by a chance model with probability ~0.1 %. The shipped weights score 0.975 here (held-out AUC
    0.996 in ``docs/model_clinical.json``); the previous, chance-level weights scored 0.52 and fail. ~5 s.
    """
    net = VideoLesionNet(**_scripts("train_clinical").NETWORK).eval()
    net.load_state_dict(torch.load(BUNDLE / "models" / "model_clinical.pt", map_location="cpu", weights_only=True))
    b = make_clinical_angiogram_dataset(96, shape=(128, 128), frames=8, seed=424242, frame_rate=2.5)
    n_pos, n_neg = int(b.labels.sum()), int((1 - b.labels).sum())
    with torch.no_grad():
        scores = torch.cat([torch.softmax(net(x[:, None]), 1)[:, 1] for x in b.display().split(32)])
    auc = roc_auc(scores, b.labels)
    bar = 0.5 + 3 * np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
    assert min(n_pos, n_neg) >= 30 and auc > bar, (auc, bar, n_pos, n_neg)


def test_model_clinical_grad_cam_points_at_the_lesion():
    """Grad-CAM at ``cam_layer`` of the shipped weights peaks inside a moderate-or-severe lesion box (pointing game).

    The 13 positive cines of 32 fresh ones (unused seed); the boxes cover ~2.4 % of the frames, so a map unrelated to
    the lesions hits ~1 in 40, and 11 or more hits of 13 have probability < 1e-15 under it. The shipped weights hit
    13 of 13 (29 of 29 on 64 cines); the previous weights 0 of 13. ~0.5 s.
    """
    net = VideoLesionNet(**_scripts("train_clinical").NETWORK).eval()
    net.load_state_dict(torch.load(BUNDLE / "models" / "model_clinical.pt", map_location="cpu", weights_only=True))
    b = make_clinical_angiogram_dataset(32, shape=(128, 128), frames=8, seed=515151, frame_rate=2.5)
    pos = b.labels.bool()
    boxes = (b.lesion_masks() & (b.grades >= 1).view(32, -1, 1, 1, 1)).any(1)[pos]  # (P, T, H, W)
    maps = GradCAM(net, net.cam_layer)(b.display()[pos][:, None], class_idx=1)[:, 0]
    hits = boxes.flatten(1).gather(1, maps.flatten(1).argmax(1, keepdim=True))
    assert len(hits) >= 10 and hits.float().mean() >= 0.8, (int(hits.sum()), len(hits))


def test_delong_auc_matches_mann_whitney():
    g = np.random.default_rng(0)
    labels = np.r_[np.zeros(60), np.ones(40)].astype(int)
    scores = g.normal(size=100) + 0.8 * labels
    scores[:5] = scores[60:65]  # ties between classes
    ci = _scripts("train_clinical").delong_auc_ci(scores, labels)
    u = scipy.stats.mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    assert ci["auc"] == pytest.approx(u / (40 * 60)) and ci["auc"] == pytest.approx(roc_auc(scores, labels))
    # Hanley-McNeil's standard error (an independent approximation) agrees within ~15 %
    a = ci["auc"]
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se_hm = np.sqrt((a * (1 - a) + 39 * (q1 - a * a) + 59 * (q2 - a * a)) / (40 * 60))
    assert ci["se"] == pytest.approx(se_hm, rel=0.15)
    assert ci["low"] < a < ci["high"] and ci["high"] - ci["low"] == pytest.approx(2 * 1.959964 * ci["se"], rel=1e-4)


def test_train_clinical_quick_runs(tmp_path):
    out = tmp_path / "m.pt"
    summary = _scripts("train_clinical").main(
        ["--quick", "--out", str(out), "--min-auc", "0", "--report", str(tmp_path / "r.json")]
    )
    assert out.is_file() and json.loads((tmp_path / "r.json").read_text())["test"]["auc"] == summary["test"]["auc"]


@session_run("angiogram_clinical_bundle")
def _clinical_run(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path, Path]]:
    """A 256 x 256 x 16 clinical-generator cine (12-bit XA) written now; the clinical-config run over it, to call
    later: its result, the study folder and the output folder."""
    data, out = root / "data", root / "out"
    data.mkdir()
    b = make_clinical_angiogram_dataset(1, shape=(256, 256), frames=16, seed=4, grades=("severe",))
    write_xa_cine(b.cine[0].numpy(), data / "small_clinical.dcm", bits_stored=12, uid_seed="clinical-test")
    args = ("--config_file", CONFIGS, "--dataset_dir", str(data), "--output_dir", str(out))
    return lambda: (run_bundle(NAME, *args), data, out)


@pytest.fixture(scope="module")
def clinical_run(session_runs):
    """One clinical-config run over a 256 x 256 x 16 clinical-generator cine (12-bit XA); a session run (see
    tests/_parallel_runs.py)."""
    return session_runs("angiogram_clinical_bundle")


def test_clinical_config_runs_end_to_end(clinical_run):
    proc, _data, out = clinical_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["study", "prob_0", "prob_1", "label"] and [r[0] for r in rows[1:]] == ["small_clinical.dcm"]
    assert abs(float(rows[1][1]) + float(rows[1][2]) - 1) < 1e-5
    study = out / "small_clinical"
    for method in METHODS:
        nii = nib.load(str(study / f"small_clinical_{method}.nii.gz"))
        assert nii.shape == (16, 256, 256)  # maps back in the input geometry (not 128 x 128)
        v = nii.get_fdata()
        assert np.isfinite(v).all() and v.min() == 0 and np.isclose(v.max(), 1)
    derived = read_xa_cine(study / "small_clinical_sigact_spatial.dcm")
    assert tuple(derived.shape) == (1, 16, 256, 256)
    with Image.open(study / "small_clinical_sigact_spatial.gif") as gif:
        assert gif.n_frames == 16 and gif.size[0] <= 512  # gif_scale null: capped width, no 3x blow-up
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert "model_clinical.pt" in json.dumps(manifest)


def test_clinical_samples_sha_checked(tmp_path):
    mod = _scripts("make_clinical_samples")
    record = json.loads(mod.RECORD.read_text())
    assert set(record["files"]) == {f"{n}.dcm" for n in mod.CASES}
    labels = {v["label"] for v in record["files"].values()}
    assert labels == {0, 1}
    with pytest.raises(FileNotFoundError, match="make_clinical_samples"):
        mod.clinical_samples(tmp_path, generate=False)
    for name in mod.CASES:  # two stand-in files with the wrong content
        (tmp_path / f"{name}.dcm").write_bytes(b"not the sample")
    with pytest.raises(RuntimeError, match="SHA-256"):
        mod.clinical_samples(tmp_path, generate=False)
    assert mod.sha256_of(tmp_path / "clinical_512.dcm") == hashlib.sha256(b"not the sample").hexdigest()


@pytest.mark.slow
def test_clinical_samples_regenerate_identically(tmp_path):
    """Both samples regenerate byte for byte (fixed seeds, UIDs and dates; ~20 s) and read as 12-bit XA."""
    mod = _scripts("make_clinical_samples")
    paths = mod.clinical_samples(tmp_path)  # generates, then checks the recorded SHA-256
    for name, (shape, frames, *_rest) in mod.CASES.items():
        cine = read_xa_cine(paths[name])
        assert tuple(cine.shape) == (1, frames, *shape)
