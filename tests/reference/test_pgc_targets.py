"""Targets and transformer layers against pytorch-grad-cam, item by item, B > 1.

* Seg-Grad-CAM: ``RegionTarget(k)`` (the model's own predicted region, found by ours) on a 2D MONAI ``UNet`` against
  pytorch-grad-cam's ``SemanticSegmentationTarget(k, mask)`` with the argmax region computed here per item.
* ViT: ``reshape_transform=TokenGrid(patch_size)`` on MONAI's ``ViT`` classifier against pytorch-grad-cam with the
  ``reshape_transform`` of its ViT tutorial (class token dropped, tokens reshaped to ``(B, h, w, C)``, channels first).

Compared at the hooked layer's resolution before normalisation, as in ``test_pytorch_grad_cam.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _reference import assert_per_item_close, pytorch_grad_cam_maps, reference_module
from torch import nn

from monai_saliency.methods import GradCAM, GradCAMpp, RegionTarget, TokenGrid

reference_module("pytorch_grad_cam")
model_targets = reference_module("pytorch_grad_cam.utils.model_targets")

pytestmark = pytest.mark.reference

THEIRS = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus"}


def _ours(method, model, layer, x, **kwargs):
    cls = GradCAM if method == "gradcam" else GradCAMpp
    extra = {"eps": 1e-6} if method == "gradcampp" else {}
    with cls(model, layer, normalize=False, **extra, **kwargs.pop("cam", {})) as cam:
        return cam(x, **kwargs).double()


def _compare(raw, ours, x):
    unclipped = raw.flatten(1).abs().amax(1)[:, None]
    ref = F.interpolate(raw.clamp_min(0), size=x.shape[2:], mode="bilinear", align_corners=False)
    assert_per_item_close(ours, ref, rel=1e-5, unclipped=unclipped)


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
@pytest.mark.parametrize("layer", ["model.1.submodule.0", "model.1.submodule.2"])
def test_region_target_matches_semantic_segmentation_target(method, layer):
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(2, 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).eval()
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        pred = net(x).numpy().argmax(1)
    classes = [int(np.bincount(pred[b].ravel(), minlength=3)[1:].argmax()) + 1 for b in range(3)]  # a foreground
    targets = [model_targets.SemanticSegmentationTarget(c, (pred[b] == c).astype(np.float32)) for b, c in
               enumerate(classes)]  # fmt: skip
    raw, _ = pytorch_grad_cam_maps(THEIRS[method], net, layer, x, targets)
    ours = _ours(method, net, layer, x, target=RegionTarget(torch.tensor(classes)))
    _compare(raw, ours, x)


class _Logits(nn.Module):
    """MONAI's ViT returns ``(logits, hidden_states)``; pytorch-grad-cam needs the logits alone."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit

    def forward(self, x):
        return self.vit(x)[0]


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_vit_matches_pytorch_grad_cam_reshape_transform(method):
    from monai.networks.nets import ViT

    torch.manual_seed(0)
    vit = ViT(1, (16, 12), (4, 4), hidden_size=16, mlp_dim=16, num_layers=2, num_heads=2, spatial_dims=2,
              classification=True, num_classes=3).eval()  # fmt: skip
    x = torch.randn(3, 1, 16, 12, generator=torch.Generator().manual_seed(3))
    classes = [2, 0, 1]

    def reshape_transform(tensor, height=4, width=3):  # pytorch-grad-cam's ViT tutorial
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    targets = [model_targets.ClassifierOutputTarget(c) for c in classes]
    raw, _ = pytorch_grad_cam_maps(
        THEIRS[method], _Logits(vit), "vit.blocks.1.norm1", x, targets, reshape_transform=reshape_transform
    )
    ours = _ours(method, vit, "blocks.1.norm1", x, class_idx=torch.tensor(classes), cam={
        "reshape_transform": TokenGrid(4)})  # fmt: skip
    _compare(raw, ours, x)
