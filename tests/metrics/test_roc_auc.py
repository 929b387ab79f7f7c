from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_saliency.metrics import nmse, roc_auc


def _pair_count_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Brute force: the share of (positive, negative) pairs ranked correctly, ties counting one half."""
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_equals_the_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.normal(size=300) + labels, 1)  # rounded: many ties within and across classes
    assert roc_auc(scores, labels) == pytest.approx(_pair_count_auc(scores, labels), abs=1e-12)
    assert roc_auc(torch.from_numpy(scores).float().reshape(10, 30), torch.from_numpy(labels).reshape(10, 30)) == (
        pytest.approx(_pair_count_auc(scores.astype(np.float32), labels), abs=1e-12)
    )


def test_roc_auc_extremes_and_errors():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(np.ones(4), labels) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.arange(4.0), np.zeros(4))
    with pytest.raises(ValueError, match="binary"):
        roc_auc(np.arange(4.0), np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([0.0, np.nan, 1.0, 2.0]), labels)
    with pytest.raises(ValueError, match="size"):
        roc_auc(np.arange(3.0), labels)


def test_nmse():
    ref = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    est = ref + torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64)
    assert nmse(est, ref) == pytest.approx(0.5 / 14.0)
    assert nmse(ref.numpy(), ref.numpy()) == 0.0
    assert nmse(np.zeros(3), np.zeros(3)) == 0.0 and nmse(np.ones(3), np.zeros(3)) == float("inf")
    with pytest.raises(ValueError, match="size"):
        nmse(np.zeros(2), np.zeros(3))
