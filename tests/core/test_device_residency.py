"""Device residency: every explainer, the tensor metrics and the transforms keep their work on the input's device.

Run on the ``meta`` device (CPU machines have no second device): a meta tensor has no values, so any read on the
host (``.item()``, ``bool(t)``, ``.tolist()``, ``.numpy()``, ``.cpu()``) raises, and a ``TorchDispatchMode``
records every operator that mixes a host tensor (more than a scalar) with the device's, i.e. a host-to-device copy
(``torch.tensor(...)`` made without ``device=``, a CPU generator's draws moved over, ...). The only host decisions
left are the validity checks of :mod:`monai_saliency.ops.checks` (one boolean per check: ``all_finite`` before an
error, ``host_all`` once per convergence check of an iterative solver), which treat meta tensors as valid.

Outside this test: results that are host values by definition (``roc_auc``/``nmse`` floats, the bootstrap/Wilcoxon
statistics on per-item scores, ``wsol_box_error``'s connected components, ``SaveMapsd``'s files); the perturbation
metrics (``deletion_curve``/``insertion_curve`` return their curves on the host, ``mu_fidelity`` correlates on the
host, ``stability`` draws its noise on the host and copies per chunk: not yet device-resident); and the Mørch
analysis (a float64 least-squares study fitted on the CPU by the PET bundle).
"""

from __future__ import annotations

import traceback

import pytest
import torch
from monai.networks.nets import DenseNet
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from monai_saliency import methods as m
from monai_saliency import metrics
from monai_saliency.transforms import FourierLowPass, ImageSignature, ScaleToUnit, StructuredProx

META = torch.device("meta")
LAYER = "features.denseblock2"


class HostDeviceCopies(TorchDispatchMode):
    """Records operators whose tensor arguments or results span the host and another device (0-dim host tensors,
    which PyTorch passes as scalars without a copy, excepted; so are the one-time uploads of constant matrices
    built on the host in float64 by ``monai_saliency.ops._cache.cached``, which caches them per device)."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_leaves((args, kwargs or {}, out)) if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors if t.dim() > 0 or t.device.type != "cpu"}
        if len(devices) > 1 and not any(f.filename.endswith("_cache.py") for f in traceback.extract_stack()):
            shapes = [(t.device.type, tuple(t.shape)) for t in tensors]
            where = [f"{f.filename.split('/')[-1]}:{f.lineno}" for f in traceback.extract_stack()]
            self.copies.append(f"{func}: {shapes} at {where[-6:-1]}")
        return out


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = DenseNet(
        spatial_dims=2, in_channels=1, out_channels=3, init_features=4, growth_rate=4, block_config=(1, 1), bn_size=2
    )
    return net.eval().to(META)


EXPLAINERS = {
    "signature_activation": lambda net: m.SignatureActivation(net, target_layers=LAYER),
    "gradcam": lambda net: m.GradCAM(net, target_layers=LAYER),
    "gradcampp": lambda net: m.GradCAMpp(net, target_layers=LAYER),
    "eigencam": lambda net: m.EigenCAM(net, target_layers=LAYER),
    "vanillagrad": lambda net: m.VanillaGrad(net),
    "smoothgrad_seeded": lambda net: m.SmoothGrad(net, n_samples=4, batch_size=3, seed=0),
    "smoothgrad_generator": lambda net: m.SmoothGrad(net, n_samples=2, seed=None),
    "integratedgradients": lambda net: m.IntegratedGradients(net, n_steps=4, batch_size=3),
    "forgrad": lambda net: m.FORGrad(m.VanillaGrad(net), sigma=2.0),
    "structured_seed": lambda net: m.StructuredGradient(m.VanillaGrad(net), solver="seed"),
    "structured_exact": lambda net: m.StructuredGradient(m.VanillaGrad(net), solver="exact"),
}


def _on_meta(fn):
    mode = HostDeviceCopies()
    with mode:
        out = fn()
    return out, mode.copies


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_explainer_stays_on_the_device(name):
    net = _net()
    explainer = EXPLAINERS[name](net)
    x = torch.rand(2, 1, 16, 16, device=META)
    classes = torch.tensor([0, 2], device=META)
    maps, copies = _on_meta(lambda: explainer(x, class_idx=classes))
    assert maps.device == META and tuple(maps.shape) == (2, 1, 16, 16)
    assert copies == []
    maps, copies = _on_meta(lambda: explainer(x))  # class chosen by the model (argmax, on the device)
    assert maps.device == META and copies == []


def _metric_cases():
    maps = torch.rand(2, 1, 16, 16, device=META)
    masks = torch.rand(2, 1, 16, 16, device=META) > 0.5
    return {
        "gini_index": lambda net: metrics.gini_index(maps),
        "top_k_mass": lambda net: metrics.top_k_mass(maps, fraction=0.1),
        "fraction_below_median": lambda net: metrics.fraction_below_median(maps),
        "high_frequency_power_ratio": lambda net: metrics.high_frequency_power_ratio(maps),
        "radial_power_spectrum": lambda net: metrics.radial_power_spectrum(maps, n_bins=4)[0],
        "mask_energy": lambda net: metrics.mask_energy(maps, masks),
        "pointing_game": lambda net: metrics.pointing_game(maps, masks),
    }


@pytest.mark.parametrize("name", sorted(_metric_cases()))
def test_metric_stays_on_the_device(name):
    net = _net()
    out, copies = _on_meta(lambda: _metric_cases()[name](net))
    assert isinstance(out, torch.Tensor) and out.device == META
    assert copies == []


TRANSFORMS = {
    "fourier_lowpass": lambda: FourierLowPass(sigma=3.0),
    "image_signature": lambda: ImageSignature(dct_axes="spatial"),
    "scale_to_unit": lambda: ScaleToUnit(),
    "structured_prox": lambda: StructuredProx(),
    "structured_prox_exact": lambda: StructuredProx(solver="exact"),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_stays_on_the_device(name):
    img = torch.rand(1, 16, 16, device=META)
    out, copies = _on_meta(lambda: TRANSFORMS[name]()(img))
    assert out.device == META and tuple(out.shape[-2:]) == (16, 16)
    assert copies == []


def test_the_detectors_catch_host_reads_and_host_tensors():
    """The checks above can fail: a host read raises on meta, and a host tensor mixed in is recorded."""
    x = torch.rand(2, 3, device=META)
    with pytest.raises((RuntimeError, NotImplementedError)):
        x.sum().item()
    with pytest.raises((RuntimeError, NotImplementedError)):
        x.cpu()
    _, copies = _on_meta(lambda: x * torch.ones(3).to(META))
    assert copies and "_to_copy" in copies[0]
    _, copies = _on_meta(lambda: x * torch.tensor(2.0))  # a 0-dim host scalar is no copy
    assert copies == []
