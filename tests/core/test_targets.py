"""Targets (``monai_saliency.core.targets``): their scores against a brute-force loop over items in NumPy, binding on
the clean output, per-item rows, and clear errors. On the code before targets none of these names existed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from monai_saliency.core import (
    ClassTarget,
    RegionTarget,
    RegressionTarget,
    Target,
    as_target,
    model_output,
    resolve_target,
)


def _seg(b=3, k=4, sp=(6, 5), seed=0):
    return torch.randn(b, k, *sp, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _np_softmax(a):
    e = np.exp(a - a.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def test_class_target_is_class_idx():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    assert isinstance(as_target(None), ClassTarget) and isinstance(as_target([0, 1, 2, 3]), ClassTarget)
    torch.testing.assert_close(ClassTarget()(logits), logits.max(1).values)
    torch.testing.assert_close(ClassTarget(2)(logits), logits[:, 2])
    torch.testing.assert_close(as_target(np.int64(2))(logits), logits[:, 2])  # NumPy labels, as before targets
    torch.testing.assert_close(as_target(np.array([0, 1, 2, 3]))(logits), logits.diagonal())
    torch.testing.assert_close(ClassTarget([0, 1, 2, 3])(logits), logits.diagonal())
    torch.testing.assert_close(
        ClassTarget(torch.tensor([4, 3, 2, 1])).probabilities()(logits)[0], logits.softmax(1)[0, 4]
    )
    bound = ClassTarget().bind(logits, 4)
    torch.testing.assert_close(bound.class_indices, logits.argmax(1))
    # bound once: a later output is scored at the clean argmax, rows follow the items
    other = -logits
    torch.testing.assert_close(bound(other), other.gather(1, logits.argmax(1)[:, None])[:, 0])
    rows = torch.tensor([3, 3, 0])
    torch.testing.assert_close(bound.rows(rows)(other[rows]), other[rows].gather(1, logits.argmax(1)[rows, None])[:, 0])
    with pytest.raises(ValueError, match="out of range"):
        ClassTarget(5)(logits)
    with pytest.raises(ValueError, match="RegionTarget"):
        ClassTarget(0)(_seg())


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("activation", ["none", "softmax", "sigmoid"])
def test_region_target_with_masks_matches_a_loop_over_items(reduction, activation):
    out = _seg()
    classes = [2, 0, 3]
    rng = np.random.default_rng(0)
    masks = rng.random((3, 1, 6, 5))  # float weights, per item
    masks[masks < 0.4] = 0
    got = RegionTarget(torch.tensor(classes), torch.from_numpy(masks), reduction, activation)((out,))  # tuple output
    o = out.numpy()
    for b in range(3):  # the reference: one item at a time
        vals = {"none": o[b], "softmax": _np_softmax(o[b]), "sigmoid": 1 / (1 + np.exp(-o[b]))}[activation]
        s = (vals[classes[b]] * masks[b, 0]).sum()
        if reduction == "mean":
            s /= masks[b, 0].sum()
        assert abs(float(got[b]) - s) <= 1e-10 * max(1.0, abs(s))


def test_region_target_predicted_region_is_the_argmax_or_the_sigmoid():
    out = _seg(k=3)
    o = out.numpy()
    t = RegionTarget(1).bind(out, 3)
    for b in range(3):
        np.testing.assert_array_equal(t.region[b].numpy(), o[b].argmax(0) == 1)
        assert abs(float(t(out)[b]) - o[b, 1][o[b].argmax(0) == 1].sum()) < 1e-10
    single = out[:, :1]  # one channel: sigmoid(logit) > threshold
    t1 = RegionTarget(0, threshold=0.3).bind(single, 3)
    np.testing.assert_array_equal(t1.region.numpy(), 1 / (1 + np.exp(-o[:, 0])) > 0.3)
    multi = RegionTarget(2, prediction="sigmoid").bind(out, 3)  # independent labels
    np.testing.assert_array_equal(multi.region.numpy(), o[:, 2] > 0)
    # bound on the clean output: a perturbed output is scored inside the clean region
    noisy = out + 1.0
    torch.testing.assert_close(t(noisy), (noisy[:, 1] * t.region).flatten(1).sum(1))
    # rows: copies of items 2, 0, 2
    rows = torch.tensor([2, 0, 2])
    torch.testing.assert_close(t.rows(rows)(noisy[rows]), t(noisy)[rows])
    # probability version: softmax over classes for the argmax reading
    torch.testing.assert_close(t.probabilities()(out), (out.softmax(1)[:, 1] * t.region).flatten(1).sum(1))


def test_region_target_errors():
    out = _seg(k=3)
    with pytest.raises(ValueError, match="empty for items"):
        RegionTarget(1, torch.zeros(3, 1, 6, 5))(out)
    assert (RegionTarget(1, torch.zeros(3, 1, 6, 5), allow_empty=True, reduction="mean")(out) == 0).all()
    with pytest.raises(ValueError, match="segmentation output"):
        RegionTarget(0)(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="output's spatial size"):
        RegionTarget(0, torch.ones(3, 1, 4, 4))(out)
    with pytest.raises(ValueError, match="out of range"):
        RegionTarget(3, torch.ones(3, 1, 6, 5))(out)
    with pytest.raises(ValueError, match="items for a batch"):
        RegionTarget(0, torch.ones(2, 1, 6, 5))(out)
    with pytest.raises(ValueError, match="one channel"):
        RegionTarget(0, torch.ones(3, 2, 6, 5))(out)
    # bound without the output (a given mask needs none), then used: the same scores
    torch.testing.assert_close(RegionTarget(1, torch.ones(3, 1, 6, 5)).bind(None, 3)(out), out[:, 1].sum((1, 2)))
    for kwargs in ({"reduction": "max"}, {"activation": "relu"}, {"prediction": "top"}, {"threshold": 1.0}):
        with pytest.raises(ValueError):
            RegionTarget(0, **kwargs)
    with pytest.raises(ValueError, match="needs the class"):
        RegionTarget(None)
    with pytest.raises(TypeError, match="mask"):
        RegionTarget(0, mask=np.ones((6, 5)))
    one = RegionTarget(0, torch.ones(1, 6, 5, dtype=torch.bool))  # one spatial mask for every item
    torch.testing.assert_close(one(out), out[:, 0].flatten(1).sum(1))


def test_regression_target():
    out = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(RegressionTarget(2, sign=-1)(out), -out[:, 2])
    torch.testing.assert_close(RegressionTarget()(out[:, 0]), out[:, 0])  # (B,) output
    torch.testing.assert_close(RegressionTarget([0, 1, 2, 0])({"pred": out}), out[torch.arange(4), [0, 1, 2, 0]])
    with pytest.raises(ValueError, match="sign"):
        RegressionTarget(0, sign=2.0)
    with pytest.raises(ValueError, match="no argmax"):
        RegressionTarget(None)
    with pytest.raises(ValueError, match="RegionTarget"):
        RegressionTarget(0)(_seg())
    with pytest.raises(ValueError, match="score='logit'"):
        RegressionTarget(0).probabilities()


def test_callables_and_bad_targets():
    out = _seg(k=2)

    def score(o):
        return o[:, 1].mean((1, 2))

    t = as_target(score)
    assert isinstance(t, Target)
    torch.testing.assert_close(t(out), out[:, 1].mean((1, 2)))
    with pytest.raises(ValueError, match="expected"):
        as_target(lambda o: o.sum())(out)
    with pytest.raises(TypeError, match="tensor"):
        as_target(lambda o: 1.0)(out)
    for bad in ("cat", 1.5, True):
        with pytest.raises(TypeError):
            as_target(bad)
    with pytest.raises(TypeError, match="network"):
        as_target(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="score='logit'"):
        t.probabilities()


def test_resolve_target_runs_the_model_only_when_needed():
    calls = []

    class Net(nn.Module):
        def forward(self, x):
            calls.append(torch.is_grad_enabled())
            return x.mean((2, 3), keepdim=True).expand(-1, -1, 4, 4) * torch.tensor([1.0, -1.0])[None, :, None, None]

    x = torch.randn(2, 2, 4, 4)
    bound = resolve_target(Net(), x, RegionTarget(0, torch.ones(2, 1, 4, 4)))
    assert calls == [] and bound.region is not None
    bound = resolve_target(Net(), x, RegionTarget(0, allow_empty=True))
    assert calls == [False]  # once, under no_grad
    assert model_output(Net()(x)).shape == (2, 2, 4, 4)
