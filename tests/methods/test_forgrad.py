from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from monai_saliency.methods.forgrad import FORGrad, default_sigmas, insertion_deletion_score
from monai_saliency.methods.gradients import SmoothGrad, VanillaGrad


def _numpy_lowpass(a: np.ndarray, sigma: float) -> np.ndarray:
    """Independent reference: full complex FFT over the trailing spatial axes, hard radial mask, inverse."""
    sp = a.shape[2:]
    axes = tuple(range(2, a.ndim))
    freqs = np.meshgrid(*[np.fft.fftfreq(n) * n for n in sp], indexing="ij")
    mask = np.sqrt(sum(f**2 for f in freqs)) <= sigma
    return np.fft.ifftn(np.fft.fftn(a, axes=axes) * mask, axes=axes).real


@pytest.fixture
def x2d() -> torch.Tensor:
    return torch.randn(3, 2, 15, 18, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("sigma", [1.0, 2.5, 6.0])
def test_forgrad_filters_before_reduction_like_numpy(cnn2d, x2d, sigma):
    net = cnn2d.double()
    raw = VanillaGrad(net)(x2d, class_idx=torch.tensor([0, 1, 2]))
    ref = np.abs(_numpy_lowpass(raw.numpy(), sigma)).sum(1, keepdims=True)
    out = FORGrad(VanillaGrad(net), sigma=sigma, reduce="abs_sum")(x2d, class_idx=torch.tensor([0, 1, 2]))
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10)
    assert out.shape == (3, 1, 15, 18)
    # it really filtered, and the reduction came after the filter
    assert not torch.allclose(out, raw.abs().sum(1, keepdim=True))


def test_sigma_at_least_max_size_is_identity(cnn2d, x2d):
    net = cnn2d.double()
    base = VanillaGrad(net)(x2d)
    for sigma in (18, 18.0, 1000):
        torch.testing.assert_close(FORGrad(VanillaGrad(net), sigma=sigma)(x2d), base, rtol=0, atol=0)


def test_3d_odd_sizes_and_metatensor(cnn3d):
    x = MetaTensor(torch.randn(2, 1, 7, 9, 11), meta={"id": 3})
    base = VanillaGrad(cnn3d)(x.as_tensor())
    out = FORGrad(VanillaGrad(cnn3d), sigma=3.0)(x)
    assert isinstance(out, MetaTensor) and out.meta["id"] == 3 and out.shape == x.shape
    np.testing.assert_allclose(out.as_tensor().numpy(), _numpy_lowpass(base.numpy(), 3.0), atol=1e-5)


def test_wraps_smoothgrad_and_plain_callables(cnn2d, x2d):
    net = cnn2d.double()
    sg = SmoothGrad(net, n_samples=2, stdev=0.0)
    fn = lambda x, c: VanillaGrad(net)(x, c)
    a = FORGrad(sg, sigma=4)(x2d, class_idx=1)
    b = FORGrad(fn, sigma=4, nn_module=net)(x2d, class_idx=1)
    torch.testing.assert_close(a, b)
    with pytest.raises(TypeError, match="nn_module"):
        FORGrad(fn, sigma=4)


def test_bad_sigma_and_input(cnn2d, x2d):
    for bad in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="sigma"):
            FORGrad(VanillaGrad(cnn2d), sigma=bad)
    fg = FORGrad(VanillaGrad(cnn2d.double()), sigma=3)
    with pytest.raises(ValueError, match="NaN"):
        fg(x2d * float("nan"))
    with pytest.raises(ValueError, match="sigma"):
        fg.calibrate(x2d, sigmas=[2, -1])


def test_zero_gradient_gives_zero_map(x2d):
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 15 * 18, 2)).double()
    with torch.no_grad():
        lin[1].weight.zero_()
    out = FORGrad(VanillaGrad(lin), sigma=2, reduce="l2", normalize=True)(x2d)
    assert torch.equal(out, torch.zeros_like(out))


# ---------------------------------------------------------------- calibration


def _brute_force_ins_del(model, x, sal, idx, n_steps, blurred):
    """Loop-per-item, loop-per-step reference of the internal insertion - deletion score."""
    out = []
    for b in range(x.shape[0]):
        order = torch.argsort(sal[b].reshape(-1), descending=True, stable=True)
        n = order.numel()
        dels, ins = [], []
        for k in range(n_steps + 1):
            m = round(k * n / n_steps)
            mask = torch.zeros(n, dtype=torch.bool)
            mask[order[:m]] = True
            mask = mask.reshape(1, *x.shape[2:])
            d = torch.where(mask, torch.zeros(()), x[b])
            i = torch.where(mask, x[b], blurred[b])
            with torch.no_grad():
                dels.append(model(d[None]).softmax(1)[0, idx[b]].item())
                ins.append(model(i[None]).softmax(1)[0, idx[b]].item())
        frac = np.array([round(k * n / n_steps) / n for k in range(n_steps + 1)])
        trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
        out.append(trapezoid(ins, frac) - trapezoid(dels, frac))
    return np.array(out)


def test_internal_insertion_deletion_matches_brute_force(cnn2d, x2d):
    from monai_saliency.methods.forgrad import _blur

    net = cnn2d.double()
    sal = torch.rand(3, 1, 15, 18, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    idx = torch.tensor([2, 0, 1])
    got = insertion_deletion_score(net, x2d, sal, idx, n_steps=5, batch_size=7, blur_sigma=1.5)
    ref = _brute_force_ins_del(net, x2d, sal, idx, 5, _blur(x2d, 1.5))
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-10)


def test_internal_score_prefers_the_true_saliency():
    """Linear model whose score depends on one quadrant: the quadrant map beats its complement."""
    torch.manual_seed(0)
    w = torch.zeros(1, 8, 8)
    w[:, :4, :4] = 1.0
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).double()
    with torch.no_grad():
        lin[1].weight.copy_(torch.stack([w.reshape(-1), -w.reshape(-1)]))
        lin[1].bias.zero_()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64) + 0.5
    idx = torch.zeros(4, dtype=torch.long)
    good = insertion_deletion_score(lin, x, w.expand(4, 1, 8, 8).double(), idx)
    bad = insertion_deletion_score(lin, x, 1 - w.expand(4, 1, 8, 8).double(), idx)
    assert (good > bad).all()


def test_calibrate_returns_curve_and_argmax(cnn2d, x2d):
    net = cnn2d.double()
    fg = FORGrad(VanillaGrad(net), sigma=5, reduce="abs_sum")

    def fidelity(model, x, sal, idx):  # prefers the unfiltered map (negative squared distance)
        base = VanillaGrad(model)(x, idx).abs().sum(1, keepdim=True)
        return -((sal - base) ** 2).flatten(1).sum(1)

    res = fg.calibrate([x2d[:2], (x2d[2:], torch.tensor([1]))], sigmas=[1, 4, 18], metric=fidelity)
    assert res.sigmas == [1.0, 4.0, 18.0] and len(res.scores) == 3 and res.per_item.shape == (3, 3)
    assert res.best_sigma == 18.0 and fg.sigma == 18.0
    assert res.per_item[2].abs().max() < 1e-20 and (res.per_item[:2] < 0).all()

    def smooth(model, x, sal, idx):  # prefers the smoothest map (low total variation)
        return -(sal.diff(dim=-1).abs().flatten(1).sum(1) / sal.flatten(1).abs().sum(1).clamp_min(1e-12))

    res2 = fg.calibrate(x2d, sigmas=[1, 4, 18], metric=smooth, apply=False)
    assert res2.best_sigma == 1.0 and fg.sigma == 18.0
    assert res2.scores == sorted(res2.scores, reverse=True)


def test_calibrate_default_metric_runs_on_dict_batches(cnn2d, x2d):
    fg = FORGrad(VanillaGrad(cnn2d.double()), reduce="abs_sum")
    res = fg.calibrate({"image": x2d, "label": torch.tensor([0, 1, 2])}, sigmas=[2, 18], n_steps=4)
    assert len(res.scores) == 2 and all(np.isfinite(res.scores))
    assert res.best_score == max(res.scores) and fg.sigma == res.best_sigma
    assert default_sigmas((15, 18))[-1] == 18.0 and default_sigmas((15, 18))[0] == 1.0


def test_calibrate_runs_a_training_network_in_eval_mode():
    """A network left in train mode: calibration leaves its BatchNorm statistics and flags alone, and the scores are
    those of the network in eval mode."""
    torch.manual_seed(0)
    net = (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 3),
        )
        .double()
        .train()
    )
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    x = torch.randn(3, 1, 12, 12, dtype=torch.float64)
    seen = []

    def score(model, xb, sal, idx):  # records the mode the metric sees; prefers the smoothest map
        seen.append(model.training)
        return -(sal.diff(dim=-1).abs().flatten(1).sum(1))

    res = FORGrad(VanillaGrad(net), reduce="abs_sum").calibrate(x, sigmas=[2, 12], metric=score, apply=False)
    assert seen == [False, False]
    assert all(torch.equal(v, buffers[k]) for k, v in net.named_buffers())
    assert all(m.training for m in net.modules())
    net.eval()
    again = FORGrad(VanillaGrad(net), reduce="abs_sum").calibrate(x, sigmas=[2, 12], metric=score, apply=False)
    torch.testing.assert_close(res.per_item, again.per_item)
