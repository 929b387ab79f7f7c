from __future__ import annotations

import pytest
import torch

from monai_saliency.ops.normalize import minmax_normalize, reduce_channels


def test_minmax_per_item_and_constant_maps():
    x = torch.stack([torch.linspace(-3, 5, 20).reshape(1, 4, 5), torch.full((1, 4, 5), 7.0), torch.zeros(1, 4, 5)])
    out = minmax_normalize(x)
    assert out[0].min() == 0 and out[0].max() == 1
    torch.testing.assert_close(out[0], (x[0] + 3) / 8)
    assert torch.equal(out[1], torch.zeros(1, 4, 5)) and torch.equal(out[2], torch.zeros(1, 4, 5))
    assert not torch.isnan(out).any()


def test_minmax_exact_unit_range_without_clamp():
    """Random maps land in [0, 1] exactly, with the max at exactly 1, in both float widths."""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = (torch.randn(6, 3, 17, 19, generator=g) * 1e3 + 7).to(dtype)
        out = minmax_normalize(x)
        flat = out.reshape(6, -1)
        assert torch.equal(flat.amin(1), torch.zeros(6, dtype=dtype))
        assert torch.equal(flat.amax(1), torch.ones(6, dtype=dtype))


def test_minmax_single_item_path():
    """One item compares its range in Python instead of masking: same exact [0, 1] result, constants -> zeros."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 9, 7, generator=g) * 50 - 3
    for i in range(4):
        single = minmax_normalize(x[i : i + 1])
        torch.testing.assert_close(single, minmax_normalize(x)[i : i + 1], atol=0, rtol=0)
        assert single.min() == 0 and single.max() == 1
    assert torch.equal(minmax_normalize(torch.full((1, 5), 2.5)), torch.zeros(1, 5))
    assert torch.equal(minmax_normalize(torch.tensor([[1.0, 1.0 + 1e-6]]), eps=1e-3), torch.zeros(1, 2))


def test_minmax_range_overflow_and_eps():
    big = torch.finfo(torch.float32).max
    out = minmax_normalize(torch.tensor([[-big, 0.0, big]]))  # hi - lo overflows to inf in float32
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.5, 1.0]]))
    small_range = torch.tensor([[1.0, 1.0 + 1e-6], [0.0, 2.0]])
    out = minmax_normalize(small_range, eps=1e-3)  # a range at or below eps counts as constant
    assert torch.equal(out[0], torch.zeros(2)) and torch.equal(out[1], torch.tensor([0.0, 1.0]))


def test_minmax_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        minmax_normalize(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        minmax_normalize(torch.tensor([[float("inf"), 1.0]]))
    with pytest.raises(TypeError):
        minmax_normalize(torch.ones(2, 2, dtype=torch.int32))


def test_channel_reductions_against_numpy():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    a = x.numpy()
    torch.testing.assert_close(reduce_channels(x, "abs_sum")[:, 0].numpy(), abs(a).sum(1), check_dtype=False)
    torch.testing.assert_close(reduce_channels(x, "l2")[:, 0].numpy(), (a**2).sum(1) ** 0.5, check_dtype=False)
    torch.testing.assert_close(reduce_channels(x, "mean")[:, 0].numpy(), a.mean(1), check_dtype=False)
    torch.testing.assert_close(reduce_channels(x, "max_abs")[:, 0].numpy(), abs(a).max(1), check_dtype=False)
    assert reduce_channels(x, "none") is x
    assert reduce_channels(x, "l2", keepdim=False).shape == (2, 4, 5)
    with pytest.raises(ValueError, match="unknown channel reduction"):
        reduce_channels(x, "sum")
