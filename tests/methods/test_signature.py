"""Signature Activation against a straightforward per-channel scipy / OpenCV / NumPy computation, and its protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy.fftpack import dct as fp_dct
from scipy.fftpack import idct as fp_idct
from torch import nn

from monai_saliency.methods import SignatureActivation
from monai_saliency.ops.signature import signature_map
from tests.methods._signature_reference import (
    Pooled,
    _minmax,
    _pool_np,
    reference_map,
)


def test_matches_per_channel_reference_2d(acts2d):
    with SignatureActivation(Pooled(2), "features") as sa:
        got = sa(acts2d)
    ref = reference_map(_pool_np(acts2d.numpy(), 4), (32, 28))
    assert got.shape == (3, 1, 32, 28)
    assert ref.std() > 0.1  # a real map, not a trivial comparison
    assert np.abs(got.numpy() - ref).max() <= 1e-3


def test_matches_reference_without_resize_or_filter(acts2d):
    got = signature_map(acts2d, bilateral=False)
    ref = reference_map(acts2d.numpy(), acts2d.shape[2:], bilateral=False)
    assert np.abs(got.numpy() - ref).max() <= 1e-4


@pytest.mark.parametrize("shape", [(2, 5, 7, 7), (2, 5, 14, 12), (1, 3, 80, 66), (2, 4, 30)])
def test_every_dct_path_matches_reference(shape):
    """Kronecker GEMM (<= 64 px), per-axis GEMM (axes <= 64), FFT ops (longer axes) and 1D maps."""
    a = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(9)))
    got = signature_map(a, bilateral=False)
    ref = reference_map(a.numpy(), shape[2:], bilateral=False)
    assert np.abs(got.numpy() - ref).max() <= 1e-4


@pytest.mark.parametrize("frames", [False, True])
def test_matches_per_channel_reference_video(frames):
    g = torch.Generator().manual_seed(4)
    x = torch.relu(torch.randn(2, 6, 8, 24, 20, generator=g))
    with SignatureActivation(Pooled(3, (2, 4, 4)), "features", dct_axes="frames" if frames else "spatial") as sa:
        got = sa(x)
    ref = reference_map(_pool_np(x.numpy(), (2, 4, 4)), (8, 24, 20), frames=frames)
    assert got.shape == (2, 1, 8, 24, 20)
    assert np.abs(got.numpy() - ref).max() <= 1e-3


def test_frames_and_spatial_differ_and_frames_needs_time_axis(cnn3d, cnn2d):
    x = torch.randn(1, 1, 8, 24, 24, generator=torch.Generator().manual_seed(0))
    with (
        SignatureActivation(cnn3d, "features.4", dct_axes="frames") as a,
        SignatureActivation(cnn3d, "features.4") as b,
    ):
        assert not torch.allclose(a(x), b(x), atol=1e-3)
    with SignatureActivation(cnn2d, "features.4", dct_axes="frames") as sa, pytest.raises(ValueError, match="spatial"):
        sa(torch.randn(1, 2, 16, 16))


def test_notebook_scaling_reproduces_authors_formula(acts2d):
    """``dct_scaling="notebook"`` equals the published notebook's per-channel scipy.fftpack loop."""

    def dct2(a):
        return fp_dct(fp_dct(a, axis=0), axis=1, norm="ortho")

    def idct2(a):
        return fp_idct(fp_idct(a, axis=0), axis=1, norm="ortho")

    a = acts2d.double()
    got = signature_map(a, bilateral=False, dct_scaling="notebook")
    ortho = signature_map(a, bilateral=False)
    for b in range(a.shape[0]):
        chans = [idct2(np.sign(dct2(a[b, s].numpy()))) ** 2 for s in range(a.shape[1])]
        ref = _minmax(np.mean(np.array(chans), axis=0))
        np.testing.assert_allclose(got[b, 0].numpy(), ref, atol=1e-10)
    assert (got - ortho).abs().max() > 1e-3  # the two scalings really differ


def test_positive_scaling_invariance(acts2d):
    with SignatureActivation(Pooled(2), "features") as sa:
        base = sa(acts2d)
        for scale in (1e-3, 7.5, 1e4):
            torch.testing.assert_close(sa(acts2d * scale), base, atol=1e-5, rtol=0)


def test_batch_items_independent(cnn2d):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 2, 32, 32, generator=g)
    with SignatureActivation(cnn2d, "features.7") as sa:
        batched = sa(x)
        single = torch.cat([sa(x[i : i + 1]) for i in range(4)])
        other = sa(torch.cat([x[:1], torch.randn(3, 2, 32, 32, generator=g)]))
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)
    torch.testing.assert_close(other[:1], batched[:1], atol=1e-6, rtol=0)
    assert (batched[0] - batched[1]).abs().max() > 1e-2


def test_constant_or_zero_activations_give_zero_map():
    x = torch.zeros(3, 4, 16, 16)
    x[1] = torch.arange(4.0)[:, None, None] + 0.3  # constant per channel, different constants
    x[2, 2] = 5.0
    with SignatureActivation(Pooled(2), "features") as sa:
        m = sa(x)
    assert torch.isfinite(m).all()
    assert m.abs().max() == 0
    # a delta is not constant: the same call gives a real map
    x[2, 2, 5, 7] = 9.0
    with SignatureActivation(Pooled(2, 1), "features") as sa:
        assert sa(x)[2].max() == 1.0


def test_tiny_layer_maps(cnn2d):
    """A 2x2 layer map: filtered by the radius-1 window, finite output. A 1x1 layer map carries no spatial information: a clear
    error instead of an all-zero map."""
    with SignatureActivation(cnn2d, "features.7") as sa:  # features.7 is at a quarter of the input size
        m = sa(torch.randn(2, 2, 8, 8))
        assert m.shape == (2, 1, 8, 8) and torch.isfinite(m).all()
        assert m.min() >= 0 and m.max() <= 1 and m.amax(dim=(1, 2, 3)).eq(1).all()
        with pytest.raises(ValueError, match="single voxel"):
            sa(torch.randn(2, 2, 4, 4))


class _Wrapper(nn.Module):
    """DDP / DataParallel style wrapper: parameters live under ``module.``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def test_ddp_module_prefix(cnn2d):
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(6))
    with SignatureActivation(cnn2d, "features.7") as sa:
        ref = sa(x)
    with SignatureActivation(_Wrapper(cnn2d), "features.7") as sa:
        torch.testing.assert_close(sa(x), ref)
    with SignatureActivation(cnn2d, "module.features.7") as sa:
        torch.testing.assert_close(sa(x), ref)


def test_no_grad_and_model_state_untouched(cnn2d):
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(7), requires_grad=True)
    cnn2d.train()
    flags = [p.requires_grad for p in cnn2d.parameters()]
    with SignatureActivation(cnn2d, "features.7") as sa:
        m = sa(x, class_idx=2)  # class_idx is accepted and ignored (class-agnostic)
        with torch.no_grad():
            m2 = sa(x)
    assert SignatureActivation.class_agnostic
    assert not m.requires_grad and x.grad is None
    assert all(p.grad is None for p in cnn2d.parameters())
    assert [p.requires_grad for p in cnn2d.parameters()] == flags and cnn2d.training
    torch.testing.assert_close(m, m2)
    assert len(cnn2d.features[7]._forward_hooks) == 0  # hooks removed on exit


def test_inside_supervised_evaluator(cnn2d, evaluator_maps):
    images = torch.randn(4, 2, 16, 16)
    explainer = SignatureActivation(cnn2d, "features.4")
    preds = evaluator_maps(cnn2d, explainer, images)
    assert preds.shape == (2, 1, 16, 16)
    torch.testing.assert_close(preds, torch.as_tensor(explainer(images[2:])))
    explainer.close()


def test_metatensor_geometry_kept(cnn3d):
    affine = torch.tensor([[1.5, 0, 0, -10.0], [0, 2.0, 0, 5.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]], dtype=torch.float64)
    x = MetaTensor(torch.randn(1, 1, 8, 16, 16), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    x.applied_operations = [{"class": "Spacingd", "id": 1}]
    with SignatureActivation(cnn3d, "features.7") as sa:
        m = sa(x)
    assert isinstance(m, MetaTensor) and m.shape == (1, 1, 8, 16, 16)
    torch.testing.assert_close(m.affine, affine)
    assert m.meta["filename_or_obj"] == "case.nii.gz"
    assert m.applied_operations == x.applied_operations


def test_several_layers_are_averaged(cnn2d):
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(8))
    with SignatureActivation(cnn2d, "features.4") as a, SignatureActivation(cnn2d, "features.7") as b:
        ma, mb = a(x), b(x)
    with SignatureActivation(cnn2d, ["features.4", "features.7"]) as ab:
        both = ab(x)
    mean = (ma + mb) / 2
    lo = mean.flatten(1).amin(1)[:, None, None, None]
    hi = mean.flatten(1).amax(1)[:, None, None, None]
    torch.testing.assert_close(both, (mean - lo) / (hi - lo), atol=1e-6, rtol=0)


def test_bad_layers_and_options(cnn2d):
    with pytest.raises(ValueError, match="not found"):
        SignatureActivation(cnn2d, "features.77")
    # after global pooling: no spatial axes left
    with SignatureActivation(cnn2d, "pool") as sa, pytest.raises(ValueError, match="spatial"):
        sa(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match="dct_axes"):
        SignatureActivation(cnn2d, "features.7", dct_axes="time")
    with pytest.raises(ValueError, match="bilateral"):
        SignatureActivation(cnn2d, "features.7", bilateral={"sigma": 1.0})
    with pytest.raises(ValueError, match="NaN"):
        SignatureActivation(cnn2d, "features.7")(torch.full((1, 2, 16, 16), float("nan")))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_activations_raise(acts2d, bad):
    a = acts2d.clone()
    a[1, 3, 2, 2] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        signature_map(a)


def test_channel_chunking_is_exact(acts2d):
    full = signature_map(acts2d, spatial_size=(40, 40))
    chunked = signature_map(acts2d, spatial_size=(40, 40), max_elements=2 * 32 * 28 * 3)
    torch.testing.assert_close(full, chunked, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Class-agnostic behaviour (issue item 3): two objects trigger two classes; Grad-CAM on the argmax sees one.
# ----------------------------------------------------------------------------------------------------------------------
class TwoObjectNet(nn.Module):
    """Channels 0-3 respond to bright objects, 4-7 to dark ones; class 0 <- bright, class 1 <- dark."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        conv = nn.Conv2d(1, 8, 3, padding=1)
        k = torch.rand(8, 1, 3, 3, generator=g) + 0.5
        k[4:] *= -1
        conv.weight.data.copy_(k)
        conv.bias.data.zero_()
        self.features = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU())
        mix = torch.eye(8) + 0.1 * torch.rand(8, 8, generator=g) * torch.block_diag(torch.ones(4, 4), torch.ones(4, 4))
        self.features[2].weight.data.copy_(mix[:, :, None, None])
        self.features[2].bias.data.zero_()
        self.head = nn.Linear(8, 2)
        self.head.weight.data.copy_(torch.block_diag(torch.ones(1, 4), torch.ones(1, 4)))
        self.head.bias.data.zero_()

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _two_object_image() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.zeros(1, 1, 48, 48)
    mask_a = torch.zeros(48, 48, dtype=torch.bool)
    mask_b = torch.zeros(48, 48, dtype=torch.bool)
    mask_a[8:18, 8:18] = True  # bright square, class 0 (larger, wins the argmax)
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    mask_b[(yy - 34) ** 2 + (xx - 33) ** 2 <= 16] = True  # dark disk, class 1
    x[0, 0][mask_a] = 1.0
    x[0, 0][mask_b] = -0.8
    return x, mask_a, mask_b


def _grow(mask: torch.Tensor) -> torch.Tensor:
    """Dilate by 2 px (signature maps peak on object borders)."""
    return torch.nn.functional.max_pool2d(mask[None, None].float(), 5, 1, 2)[0, 0] > 0


def _mass_fraction(m: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of the map's total mass inside the dilated ``mask``."""
    return float(m[0, 0][_grow(mask)].sum() / m.sum())


def test_class_agnostic_highlights_both_objects():
    from monai_saliency.methods.cam import GradCAM

    model = TwoObjectNet().eval()
    x, mask_a, mask_b = _two_object_image()
    with torch.no_grad():
        logits = model(x)
    assert int(logits.argmax()) == 0 and float(logits[0, 1]) > 0  # both objects drive a class
    with SignatureActivation(model, "features.3") as sa:
        sig = sa(x)
    with GradCAM(model, "features.3") as gc:
        cam = gc(x)  # argmax class
    sig_a, sig_b = _mass_fraction(sig, mask_a), _mass_fraction(sig, mask_b)
    cam_a, cam_b = _mass_fraction(cam, mask_a), _mass_fraction(cam, mask_b)
    chance_a, chance_b = (float(_grow(m).float().mean()) for m in (mask_a, mask_b))  # a flat map's fractions
    # Signature Activation: both objects hold a comparable share of the map, far above chance
    assert sig_a > 2.5 * chance_a and sig_b > 2.5 * chance_b
    assert min(sig_a, sig_b) / max(sig_a, sig_b) > 0.5
    # Grad-CAM on the argmax class: all of its mass is on the first object, none on the second
    assert cam_a > 0.9 and cam_b < 0.05


def test_options_are_checked_in_the_constructor(cnn2d):
    with pytest.raises(ValueError, match="zero_tol"):
        SignatureActivation(cnn2d, "features.7", zero_tol=-1.0)
    with pytest.raises(ValueError, match="zero_tol"):
        signature_map(torch.rand(1, 3, 5, 5), zero_tol=float("nan"))
    with pytest.raises(ValueError, match="max_elements"):
        SignatureActivation(cnn2d, "features.7", max_elements=0)
    with pytest.raises(TypeError, match="bilateral"):
        SignatureActivation(cnn2d, "features.7", bilateral=1)


def test_global_pooling_that_keeps_its_axes_is_reported():
    """``AdaptiveAvgPool2d(1)`` keeps the rank: the single-voxel layer map is an error, not an all-zero map."""
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with SignatureActivation(net, "1") as sa, pytest.raises(ValueError, match="single voxel"):
        sa(torch.rand(2, 2, 16, 16))


# ----------------------------------------------------------------------------------------------------------------------
# Layout (issue 18): a gradient-free CAM in methods/cam.py, math in ops/, the old module a deprecation shim.
# ----------------------------------------------------------------------------------------------------------------------
def test_old_import_path_warns_and_returns_the_moved_objects():
    import importlib

    from monai_saliency import methods
    from monai_saliency.methods import cam
    from monai_saliency.ops import bilateral
    from monai_saliency.ops import signature as ops_signature

    old = importlib.import_module("monai_saliency.methods.signature")
    moved = {"SignatureActivation": cam.SignatureActivation}
    for name in ("BILATERAL_DEFAULTS", "bilateral_filter_axes", "bilateral_options"):
        moved[name] = getattr(bilateral, name)
    for name in ("DCT_AXES", "DCT_SCALINGS", "ZERO_TOL_EPS", "signature_energy", "signature_map"):
        moved[name] = getattr(ops_signature, name)
    for name in ("signature_reconstruction", "zero_tolerance"):
        moved[name] = getattr(ops_signature, name)
    for name, obj in moved.items():
        with pytest.warns(DeprecationWarning, match=f"moved to monai_saliency.*{name}"):
            assert getattr(old, name) is obj
    with pytest.warns(DeprecationWarning):
        from monai_saliency.methods.signature import SignatureActivation as OldPath
    assert OldPath is methods.SignatureActivation is cam.SignatureActivation
    with pytest.raises(AttributeError, match="no attribute"):
        _ = old.not_a_name


def test_signature_activation_is_a_gradient_free_cam(cnn2d):
    """It reuses the CAM family's hooks, upsampler and multi-layer fusion: the map of a layer is ``signature_map`` at
    the layer's size, upsampled by the shared ``upsample_maps`` and min-max normalised (any mode, area included)."""
    from monai_saliency.methods.cam import _CAMBase, upsample_maps
    from monai_saliency.ops.normalize import minmax_normalize

    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(3))
    for mode in ("linear", "nearest", "area"):
        with SignatureActivation(cnn2d, "features.7", upsample_mode=mode) as sa:
            assert isinstance(sa, _CAMBase)
            got = sa(x)
            with torch.no_grad():
                act = sa.forward_with_activations(x)[1]["features.7"]
        ref = minmax_normalize(upsample_maps(signature_map(act), (32, 32), mode))
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(got, signature_map(act, (32, 32), upsample_mode=mode), atol=1e-6, rtol=0)
