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


def test_gradcam_matches_monai_for_batch_of_one(cnn2d, x2d):
    """MONAI's Grad-CAM is right for B = 1 (its Grad-CAM++ is not: see test_gradcampp_monai_formula_differs)."""
    x = x2d[:1]
    for cls in range(3):
        with GradCAM(cnn2d, LAYER) as cam:
            got = cam(x, class_idx=cls)
        ref = _monai_map(MonaiGradCAM, cnn2d, x, cls)
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
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=0)
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
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
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

    with GradCAM(Detaching(cnn2d), "net.features.4") as cam, pytest.raises(RuntimeError, match="no gradient|does not"):
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


# ---------------------------------------------------------------- Grad-CAM++: eq. 19 of Chattopadhay et al. (2018)


def _eq19_reference(model: nn.Module, x: torch.Tensor, targets, layer_index: int, eps: float = 0.0) -> torch.Tensor:
    """Eq. 19 transcribed item by item in float64 (no hooks, no batching): a float64 copy of the SmallCNN is split
    after ``features[layer_index]``; ``A`` and ``g = dS_c/dA`` come from autograd on each item alone, then
    ``alpha_kij = g^2 / (2 g^2 + (sum_ab A_kab) g^3)``, ``w_k = sum_ij alpha_kij ReLU(g_kij)``,
    ``map = ReLU(sum_k w_k A_k)`` position by position. Returns raw layer-resolution maps ``(B, 1, *sp)``."""
    m = copy.deepcopy(model).double()
    front = m.features[: layer_index + 1]
    maps = []
    for xi, c in zip(torch.as_tensor(x).as_subclass(torch.Tensor).double(), targets):
        a = front(xi[None]).detach().requires_grad_(True)
        score = m.head(m.pool(m.features[layer_index + 1 :](a)))[0, int(c)]
        (g,) = torch.autograd.grad(score, a)
        acts, grads = a.detach()[0].numpy(), g[0].numpy()
        w = np.zeros(acts.shape[0])
        for k in range(acts.shape[0]):
            act_sum = acts[k].sum()
            for gij in grads[k].ravel():
                den = 2.0 * gij**2 + act_sum * gij**3 + eps
                w[k] += (gij**2 / den if den != 0.0 else 0.0) * max(gij, 0.0)
        maps.append(np.maximum(np.tensordot(w, acts, axes=1), 0.0))
    return torch.from_numpy(np.stack(maps)[:, None])


def _assert_per_item_close(got: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    """Per item: max |got - ref| <= rel * max |ref| (raw maps have arbitrary scale); the maps are not all zero."""
    scale = ref.flatten(1).abs().amax(1)
    err = (got.double() - ref).flatten(1).abs().amax(1)
    assert (scale > 0).all()
    assert (err <= rel * scale).all(), (err / scale).tolist()


def _metatensor_batch(x: torch.Tensor) -> MetaTensor:
    """Collate items with different affines through a MONAI DataLoader (a real batched MetaTensor)."""
    from monai.data import DataLoader, Dataset

    items = []
    for i, xi in enumerate(x):
        affine = torch.diag(torch.tensor([1.0 + i, 0.5, 2.0, 1.0][: xi.ndim - 1] + [1.0]).double())
        items.append({"image": MetaTensor(xi, affine=affine)})
    return next(iter(DataLoader(Dataset(items), batch_size=len(items))))["image"]


# features.7 feeds global average pooling and the linear head: g is constant over positions there, so MONAI's
# sum(A g^3) equals eq. 19's (sum A) g^3 and only the features.4 cases tell the formulas apart.
@pytest.mark.parametrize("dims, layer", [(2, 4), (2, 7), (3, 4), (3, 7)])
def test_gradcampp_matches_float64_eq19_per_item(cnn2d, cnn3d, x2d, confident, dims, layer):
    """Batched float32 maps (B > 1, a different target per item, collated MetaTensors under no_grad) equal a
    float64 per-item transcription of eq. 19 within 1e-5 (raw, relative to each item's max, and after min-max)."""
    if dims == 2:
        model, x, targets = confident(cnn2d), x2d, [0, 1, 2, 1]
    else:
        model, targets = confident(cnn3d), [2, 0, 1]
        x = torch.randn(3, 1, 16, 12, 20, generator=torch.Generator().manual_seed(5))
    batch = _metatensor_batch(x)
    with torch.no_grad(), GradCAMpp(model, f"features.{layer}", normalize=False) as raw_cam:
        raw = raw_cam(batch, class_idx=torch.tensor(targets))
    with GradCAMpp(model, f"features.{layer}") as cam:
        normed = cam(batch, class_idx=torch.tensor(targets))
    assert raw.dtype == torch.float32 and isinstance(raw, MetaTensor)
    ref = _eq19_reference(model, x, targets, layer)
    ref_up = torch.nn.functional.interpolate(
        ref, size=x.shape[2:], mode="bilinear" if dims == 2 else "trilinear", align_corners=False
    )
    _assert_per_item_close(raw.as_tensor(), ref_up)
    torch.testing.assert_close(normed.as_tensor().double(), minmax_normalize(ref_up), atol=1e-5, rtol=0)


def test_gradcampp_batched_equals_per_item_3d(cnn3d, confident):
    cnn3d = confident(cnn3d)
    x = torch.randn(3, 1, 16, 12, 20, generator=torch.Generator().manual_seed(6))
    targets = [1, 2, 0]
    for normalize in (False, True):
        with GradCAMpp(cnn3d, "features.4", normalize=normalize) as cam:
            batched = cam(x, class_idx=torch.tensor(targets))
            looped = torch.cat([cam(x[i : i + 1], class_idx=c) for i, c in enumerate(targets)])
        _assert_per_item_close(batched.double(), looped.double())


def test_gradcampp_monai_formula_differs(cnn2d, x2d, confident):
    """MONAI 1.6.1 sums A * g^3 in the denominator; eq. 19 sums A only. At B = 1 its map is not eq. 19's."""
    x, cnn2d = x2d[:1], confident(cnn2d)
    ref = minmax_normalize(
        torch.nn.functional.interpolate(_eq19_reference(cnn2d, x, [1], 4), size=x.shape[2:], mode="bilinear")
    )
    with GradCAMpp(cnn2d, LAYER) as cam:
        ours = cam(x, class_idx=1)
    monai = _monai_map(MonaiGradCAMpp, cnn2d, x, 1)
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=0)
    assert (monai.double() - ref).abs().max() > 0.2


def test_gradcampp_eps_and_negative_activations():
    """``eps`` is added to eq. 19's full denominator (pytorch-grad-cam adds 1e-6); a zero denominator (only with
    negative activation sums) contributes 0, never inf/NaN."""
    g = torch.Generator().manual_seed(7)
    acts = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)
    grads = 1e-3 * torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    for eps in (0.0, 1e-6):
        s = acts.flatten(2).sum(2)[..., None, None]
        alpha = grads**2 / (2 * grads**2 + s * grads**3 + eps)
        ref = (torch.nan_to_num(alpha) * grads.clamp_min(0)).flatten(2).sum(2)
        torch.testing.assert_close(GradCAMpp.weights(acts, grads, eps), ref, rtol=1e-12, atol=0)
    # the eps of the references matters for gradients ~1e-3: the weights shrink by more than 10 %
    assert (GradCAMpp.weights(acts, grads, 1e-6) < 0.9 * GradCAMpp.weights(acts, grads)).all()
    neg = torch.full((1, 1, 1, 2), -1.0, dtype=torch.float64)  # sum A = -2: 2 + (-2) g = 0 at g = 1
    w = GradCAMpp.weights(neg, torch.tensor([[[[1.0, 0.5]]]], dtype=torch.float64))
    torch.testing.assert_close(w, torch.tensor([[0.5 / (2 - 2 * 0.5)]], dtype=torch.float64))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps"):
            GradCAMpp(nn.Sequential(nn.Conv2d(1, 1, 1)), "0", eps=bad)


def test_gradcampp_half_precision(cnn2d, x2d, confident):
    """A float16 model and input: the weights are computed in float32, the map is float16 and close to float32's."""
    model = confident(cnn2d)
    targets = torch.tensor([0, 2, 1, 1])
    with GradCAMpp(model, LAYER) as cam:
        full = cam(x2d, class_idx=targets)
    with GradCAMpp(copy.deepcopy(model).half(), LAYER) as cam:
        half = cam(x2d.half(), class_idx=targets)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full, atol=2e-2, rtol=0)
