"""Every explainer with targets: a segmentation network explained by ``RegionTarget`` gives the maps of the same
explainer on a classifier-style wrapper that returns the region score as its one class (the region fixed on the
clean input, computed here with NumPy); regression and callable targets likewise; Integrated Gradients keeps
completeness for every target type and matches captum on a scalar forward function.

On the code before targets all of these fail: a ``(B, K, H, W)`` output raised "expected class scores of shape
(B, K)", ``target=`` was an unexpected keyword and a target object was not a class index.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from monai_saliency.methods import (
    FORGrad,
    GradCAM,
    GradCAMpp,
    IntegratedGradients,
    RegionTarget,
    RegressionTarget,
    SmoothGrad,
    StructuredGradient,
    VanillaGrad,
)
from monai_saliency.methods.cam import EigenCAM, SignatureActivation

LAYER = "model.1.submodule.0"


def _gen():
    return torch.Generator().manual_seed(7)


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    net = UNet(2, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=0, act="tanh", norm=None).eval()
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        pred = net(x).numpy().argmax(1)
    # per item, the class with the largest predicted area (never empty), and its region computed item by item
    classes = [int(np.bincount(pred[b].ravel(), minlength=3).argmax()) for b in range(3)]
    regions = np.stack([pred[b] == classes[b] for b in range(3)])
    return net, x, torch.tensor(classes), torch.from_numpy(regions)


class RegionScore(nn.Module):
    """The region score of a segmentation net as the one class of a classifier: ``(B, 1)``. Row ``r`` of a batch is
    a copy of item ``r % B`` (the sample-major chunks of SmoothGrad / IG with a batch_size multiple of B)."""

    def __init__(self, net, classes, regions, softmax=False):
        super().__init__()
        self.net, self.classes, self.regions, self.softmax = net, classes, regions, softmax

    def forward(self, x):
        out = self.net(x)
        out = out.softmax(1) if self.softmax else out
        item = torch.arange(out.shape[0]) % len(self.classes)
        picked = out[torch.arange(out.shape[0]), self.classes[item]]
        return (picked * self.regions[item]).flatten(1).sum(1, keepdim=True)


EXPLAINERS = {
    "vanilla": lambda m, pre: VanillaGrad(m),
    "smoothgrad": lambda m, pre: SmoothGrad(m, n_samples=3, batch_size=6, seed=None, generator=_gen()),
    "ig": lambda m, pre: IntegratedGradients(m, n_steps=6, batch_size=9),
    "forgrad": lambda m, pre: FORGrad(VanillaGrad(m), sigma=4.0),
    "structured": lambda m, pre: StructuredGradient(VanillaGrad(m), steps=2),
    "gradcam": lambda m, pre: GradCAM(m, pre + LAYER, normalize=False),
    "gradcampp": lambda m, pre: GradCAMpp(m, pre + LAYER, normalize=False),
}


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_region_target_equals_the_region_score_classifier(seg, name):
    net, x, classes, regions = seg
    ours = EXPLAINERS[name](net, "")(x, target=RegionTarget(classes))  # predicted region, bound on the clean x
    # SmoothGrad's noisy copies and IG's path points are scored in the clean region: the wrapper's fixed one
    ref = EXPLAINERS[name](RegionScore(net, classes, regions), "net.")(x, class_idx=0)
    assert ours.abs().amax() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().amax()))


def test_region_target_items_are_independent(seg):
    """A batch with a mask and a class per item gives each item's map alone (no loop over items inside)."""
    net, x, classes, regions = seg
    target = RegionTarget(classes, regions[:, None], reduction="mean", activation="softmax")
    for explainer in (VanillaGrad(net), GradCAM(net, LAYER)):
        batched = explainer(x, target=target)
        alone = torch.cat(
            [
                explainer(x[i : i + 1], target=RegionTarget(classes[i : i + 1], regions[i : i + 1], "mean", "softmax"))
                for i in range(3)
            ]
        )
        torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-7)


def test_class_agnostic_methods_ignore_targets_but_check_them(seg):
    net, x, classes, _ = seg
    for explainer in (EigenCAM(net, LAYER), SignatureActivation(net, LAYER)):
        plain = explainer(x)
        torch.testing.assert_close(explainer(x, target=RegionTarget(classes)), plain)
        with pytest.raises(TypeError):
            explainer(x, target="region")


def test_target_and_class_idx_errors(seg):
    net, x, _, _ = seg
    with pytest.raises(ValueError, match="RegionTarget"):
        VanillaGrad(net)(x)  # class scores expected: the error names the way out
    with pytest.raises(ValueError, match="not both"):
        VanillaGrad(net)(x, class_idx=0, target=RegionTarget(0))
    with pytest.raises(ValueError, match="empty"):
        GradCAM(net, LAYER)(x, target=RegionTarget(0, torch.zeros(3, 1, 16, 16)))


class _Smooth(nn.Module):
    """A smooth 2-output regressor (tanh): IG's quadrature converges fast, completeness can be checked tightly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))


def test_regression_target_ig_matches_captum():
    from captum.attr import IntegratedGradients as CaptumIG

    model = _Smooth().eval()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    model.double()
    ours = IntegratedGradients(model, n_steps=16, method="gausslegendre")(x, target=RegressionTarget(1, sign=-1))
    theirs = CaptumIG(lambda inp: -model(inp)[:, 1]).attribute(x, baselines=0.0, n_steps=16, method="gausslegendre")
    torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-10 * float(theirs.abs().amax()))
    # the sign matters: the unsigned unit gives the opposite attribution
    plus = IntegratedGradients(model, n_steps=16, method="gausslegendre")(x, target=RegressionTarget(1))
    torch.testing.assert_close(plus, -ours)


def _completeness_cases(seg):
    net, x, classes, regions = seg
    reg = _Smooth().eval()
    xr = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    return {
        "class": (reg, xr, None, lambda o: o.max(1).values),  # argmax of the clean input
        "regression": (reg, xr, RegressionTarget([0, 1, 0], sign=-1), lambda o: -o[torch.arange(3), [0, 1, 0]]),
        "region_sum": (net, x, RegionTarget(classes), None),
        "region_mean_softmax": (net, x, RegionTarget(classes, reduction="mean", activation="softmax"), None),
        "region_mask": (net, x, RegionTarget(1, regions[:, None].float()), lambda o: (o[:, 1] * regions).sum((1, 2))),
        "callable": (net, x, lambda o: o[:, 2].mean((1, 2)), lambda o: o[:, 2].mean((1, 2))),
    }


@pytest.mark.parametrize(
    "case", ["class", "regression", "region_sum", "region_mean_softmax", "region_mask", "callable"]
)
def test_ig_completeness_for_every_target_type(seg, case):
    model, x, target, score = _completeness_cases(seg)[case]
    ig = IntegratedGradients(model, n_steps=48, method="gausslegendre", batch_size=96)
    attr = ig(x, target=target) if target is not None else ig(x)
    with torch.no_grad():
        if score is None:  # region scores: the clean input's predicted region, by NumPy
            out = model(x)
            pred = out.argmax(1)
            cls = target.class_idx
            sel = out.softmax(1) if target.activation == "softmax" else out
            picked = sel[torch.arange(3), cls]
            region = (pred == cls[:, None, None]).to(picked.dtype)
            sums = (picked * region).sum((1, 2))
            score_x = sums / region.sum((1, 2)) if target.reduction == "mean" else sums
            out0 = model(torch.zeros_like(x))
            sel0 = out0.softmax(1) if target.activation == "softmax" else out0
            sums0 = (sel0[torch.arange(3), cls] * region).sum((1, 2))
            score_0 = sums0 / region.sum((1, 2)) if target.reduction == "mean" else sums0
        else:
            clean = model(x)
            if case == "class":
                idx = clean.argmax(1)
                score_x, score_0 = clean.max(1).values, model(torch.zeros_like(x)).gather(1, idx[:, None])[:, 0]
            else:
                score_x, score_0 = score(clean), score(model(torch.zeros_like(x)))
    delta = score_x - score_0
    torch.testing.assert_close(ig.last_score_delta, delta, rtol=1e-5, atol=1e-6)
    total = attr.flatten(1).sum(1)
    assert ((total - delta).abs() <= 2e-3 * delta.abs() + 1e-4).all(), (total, delta)
