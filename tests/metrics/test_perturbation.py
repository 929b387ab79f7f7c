from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from monai_saliency.metrics.perturbation import (
    deletion_curve,
    gaussian_blur_nd,
    insertion_curve,
    mu_fidelity,
    saliency_ranks,
    stability,
)


def _region(shape, r_slices):
    reg = torch.zeros(shape)
    reg[r_slices] = 1.0
    return reg


@pytest.mark.parametrize(
    "spatial, region",
    [
        ((8, 8), (slice(2, 6), slice(1, 5))),  # 2D, r = 16 of N = 64
        ((4, 4, 4), (slice(0, 2), slice(1, 3), slice(0, 4))),  # 3D / video (T, H, W), r = 16 of 64
    ],
)
def test_deletion_insertion_analytic(region_model_factory, spatial, region):
    c = 2
    reg = _region(spatial, region)
    model = region_model_factory(reg).eval()
    x = torch.ones(1, c, *spatial)
    n, r = reg.numel(), int(reg.sum())
    perfect = reg[None, None]
    reversed_ = -perfect
    # logit = c * (#region locations kept); steps = 16 hits r exactly (counts are multiples of 4)
    d_perf = deletion_curve(model, x, perfect, steps=16, score="logit")
    d_rev = deletion_curve(model, x, reversed_, steps=16, score="logit")
    assert d_perf.auc.item() == pytest.approx(c * r * r / (2 * n))
    assert d_rev.auc.item() == pytest.approx(c * (r - r * r / (2 * n)))
    assert d_perf.curve.shape == (1, 17) and d_perf.fractions[0] == 0 and d_perf.fractions[-1] == 1
    assert d_perf.curve[0, 0].item() == pytest.approx(c * r) and d_perf.curve[0, -1].item() == pytest.approx(0)
    i_perf = insertion_curve(model, x, perfect, steps=16, score="logit", start=0.0)
    i_rev = insertion_curve(model, x, reversed_, steps=16, score="logit", start=0.0)
    assert i_perf.auc.item() == pytest.approx(c * (r - r * r / (2 * n)))
    assert i_rev.auc.item() == pytest.approx(c * r * r / (2 * n))
    # random maps: between perfect and reversed; their mean is near c * r / 2
    gen = torch.Generator().manual_seed(0)
    rand = torch.rand(20, 1, *spatial, generator=gen)
    d_rand = deletion_curve(model, x.expand(20, -1, *spatial), rand, steps=16, score="logit", batch_size=128)
    assert (d_rand.auc > d_perf.auc).all() and (d_rand.auc < d_rev.auc).all()
    assert d_rand.auc.mean().item() == pytest.approx(c * r / 2, rel=0.15)


def test_channels_deleted_together(region_model_factory):
    reg = _region((6, 6), (slice(0, 3), slice(0, 6)))
    model = region_model_factory(reg).eval()
    x = torch.ones(1, 3, 6, 6)
    # multi-channel map whose per-channel orders disagree; abs_sum puts the region first
    sal = torch.zeros(1, 3, 6, 6)
    sal[:, 0] = reg
    sal[:, 1] = 0.5 * reg
    res = deletion_curve(model, x, sal, steps=2, score="logit")
    # after half the locations (the region) all 3 channels of the region are gone
    assert res.curve[0].tolist() == pytest.approx([3 * 18, 0.0, 0.0])


def _brute_force_deletion(model, x, sal, idx, steps, baseline):
    x_np, b = x.numpy(), x.shape[0]
    loc = sal.sum(1).reshape(b, -1).numpy() if sal.shape[1] > 1 else sal[:, 0].reshape(b, -1).numpy()
    n = loc.shape[1]
    out = np.zeros((b, steps + 1))
    for i in range(b):
        order = np.argsort(-loc[i], kind="stable")
        for k in range(steps + 1):
            cnt = int(np.floor(k * n / steps + 0.5))
            flat = x_np[i].reshape(x.shape[1], -1).copy()
            flat[:, order[:cnt]] = baseline
            with torch.no_grad():
                p = torch.softmax(model(torch.from_numpy(flat.reshape(x.shape[1:]))[None]), 1)[0, idx[i]]
            out[i, k] = p.item()
    return out


def test_deletion_matches_brute_force_with_per_item_classes(cnn2d):
    torch.manual_seed(1)
    x = torch.randn(2, 2, 12, 12)
    sal = torch.rand(2, 1, 12, 12)
    idx = torch.tensor([0, 2])
    res = deletion_curve(cnn2d, x, sal, class_idx=idx, steps=7, baseline=-0.5, batch_size=5)
    ref = _brute_force_deletion(cnn2d, x, sal, idx, 7, -0.5)
    np.testing.assert_allclose(res.curve.numpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.auc.numpy(), np.trapezoid(ref, res.fractions.numpy(), axis=1), rtol=1e-6)
    # chunking does not change the result
    res2 = deletion_curve(cnn2d, x, sal, class_idx=idx, steps=7, baseline=-0.5, batch_size=1000)
    torch.testing.assert_close(res.curve, res2.curve)


def test_explainer_callable_and_default_class(cnn3d):
    torch.manual_seed(2)
    x = torch.randn(2, 1, 8, 8, 8)
    sal = torch.rand(2, 1, 8, 8, 8)
    seen = {}

    def explainer(xx, class_idx):
        seen["idx"] = class_idx
        return sal

    a = insertion_curve(cnn3d, x, explainer, steps=4, blur_sigma=1.0)
    b = insertion_curve(cnn3d, x, sal, steps=4, blur_sigma=1.0)
    torch.testing.assert_close(a.auc, b.auc)
    with torch.no_grad():
        argmax = cnn3d(x).argmax(1)
    assert torch.equal(seen["idx"], argmax) and torch.equal(a.class_idx, argmax)
    # insertion from the blurred input: first point is the blurred score, last the clean one
    with torch.no_grad():
        p_clean = torch.softmax(cnn3d(x), 1).gather(1, argmax[:, None])[:, 0]
        p_blur = torch.softmax(cnn3d(gaussian_blur_nd(x, 1.0)), 1).gather(1, argmax[:, None])[:, 0]
    torch.testing.assert_close(a.curve[:, -1], p_clean)
    torch.testing.assert_close(a.curve[:, 0], p_blur)


def test_gaussian_blur_matches_scipy():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 9, 7, 5, dtype=torch.float64)
    out = gaussian_blur_nd(x, (1.5, 0.7, 3.0))  # sigma 3 -> kernel longer than the last axis
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1.5, 0.7, 3.0), mode="nearest")
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10)


def test_seed000_orientation_option(region_model_factory):
    reg = _region((4, 4), (slice(0, 2), slice(0, 4)))
    model = region_model_factory(reg).eval()
    x = torch.ones(1, 1, 4, 4)
    std = deletion_curve(model, x, reg[None, None], steps=4)
    seed = deletion_curve(model, x, reg[None, None], steps=4, higher_is_better=True)
    torch.testing.assert_close(seed.auc, 1 - std.auc)
    with pytest.raises(ValueError, match="score='prob'"):
        deletion_curve(model, x, reg[None, None], steps=4, score="logit", higher_is_better=True)


def test_ranks_ties_stable():
    ranks = saliency_ranks(torch.zeros(1, 1, 2, 3))
    assert ranks.tolist() == [[0, 1, 2, 3, 4, 5]]


def test_mu_fidelity_linear_model(linear_model_factory):
    torch.manual_seed(4)
    w = torch.randn(2, 8, 8)
    model = linear_model_factory(w).eval()
    x = torch.randn(3, 2, 8, 8)
    grad_x_input = w[None] * x
    r = mu_fidelity(model, x, grad_x_input, class_idx=0, n_subsets=32, cell_size=2)
    np.testing.assert_allclose(r.numpy(), 1.0, atol=1e-9)
    r_neg = mu_fidelity(model, x, -grad_x_input, class_idx=0, n_subsets=32, cell_size=2)
    np.testing.assert_allclose(r_neg.numpy(), -1.0, atol=1e-9)
    # another map: over random k-subsets of cells, corr(sum_S a, sum_S g) is the cell-level Pearson correlation of
    # a and g (the sampling factor k(n-k)/(n(n-1)) cancels); this random map's happens to reach 0.64 on an item
    rand_map = torch.randn_like(x)
    r_rand = mu_fidelity(model, x, rand_map, class_idx=0, n_subsets=512, cell_size=2)
    cells = [m.sum(1).reshape(3, 4, 2, 4, 2).sum((2, 4)).reshape(3, -1).numpy() for m in (rand_map, grad_x_input)]
    expected = [np.corrcoef(cells[0][i], cells[1][i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(r_rand.numpy(), expected, atol=0.2)
    r_s = mu_fidelity(model, x, grad_x_input, class_idx=0, n_subsets=32, correlation="spearman", cell_size=(2, 4))
    np.testing.assert_allclose(r_s.numpy(), 1.0, atol=1e-9)
    # a zero map has no defined correlation: 0, not NaN
    assert torch.equal(mu_fidelity(model, x, torch.zeros_like(x), n_subsets=8), torch.zeros(3, dtype=torch.float64))


def test_stability():
    torch.manual_seed(5)
    x = torch.rand(2, 1, 16, 16)
    const = stability(lambda xx, c: torch.ones_like(xx), x, n_samples=4)
    assert torch.equal(const, torch.zeros(2, dtype=torch.float64))
    s = stability(lambda xx, c: 2 * xx, x, n_samples=16, noise_std=0.05, relative_to_range=False, batch_size=7)
    expected = 0.05 * 16 / torch.linalg.vector_norm(x.reshape(2, -1), dim=1).double()  # ||δ|| ≈ σ sqrt(n)
    np.testing.assert_allclose(s.numpy(), expected.numpy(), rtol=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"score": "softmax"}, "score"),
        ({"reduce": "nope"}, "channel reduction"),
    ],
)
def test_bad_options(cnn2d, kwargs, match):
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match=match):
        deletion_curve(cnn2d, x, torch.rand(1, 1, 8, 8), **kwargs)


def test_bad_maps(cnn2d):
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match="does not match the input"):
        deletion_curve(cnn2d, x, torch.rand(1, 1, 8, 7))
    with pytest.raises(ValueError, match="does not match the input"):
        insertion_curve(cnn2d, x, torch.rand(1, 3, 8, 8))
    nan_map = torch.rand(1, 1, 8, 8)
    nan_map[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        deletion_curve(cnn2d, x, nan_map)
    with pytest.raises(ValueError, match="NaN"):
        mu_fidelity(cnn2d, x, nan_map)
    with pytest.raises(ValueError, match="start"):
        insertion_curve(cnn2d, x, torch.rand(1, 1, 8, 8), start="zeros")
    with pytest.raises(ValueError, match="baseline"):
        deletion_curve(cnn2d, x, torch.rand(1, 1, 8, 8), baseline=torch.zeros(3, 8, 8))


def test_rowwise_corr_matches_scipy():
    from monai_saliency.metrics._common import rowwise_corr

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 30))
    b = a + rng.normal(size=(4, 30))
    a[1, :10] = a[1, 0]  # ties
    for method, fn in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr)):
        ref = [fn(a[i], b[i])[0] for i in range(4)]
        np.testing.assert_allclose(rowwise_corr(a, b, method), ref, atol=1e-12)


def test_protocol_explainer_metatensor_video(cnn3d):
    from monai.data import MetaTensor

    from monai_saliency.methods.gradients import VanillaGrad

    torch.manual_seed(6)
    x = MetaTensor(torch.randn(2, 1, 6, 8, 8))  # video-like (B, C, T, H, W)
    explainer = VanillaGrad(cnn3d, reduce="abs_sum")
    idx = torch.tensor([1, 0])
    res = deletion_curve(cnn3d, x, explainer, class_idx=idx, steps=5, batch_size=4)
    ref = deletion_curve(cnn3d, x.as_tensor(), explainer(x.as_tensor(), idx), class_idx=idx, steps=5)
    torch.testing.assert_close(res.auc, ref.auc)
    assert torch.equal(res.class_idx, idx) and res.curve.shape == (2, 6)
    assert mu_fidelity(cnn3d, x, explainer, class_idx=idx, n_subsets=8, cell_size=(2, 4, 4)).shape == (2,)
    assert stability(explainer, x, class_idx=idx, n_samples=2).shape == (2,)


def test_metrics_run_a_training_network_in_eval_mode():
    """A network left in train mode: deletion / μ-fidelity leave its BatchNorm statistics and its modes alone, and
    score every perturbed batch as in eval mode (a curve that does not depend on the batch size)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).train()
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    x, sal = torch.randn(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    curve = deletion_curve(net, x, sal, steps=8, batch_size=3)
    again = deletion_curve(net, x, sal, steps=8, batch_size=9)
    torch.testing.assert_close(curve.auc, again.auc)
    mu = mu_fidelity(net, x, sal, n_subsets=8, cell_size=2)
    assert torch.isfinite(mu).all()
    assert all(torch.equal(v, buffers[k]) for k, v in net.named_buffers())
    assert all(m.training for m in net.modules())
    net.eval()
    torch.testing.assert_close(deletion_curve(net, x, sal, steps=8).auc, curve.auc)
