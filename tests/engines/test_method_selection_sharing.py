"""``select_explainers`` (a bundle's ``--methods``) and the shared raw maps of ``SaliencyInferer``: FORGrad over a
SmoothGrad and StructuredGradient over a VanillaGrad reuse the raw map the run computes anyway (one SmoothGrad per
batch, not two), with maps equal to the explainers called independently."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor

from monai_saliency.engines import SaliencyInferer, explain_all, select_explainers
from monai_saliency.methods.cam import GradCAM
from monai_saliency.methods.forgrad import FORGrad
from monai_saliency.methods.gradients import IntegratedGradients, SmoothGrad, VanillaGrad
from monai_saliency.methods.structured import StructuredGradient

N_SAMPLES = 6


def _explainers(net, **smooth):
    """The gradient bundle's explainers (smaller): each built independently, as the bundle config builds them."""
    sg = {"n_samples": N_SAMPLES, "stdev_spread": 0.15, "batch_size": 4, "seed": 0, **smooth}
    return {
        "vanillagrad": VanillaGrad(net, reduce="abs_sum"),
        "smoothgrad": SmoothGrad(net, reduce="abs_sum", **sg),
        "integratedgradients": IntegratedGradients(net, n_steps=4, batch_size=4, reduce="abs_sum"),
        "forgrad": FORGrad(SmoothGrad(net, reduce="none", **sg), sigma=3.0, reduce="abs_sum"),
        "structured": StructuredGradient(VanillaGrad(net), solver="exact"),
        "gradcam": GradCAM(net, target_layers="features.4"),
    }


class _Count:
    """Items passed through the network's forward (a forward hook)."""

    def __init__(self, net):
        self.items = 0
        self.handle = net.register_forward_hook(self)

    def __call__(self, _module, args, _output):
        self.items += args[0].shape[0]


@pytest.fixture
def batch():
    """A collated MetaTensor batch (B=2, different affines) from a MONAI DataLoader."""
    torch.manual_seed(1)
    data = [{"image": MetaTensor(torch.randn(2, 16, 16), affine=torch.eye(4) * (i + 1))} for i in range(2)]
    return next(iter(DataLoader(Dataset(data), batch_size=2)))["image"]


def _independent(net, x, names=None, **smooth):
    """Maps of independently built explainers called directly, and the network items each one costs."""
    targets = net(x.as_tensor().float()).argmax(1)
    maps, cost = {}, {}
    for name, explainer in _explainers(net, **smooth).items():
        if names is None or name in names:
            count = _Count(net)
            maps[name] = explainer(x, targets)
            cost[name] = count.items
            count.handle.remove()
    return maps, cost


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_shared_maps_equal_independent_ones_with_one_smoothgrad(cnn2d, batch, dtype):
    x = batch.to(dtype)
    ref, cost = _independent(cnn2d, x)
    count = _Count(cnn2d)
    if dtype == torch.float32:  # through the inferer (which predicts first)
        out = SaliencyInferer(_explainers(cnn2d), returns="dict")(x, cnn2d)
        assert list(out) == ["logits", *ref]
    else:  # the inferer runs the network on the batch as it is: half inputs go through explain_all directly
        out = explain_all(_explainers(cnn2d), x, cnn2d(x.as_tensor().float()).argmax(1))
        assert list(out) == list(ref)
    count.handle.remove()
    for name, expected in ref.items():
        assert isinstance(out[name], MetaTensor) and out[name].dtype == dtype, name
        torch.testing.assert_close(out[name].as_tensor(), expected.as_tensor(), msg=name)
        torch.testing.assert_close(out[name].affine, batch.affine)
    b = x.shape[0]
    assert cost["forgrad"] == cost["smoothgrad"] >= N_SAMPLES * b  # each costs one SmoothGrad alone
    assert cost["structured"] == cost["vanillagrad"] > 0
    # one prediction, and FORGrad / StructuredGradient cost nothing beyond the SmoothGrad / VanillaGrad of the run
    assert count.items == b + sum(cost.values()) - cost["forgrad"] - cost["structured"]


def test_sharing_needs_equal_settings(cnn2d, batch):
    """A FORGrad over a SmoothGrad with other settings (or a generator) computes its own."""
    for other in ({"n_samples": N_SAMPLES + 1}, {"seed": 1}):
        explainers = _explainers(cnn2d)
        explainers["forgrad"] = FORGrad(
            SmoothGrad(cnn2d, reduce="none", batch_size=4, **{"n_samples": N_SAMPLES, "seed": 0, **other}), sigma=3.0
        )
        keys = {name: e.shared_source() for name, e in explainers.items()}
        assert keys["forgrad"][0] != keys["smoothgrad"][0]
        assert keys["structured"][0] == keys["vanillagrad"][0]
    gen = SmoothGrad(cnn2d, generator=torch.Generator().manual_seed(0))
    assert gen.shared_source() is None and FORGrad(gen).shared_source() is None
    # a FORGrad over a reduced SmoothGrad filters what it is given: not the raw map, not shared
    assert FORGrad(SmoothGrad(cnn2d, reduce="abs_sum")).shared_source() is None
    assert _explainers(cnn2d)["gradcam"].shared_source() is None


def test_select_explainers(cnn2d):
    explainers = _explainers(cnn2d)
    assert list(select_explainers(explainers)) == list(explainers)
    assert list(select_explainers(explainers, None)) == list(explainers)
    assert list(select_explainers(explainers, ["forgrad", "smoothgrad"])) == ["smoothgrad", "forgrad"]
    assert list(select_explainers(explainers, "gradcam, vanillagrad")) == ["vanillagrad", "gradcam"]
    with pytest.raises(ValueError, match=r"unknown methods \['smoothgrads'\]; valid methods are \['vanillagrad'"):
        select_explainers(explainers, ["smoothgrads"])
    with pytest.raises(ValueError, match="at most once and at least one"):
        select_explainers(explainers, [])
    with pytest.raises(ValueError, match="derived_key='gradcam' is not among the chosen methods"):
        select_explainers(explainers, ["smoothgrad"], required={"derived_key": "gradcam"})
    # left out: closed, so a Grad-CAM that is not computed keeps no hook on the network
    explainers = _explainers(cnn2d)
    gradcam = explainers["gradcam"]
    assert len(gradcam.hooks) > 0
    assert list(select_explainers(explainers, ("smoothgrad",))) == ["smoothgrad"]
    assert len(gradcam.hooks) == 0
    assert len(select_explainers(_explainers(cnn2d), "all")["gradcam"].hooks) > 0


def test_selected_run_computes_only_chosen_maps(cnn2d, batch):
    chosen = select_explainers(_explainers(cnn2d), ["smoothgrad", "forgrad"])
    count = _Count(cnn2d)
    out = SaliencyInferer(chosen, returns="dict")(batch, cnn2d)
    count.handle.remove()
    ref, cost = _independent(cnn2d, batch, names=chosen)
    assert set(out) == {"logits", "smoothgrad", "forgrad"}
    for name in chosen:
        torch.testing.assert_close(out[name].as_tensor(), ref[name].as_tensor(), msg=name)
    assert count.items == batch.shape[0] + cost["smoothgrad"]
