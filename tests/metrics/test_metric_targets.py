"""Metrics with targets: the deletion / insertion curves of a segmentation network's region score (the region
fixed on the clean input) against a brute-force loop over items and steps in NumPy; μ-fidelity and stability with
targets; a regression target has no probability. On the code before targets ``target=`` was an unexpected keyword
and a ``(B, K, H, W)`` output was refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from monai_saliency.methods import RegionTarget, RegressionTarget, VanillaGrad
from monai_saliency.metrics import deletion_curve, insertion_curve, mu_fidelity, stability


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    net = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0, act="tanh", norm=None).eval()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))  # distinct values: one ranking
    with torch.no_grad():
        pred = net(x).numpy().argmax(1)
    classes = [int(np.bincount(pred[b].ravel(), minlength=3).argmax()) for b in range(2)]
    return net, x, maps, classes, pred


def _reference_curve(net, x, maps, classes, pred, steps, score, start, end):
    """Item by item, step by step: perturb the top locations, score class k inside the clean predicted region."""
    n = maps[0].numel()
    curves = np.zeros((x.shape[0], steps + 1))
    for b in range(x.shape[0]):
        order = np.argsort(-maps[b, 0].numpy().ravel(), kind="stable")
        region = pred[b] == classes[b]
        for k in range(steps + 1):
            top = np.zeros(n, dtype=bool)
            top[order[: int(np.floor(k * n / steps + 0.5))]] = True
            xin = np.where(top.reshape(8, 8), end[b, 0].numpy(), start[b, 0].numpy())
            with torch.no_grad():
                out = net(torch.from_numpy(xin)[None, None].float())[0].double()
            vals = out.softmax(0) if score == "prob" else out
            curves[b, k] = float(vals[classes[b]][torch.from_numpy(region)].sum())
    return curves


@pytest.mark.parametrize("score", ["logit", "prob"])
def test_deletion_and_insertion_of_a_region_score(seg, score):
    net, x, maps, classes, pred = seg
    target = RegionTarget(torch.tensor(classes))
    steps = 4
    dele = deletion_curve(net, x, maps, target=target, steps=steps, score=score, batch_size=3)
    ref = _reference_curve(net, x, maps, classes, pred, steps, score, x, torch.zeros_like(x))
    np.testing.assert_allclose(dele.curve.numpy(), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dele.auc.numpy(), np.trapezoid(ref, dele.fractions.numpy(), axis=1), rtol=1e-4)
    assert dele.class_idx.tolist() == classes
    ins = insertion_curve(net, x, maps, target=target, steps=steps, start=0.0, score=score, batch_size=5)
    ref = _reference_curve(net, x, maps, classes, pred, steps, score, torch.zeros_like(x), x)
    np.testing.assert_allclose(ins.curve.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_mu_fidelity_stability_and_errors(seg):
    net, x, maps, classes, _ = seg
    target = RegionTarget(torch.tensor(classes))
    r = mu_fidelity(net, x, VanillaGrad(net), target=target, n_subsets=8, cell_size=4, batch_size=8)
    assert r.shape == (2,) and torch.isfinite(r).all()
    s = stability(VanillaGrad(net), x, class_idx=target.bind(net(x).detach(), 2), n_samples=2)
    assert s.shape == (2,) and torch.isfinite(s).all()
    with pytest.raises(ValueError, match="not both"):
        deletion_curve(net, x, maps, class_idx=0, target=target, steps=2)
    reg = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with pytest.raises(ValueError, match="score='logit'"):
        deletion_curve(reg, x, maps, target=RegressionTarget(1), steps=2)  # default score="prob"
    curve = deletion_curve(reg, x, maps, target=RegressionTarget(1, sign=-1), steps=2, score="logit")
    with torch.no_grad():
        torch.testing.assert_close(curve.curve[:, 0], -reg(x)[:, 1])
