from __future__ import annotations

import pytest
import torch

from monai_saliency.models.tanh_net import TanhNet, damped_newton, tanh_net_forward


@pytest.fixture
def problem() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    v = torch.randn(12, 5, generator=g, dtype=torch.float64)
    y = torch.tanh(v @ torch.randn(5, generator=g, dtype=torch.float64)) * 2
    return v, y - y.mean()


def test_forward_is_eq1_and_gradient_closed_form(problem):
    v, _ = problem
    net = TanhNet(5, 3, bias=True, output_bias=True, seed=2)
    with torch.no_grad():
        net.bias_in.copy_(torch.tensor([0.1, -0.2, 0.3]))
        net.bias_out.fill_(0.5)
    ref = sum(net.weight_out[a] * torch.tanh(v @ net.weight_in[a] + net.bias_in[a]) for a in range(3)) + 0.5
    torch.testing.assert_close(net(v), ref)
    vr = v.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(vr).sum(), vr)
    torch.testing.assert_close(net.input_gradient(v), g)
    # batched functional form over parameter sets
    w = torch.stack([net.weight_in.detach(), 2 * net.weight_in.detach()])
    out = tanh_net_forward(v, w, net.weight_out.detach().expand(2, -1))
    assert out.shape == (2, 12)
    for m in range(2):  # reference: one parameter set at a time
        torch.testing.assert_close(out[m], (torch.tanh(v @ w[m].T) * net.weight_out.detach()).sum(1))


@pytest.mark.parametrize("optimizer", ["newton", "lbfgs"])
def test_fit_reaches_gradient_tolerance_and_is_seedable(problem, optimizer):
    v, y = problem
    tol = 1e-9 if optimizer == "newton" else 1e-5
    net = TanhNet(5, 3, seed=0)
    res = net.fit(v, y, weight_decay=1e-2, tol=tol, optimizer=optimizer)
    assert res.converged and res.grad_max <= tol
    # independent check of stationarity with autograd on the objective
    obj = (y - net(v)).pow(2).mean() + 1e-2 * net.penalty()
    grads = torch.autograd.grad(obj, list(net.parameters()))
    assert max(float(g.abs().max()) for g in grads) <= 10 * tol
    net2 = TanhNet(5, 3, seed=0)
    net2.fit(v, y, weight_decay=1e-2, tol=tol, optimizer=optimizer)
    torch.testing.assert_close(net2.flat_parameters(), net.flat_parameters())


def test_classification_fit_separates(problem):
    v, _ = problem
    labels = torch.where(v[:, 0] > 0, 1.0, -1.0).double()
    net = TanhNet(5, 2, output_bias=True)
    res = net.fit(v, labels, weight_decay=1e-4)
    assert res.converged
    assert (torch.sign(net(v).detach()) == labels).all()


def test_damped_newton_solves_independent_quadratics():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    a = a @ a.transpose(1, 2) + torch.eye(4, dtype=torch.float64)
    b = torch.randn(3, 4, generator=g, dtype=torch.float64)

    def obj(t, am, bm):
        return 0.5 * t @ am @ t - bm @ t

    theta, _, gmax, _ = damped_newton(obj, torch.zeros(3, 4, dtype=torch.float64), a, b, tol=1e-12)
    torch.testing.assert_close(theta, torch.linalg.solve(a, b))
    assert (gmax <= 1e-12).all()


def test_fit_bad_input(problem):
    v, y = problem
    net = TanhNet(5, 2)
    with pytest.raises(ValueError, match="targets"):
        net.fit(v, y[:-1])
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        net.fit(v[:, :4], y)
    bad = y.clone()
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        net.fit(v, bad)
    with pytest.raises(ValueError, match="optimizer"):
        net.fit(v, y, optimizer="sgd")
