"""``all_finite`` against ``torch.isfinite(...).all()``."""

from __future__ import annotations

import pytest
import torch

from monai_saliency.ops.checks import all_finite


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_detects_every_non_finite_value(bad, dtype):
    x = torch.randn(4, 33, dtype=torch.float32).to(dtype)
    assert all_finite(x)
    for pos in [(0, 0), (3, 32), (2, 17)]:
        y = x.clone()
        y[pos] = bad
        assert not all_finite(y)
        assert all_finite(y) == bool(torch.isfinite(y).all())


def test_extremes_and_empty_tensors():
    big = torch.finfo(torch.float32).max
    assert all_finite(torch.tensor([big, -big, 0.0]))
    assert all_finite(torch.empty(0, 3))
    assert all_finite(torch.zeros(()))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 0.0, -3.5])
def test_single_element_tensors(value):
    for shape in ((), (1,), (1, 1)):
        x = torch.full(shape, value)
        assert all_finite(x) == bool(torch.isfinite(x).all())
