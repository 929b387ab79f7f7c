"""The angiogram bundle's training command line (scripts/train_video.py)."""

from __future__ import annotations

import json

import torch

from monai_saliency.models.training import QUICK
from monai_saliency.models.video import VideoLesionNet
from tests.bundles.conftest import load_bundle_scripts

main = load_bundle_scripts("angiogram_signature_activation", "train_video").main


def test_quick_run_saves_checkpoint_only_above_the_bar(tmp_path, capsys):
    out = tmp_path / "m" / "model.pt"
    summary = main(["--quick", "--out", str(out), "--min-auc", "0.0"])
    assert out.exists() and summary["saved"].startswith("saved")
    net = VideoLesionNet(width=QUICK.width)
    net.load_state_dict(torch.load(out, weights_only=True))
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(printed)["test_auc"] == summary["test_auc"]
    # a model that does not reach the bar is not saved
    out2 = tmp_path / "m2" / "model.pt"
    summary = main(["--quick", "--out", str(out2), "--min-auc", "1.01"])
    assert not out2.exists() and summary["saved"].startswith("not saved")
