from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_saliency.data.synthetic.angiogram import (
    GRADE_RANGES,
    GRADES,
    grade_of_stenosis,
    make_angiogram,
    make_angiogram_dataset,
)


@pytest.fixture(scope="module")
def batch():
    return make_angiogram_dataset(48, shape=(48, 48), frames=8, seed=3)


def test_deterministic_and_seed_dependent(batch):
    again = make_angiogram_dataset(48, shape=(48, 48), frames=8, seed=3)
    assert torch.equal(batch.cine, again.cine)
    assert torch.equal(batch.vessel_mask, again.vessel_mask)
    assert torch.equal(batch.boxes, again.boxes) and torch.equal(batch.grades, again.grades)
    other = make_angiogram_dataset(48, shape=(48, 48), frames=8, seed=4)
    assert not torch.equal(batch.cine, other.cine)


def test_shapes_ranges_and_labels(batch):
    n, t, h, w = batch.cine.shape
    assert (n, t, h, w) == (48, 8, 48, 48) and batch.cine.dtype == torch.float32
    assert batch.cine.min() >= 0 and batch.cine.max() <= 1 and torch.isfinite(batch.cine).all()
    assert batch.vessel_mask.shape == (n, h, w) and batch.vessel_mask.dtype == torch.bool
    # label is exactly "has a moderate or severe lesion"
    assert torch.equal(batch.labels, (batch.grades >= 1).any(1).long())
    assert 0.2 < batch.labels.float().mean() < 0.8  # both classes, roughly balanced
    # grade codes agree with the sampled diameter reductions and their clinical thresholds
    active = batch.grades >= 0
    assert torch.equal(grade_of_stenosis(batch.stenosis)[active], batch.grades[active])
    assert (batch.stenosis[~active] == 0).all() and (batch.boxes[~active] == 0).all()
    # the paper's scenario occurs: a mild and a moderate lesion in one case
    has_mild = (batch.grades == 0).any(1)
    has_mod = (batch.grades == 1).any(1)
    assert (has_mild & has_mod).any() and (has_mild & ~batch.labels.bool()).any()


def test_boxes_are_valid_and_contain_their_centres(batch):
    active = batch.grades >= 0
    b, c = batch.boxes[active], batch.centers[active]
    assert (b[:, 0] < b[:, 2]).all() and (b[:, 1] < b[:, 3]).all()
    assert (b[:, :2] >= 0).all() and (b[:, 2] <= 48).all() and (b[:, 3] <= 48).all()
    assert ((c[:, 0] >= b[:, 0]) & (c[:, 0] < b[:, 2]) & (c[:, 1] >= b[:, 1]) & (c[:, 1] < b[:, 3])).all()
    masks = batch.lesion_masks()
    brute = torch.zeros_like(masks)
    for i, k in active.nonzero().tolist():  # brute-force reference
        y0, x0, y1, x1 = batch.boxes[i, k].long().tolist()
        brute[i, k, y0:y1, x0:x1] = True
    assert torch.equal(masks, brute)


def test_lesions_lie_on_the_vessel(batch):
    active = batch.grades >= 0
    masks = batch.lesion_masks()
    for i, k in active.nonzero().tolist():
        vm = batch.vessel_mask[i].numpy()
        dist_to_vessel = ndimage.distance_transform_edt(~vm)
        y, x = batch.centers[i, k].round().long().tolist()
        assert dist_to_vessel[y, x] <= 1.0, (i, k)  # the centre is on the (possibly very narrow) lumen
        assert (masks[i, k] & batch.vessel_mask[i]).sum() >= 4  # the box holds vessel pixels


def test_two_lesions_are_in_different_places():
    b = make_angiogram_dataset(16, shape=(64, 64), frames=6, seed=0, grades=("mild", "moderate"))
    assert (b.grades == torch.tensor([0, 1])).all() and (b.labels == 1).all()
    assert (b.segment[:, 0] != b.segment[:, 1]).all()
    gap = (b.centers[:, 0] - b.centers[:, 1]).norm(dim=-1)
    rsum = b.reference_radius.sum(1)
    assert (gap > rsum).all() and (gap > 1.5 * rsum).float().mean() >= 0.8  # lumens apart; most well apart
    neg = make_angiogram_dataset(4, shape=(48, 48), frames=6, seed=0, grades=())
    assert (neg.labels == 0).all() and (neg.grades == -1).all()


def test_contrast_wash_in_and_static_background():
    b = make_angiogram_dataset(4, shape=(48, 48), frames=10, seed=1, noise=0.0)
    outside = ~b.vessel_mask[:, None].expand_as(b.cine)
    # without noise, pixels off the vessels do not change over time (no motion, dye only in vessels)
    assert not torch.allclose(b.cine, b.cine[:, :1].expand_as(b.cine), atol=1e-6)  # something changes: the dye
    assert (b.cine - b.cine[:, :1]).abs()[outside].max() < 1e-6
    # the vessels darken as the dye arrives: last-fill frame is darker than the first in every case
    vm = b.vessel_mask[:, None].float()
    mean_in = (b.cine * vm).sum((2, 3)) / vm.sum((2, 3))  # (N, T)
    assert (mean_in[:, 0] - mean_in.amin(1) > 0.05).all()
    assert (mean_in[:, :5].diff(dim=1) <= 1e-6).all()  # monotone wash-in over the first half


def test_grade_matches_measured_narrowing():
    """Measure the residual lumen radius at the lesion from the rendered mask (distance transform at high
    resolution) and compare with the nominal diameter reduction and its grade."""
    cases = [
        make_angiogram_dataset(3, shape=(160, 160), frames=4, seed=5, grades=g, noise=0.0)
        for g in (("mild", "moderate"), ("severe",))
    ]
    measured, nominal, grades = [], [], []
    for b in cases:
        for i, k in (b.grades >= 0).nonzero().tolist():
            edt = ndimage.distance_transform_edt(b.vessel_mask[i].numpy())
            cy, cx = b.centers[i, k].tolist()
            yy, xx = np.mgrid[:160, :160]
            near = (yy - cy) ** 2 + (xx - cx) ** 2 <= 1.5**2
            residual = max(edt[near].max() - 0.5, 0.0)  # EDT of the axis pixel overestimates the radius by ~0.5 px
            measured.append(1.0 - residual / float(b.reference_radius[i, k]))
            nominal.append(float(b.stenosis[i, k]))
            grades.append(int(b.grades[i, k]))
    measured, nominal, grades = map(np.asarray, (measured, nominal, grades))
    assert np.abs(measured - nominal).max() < 0.15, (measured, nominal)
    means = [measured[grades == gi].mean() for gi in range(3)]
    assert means[0] < 0.5 <= means[1] < means[2] and means[2] >= 0.65
    for gi, name in enumerate(GRADES):
        lo, hi = GRADE_RANGES[name]
        assert ((nominal[grades == gi] >= lo) & (nominal[grades == gi] <= hi)).all()


def test_single_case_helper_and_errors():
    case = make_angiogram(seed=2, shape=(40, 40), frames=6)
    assert case["cine"].shape == (6, 40, 40) and case["label"] == 1
    assert sorted(les["grade"] for les in case["lesions"]) == ["mild", "moderate"]
    assert case["frame_time_ms"] == pytest.approx(1000 / 15)
    with pytest.raises(ValueError, match="grade|lesions"):
        make_angiogram_dataset(2, grades=("huge",))
    with pytest.raises(ValueError, match="at most"):
        make_angiogram_dataset(2, grades=("mild", "mild", "severe"))
    with pytest.raises(ValueError, match="shape"):
        make_angiogram_dataset(2, shape=(16, 16))
    with pytest.raises(ValueError, match="frames"):
        make_angiogram_dataset(2, frames=2)
