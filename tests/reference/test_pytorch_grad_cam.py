"""Our CAMs against pytorch-grad-cam (``grad-cam`` on PyPI), item by item, 2D and 3D, B > 1, a target per item.

The tight comparison is at the hooked layer's resolution before any resizing or normalisation: pytorch-grad-cam's
own pipeline is run through its public ``__call__`` with ``ClassifierOutputTarget`` per item, and the raw maps its
``get_cam_image`` returns are recorded. Ours is run with ``normalize=False``; at layers below the input resolution
the same linear upsampling is applied to its maps (pytorch-grad-cam resizes its normalised maps with OpenCV / a
cubic spline instead, which is a different and not a tested choice). At a full-resolution layer (no resizing) the
normalised outputs are compared end to end as well. Grad-CAM++ is run with ``eps=1e-6``, the constant
pytorch-grad-cam adds to eq. 19's denominator (ours defaults to the paper's 0). Eigen-CAM's SVD sign is arbitrary
in pytorch-grad-cam (it then clips negatives), so its projection is compared up to one sign per item.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _reference import assert_per_item_close, pytorch_grad_cam_maps, reference_module

from monai_saliency.methods.cam import EigenCAM, GradCAM, GradCAMpp

reference_module("pytorch_grad_cam")  # skips (make test) or fails (make test-reference) here if missing
model_targets = reference_module("pytorch_grad_cam.utils.model_targets")

pytestmark = pytest.mark.reference

OURS = {"gradcam": GradCAM, "gradcampp": GradCAMpp, "eigencam": EigenCAM}
THEIRS = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "eigencam": "EigenCAM"}
KWARGS = {"gradcam": {}, "gradcampp": {"eps": 1e-6}, "eigencam": {"relu": False}}


def _case(dims, cnn2d, cnn3d, confident):
    """A (confident) SmallCNN, a batch with B > 1 and a different target per item."""
    if dims == 2:
        x = torch.randn(4, 2, 16, 20, generator=torch.Generator().manual_seed(11))
        return confident(cnn2d), x, [0, 1, 2, 1]
    x = torch.randn(3, 1, 16, 12, 20, generator=torch.Generator().manual_seed(12))
    return confident(cnn3d), x, [2, 0, 1]


def _theirs(method, model, layer, x, targets):
    targets = [model_targets.ClassifierOutputTarget(int(t)) for t in targets]
    return pytorch_grad_cam_maps(THEIRS[method], model, layer, x, targets)


def _ours(method, model, layer, x, targets, **kwargs):
    with OURS[method](model, layer, **KWARGS[method], **kwargs) as cam:
        return cam(x, class_idx=torch.tensor(targets)).double()


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "eigencam"])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("layer", ["features.1", "features.4", "features.7"])
def test_raw_layer_maps_match_pytorch_grad_cam(cnn2d, cnn3d, confident, method, dims, layer):
    model, x, targets = _case(dims, cnn2d, cnn3d, confident)
    raw, _ = _theirs(method, model, layer, x, targets)
    ours = _ours(method, model, layer, x, targets, normalize=False)
    unclipped = raw.flatten(1).abs().amax(1)[:, None]
    if method == "eigencam":  # one arbitrary SVD sign per item in theirs
        sign = torch.sign((raw * F.interpolate(ours, size=raw.shape[2:], mode="area")).flatten(1).sum(1))
        raw = raw * sign.view(-1, *[1] * (raw.ndim - 1))
    else:
        raw = raw.clamp_min(0)  # pytorch-grad-cam's ReLU (np.maximum in compute_cam_per_layer)
    ref = F.interpolate(raw, size=x.shape[2:], mode="bilinear" if dims == 2 else "trilinear", align_corners=False)
    assert_per_item_close(ours, ref, rel=1e-5, unclipped=unclipped)


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
@pytest.mark.parametrize("dims", [2, 3])
def test_normalised_maps_match_pytorch_grad_cam_at_full_resolution(cnn2d, cnn3d, confident, method, dims):
    """At a full-resolution layer pytorch-grad-cam does not resize: its min-max normalised output (x - min) /
    (max + 1e-7) equals ours (min -> 0, max -> 1)."""
    model, x, targets = _case(dims, cnn2d, cnn3d, confident)
    _, out = _theirs(method, model, "features.1", x, targets)
    ours = _ours(method, model, "features.1", x, targets)
    assert ours.shape == out.shape
    torch.testing.assert_close(ours, out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_gradcampp_default_eps_is_the_paper_formula(cnn2d, cnn3d, confident, dims):
    """With pytorch-grad-cam's eps the maps differ from ours (eps = 0, eq. 19 as written) on small gradients."""
    model, x, targets = _case(dims, cnn2d, cnn3d, lambda m: m)  # untrained logits: gradients ~1e-3
    raw, _ = _theirs("gradcampp", model, "features.4", x, targets)
    ref = F.interpolate(raw.clamp_min(0), size=x.shape[2:], mode="bilinear" if dims == 2 else "trilinear")
    with GradCAMpp(model, "features.4", normalize=False) as cam:
        paper = cam(x, class_idx=torch.tensor(targets)).double()
    assert_per_item_close(_ours("gradcampp", model, "features.4", x, targets, normalize=False), ref, rel=1e-5)
    rel_diff = (paper - ref).flatten(1).abs().amax(1) / ref.flatten(1).amax(1)
    assert (rel_diff > 0.03).all(), rel_diff.tolist()
