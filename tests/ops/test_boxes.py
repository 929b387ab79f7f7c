from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from monai_saliency.ops.boxes import box_iou, box_volume, boxes_to_mask, component_boxes, mask_to_box


@pytest.mark.parametrize("shape", [(12, 10), (6, 7, 5)])
def test_box_iou_matches_voxel_count(shape):
    rng = np.random.default_rng(0)
    d = len(shape)

    def rand_boxes(n):
        a = rng.integers(0, shape, size=(n, d))
        b = rng.integers(0, shape, size=(n, d))
        return np.concatenate([np.minimum(a, b), np.maximum(a, b) + 1], 1)

    ba, bb = rand_boxes(5), rand_boxes(4)
    iou = box_iou(ba, bb)
    for i in range(5):
        ma = boxes_to_mask(ba[i], shape)
        assert ma.sum() == box_volume(ba[i])[0]
        for j in range(4):
            mb = boxes_to_mask(bb[j], shape)
            assert iou[i, j] == pytest.approx((ma & mb).sum() / (ma | mb).sum())


def test_component_boxes_matches_per_mask_labelling():
    rng = np.random.default_rng(1)
    masks = ndimage.gaussian_filter(rng.normal(size=(3, 2, 16, 16)), (0, 0, 1.5, 1.5)) > 0.1
    owner, boxes = component_boxes(masks, batch_axes=2)
    for t in range(3):
        for b in range(2):
            lab, n = ndimage.label(masks[t, b], structure=np.ones((3, 3)))
            ref = sorted(tuple([s.start for s in sl] + [s.stop for s in sl]) for sl in ndimage.find_objects(lab))
            got = sorted(tuple(x) for x in boxes[(owner[:, 0] == t) & (owner[:, 1] == b)].astype(int).tolist())
            assert got == ref and len(got) == n
    # face connectivity splits diagonal neighbours
    diag = np.eye(3, dtype=bool)[None]
    assert component_boxes(diag, connectivity=1)[1].shape[0] == 3
    assert component_boxes(diag)[1].shape[0] == 1


def test_mask_to_box_and_errors():
    m = np.zeros((5, 6, 7), bool)
    m[1:3, 2, 4:7] = True
    assert mask_to_box(m).tolist() == [1, 2, 4, 3, 3, 7]
    with pytest.raises(ValueError, match="empty"):
        mask_to_box(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="end >= start"):
        box_iou([[3, 3, 1, 1]], [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="different dimensions"):
        box_iou([[0, 0, 1, 1]], [[0, 0, 0, 1, 1, 1]])
