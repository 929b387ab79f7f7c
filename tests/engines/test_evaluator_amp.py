"""The bundles' ``--amp`` flag: parsed strictly from the command line, CUDA only (off with a warning elsewhere)."""

from __future__ import annotations

import logging

import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_saliency.engines.evaluator import SaliencyEvaluator, as_bool


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), ("true", True), ("False", False), ("0", False), (1, True)]
)
def test_as_bool(value, expected):
    assert as_bool(value, "amp") is expected


@pytest.mark.parametrize("value", ["flase", "", 2, None, 0.5])
def test_as_bool_refuses_anything_else(value):
    with pytest.raises(ValueError, match="--amp must be true or false"):
        as_bool(value, "amp")


def test_amp_on_cpu_is_switched_off_with_a_warning(caplog):
    net = torch.nn.Linear(2, 2)
    loader = DataLoader(Dataset([{"image": torch.zeros(2)}]), batch_size=1)
    with caplog.at_level(logging.WARNING):
        ev = SaliencyEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=net, amp="true")
    assert ev.amp is False
    assert "--amp applies to CUDA only" in caplog.text
    assert SaliencyEvaluator(device="cpu", val_data_loader=loader, network=net, amp="false").amp is False
    with pytest.raises(ValueError):
        SaliencyEvaluator(device="cpu", val_data_loader=loader, network=net, amp="flase")
