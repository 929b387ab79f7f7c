from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from monai_saliency.core import ActivationHooks
from monai_saliency.methods.base import Explainer
from monai_saliency.methods.gradients import VanillaGrad, input_gradients


class _ActivationMean(Explainer):
    """Minimal hooked explainer used to exercise the protocol: channel mean of a layer, upsampled."""

    def explain(self, x, class_idx=None):
        _, acts = self.forward_with_activations(x)
        act = acts[self.hooks.names[0]].mean(1, keepdim=True)
        return torch.nn.functional.interpolate(act, size=x.shape[2:])


def _count_forward_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


# ---------------------------------------------------------------- input checks (core: tests/core)


def test_explainer_rejects_wrong_rank_before_running_model(cnn2d):
    with VanillaGrad(cnn2d) as explainer, pytest.raises(ValueError, match="batched"):
        explainer(torch.zeros(16, 16))


# ---------------------------------------------------------------- layers and hooks


def test_hooks_registered_once_no_accumulation_and_removed(cnn2d):
    before = _count_forward_hooks(cnn2d)
    x = torch.randn(2, 2, 16, 16)
    explainer = _ActivationMean(cnn2d, target_layers="features.7")
    assert _count_forward_hooks(cnn2d) == before + 1
    for _ in range(100):
        explainer(x)
    assert _count_forward_hooks(cnn2d) == before + 1
    assert explainer.hooks.activations == {}  # nothing retained between calls
    explainer.close()
    explainer.close()  # idempotent
    assert _count_forward_hooks(cnn2d) == before
    with pytest.raises(RuntimeError, match="closed"):
        explainer(x)


def test_context_manager_removes_hooks_and_model_runs_normally(cnn2d):
    before = _count_forward_hooks(cnn2d)
    x = torch.randn(1, 2, 16, 16)
    with _ActivationMean(cnn2d, target_layers=["features.4", "module.features.7"]) as explainer:
        assert _count_forward_hooks(cnn2d) == before + 2
        maps = explainer(x)
        assert maps.shape == (1, 1, 16, 16)
        plain = cnn2d(x)  # outside capture: no activations kept
        assert explainer.hooks.activations == {}
    assert _count_forward_hooks(cnn2d) == before
    torch.testing.assert_close(plain, cnn2d(x))


def test_hooked_activation_matches_direct_computation(cnn2d):
    x = torch.randn(3, 2, 16, 16)
    with _ActivationMean(cnn2d, target_layers="features.7") as explainer:
        _, acts = explainer.forward_with_activations(x)
    torch.testing.assert_close(acts["features.7"], cnn2d.features(x))


def test_layer_off_the_forward_path_is_reported():
    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.unused = nn.ReLU()

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    model = WithUnused()
    with _ActivationMean(model, target_layers="unused") as explainer, pytest.raises(RuntimeError, match="did not run"):
        explainer(torch.randn(1, 1, 8, 8))


# ---------------------------------------------------------------- class selection


def test_per_item_targets_equal_per_item_loop(cnn2d):
    """Each item's map uses its own target (the B x B mixing trap of batched CAM code)."""
    x = torch.randn(3, 2, 16, 16)
    targets = torch.tensor([2, 0, 1])
    batched, _, idx = input_gradients(cnn2d, x, targets)
    assert idx.tolist() == [2, 0, 1]
    for i in range(3):
        xi = x[i : i + 1].clone().requires_grad_()
        (ref,) = torch.autograd.grad(cnn2d(xi)[0, targets[i]], xi)
        torch.testing.assert_close(batched[i : i + 1], ref)


def test_vanilla_grad_matches_finite_differences():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6 * 6, 2)).double()
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    grad = VanillaGrad(model)(x, class_idx=1)
    eps = 1e-6
    fd = torch.zeros_like(x)
    for j in range(36):
        e = torch.zeros(36, dtype=torch.float64)
        e[j] = eps
        e = e.reshape(1, 1, 6, 6)
        fd.view(-1)[j] = (model(x + e)[0, 1] - model(x - e)[0, 1]) / (2 * eps)
    torch.testing.assert_close(grad, fd, atol=1e-7, rtol=1e-6)


# ---------------------------------------------------------------- model state


def test_model_state_untouched_under_no_grad(cnn2d):
    cnn2d.features[0].weight.requires_grad_(False)  # a mixed state that must be restored exactly
    flags = [p.requires_grad for p in cnn2d.parameters()]
    params = [p.detach().clone() for p in cnn2d.parameters()]
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        maps = VanillaGrad(cnn2d, reduce="abs_sum")(x)
    assert maps.shape == (2, 1, 16, 16) and maps.abs().sum() > 0
    assert [p.requires_grad for p in cnn2d.parameters()] == flags
    assert all(p.grad is None for p in cnn2d.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params, cnn2d.parameters()))
    assert not cnn2d.training
    cnn2d.train()
    VanillaGrad(cnn2d)(x)
    assert cnn2d.training


def test_caller_grad_mode_restored(cnn2d):
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        VanillaGrad(cnn2d)(x)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_detached_model_gives_clear_error():
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x.flatten(1)).detach()

    with pytest.raises(RuntimeError, match="does not require grad"):
        VanillaGrad(Detached())(torch.randn(1, 1, 2, 2))


def test_zero_gradient_gives_zero_map():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    nn.init.zeros_(model[1].weight)
    maps = VanillaGrad(model, reduce="abs_sum")(torch.randn(2, 1, 4, 4))
    assert torch.equal(maps, torch.zeros(2, 1, 4, 4))


def test_bad_reduce_and_module():
    with pytest.raises(ValueError, match="unknown channel reduction"):
        VanillaGrad(nn.Linear(2, 2), reduce="sum")
    with pytest.raises(TypeError, match="nn.Module"):
        VanillaGrad(lambda x: x)


# ---------------------------------------------------------------- MetaTensor output


def test_metatensor_in_metatensor_out_with_meta_copied(cnn3d):
    affine = torch.diag(torch.tensor([2.0, 1.5, 1.0, 1.0]))
    x = MetaTensor(torch.randn(2, 1, 16, 16, 16), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    x.applied_operations = [{"class": "Dummy", "id": 1}]
    maps = VanillaGrad(cnn3d)(x)
    assert isinstance(maps, MetaTensor)
    torch.testing.assert_close(maps.affine, x.affine)
    assert maps.meta["filename_or_obj"] == "case.nii.gz"
    assert maps.applied_operations == x.applied_operations
    maps.meta["filename_or_obj"] = "changed"
    assert x.meta["filename_or_obj"] == "case.nii.gz"  # deep copy, the input is never modified
    plain = VanillaGrad(cnn3d)(x.as_tensor())
    assert type(plain) is torch.Tensor


# ---------------------------------------------------------------- eval mode and in-place layers


class _BatchNormDropoutNet(nn.Module):
    """A network whose train mode shows: BatchNorm statistics and dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        return self.head(self.drop(h.mean(dim=(2, 3))))


def _explainers(net):
    from monai_saliency.methods.cam import EigenCAM, GradCAM, SignatureActivation

    return [VanillaGrad(net), GradCAM(net, "conv"), EigenCAM(net, "conv"), SignatureActivation(net, "conv")]


def test_explainers_run_in_eval_mode_and_restore_every_flag():
    """A network left in train mode: no BatchNorm statistic changes, no dropout (repeated calls agree, items are
    independent of their batch), and every sub-module's own flag comes back (here a frozen BatchNorm)."""
    torch.manual_seed(0)
    net = _BatchNormDropoutNet().train()
    net.bn.eval()  # mixed modes, as with frozen BatchNorm during fine-tuning
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    x = torch.randn(3, 2, 12, 12)
    for explainer in _explainers(net):
        first, again, alone = explainer(x), explainer(x), explainer(x[:1])
        torch.testing.assert_close(first, again, rtol=0, atol=0)
        torch.testing.assert_close(first[:1], alone, rtol=1e-5, atol=1e-6)
        assert all(torch.equal(v, buffers[k]) for k, v in net.named_buffers())
        assert net.training and net.drop.training and not net.bn.training
        explainer.close()


def test_in_place_op_after_the_hooked_layer_does_not_alter_the_activation():
    """``bn`` is followed by ``ReLU(inplace=True)``: the hooks must see the BatchNorm's own output (negative values
    included), and the network's output must be what it is without hooks."""
    torch.manual_seed(1)
    net = _BatchNormDropoutNet().eval()
    x = torch.randn(2, 2, 12, 12)
    with torch.no_grad():
        bn_out = net.bn(net.conv(x))
        logits = net(x)
    assert (bn_out < 0).any()
    from monai_saliency.methods.cam import EigenCAM, GradCAM, SignatureActivation
    from monai_saliency.ops.signature import signature_map

    for explainer in (GradCAM(net, "bn"), EigenCAM(net, "bn"), SignatureActivation(net, "bn")):
        _, acts = explainer.forward_with_activations(x)
        torch.testing.assert_close(acts["bn"].detach(), bn_out)
        explainer.close()
    with SignatureActivation(net, "bn") as sa:
        torch.testing.assert_close(sa(x), signature_map(bn_out, (12, 12)))
    hooks = ActivationHooks(net, "bn")
    with torch.no_grad(), hooks.capture() as acts:
        torch.testing.assert_close(net(x), logits)
        torch.testing.assert_close(acts["bn"], bn_out)
    hooks.remove()
