"""SmoothGrad's seeded noise is per item: an item's map does not depend on its batch-mates, its position in the
batch, the chunk size or the run; seeds select the Monte-Carlo draw; the draws are standard normal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from scipy import stats
from torch import nn

from monai_saliency.methods.forgrad import FORGrad
from monai_saliency.methods.gradients import SmoothGrad, VanillaGrad
from monai_saliency.ops.item_noise import draw_seed, item_keys, keyed_draws

N = 4


@pytest.fixture
def items() -> torch.Tensor:
    """Five different 2-channel 12x12 images."""
    return torch.randn(5, 2, 12, 12, generator=torch.Generator().manual_seed(7))


def _batch(images: torch.Tensor) -> MetaTensor:
    """A collated MetaTensor batch from a MONAI DataLoader, one affine per item."""
    data = [
        {"image": MetaTensor(img, affine=torch.diag(torch.tensor([1.0 + i, 2.0, 1.0, 1.0], dtype=torch.float64)))}
        for i, img in enumerate(images)
    ]
    return next(iter(DataLoader(Dataset(data), batch_size=len(data))))["image"]


def test_item_map_independent_of_batch_position_and_chunks(cnn2d, items):
    """Item 0 alone, at position 0 and at position 2 of batches of three with different batch-mates, and with
    other chunk sizes: the same map (the old batch-wide draw fails this: differences ~3e-3)."""
    target = 1
    alone = SmoothGrad(cnn2d, n_samples=N, batch_size=3)(items[:1], class_idx=target)
    first = SmoothGrad(cnn2d, n_samples=N, batch_size=3)(_batch(items[[0, 1, 2]]), class_idx=target)
    third = SmoothGrad(cnn2d, n_samples=N, batch_size=3)(_batch(items[[3, 4, 0]]), class_idx=target)
    assert isinstance(third, MetaTensor)
    torch.testing.assert_close(first[0].as_tensor(), alone[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(third[2].as_tensor(), alone[0], atol=1e-6, rtol=0)
    for chunk in (1, 5, 64):  # samples of one item split over chunks, or all items in one chunk
        other = SmoothGrad(cnn2d, n_samples=N, batch_size=chunk)(_batch(items[[3, 4, 0]]), class_idx=target)
        torch.testing.assert_close(other.as_tensor(), third.as_tensor(), atol=1e-6, rtol=0)
    # the map is a real Monte-Carlo average: not the plain gradient
    assert not torch.allclose(alone, VanillaGrad(cnn2d)(items[:1], class_idx=target), atol=1e-4)


def test_matches_brute_force_loop_over_documented_draws(cnn2d, items):
    """Map = mean over s of grad(x_b + std_b * eps_{b,s}), eps_{b,s} ~ N(0, 1) from the generator seeded by
    draw_seed(seed, digest of x_b, s): rebuilt here one item and one sample at a time with VanillaGrad."""
    x, seed, spread = items[:3], 11, 0.2
    ours = SmoothGrad(cnn2d, n_samples=N, stdev_spread=spread, batch_size=5, seed=seed)(x, class_idx=2)
    vg = VanillaGrad(cnn2d)
    for b in range(3):
        std = spread * float(x[b].max() - x[b].min())
        key = item_keys(x[b : b + 1])[0]
        grads = []
        for s in range(N):
            eps = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(draw_seed(seed, key, s)))
            grads.append(vg(x[b : b + 1] + std * eps, class_idx=2))
        torch.testing.assert_close(ours[b : b + 1], torch.stack(grads).mean(0), atol=1e-6, rtol=1e-5)


def test_seed_semantics(cnn2d, items):
    """Same seed: same map, whatever the global RNG state; another seed: another map; None: the global RNG."""
    x = items[:2]
    torch.manual_seed(1)
    a = SmoothGrad(cnn2d, n_samples=N, seed=3)(x)
    torch.manual_seed(2)
    b = SmoothGrad(cnn2d, n_samples=N, seed=3)(x)
    c = SmoothGrad(cnn2d, n_samples=N, seed=4)(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - c).abs().amax() > 1e-3
    assert torch.equal(SmoothGrad(cnn2d, n_samples=N)(x), SmoothGrad(cnn2d, n_samples=N, seed=0)(x))  # default 0
    torch.manual_seed(5)
    g1 = SmoothGrad(cnn2d, n_samples=N, seed=None)(x)
    torch.manual_seed(5)
    g2 = SmoothGrad(cnn2d, n_samples=N, seed=None)(x)
    g3 = SmoothGrad(cnn2d, n_samples=N, seed=None)(x)
    torch.testing.assert_close(g1, g2, atol=0, rtol=0)
    assert (g1 - g3).abs().amax() > 1e-3
    for bad in (1.5, "0", True):
        with pytest.raises(TypeError, match="seed"):
            SmoothGrad(cnn2d, seed=bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_uses_the_float32_items_noise(cnn2d, items, dtype):
    """A half input is explained in float32: its map is the float32 map of the same values, cast back."""
    xh = _batch(items[:3]).to(dtype)
    got = SmoothGrad(cnn2d, n_samples=N)(xh, class_idx=0)
    ref = SmoothGrad(cnn2d, n_samples=N)(xh.float()[[2, 0, 1]], class_idx=0)[[1, 2, 0]]
    assert got.dtype == dtype and isinstance(got, MetaTensor)
    torch.testing.assert_close(got.float().as_tensor(), ref.to(dtype).float().as_tensor(), atol=0, rtol=0)


def test_forgrad_over_smoothgrad_is_per_item(cnn2d, items):
    forgrad = FORGrad(SmoothGrad(cnn2d, n_samples=N, batch_size=2), sigma=4, reduce="abs_sum")
    batched = forgrad(items[[1, 0, 3]], class_idx=1)
    alone = forgrad(items[:1], class_idx=1)
    torch.testing.assert_close(batched[1:2], alone, atol=1e-6, rtol=0)


def test_keyed_draws_are_standard_normal_and_distinct():
    """Pooled draws pass a Kolmogorov-Smirnov test against N(0, 1) (scipy); samples and items differ; a row does
    not depend on the other rows."""
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    keys = item_keys(x)
    assert len(set(keys)) == 3 and item_keys(x[1:2])[0] == keys[1]
    rows = keyed_draws(
        torch.randn, 0, [keys[0]] * 40 + [keys[1]] * 40, list(range(40)) * 2, (50,), torch.float64, "cpu"
    )
    assert stats.kstest(rows.reshape(-1).numpy(), "norm").pvalue > 1e-3
    corr = np.corrcoef(rows.numpy())
    assert np.abs(corr[~np.eye(80, dtype=bool)]).max() < 0.7  # no two rows repeat the same draw
    single = keyed_draws(torch.randn, 0, [keys[1]], [7], (50,), torch.float64, "cpu")
    torch.testing.assert_close(single[0], rows[47], atol=0, rtol=0)
    with pytest.raises(ValueError, match="keys"):
        keyed_draws(torch.randn, 0, keys, [0], (2,), torch.float32, "cpu")


def test_linear_model_unaffected_by_noise(items):
    """Independent check of the mean: a linear model's gradient is its weight whatever the noise."""
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 12 * 12, 3))
    sg = SmoothGrad(lin, n_samples=3, stdev_spread=0.5, batch_size=2, seed=9)(items[:2], class_idx=torch.tensor([0, 2]))
    torch.testing.assert_close(sg, lin[1].weight.detach().reshape(3, 2, 12, 12)[[0, 2]], atol=1e-6, rtol=1e-5)
