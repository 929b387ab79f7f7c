from __future__ import annotations

import pytest
import torch

from monai_saliency.data.synthetic.blobs import make_blob_dataset


@pytest.mark.parametrize("shape", [(32, 40), (24, 24, 24)])
def test_blobs_deterministic_labelled_and_located(shape):
    x1, y1, m1 = make_blob_dataset(6, shape, seed=3)
    x2, y2, m2 = make_blob_dataset(6, shape, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(m1, m2)
    assert x1.shape == (6, 1, *shape) and y1.tolist() == [0, 1, 0, 1, 0, 1]
    assert not m1[y1 == 0].any() and all(m1[i].any() for i in range(6) if y1[i] == 1)
    for i in range(6):  # the blob raises the mean inside its mask by about its peak height
        if y1[i]:
            assert x1[i][m1[i]].mean() > x1[i][~m1[i]].mean() + 0.3
    assert not torch.equal(make_blob_dataset(6, shape, seed=4)[0], x1)


def test_blobs_bad_input():
    with pytest.raises(ValueError):
        make_blob_dataset(0)
    with pytest.raises(ValueError):
        make_blob_dataset(2, (10, 10))
