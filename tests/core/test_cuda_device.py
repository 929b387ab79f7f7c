"""On CUDA (marked ``cuda``: skipped without a device; ``make gpu-check`` runs them): every explainer gives the CPU
result on the GPU, moves nothing between host and device beyond its validity checks, and runs under autocast."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DenseNet

from monai_saliency import methods as m
from tests.core.test_device_residency import EXPLAINERS, HostDeviceCopies

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
RANDOM = {"smoothgrad_seeded", "smoothgrad_generator"}  # CPU and CUDA generators draw different noise


def _net(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    net = DenseNet(
        spatial_dims=2, in_channels=1, out_channels=3, init_features=4, growth_rate=4, block_config=(1, 1), bn_size=2
    )
    return net.eval().to(device)


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_explainer_on_cuda_matches_cpu_and_stays_there(name):
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    cpu = EXPLAINERS[name](_net(torch.device("cpu")))(x)
    explainer = EXPLAINERS[name](_net(CUDA))
    xc = x.to(CUDA)
    explainer(xc)  # warm-up: constant matrices are uploaded once per device
    mode = HostDeviceCopies()
    with mode:
        maps = explainer(xc)
    assert maps.device.type == "cuda" and maps.shape == cpu.shape
    assert mode.copies == []
    if name not in RANDOM:
        torch.testing.assert_close(maps.cpu(), cpu, rtol=1e-3, atol=1e-4)
    elif name == "smoothgrad_seeded":  # the same map for an item alone or in a batch, on the device too
        torch.testing.assert_close(explainer(xc[1:2]), maps[1:2])


@pytest.mark.parametrize("name", ["signature_activation", "gradcam", "vanillagrad", "integratedgradients"])
def test_explainer_under_autocast_is_close_to_float32(name):
    net = _net(CUDA)
    x = torch.rand(3, 1, 32, 32, device=CUDA)
    ref = EXPLAINERS[name](net)(x)
    with torch.autocast("cuda", dtype=torch.float16):
        amp = EXPLAINERS[name](net)(x)
    assert torch.isfinite(amp).all()
    corr = torch.corrcoef(torch.stack([ref.flatten().float(), amp.flatten().float()]))[0, 1]
    assert corr > 0.95, float(corr)


def test_morch_analysis_runs_on_cuda():
    from monai_saliency.analysis import MorchSaliency
    from monai_saliency.models.pca import PCAProjection
    from monai_saliency.models.tanh_net import TanhNet

    g = torch.Generator().manual_seed(0)
    vols, y = torch.rand(12, 6, 7, 5, generator=g, dtype=torch.float64), torch.randn(12, generator=g).double()
    out = {}
    for dev in ("cpu", "cuda"):
        pca = PCAProjection().fit(vols.to(dev))
        net = TanhNet(pca.k, hidden=3).to(dev)
        net.fit(pca(vols.to(dev)), y.to(dev), weight_decay=0.1)
        out[dev] = MorchSaliency(net, pca, weight_decay=0.1).cost_changes(vols.to(dev), y.to(dev), orders=("second",))
    torch.testing.assert_close(out["cuda"]["second"].cpu(), out["cpu"]["second"], rtol=1e-6, atol=1e-9)


def test_gradcam_class_index_on_cuda():
    net = _net(CUDA)
    x = torch.rand(2, 1, 32, 32, device=CUDA)
    maps = m.GradCAM(net, target_layers="features.denseblock2")(x, class_idx=torch.tensor([2, 0], device=CUDA))
    assert maps.device.type == "cuda"
