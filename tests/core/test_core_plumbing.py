"""Model plumbing of :mod:`monai_saliency.core` (moved from ``tests/methods/test_base.py`` with the code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from monai_saliency.core import (
    ActivationHooks,
    check_input,
    evaluation_mode,
    find_layer,
    first_output,
    frozen_parameters,
    model_logits,
    replace_first_output,
    require_autograd,
    select_class,
    wrap_like,
)


def _bn_dropout_net() -> nn.Sequential:
    """A network whose train mode shows: BatchNorm statistics and dropout."""
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5))


# ---------------------------------------------------------------- input checks and MetaTensor output


@pytest.mark.parametrize(
    "bad, err, msg",
    [
        (np.zeros((1, 1, 4, 4), dtype=np.float32), TypeError, "torch.Tensor"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int64), TypeError, "floating-point"),
        (torch.zeros(4, 4), ValueError, "batched"),
        (torch.full((1, 1, 4, 4), float("nan")), ValueError, "NaN"),
        (torch.full((1, 1, 4, 4), float("inf")), ValueError, "NaN or Inf"),
        (torch.zeros(0, 1, 4, 4), ValueError, "empty"),
    ],
)
def test_check_input_rejects_bad_input(bad, err, msg):
    with pytest.raises(err, match=msg):
        check_input(bad)


def test_check_input_spatial_dims_and_metatensor():
    with pytest.raises(ValueError, match="2 spatial axes"):
        check_input(torch.zeros(1, 1, 4, 4, 4), spatial_dims=2)
    mt = MetaTensor(torch.zeros(1, 1, 4, 4))
    out = check_input(mt)
    assert type(out) is torch.Tensor and out.data_ptr() == mt.data_ptr()


def test_wrap_like_keeps_batch_flag():
    like = MetaTensor(torch.zeros(2, 1, 4, 4))
    like.is_batch = True
    out = wrap_like(torch.ones(2, 1, 4, 4), like)
    assert out.is_batch and isinstance(out, MetaTensor)


# ---------------------------------------------------------------- layers and hooks


def test_find_layer_accepts_and_strips_module_prefix(cnn2d):
    name, module = find_layer(cnn2d, "module.features.4")
    assert name == "features.4" and module is cnn2d.features[4]
    wrapped = nn.DataParallel(cnn2d)  # names become module.features.4 (works on CPU)
    name, module = find_layer(wrapped, "features.4")
    assert name == "module.features.4" and module is cnn2d.features[4]


def test_unknown_layer_lists_close_matches(cnn2d):
    with pytest.raises(ValueError, match=r"features\.4"):
        find_layer(cnn2d, "feature.4")
    with pytest.raises(ValueError, match="not found"):
        ActivationHooks(cnn2d, ["features.7", "nonexistent_layer"])


def test_activation_hooks_record_inside_capture_only_and_hand_on_a_copy():
    """The recorded output is the layer's own (an in-place op after it changes only the copy passed on), nothing is
    kept outside ``capture``, tuple outputs are handled, and remove() detaches every hook."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(48, 2))
    x = torch.randn(2, 1, 4, 4)
    with torch.no_grad():
        conv_out, logits = net[0](x), net(x)
    hooks = ActivationHooks(net, "0")
    assert len(hooks) == 1 and hooks.names == ["0"]
    with torch.no_grad():
        net(x)
    assert hooks.activations == {}
    with torch.no_grad(), hooks.capture() as acts:
        torch.testing.assert_close(net(x), logits)
        torch.testing.assert_close(acts["0"], conv_out)  # negative values survive the in-place ReLU
        assert (acts["0"] < 0).any()
    assert hooks.activations == {}
    hooks.remove()
    hooks.remove()
    assert len(hooks) == 0 and sum(len(m._forward_hooks) for m in net.modules()) == 0


def test_first_output_and_replace_first_output():
    a, b, new = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert first_output((a, b)) is a and first_output([a, b]) is a and first_output(a) is a
    assert replace_first_output((a, b), new)[0] is new and replace_first_output((a, b), new)[1] is b
    assert isinstance(replace_first_output([a, b], new), list) and replace_first_output(a, new) is new


# ---------------------------------------------------------------- class scores and class selection


def test_select_class_variants():
    logits = torch.tensor([[0.1, 2.0, 0.3], [5.0, 0.0, 1.0]])
    assert select_class(logits, None).tolist() == [1, 0]
    assert select_class(logits, 2).tolist() == [2, 2]
    assert select_class(logits, torch.tensor([0, 2])).tolist() == [0, 2]
    assert select_class(logits, [2, 1]).tolist() == [2, 1]
    with pytest.raises(ValueError, match="out of range"):
        select_class(logits, 3)
    with pytest.raises(ValueError, match="out of range"):
        select_class(logits, -1)
    with pytest.raises(ValueError, match="entries for a batch of 2"):
        select_class(logits, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError):
        select_class(logits, torch.tensor([0.0, 1.0]))


def test_model_logits_shapes():
    assert model_logits((torch.zeros(2, 3), "aux")).shape == (2, 3)
    assert model_logits({"out": torch.zeros(2, 3)}).shape == (2, 3)
    assert model_logits(torch.zeros(4)).shape == (4, 1)
    with pytest.raises(ValueError, match="segmentation"):
        model_logits(torch.zeros(2, 3, 8, 8))


# ---------------------------------------------------------------- model state


def test_evaluation_mode_restores_flags_after_an_error():
    net = _bn_dropout_net().train()
    net[1].eval()
    with pytest.raises(RuntimeError, match="boom"), evaluation_mode(net):
        assert not net.training and not net[2].training
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == [True, True, False, True]


def test_evaluation_mode_puts_every_module_in_eval_inside():
    net = _bn_dropout_net().train()
    x = torch.randn(2, 2, 5, 5)
    with evaluation_mode(net):
        assert not any(m.training for m in net.modules())
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)  # no dropout
    assert all(m.training for m in net.modules())


def test_frozen_parameters_restores_each_flag_even_after_an_error():
    net = _bn_dropout_net()
    net[0].bias.requires_grad_(False)
    flags = [p.requires_grad for p in net.parameters()]
    with pytest.raises(RuntimeError, match="boom"), frozen_parameters(net):
        assert not any(p.requires_grad for p in net.parameters())
        raise RuntimeError("boom")
    assert [p.requires_grad for p in net.parameters()] == flags


def test_require_autograd_names_the_caller_under_inference_mode_only():
    require_autograd("MyMethod")
    with torch.no_grad():
        require_autograd("MyMethod")
    with torch.inference_mode(), pytest.raises(RuntimeError, match="MyMethod was called under torch.inference_mode"):
        require_autograd("MyMethod")
