"""The host decisions that replaced device reads: the ideal low-pass's all-pass test, ``host_all``/``all_finite``
(one boolean each, meta tensors valid), and the on-device item fingerprints that key SmoothGrad's noise off the CPU."""

from __future__ import annotations

import itertools

import pytest
import torch

from monai_saliency.ops.checks import all_finite, host_all
from monai_saliency.ops.fourier import ideal_lowpass, ideal_lowpass_mask
from monai_saliency.ops.item_noise import device_fingerprints, item_keys


@pytest.mark.parametrize("shape", [(5,), (6,), (4, 7), (8, 8), (3, 4, 5)])
def test_lowpass_all_pass_decision_matches_the_mask(shape):
    """The host formula (the farthest bin is ``n // 2`` on every axis) against the mask itself, at and around
    the boundary radius: a clone exactly when every bin is kept."""
    corner = sum((n // 2) ** 2 for n in shape) ** 0.5
    x = torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(0))
    for radius in (corner - 1e-9, corner, corner + 1e-9, 1.0, 100.0):
        all_pass = bool(ideal_lowpass_mask(shape, radius, rfft=True).all())
        out = ideal_lowpass(x, radius, spatial_dims=len(shape))
        assert torch.equal(out, x) == all_pass  # an exact copy only when no bin is dropped


def test_host_all_and_all_finite():
    assert host_all(torch.tensor([True, True])) and not host_all(torch.tensor([True, False]))
    assert host_all(torch.empty(3, dtype=torch.bool, device="meta"))
    assert all_finite(torch.rand(5)) and not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("-inf"), 1.0, float("inf")]))
    assert not all_finite(torch.tensor([3e38, -3e38, float("inf")]))
    assert all_finite(torch.tensor([3e38, -3e38]))  # the bounds are tested, not their sum
    assert all_finite(torch.empty(4, device="meta"))


def test_device_fingerprints_identify_items_whatever_the_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 9, 7, generator=g)
    fp = device_fingerprints(x)
    assert fp.shape == (4, 4) and fp.dtype == torch.int64
    perm = [2, 0, 3, 1]
    assert torch.equal(device_fingerprints(x[perm]), fp[perm])  # position and batch-mates do not matter
    assert torch.equal(device_fingerprints(x, chunk=5), fp)  # nor the chunking of the sums
    for i, j in itertools.combinations(range(4), 2):
        assert not torch.equal(fp[i], fp[j])
    y = x.clone()
    y[1, 0, 8, 6] = torch.nextafter(y[1, 0, 8, 6], torch.tensor(2.0))  # one ulp in the last word
    changed = device_fingerprints(y)
    assert torch.equal(changed[[0, 2, 3]], fp[[0, 2, 3]]) and (changed[1] != fp[1]).all()
    assert device_fingerprints(torch.zeros(2, 3, dtype=torch.uint8)).shape == (2, 4)  # a byte count not a multiple of 4
    assert device_fingerprints(x.half()).shape == (4, 4)


def test_item_keys_on_meta_share_one_key_and_cpu_keys_are_unchanged():
    x = torch.rand(3, 2, 4)
    keys = item_keys(x)
    assert len(set(keys)) == 3 and item_keys(x[1:2]) == keys[1:2]
    meta = item_keys(torch.empty(3, 2, 4, device="meta"))
    assert len(meta) == 3 and len(set(meta)) == 1
