"""The angiogram bundle's ``--window_frames``: a 120-frame XA cine explained and predicted 48 frames at a time,
through ``python -m monai.bundle run`` (one run shared by the assertions)."""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_saliency.data.dicom.xa_writer import write_xa_cine
from monai_saliency.data.synthetic.angiogram import make_angiogram_dataset
from monai_saliency.engines.temporal import TemporalWindowInferer
from tests._parallel_runs import session_run
from tests.bundles.conftest import load_bundle_scripts, run_inference

NAME = "angiogram_signature_activation"
BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / NAME
FRAMES, WINDOW, OVERLAP = 120, 48, 0.5
OPTIONS = {"frame_size": [32, 32], "window_frames": WINDOW, "window_overlap": OVERLAP}


@session_run("angiogram_temporal_windows")
def _long_run(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path, Path]]:
    """The long cine written now; the windowed bundle run over it, to call later (a session run: see
    tests/_parallel_runs.py)."""
    data, out = root / "data", root / "out"
    data.mkdir()
    cine = make_angiogram_dataset(1, shape=(32, 32), frames=FRAMES, seed=5, grades=("severe",)).cine[0]
    write_xa_cine(cine, data / "long.dcm", uid_seed="long")
    args = [item for key, value in OPTIONS.items() for item in (f"--{key}", str(value))]
    return lambda: (run_inference(NAME, data, out, *args, "--write_overlays", "false"), data, out)


@pytest.fixture(scope="module")
def long_run(session_runs):
    return session_runs("angiogram_temporal_windows")


def _in_process(data: Path, out: Path) -> tuple[ConfigParser, torch.Tensor, torch.nn.Module]:
    """The bundle's own preprocessing, network and checkpoint, with the same overrides, in this process."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(data), "output_dir": str(out), **OPTIONS})
    parser["preprocessing#transforms#0#_target_"] = load_bundle_scripts(NAME, "cine_io").LoadCined
    x = parser.get_parsed_content("preprocessing")({"image": str(data / "long.dcm")})["image"][None]
    net = parser.get_parsed_content("network")
    state = torch.load(BUNDLE / "models" / "model.pt", weights_only=True, map_location="cpu")
    net.load_state_dict(state.get("model", state))
    return parser, x, net.eval()


def test_long_cine_runs_windowed_and_matches_the_package(long_run):
    result, data, out = long_run
    assert result.returncode == 0, result.stderr[-3000:]
    parser, x, net = _in_process(data, out)
    assert tuple(x.shape) == (1, 1, FRAMES, 32, 32)
    # the prediction is the mean of the 48-frame windows' logits, not the whole cine's
    with open(out / "predictions.csv", newline="") as f:
        row = list(csv.reader(f))[1]
    with torch.no_grad():
        windowed = TemporalWindowInferer(WINDOW, OVERLAP)(x, net).softmax(1)[0, 1].item()
        whole = net(x.as_tensor()).softmax(1)[0, 1].item()
    assert abs(float(row[2]) - windowed) < 1e-4 and abs(whole - windowed) > 1e-3, (row, windowed, whole)
    # every map has the cine's 120 frames and equals the package's windowed map (the blend of 48-frame windows)
    explainers = parser.get_parsed_content("windowed_explainers")
    assert [type(e).__name__ for e in explainers.values()] == ["TemporalWindows"] * 3
    for name, explainer in explainers.items():
        written = nib.load(str(out / "long" / f"long_{name}.nii.gz")).get_fdata()
        assert written.shape == (FRAMES, 32, 32), name
        expected = explainer(x)[0, 0].numpy()
        np.testing.assert_allclose(written, expected, atol=1e-2, err_msg=name)
        unwindowed = explainer.explainer(x)[0, 0].numpy()  # the same method on the whole cine: another map
        assert np.abs(unwindowed - expected).max() > 0.1, name
