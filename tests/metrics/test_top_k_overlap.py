"""monai_saliency.metrics.localization.top_k_overlap: equal-area hits, against a brute-force loop; it can fail."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor

from monai_saliency.metrics import top_k_overlap


def _brute(m, mask, k, min_precision):
    """One item: sort (value descending, outside-the-mask first on ties) with Python's sorted, count."""
    vals, ins = m.reshape(-1).tolist(), mask.reshape(-1).tolist()
    order = sorted(range(len(vals)), key=lambda i: (-vals[i], ins[i]))
    tp = sum(1 for i in order[:k] if ins[i])
    size = sum(ins)
    return tp, tp / k, tp / size, tp / (k + size - tp), tp / k >= min_precision


@pytest.mark.parametrize("shape", [(9, 11), (4, 6, 5)])
def test_matches_brute_force_with_ties(shape):
    g = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 4, (5, 1, *shape), generator=g).float()  # many ties
    masks = torch.rand((5, *shape), generator=g) < 0.3
    masks.reshape(5, -1)[:, 0] = True
    n = math.prod(shape)
    for fraction in (0.05, 0.2, 1.0):
        res = top_k_overlap(maps, masks, fraction=fraction, min_precision=0.4)
        k = math.ceil(fraction * n - 1e-9)
        for i in range(5):
            tp, prec, rec, iou, hit = _brute(maps[i, 0], masks[i], k, 0.4)
            assert int(res.k[i]) == k and int(res.true_positives[i]) == tp
            assert float(res.precision[i]) == pytest.approx(prec) and float(res.recall[i]) == pytest.approx(rec)
            assert float(res.iou[i]) == pytest.approx(iou) and bool(res.hit[i]) == hit
            assert float(res.false_positive[i]) == pytest.approx(1 - prec)
    sizes = masks.reshape(5, -1).sum(1)
    res = top_k_overlap(maps, masks, k=sizes)  # per-item k: the equal-area IoU
    for i in range(5):
        assert float(res.iou[i]) == pytest.approx(_brute(maps[i, 0], masks[i], int(sizes[i]), 0.5)[3])


def test_trivial_maps_do_not_hit():
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 4:8, 4:8] = True
    uniform = torch.ones(2, 1, 16, 16)
    res = top_k_overlap(uniform, mask, fraction=0.05)
    assert not res.hit.any() and (res.true_positives == 0).all() and (res.false_positive == 1).all()
    # a uniform map's IoU at k = |mask| is 0; a raster-order tie break would give it 1 on a mask in the first row
    first_row = torch.zeros(2, 16, 16, dtype=torch.bool)
    first_row[:, 0] = True
    assert (top_k_overlap(uniform, first_row, k=16).iou == 0).all()
    assert (top_k_overlap(uniform, mask, k=16).iou == 0).all()
    noise = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    assert not top_k_overlap(noise, mask, fraction=0.05).hit.any()
    good = uniform.clone()
    good[:, :, 4:8, 4:8] = 2.0
    res = top_k_overlap(good, mask, fraction=0.05)  # 13 pixels, all inside
    assert res.hit.all() and (res.precision == 1).all() and (res.k == 13).all()
    half = uniform.clone()
    half[:, :, 4:6, 4:8] = 2.0  # 8 inside, then ties taken outside: 8/13 >= 0.5 but < 0.7
    assert top_k_overlap(half, mask, fraction=0.05).hit.all()
    assert not top_k_overlap(half, mask, fraction=0.05, min_precision=0.7).hit.any()


def test_collated_metatensor_batch_and_half():
    g = torch.Generator().manual_seed(3)
    items = [
        {"m": MetaTensor(torch.rand(1, 8, 8, generator=g), affine=torch.eye(4) * (i + 1)), "y": torch.rand(8, 8) < 0.5}
        for i in range(3)
    ]
    batch = next(iter(DataLoader(Dataset(items), batch_size=3)))
    res = top_k_overlap(batch["m"], batch["y"], fraction=0.1)
    ref = top_k_overlap(batch["m"].as_tensor().half(), batch["y"], fraction=0.1)
    assert res.hit.shape == (3,)
    np.testing.assert_array_equal(res.true_positives.numpy(), ref.true_positives.numpy())
    with torch.inference_mode():
        assert top_k_overlap(batch["m"], batch["y"], fraction=0.1).k.tolist() == [7, 7, 7]


def test_errors():
    m, y = torch.rand(2, 1, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="exactly one"):
        top_k_overlap(m, y)
    with pytest.raises(ValueError, match="exactly one"):
        top_k_overlap(m, y, fraction=0.1, k=2)
    with pytest.raises(ValueError, match="fraction"):
        top_k_overlap(m, y, fraction=0.0)
    with pytest.raises(ValueError, match="k must lie"):
        top_k_overlap(m, y, k=17)
    with pytest.raises(ValueError, match="min_precision"):
        top_k_overlap(m, y, fraction=0.5, min_precision=0)
    with pytest.raises(ValueError, match="empty"):
        top_k_overlap(m, torch.zeros(2, 4, 4), fraction=0.5)
