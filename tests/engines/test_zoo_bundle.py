"""A model-zoo classification bundle (the layout of ``endoscopic_inbody_classification``) gains saliency maps by
config overrides only: the inferer swapped and the inferer added to the evaluator's handlers. Its predictions file
must stay byte-identical and its post-processing/handlers untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet
from monai.transforms import LoadImage
from PIL import Image

from tests._parallel_runs import run_together

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "zoo_bundle"
REPO = Path(__file__).resolve().parents[2]
SIZES = [(40, 48), (36, 36), (50, 30), (32, 44), (45, 45)]  # (height, width) of the five test images
GRADCAM = {
    "_target_": "monai_saliency.methods.GradCAM",
    "nn_module": "@network",
    "target_layers": "features.denseblock2",
}


@pytest.fixture(scope="module")
def zoo_bundle(tmp_path_factory) -> Path:
    """The fixture configs plus what a zoo user downloads: a checkpoint and a data list of PNG images."""
    root = tmp_path_factory.mktemp("zoo") / "classification_bundle"
    shutil.copytree(FIXTURE, root)
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    items = []
    for i, (h, w) in enumerate(SIZES):
        path = root / "data" / f"frame{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        items.append({"image": str(path), "label": i % 2})
    (root / "data" / "test.json").write_text(json.dumps(items))
    torch.manual_seed(0)
    net = DenseNet(
        spatial_dims=2, in_channels=3, out_channels=2, init_features=8, growth_rate=8, block_config=(2, 2), bn_size=2
    )
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def _run(bundle: Path, out: Path, batch_size: int, *overrides: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "configs/inference.json",
        "--meta_file",
        "configs/metadata.json",
        "--bundle_root",
        str(bundle),
        "--output_dir",
        str(out),
        "--dataloader#batch_size",
        str(batch_size),
        *overrides,
    ]
    result = subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]


def _saliency(maps_dir: Path, **inferer: object) -> list[str]:
    """The documented two-line override: swap the inferer, add it to the evaluator's handlers."""
    spec = {
        "_target_": "monai_saliency.engines.SaliencyInferer",
        "output_dir": str(maps_dir),
        "explainers": {"gradcam": GRADCAM},
        **inferer,
    }
    return ["--inferer", repr(spec), "--evaluator#val_handlers", "$@handlers + [@inferer]"]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_zoo_bundle_predictions_unchanged_and_maps_written(zoo_bundle, tmp_path, batch_size):
    if batch_size == 1:  # exactly the documented override: NIfTI maps in the network's input grid
        saliency = _saliency(tmp_path / "maps")
    else:  # PNG maps, inverted to each image's own grid
        invert = {
            "_target_": "Invertd",
            "keys": "gradcam",
            "transform": "@preprocessing",
            "orig_keys": "image",
            "nearest_interp": False,
        }
        saliency = _saliency(tmp_path / "maps", output_ext=".png", save_transform=invert)
    run_together(  # the plain run and the one with saliency are independent: both at once
        lambda: _run(zoo_bundle, tmp_path / "plain", batch_size),
        lambda: _run(zoo_bundle, tmp_path / "sal", batch_size, *saliency),
    )
    plain = (tmp_path / "plain" / "predictions.csv").read_bytes()
    assert plain == (tmp_path / "sal" / "predictions.csv").read_bytes()
    assert len(plain.decode().strip().splitlines()) == len(SIZES)
    for i, (h, w) in enumerate(SIZES):
        src = zoo_bundle / "data" / f"frame{i}.png"
        if batch_size == 1:
            img = nib.load(str(tmp_path / "maps" / f"frame{i}_gradcam.nii.gz"))
            assert img.shape == (32, 32)
            values = img.get_fdata()
        else:
            path = tmp_path / "maps" / f"frame{i}_gradcam.png"
            assert Image.open(path).size == Image.open(src).size == (w, h)  # the input's own size, read by PIL
            values = LoadImage(image_only=True)(str(path)).numpy() / 255
            assert values.shape == LoadImage(image_only=True)(str(src)).shape[:2]
        assert values.min() == 0 and values.max() == pytest.approx(1)
    assert len(list((tmp_path / "maps").iterdir())) == len(SIZES)
