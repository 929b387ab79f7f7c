from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.visualize import GradCAM as MonaiGradCAM
from monai.visualize import GradCAMpp as MonaiGradCAMpp
from torch import nn

from monai_saliency.methods.cam import EigenCAM, GradCAM, GradCAMpp
from monai_saliency.ops.normalize import minmax_normalize

LAYER = "features.4"  # ReLU at half resolution: the maps are really upsampled


@pytest.fixture
def x2d() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 2, 16, 20, generator=g)


def _monai_map(cls, model, x, class_idx):
    """MONAI's map with identity post-processing, then our (0, 1) min-max (MONAI's default flips to (1, 0))."""
    m = cls(nn_module=copy.deepcopy(model), target_layers=LAYER, postprocessing=lambda t: t)
    return minmax_normalize(m(x, class_idx=class_idx).detach())


@pytest.mark.parametrize("ours, theirs", [(GradCAM, MonaiGradCAM), (GradCAMpp, MonaiGradCAMpp)])
def test_matches_monai_for_batch_of_one(cnn2d, x2d, ours, theirs):
    x = x2d[:1]
    for cls in range(3):
        with ours(cnn2d, LAYER) as cam:
            got = cam(x, class_idx=cls)
        ref = _monai_map(theirs, cnn2d, x, cls)
        assert got.shape == (1, 1, 16, 20)
        assert got.amax() > 0  # not a trivial all-zero comparison
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_matches_monai_default_flipped_normaliser(cnn2d, x2d):
    x = x2d[:1]
    ref = MonaiGradCAM(nn_module=copy.deepcopy(cnn2d), target_layers=LAYER)(x)
    with GradCAM(cnn2d, LAYER) as cam:
        got = cam(x)
    torch.testing.assert_close(got, 1.0 - ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cls", [GradCAM, GradCAMpp])
def test_batched_per_item_targets_equal_loop(cnn2d, x2d, cls):
    targets = torch.tensor([0, 1, 2, 1])
    with cls(cnn2d, LAYER) as cam:
        batched = cam(x2d, class_idx=targets)
        looped = torch.cat([cam(x2d[i : i + 1], class_idx=int(targets[i])) for i in range(4)])
        # a shared target gives different maps: the per-item target really matters
        shared = cam(x2d, class_idx=0)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batched[1:3], shared[1:3], atol=1e-3)


def test_gradcam_backprop_stops_at_hooked_layer(cnn2d, x2d):
    """No gradient reaches the first layer, the input or the weights; flags and mode are restored."""
    calls = []
    h = cnn2d.features[0].register_full_backward_hook(lambda *a: calls.append(1))
    flags = [p.requires_grad for p in cnn2d.parameters()]
    x = x2d.clone().requires_grad_(True)
    try:
        with GradCAM(cnn2d, LAYER) as cam:
            cam(x, class_idx=1)
    finally:
        h.remove()
    assert calls == []
    assert x.grad is None
    assert all(p.grad is None for p in cnn2d.parameters())
    assert [p.requires_grad for p in cnn2d.parameters()] == flags
    assert not cnn2d.training


def test_works_under_no_grad_and_keeps_metatensor(cnn2d, x2d):
    mt = MetaTensor(x2d, meta={"filename_or_obj": "a.nii"})
    with torch.no_grad(), GradCAM(cnn2d, LAYER) as cam:
        out = cam(mt)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.nii"
    assert out.shape == (4, 1, 16, 20)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_3d(cnn3d):
    x = torch.randn(2, 1, 8, 12, 10, generator=torch.Generator().manual_seed(0))
    for cls in (GradCAM, GradCAMpp, EigenCAM):
        with cls(cnn3d, "features.7") as cam:
            out = cam(x, class_idx=torch.tensor([0, 2]))
        assert out.shape == (2, 1, 8, 12, 10)
        assert torch.isfinite(out).all()
    with GradCAM(cnn3d, "features.7") as cam:
        looped = torch.cat([cam(x[i : i + 1], class_idx=c) for i, c in enumerate([0, 2])])
        torch.testing.assert_close(cam(x, class_idx=torch.tensor([0, 2])), looped, atol=1e-5, rtol=1e-4)


def test_inplace_relu_after_target_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 1, 8, 8)
    with GradCAM(model, "0") as cam:
        out = cam(x)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


def test_layer_without_gradient_is_a_clear_error(cnn2d, x2d):
    class Detaching(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            f = self.net.features(x).detach()
            return self.net.head(self.net.pool(f))

    with GradCAM(Detaching(cnn2d), "net.features.4") as cam:
        with pytest.raises(RuntimeError, match="no gradient|does not depend"):
            cam(x2d)


def test_bad_inputs(cnn2d, x2d):
    with GradCAM(cnn2d, "head") as cam, pytest.raises(ValueError, match="spatial"):
        cam(x2d)
    with pytest.raises(ValueError, match="not found"):
        GradCAM(cnn2d, "features.44")
    with GradCAM(cnn2d, LAYER) as cam:
        with pytest.raises(ValueError, match="NaN"):
            cam(torch.full_like(x2d, float("nan")))
        with pytest.raises(TypeError):
            cam(x2d.long())


def test_zero_gradient_gives_zero_map():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[3].weight.zero_()
    for cls in (GradCAM, GradCAMpp):
        with cls(model, "0") as cam:
            out = cam(torch.randn(2, 1, 6, 6))
        assert torch.equal(out, torch.zeros_like(out))


# ---------------------------------------------------------------- Eigen-CAM


def _numpy_eigencam(acts: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's get_2d_projection, item by item (reference)."""
    out = []
    for a in acts:
        m = a.reshape(a.shape[0], -1).T
        m = m - m.mean(0)
        _, _, vt = np.linalg.svd(m, full_matrices=True)
        out.append((m @ vt[0]).reshape(a.shape[1:]))
    return np.stack(out)[:, None]


def test_eigencam_projection_matches_numpy_up_to_sign_and_sign_is_fixed():
    g = torch.Generator().manual_seed(3)
    acts = torch.rand(5, 6, 7, 9, generator=g, dtype=torch.float64)
    acts[:, :, 2:5, 3:6] += 2.0 * torch.rand(5, 6, 1, 1, generator=g, dtype=torch.float64)
    proj = EigenCAM.projection(acts)
    ref = torch.from_numpy(_numpy_eigencam(acts.numpy()))
    sign = torch.sign((proj * ref).flatten(1).sum(1))
    torch.testing.assert_close(proj, ref * sign[:, None, None, None])
    mean_map = acts.mean(1).flatten(1)
    p = proj.flatten(1)
    corr = ((p - p.mean(1, keepdim=True)) * (mean_map - mean_map.mean(1, keepdim=True))).sum(1)
    assert (corr > 0).all()
    # per-item result does not depend on the batch composition/order
    torch.testing.assert_close(EigenCAM.projection(acts.flip(0)).flip(0), proj)


def test_eigencam_class_agnostic_and_batched(cnn2d, x2d):
    with EigenCAM(cnn2d, LAYER) as cam:
        a = cam(x2d, class_idx=0)
        b = cam(x2d, class_idx=2)
        looped = torch.cat([cam(x2d[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, looped, atol=1e-5, rtol=1e-4)
    assert a.shape == (4, 1, 16, 20) and a.amax() > 0


def test_eigencam_constant_activation_gives_zeros():
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    with EigenCAM(model, "0") as cam:
        out = cam(torch.ones(2, 1, 5, 5))
    assert torch.equal(out, torch.zeros_like(out))


def test_multiple_layers_fuse_normalised_maps(cnn2d, x2d):
    maps = []
    for layer in ("features.4", "features.7"):
        with GradCAM(cnn2d, layer) as cam:
            maps.append(cam(x2d, class_idx=1))
    with GradCAM(cnn2d, ["features.4", "features.7"]) as cam:
        fused = cam(x2d, class_idx=1)
    torch.testing.assert_close(fused, minmax_normalize((maps[0] + maps[1]) / 2))


def test_raw_maps_without_normalisation_and_exp_score(cnn2d, x2d):
    with GradCAMpp(cnn2d, LAYER, normalize=False) as a, GradCAMpp(cnn2d, LAYER, normalize=False, exp_score=True) as b:
        ra, rb = a(x2d, class_idx=0), b(x2d, class_idx=0)
    scores = cnn2d(x2d)[:, 0].detach().exp()
    torch.testing.assert_close(rb, ra * scores[:, None, None, None], rtol=1e-4, atol=1e-7)
    with GradCAMpp(cnn2d, LAYER) as c:
        torch.testing.assert_close(minmax_normalize(ra), c(x2d, class_idx=0))


@pytest.mark.parametrize("shape", [(3, 4, 6, 5), (2, 40, 3, 4)])  # more positions than channels, and fewer
def test_eigencam_both_gram_branches_match_svd(shape):
    acts = torch.rand(*shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    proj = EigenCAM.projection(acts)
    ref = torch.from_numpy(_numpy_eigencam(acts.numpy()))
    sign = torch.sign((proj * ref).flatten(1).sum(1))
    torch.testing.assert_close(proj, ref * sign[:, None, None, None])
