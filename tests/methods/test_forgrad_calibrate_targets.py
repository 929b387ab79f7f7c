"""FORGrad.calibrate with any target (segmentation region, regression unit, class), against a brute-force loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.networks.nets import UNet
from torch import nn

from monai_saliency.core.targets import ClassTarget, RegionTarget, RegressionTarget
from monai_saliency.methods.forgrad import FORGrad, _blur
from monai_saliency.methods.gradients import VanillaGrad

SIGMAS = [1.5, 4.0, 16.0]
STEPS = 4


def _segmentation_batch() -> dict:
    """A collated MONAI batch of three 16 x 16 images with different affines and a mask label each."""
    g = torch.Generator().manual_seed(3)
    items = []
    for i in range(3):
        img = torch.rand(1, 16, 16, generator=g, dtype=torch.float64)
        lab = torch.zeros(1, 16, 16)
        lab[:, 3 + i : 9 + i, 4:12] = 1
        affine = torch.diag(torch.tensor([0.5 + i, 0.7, 1.0, 1.0], dtype=torch.float64))
        items.append({"image": MetaTensor(img, affine=affine), "label": MetaTensor(lab, affine=affine)})
    return next(iter(DataLoader(Dataset(items), batch_size=3)))


def _brute_force(model: nn.Module, x: torch.Tensor, sal: torch.Tensor, score) -> np.ndarray:
    """Insertion AUC - deletion AUC per item, one perturbed input at a time (positions ranked by ``sal``, stable)."""
    b = x.shape[0]
    n = x[0, 0].numel()
    blurred = _blur(x, max(1.0, max(x.shape[2:]) / 16))  # the insertion start (shared: not what is tested here)
    out = np.zeros(b)
    for i in range(b):
        order = np.argsort(-sal[i].abs().sum(0).reshape(-1).numpy(), kind="stable")
        curves = {"del": [], "ins": []}
        fractions = []
        for k in range(STEPS + 1):
            count = round(k * n / STEPS)
            fractions.append(count / n)
            top = np.zeros(n, dtype=bool)
            top[order[:count]] = True
            top_t = torch.from_numpy(top).reshape(1, 1, *x.shape[2:])
            deleted = torch.where(top_t, torch.zeros(()), x[i : i + 1])
            inserted = torch.where(top_t, x[i : i + 1], blurred[i : i + 1])
            with torch.no_grad():
                curves["del"].append(float(score(model(deleted), i)))
                curves["ins"].append(float(score(model(inserted), i)))
        out[i] = np.trapezoid(curves["ins"], fractions) - np.trapezoid(curves["del"], fractions)
    return out


def test_region_target_calibration_matches_brute_force():
    torch.manual_seed(0)
    net = UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0).double().eval()
    batch = _segmentation_batch()
    x, mask = batch["image"].as_tensor(), batch["label"].as_tensor()
    target = RegionTarget(1, mask=mask, reduction="mean")
    fg = FORGrad(VanillaGrad(net), reduce="abs_sum")
    res = fg.calibrate(batch, sigmas=SIGMAS, n_steps=STEPS, target=target, apply=False)  # "label" is a mask here
    base = VanillaGrad(net)(x, target)

    def region_prob(output, i):  # independent: softmax over the classes, mean of class 1 inside item i's mask
        p = output.softmax(1)[0, 1]
        return p[mask[i, 0] > 0].mean()

    for s, sigma in enumerate(SIGMAS):
        ref = _brute_force(net, x, fg.filter(base, sigma), region_prob)
        np.testing.assert_allclose(res.per_item[s].numpy(), ref, atol=1e-6)
    assert res.best_sigma == SIGMAS[int(np.argmax([r.mean() for r in res.per_item.numpy()]))]


class _Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).amax((2, 3)))


def test_regression_target_scores_the_unit_itself():
    torch.manual_seed(1)
    net = _Regressor().double().eval()
    x = torch.randn(2, 2, 12, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    fg = FORGrad(VanillaGrad(net), reduce="abs_sum")
    target = RegressionTarget(1, sign=-1.0)
    res = fg.calibrate(x, sigmas=SIGMAS, n_steps=STEPS, target=target, apply=False)
    base = VanillaGrad(net)(x, target)
    for s, sigma in enumerate(SIGMAS):
        ref = _brute_force(net, x, fg.filter(base, sigma), lambda out, i: -out[0, 1])
        np.testing.assert_allclose(res.per_item[s].numpy(), ref, atol=1e-6)
    seen = []
    fg.calibrate(x, sigmas=[4.0], target=target, metric=lambda m, xx, sal, t: seen.append(t) or torch.zeros(2))
    assert seen[0].class_indices.tolist() == [1, 1]  # a custom metric receives the bound target


def test_class_target_equals_the_labels_path(cnn2d):
    net = cnn2d.double()
    x = torch.randn(3, 2, 15, 18, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([2, 0, 1])
    fg = FORGrad(VanillaGrad(net), reduce="abs_sum")
    by_labels = fg.calibrate((x, labels), sigmas=SIGMAS, n_steps=STEPS, apply=False)
    by_target = fg.calibrate(x, sigmas=SIGMAS, n_steps=STEPS, apply=False, target=ClassTarget(labels))
    torch.testing.assert_close(by_target.per_item, by_labels.per_item)
    base = VanillaGrad(net)(x, labels)
    ref = _brute_force(net, x, fg.filter(base, SIGMAS[0]), lambda out, i: out.softmax(1)[0, labels[i]])
    np.testing.assert_allclose(by_target.per_item[0].numpy(), ref, atol=1e-6)
    seen = []
    fg.calibrate(x, sigmas=[4.0], target=labels, metric=lambda m, xx, sal, t: seen.append(t) or torch.zeros(3))
    assert seen[0].tolist() == [2, 0, 1]  # a class target hands a custom metric its indices, as before


def test_segmentation_batch_without_target_is_a_clear_error():
    net = UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0).double().eval()
    with pytest.raises(ValueError, match="RegionTarget"):
        FORGrad(VanillaGrad(net)).calibrate(_segmentation_batch(), sigmas=[4.0], n_steps=2)
