from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel, Saliency
from monai.data import MetaTensor
from torch import nn

from monai_saliency.methods.gradients import (
    IG_METHODS,
    IntegratedGradients,
    SmoothGrad,
    VanillaGrad,
    input_gradients,
    integration_rule,
)


@pytest.fixture
def x2d() -> torch.Tensor:
    return torch.randn(3, 2, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.fixture
def net(cnn2d) -> nn.Module:
    return cnn2d.double()


def _captum_noise(b: int, n: int, shape, stdev: float, seed: int) -> torch.Tensor:
    """Replay captum's NoiseTunnel noise draw (torch.normal on (B*n, ...), item-major) in our (n, B, ...) layout."""
    torch.manual_seed(seed)
    size = (b * n, *shape)
    noise = torch.normal(0, torch.tensor(stdev).repeat(size)).double()  # captum draws in float32
    return noise.reshape(b, n, *shape).transpose(0, 1)


@pytest.mark.parametrize("magnitude, nt_type", [(False, "smoothgrad"), (True, "smoothgrad_sq")])
def test_smoothgrad_matches_captum_noise_tunnel(net, x2d, magnitude, nt_type):
    n, stdev, seed = 6, 0.3, 123
    target = torch.tensor([0, 2, 1])
    torch.manual_seed(seed)
    ref = NoiseTunnel(Saliency(net)).attribute(
        x2d, nt_type=nt_type, nt_samples=n, stdevs=stdev, target=target, abs=False
    )
    noise = _captum_noise(3, n, x2d.shape[1:], stdev, seed)
    ours = SmoothGrad(net, n_samples=n, magnitude=magnitude, batch_size=4)(x2d, class_idx=target, noise=noise)
    torch.testing.assert_close(ours, ref)
    # the noise really matters: a different draw gives a different map
    other = SmoothGrad(net, n_samples=n, magnitude=magnitude)(x2d, class_idx=target, noise=noise.flip(0).roll(1, 1))
    assert not torch.allclose(ours, other)


def test_smoothgrad_chunking_and_batch_invariance(net, x2d):
    noise = 0.2 * torch.randn(5, *x2d.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = torch.tensor([1, 0, 2])
    maps = [SmoothGrad(net, n_samples=5, batch_size=bs)(x2d, class_idx=target, noise=noise) for bs in (1, 4, 15, 64)]
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0])
    # per-item loop: item i with its own noise samples and target
    sg = SmoothGrad(net, n_samples=5, batch_size=7)
    looped = torch.cat([sg(x2d[i : i + 1], class_idx=int(target[i]), noise=noise[:, i : i + 1]) for i in range(3)])
    torch.testing.assert_close(maps[0], looped)


def test_smoothgrad_zero_noise_is_vanilla_grad(net, x2d):
    sg = SmoothGrad(net, n_samples=3, stdev=0.0, batch_size=2)(x2d, class_idx=1)
    torch.testing.assert_close(sg, VanillaGrad(net)(x2d, class_idx=1))


def test_smoothgrad_generator_is_reproducible_and_relative_noise(net, x2d):
    a = SmoothGrad(net, n_samples=4, generator=torch.Generator().manual_seed(5))(x2d)
    b = SmoothGrad(net, n_samples=4, generator=torch.Generator().manual_seed(5))(x2d)
    torch.testing.assert_close(a, b)
    # linear model: every noisy gradient equals w, so SmoothGrad is exact whatever the noise
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 12 * 12, 3)).double()
    sg = SmoothGrad(lin, n_samples=4, stdev_spread=0.5, batch_size=5)(x2d, class_idx=torch.tensor([0, 1, 2]))
    w = lin[1].weight.detach().reshape(3, 2, 12, 12)
    torch.testing.assert_close(sg, w)


@pytest.mark.parametrize("method", ["captum_trapezoid", "gausslegendre", "riemann_left"])
def test_ig_matches_captum(net, x2d, method):
    target = torch.tensor([2, 0, 1])
    baseline = 0.1 * torch.ones_like(x2d)
    ref, delta = CaptumIG(net).attribute(
        x2d,
        baselines=baseline,
        target=target,
        n_steps=16,
        method=method.replace("captum", "riemann"),
        return_convergence_delta=True,
    )
    ig = IntegratedGradients(net, n_steps=16, method=method, baseline=0.1, batch_size=5)
    ours = ig(x2d, class_idx=target)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ig.completeness_error, delta)


def test_ig_completeness_converges_and_batch_size_invariant(net, x2d):
    errs = []
    for n in (8, 64):
        ig = IntegratedGradients(net, n_steps=n, method="gausslegendre", batch_size=50)
        attr = ig(x2d, class_idx=1)
        errs.append(ig.completeness_error.abs().max().item())
        assert attr.shape == x2d.shape
    # piecewise-linear (ReLU, max-pool) integrand: convergence is algebraic, not spectral
    assert errs[1] < 0.5 * errs[0]
    assert errs[1] < 0.02 * ig.last_score_delta.abs().max().item()
    a = IntegratedGradients(net, n_steps=10, batch_size=1)(x2d, class_idx=torch.tensor([0, 1, 2]))
    b = IntegratedGradients(net, n_steps=10, batch_size=1000)(x2d, class_idx=torch.tensor([0, 1, 2]))
    torch.testing.assert_close(a, b)


def test_ig_linear_model_is_exact(x2d):
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 12 * 12, 3)).double()
    base = torch.randn_like(x2d)
    ig = IntegratedGradients(lin, n_steps=3, baseline=lambda x: base, batch_size=2)
    attr = ig(x2d, class_idx=torch.tensor([2, 1, 0]))
    w = lin[1].weight.detach().reshape(3, 2, 12, 12)[[2, 1, 0]]
    torch.testing.assert_close(attr, w * (x2d - base))
    assert ig.completeness_error.abs().max() < 1e-10


def test_integration_rules_integrate_polynomials():
    for method in IG_METHODS:
        a, w = integration_rule(8, method)
        total = 7 / 8 if method == "captum_trapezoid" else 1.0  # captum's trapezoid weights sum to (n-1)/n
        torch.testing.assert_close(w.sum(), torch.tensor(total, dtype=torch.float64))
        assert (a >= 0).all() and (a <= 1).all()
    a, w = integration_rule(5, "gausslegendre")
    torch.testing.assert_close((w * a**7).sum(), torch.tensor(1 / 8, dtype=torch.float64))
    a, w = integration_rule(3, "riemann_trapezoid")  # textbook: points 0, 1/2, 1 with weights 1/4, 1/2, 1/4
    torch.testing.assert_close(w, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))
    torch.testing.assert_close(a, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))


def test_3d_and_no_grad_and_metatensor(cnn3d):
    x = MetaTensor(torch.randn(2, 1, 8, 8, 8), meta={"k": 1})
    with torch.no_grad():
        sg = SmoothGrad(cnn3d, n_samples=3, batch_size=4, reduce="abs_sum")(x)
        ig = IntegratedGradients(cnn3d, n_steps=4, batch_size=3, reduce="l2")(x)
    for out in (sg, ig):
        assert isinstance(out, MetaTensor) and out.meta["k"] == 1
        assert out.shape == (2, 1, 8, 8, 8) and torch.isfinite(out).all()
    assert all(p.requires_grad for p in cnn3d.parameters())


def test_bad_arguments(net, x2d):
    with pytest.raises(ValueError, match="n_samples"):
        SmoothGrad(net, n_samples=0)
    with pytest.raises(ValueError, match=">= 0"):
        SmoothGrad(net, stdev=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        IntegratedGradients(net, batch_size=0)
    with pytest.raises(ValueError, match="integration method"):
        IntegratedGradients(net, method="simpson")
    with pytest.raises(ValueError, match="shape"):
        SmoothGrad(net, n_samples=2)(x2d, noise=torch.zeros(3, *x2d.shape, dtype=torch.float64))
    with pytest.raises(ValueError, match="broadcast"):
        IntegratedGradients(net, baseline=torch.zeros(5, 5))(x2d)
    with pytest.raises(ValueError, match="NaN"):
        IntegratedGradients(net)(x2d * float("nan"))
    with pytest.raises(TypeError):
        SmoothGrad(net)(x2d.long())
    for cls in (SmoothGrad(net, n_samples=2), IntegratedGradients(net, n_steps=2)):
        with pytest.raises(ValueError, match="out of range"):
            cls(x2d, class_idx=3)
        with pytest.raises(ValueError, match="out of range"):
            cls(x2d, class_idx=-1)
        with pytest.raises(ValueError, match="entries"):
            cls(x2d, class_idx=torch.tensor([0, 1]))


def test_zero_gradient_gives_zero_map(x2d):
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 12 * 12, 3)).double()
    with torch.no_grad():
        lin[1].weight.zero_()
    out = SmoothGrad(lin, n_samples=2, reduce="abs_sum")(x2d)
    assert torch.equal(out, torch.zeros_like(out))
    ig = IntegratedGradients(lin, n_steps=4)
    assert torch.equal(ig(x2d), torch.zeros_like(x2d))


def test_input_gradients_signature_kept(net, x2d):
    grad, logits, idx = input_gradients(net, x2d, None)
    assert grad.shape == x2d.shape and logits.shape == (3, 3) and idx.shape == (3,)
