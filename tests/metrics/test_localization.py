from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.measure import label, regionprops

from monai_saliency.metrics.localization import mask_energy, pointing_game, wsol_box_error


def _two_blocks(shape):
    m = torch.full((1, 1, *shape), 0.1)
    a = (slice(None), slice(None)) + tuple(slice(1, 4) for _ in shape)
    b = (slice(None), slice(None)) + tuple(slice(6, 9) for _ in shape)
    m[a] = 1.0
    m[b] = 0.6
    box_a = [1] * len(shape) + [4] * len(shape)
    box_b = [6] * len(shape) + [9] * len(shape)
    return m, box_a, box_b


@pytest.mark.parametrize("shape", [(10, 10), (10, 10, 10)])
def test_wsol_analytic(shape):
    m, box_a, box_b = _two_blocks(shape)
    two = wsol_box_error(m, [[box_a, box_b]])
    assert two.error_rate == 0 and two.errors.tolist() == [0]
    assert two.threshold[0] == pytest.approx(0.01)  # normalised background is 0 -> first threshold already splits
    one = wsol_box_error(m, [[box_a]])
    assert one.error_rate == 0 and one.threshold[0] == pytest.approx(0.56)  # (0.6-0.1)/0.9 = 0.556 -> 0.56
    wrong = wsol_box_error(m, [[[0] * len(shape) + [1] * len(shape)]])
    assert wrong.errors.tolist() == [1]
    three = wsol_box_error(m, [[box_a, box_b, box_a]])
    assert three.errors.tolist() == [3] and three.threshold[0] == -1
    # batch of two items + chunked thresholds give the same answer
    both = wsol_box_error(torch.cat([m, m]), [[box_a, box_b], [box_a]], max_voxels=m.numel() * 7)
    assert both.errors.tolist() == [0, 0] and both.error_rate == 0


def _reference_wsol(maps, gts, thresholds, iou_thr=0.5):
    errors = []
    for mp, gt in zip(maps, gts):
        mp = (mp - mp.min()) / (mp.max() - mp.min())
        err = len(gt)
        for t in thresholds:
            props = regionprops(label(mp >= t, connectivity=mp.ndim))
            if len(props) == len(gt):
                pred = np.array([p.bbox for p in props], float)
                iou = np.zeros((len(gt), len(pred)))
                for i, g in enumerate(gt):
                    for j, p in enumerate(pred):
                        d = len(g) // 2
                        inter = np.prod(np.clip(np.minimum(g[d:], p[d:]) - np.maximum(g[:d], p[:d]), 0, None))
                        union = np.prod(g[d:] - g[:d]) + np.prod(p[d:] - p[:d]) - inter
                        iou[i, j] = inter / union
                r, c = linear_sum_assignment(-iou)
                err = len(gt) - int((iou[r, c] > iou_thr).sum())
                break
        errors.append(err)
    return np.array(errors)


def test_wsol_matches_skimage_reference():
    rng = np.random.default_rng(3)
    maps = ndimage.gaussian_filter(rng.random((6, 20, 20)), (0, 2, 2))
    gts = []
    for i in range(6):  # jittered boxes of the map's own components at some level: some match, some do not
        mp = (maps[i] - maps[i].min()) / np.ptp(maps[i])
        props = regionprops(label(mp >= rng.uniform(0.4, 0.8), connectivity=2))
        boxes = np.array([p.bbox for p in props], float) + rng.integers(-3, 4, size=(len(props), 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        gts.append(boxes)
    thr = np.round(np.arange(1, 101) / 100, 2)
    res = wsol_box_error(torch.from_numpy(maps)[:, None].float(), gts)
    ref = _reference_wsol(maps.astype(np.float32), gts, thr)
    np.testing.assert_array_equal(res.errors, ref)
    assert 0 < res.errors.sum() < res.n_boxes.sum()  # the case exercises both hits and misses


def test_wsol_bad_input():
    m = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="2 maps"):
        wsol_box_error(m, [[[0, 0, 2, 2]]])
    with pytest.raises(ValueError, match="empty"):
        wsol_box_error(m, [[[0, 0, 2, 2]], np.zeros((0, 4))])
    with pytest.raises(ValueError, match="3-d"):
        wsol_box_error(m, [[[0, 0, 0, 2, 2, 2]], [[0, 0, 2, 2]]])
    nan = m.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        wsol_box_error(nan, [[[0, 0, 2, 2]], [[0, 0, 2, 2]]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wsol_box_error(m * 2, [[[0, 0, 2, 2]], [[0, 0, 2, 2]]], normalize=False)


def test_mask_energy():
    mask = torch.zeros(3, 1, 4, 5, 6, dtype=torch.bool)
    mask[:, :, 1:3, 2:4, :] = True
    maps = torch.stack([mask[0].float(), torch.ones(1, 4, 5, 6), torch.zeros(1, 4, 5, 6)])
    e = mask_energy(maps, mask)
    np.testing.assert_allclose(e.numpy(), [1.0, mask[0].sum().item() / mask[0].numel(), 0.0])
    # signed map: abs vs positive
    signed = torch.where(mask[:1], 1.0, -1.0)
    frac = mask[0].float().mean().item()
    assert mask_energy(signed, mask[:1]).item() == pytest.approx(frac)
    assert mask_energy(signed, mask[:1], mode="positive").item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        mask_energy(maps, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="does not match"):
        mask_energy(maps, mask[:, :, :3])


def test_pointing_game():
    mask = torch.zeros(2, 9, 9, dtype=torch.bool)
    mask[:, 2:4, 2:4] = True
    maps = torch.zeros(2, 1, 9, 9)
    maps[0, 0, 3, 3] = 1.0  # inside
    maps[1, 0, 3, 7] = 1.0  # 4 voxels right of the mask edge (3, 3)
    assert pointing_game(maps, mask).tolist() == [True, False]
    assert pointing_game(maps, mask, tolerance=3.9).tolist() == [True, False]
    assert pointing_game(maps, mask, tolerance=4.0).tolist() == [True, True]
    # a constant map points nowhere even if voxel 0 is in the mask
    m0 = torch.zeros(1, 9, 9, dtype=torch.bool)
    m0[0, 0, 0] = True
    assert pointing_game(torch.zeros(1, 1, 9, 9), m0).tolist() == [False]
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(maps, mask, tolerance=-1)
