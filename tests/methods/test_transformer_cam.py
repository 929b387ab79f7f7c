"""CAMs on transformer layers: ``reshape_transform=TokenGrid(patch_size)`` on MONAI's ``ViT`` (2D and 3D patch grids,
with and without a class token) against a Grad-CAM written out here with autograd and ``einops.rearrange``;
Eigen-CAM and Signature Activation on the folded tokens; ``SwinUNETR``'s encoder stages, spatial already, with a
region target. On the code before ``reshape_transform`` the CAMs had no such option (a TypeError) and a token layer
``(B, N, C)`` was read as a 1D feature map of N channels (a shape error in the upsampling).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from monai.networks.nets import SwinUNETR, ViT

from monai_saliency.methods import GradCAM, GradCAMpp, RegionTarget, TokenGrid
from monai_saliency.methods.cam import EigenCAM, SignatureActivation
from monai_saliency.ops.normalize import minmax_normalize
from monai_saliency.ops.tokens import tokens_to_grid

LAYER = "blocks.1.norm1"  # the last block's input to attention: patch tokens reach the class token through it


def _vit(dims, classification=True):
    torch.manual_seed(0)
    img, patch = ((16, 12), (4, 4)) if dims == 2 else ((8, 12, 8), (4, 4, 4))
    net = ViT(1, img, patch, hidden_size=16, mlp_dim=16, num_layers=2, num_heads=2, spatial_dims=dims,
              classification=classification, num_classes=3).eval()  # fmt: skip
    x = torch.randn(3, 1, *img, generator=torch.Generator().manual_seed(dims))
    grid = tuple(s // p for s, p in zip(img, patch))
    return net, x, grid


def _reference_gradcam(net, x, grid, classes, score=None):
    """Grad-CAM by hand: the layer's tokens and their gradients, the class token dropped, rearranged with einops."""
    store = {}
    handle = net.get_submodule(LAYER).register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    try:
        with torch.enable_grad():
            out = net(x)[0]
            s = out[torch.arange(len(classes)), classes] if score is None else score(out)
            (g,) = torch.autograd.grad(s.sum(), store["a"])
    finally:
        handle.remove()
    a = store["a"].detach()
    n_patch = int(torch.tensor(grid).prod())
    a, g = a[:, -n_patch:], g[:, -n_patch:]  # patch tokens (after the class token, if any)
    axes = "b (h w) c -> b c h w" if len(grid) == 2 else "b (h w d) c -> b c h w d"
    sizes = dict(zip("hwd", grid))
    a, g = rearrange(a, axes, **sizes), rearrange(g, axes, **sizes)
    cam = F.relu((g.mean(tuple(range(2, g.ndim)), keepdim=True) * a).sum(1, keepdim=True))
    mode = "bilinear" if len(grid) == 2 else "trilinear"
    return minmax_normalize(F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False))


@pytest.mark.parametrize("dims", [2, 3])
def test_vit_gradcam_matches_a_hand_written_reference(dims):
    net, x, grid = _vit(dims)
    classes = torch.tensor([0, 2, 1])
    with GradCAM(net, LAYER, reshape_transform=TokenGrid(4)) as cam:  # grid from the input size, class token found
        ours = cam(x, class_idx=classes)
    ref = _reference_gradcam(net, x, grid, classes)
    assert ours.shape == (3, 1, *x.shape[2:]) and (ref.flatten(1).amax(1) > 0).all()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # pytorch-grad-cam's convention, a callable on the tokens alone, gives the same maps
    with GradCAM(net, LAYER, reshape_transform=lambda t: tokens_to_grid(t, grid)) as cam:
        torch.testing.assert_close(cam(x, class_idx=classes), ours)


def test_vit_without_class_token_and_a_callable_target():
    net, x, grid = _vit(2, classification=False)  # tokens out, no class token

    def score(tokens):
        return tokens[:, :, 0].mean(1)

    with GradCAM(net, LAYER, reshape_transform=TokenGrid(4, class_token=False)) as cam:
        ours = cam(x, target=score)
    torch.testing.assert_close(ours, _reference_gradcam(net, x, grid, None, score), rtol=1e-5, atol=1e-6)
    with GradCAM(net, LAYER, reshape_transform=TokenGrid(4, class_token=True)) as cam, pytest.raises(ValueError):
        cam(x, target=score)  # 12 tokens are not 12 patches plus a class token


def test_vit_other_cams_and_errors():
    net, x, grid = _vit(3)
    folded = {}
    handle = net.get_submodule(LAYER).register_forward_hook(lambda m, i, o: folded.setdefault("a", o.detach()))
    with torch.no_grad():
        net(x)
    handle.remove()
    acts = rearrange(folded["a"][:, 1:], "b (h w d) c -> b c h w d", h=grid[0], w=grid[1], d=grid[2])
    with EigenCAM(net, LAYER, normalize=False, reshape_transform=TokenGrid((4, 4, 4))) as cam:
        eig = cam(x)
    ref = F.interpolate(F.relu(EigenCAM.projection(acts)), size=x.shape[2:], mode="trilinear", align_corners=False)
    torch.testing.assert_close(eig, ref, rtol=1e-4, atol=1e-5)
    for cam_cls in (GradCAMpp, SignatureActivation):
        with cam_cls(net, LAYER, reshape_transform=TokenGrid(4)) as cam:
            maps = cam(x)
        assert maps.shape == (3, 1, *x.shape[2:]) and torch.isfinite(maps).all() and maps.amax() > 0
    with GradCAM(net, LAYER) as cam, pytest.raises(ValueError, match="TokenGrid"):
        cam(x)  # tokens without a reshape: a clear error naming the option
    with GradCAM(net, LAYER, reshape_transform=TokenGrid(3)) as cam, pytest.raises(ValueError, match="tokens"):
        cam(x)  # a wrong patch size does not fit the token count
    with pytest.raises(TypeError, match="callable"):
        GradCAM(net, LAYER, reshape_transform="tokens")
    with pytest.raises(ValueError, match="patch_size"):
        TokenGrid()


def test_swin_unetr_encoder_stages_are_spatial():
    """SwinUNETR: its encoder stages ``swinViT.layers*`` / ``encoder*`` output (B, C, *sp): no reshape needed; a
    region target explains the segmentation output (Seg-Grad-CAM)."""
    torch.manual_seed(0)
    net = SwinUNETR(1, 2, feature_size=12, spatial_dims=2, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)).eval()
    x = torch.randn(2, 1, 64, 32, generator=torch.Generator().manual_seed(1))
    target = RegionTarget(1, torch.ones(2, 1, 64, 32), reduction="mean")
    with GradCAM(net, ["swinViT.layers3.0", "encoder10"]) as cam:
        maps = cam(x, target=target)
    assert maps.shape == (2, 1, 64, 32) and torch.isfinite(maps).all() and (maps.flatten(1).amax(1) > 0).all()
