"""μ-fidelity's subsets and stability's noise are drawn per item: an item's score is the same alone, at another
position of a batch with other batch-mates, and (stability) for any chunk size (up to the float32 round-off of
batched forward passes)."""

from __future__ import annotations

import torch

from monai_saliency.methods.gradients import SmoothGrad, VanillaGrad
from monai_saliency.metrics import mu_fidelity, stability


def _items() -> torch.Tensor:
    return torch.randn(4, 2, 12, 12, generator=torch.Generator().manual_seed(3))


def test_mu_fidelity_item_score_independent_of_batch(cnn2d):
    x = _items()
    sal = VanillaGrad(cnn2d)(x, class_idx=1) * x
    alone = mu_fidelity(cnn2d, x[:1], sal[:1], class_idx=1, n_subsets=16, cell_size=3, batch_size=5)
    order = [2, 3, 0]
    batched = mu_fidelity(cnn2d, x[order], sal[order], class_idx=1, n_subsets=16, cell_size=3, batch_size=7)
    torch.testing.assert_close(batched[2:], alone, atol=1e-6, rtol=0)
    other_seed = mu_fidelity(cnn2d, x[:1], sal[:1], class_idx=1, n_subsets=16, cell_size=3, seed=1)
    assert not torch.allclose(other_seed, alone)


def test_stability_item_score_independent_of_batch_and_chunks(cnn2d):
    x = _items()
    explainer = SmoothGrad(cnn2d, n_samples=2)  # a random explainer: its own noise is per item too
    alone = stability(explainer, x[:1], class_idx=1, n_samples=3, batch_size=2)
    for order, chunk in (([1, 0, 3], 64), ([3, 2, 0], 1)):
        batched = stability(explainer, x[order], class_idx=1, n_samples=3, batch_size=chunk)
        pos = order.index(0)
        torch.testing.assert_close(batched[pos : pos + 1], alone, atol=1e-6, rtol=0)
    assert not torch.allclose(stability(explainer, x[:1], class_idx=1, n_samples=3, seed=1), alone)
