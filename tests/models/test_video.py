from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_saliency.core import find_layer
from monai_saliency.data.synthetic.angiogram import make_angiogram_dataset
from monai_saliency.models.training import QUICK, TrainConfig, evaluate_auc, train_video_classifier
from monai_saliency.models.video import Conv2Plus1d, TemporalMinPool, VideoLesionNet


@pytest.fixture
def net() -> VideoLesionNet:
    torch.manual_seed(0)
    return VideoLesionNet(width=4).eval()


def test_forward_shapes_and_cam_layer_keeps_time(net):
    x = torch.rand(3, 1, 8, 32, 24)
    assert net(x).shape == (3, 2)
    _name, layer = find_layer(net, net.cam_layer)
    acts = {}
    handle = layer.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    net(x)
    handle.remove()
    assert acts["a"].shape == (3, 16, 2, 8, 6)  # (B, 4w, T/k, H/4, W/4): time is not collapsed
    # odd sizes work (pooling floors)
    assert net(torch.rand(1, 1, 5, 20, 28)).shape == (1, 2)


def test_items_are_independent_in_eval_mode(net):
    x = torch.rand(4, 1, 6, 16, 16)
    together = net(x)
    alone = torch.cat([net(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_temporal_block_matches_a_reference_convolution():
    torch.manual_seed(1)
    block = Conv2Plus1d(2, 3).eval()
    x = torch.randn(2, 2, 5, 7, 6)
    # the spatial part acts on each frame alone: equal to a 2D convolution of the frames
    b, c, t, h, w = x.shape
    frames = x.transpose(1, 2).reshape(b * t, c, h, w)
    ref = torch.nn.functional.conv2d(frames, block.spatial.weight[:, :, 0], padding=1)
    assert torch.allclose(block.spatial(x), ref.view(b, t, 3, h, w).transpose(1, 2), atol=1e-5)
    # a temporal impulse spreads over 3 frames only
    z = torch.zeros(1, 3, 7, 1, 1)
    z[:, :, 3] = 1
    out = block.temporal(z)
    assert (out[:, :, [0, 1, 5, 6]] == 0).all() and out[:, :, 2:5].abs().sum() > 0


def test_temporal_min_pool_against_loop():
    x = torch.randn(2, 3, 7, 4, 5)
    out = TemporalMinPool(3)(x)
    assert out.shape == (2, 3, 3, 4, 5)
    for j, (a, b) in enumerate([(0, 3), (3, 6), (6, 7)]):  # brute force; last window is partial
        assert torch.equal(out[:, :, j], x[:, :, a:b].amin(2))
    assert torch.equal(TemporalMinPool(1)(x), x)
    # the darkest (most opacified) frame wins: a pixel darkened in one frame stays dark in the window
    y = torch.ones(1, 1, 4, 2, 2)
    y[0, 0, 2, 1, 1] = 0.2
    assert TemporalMinPool(4)(y)[0, 0, 0, 1, 1] == 0.2


def test_bad_inputs(net):
    with pytest.raises(ValueError, match="cine batch"):
        net(torch.rand(1, 8, 32, 32))
    with pytest.raises(ValueError, match="cine batch"):
        net(torch.rand(1, 2, 8, 32, 32))
    with pytest.raises(ValueError, match="T >= 2"):
        net(torch.rand(1, 1, 1, 32, 32))
    with pytest.raises(ValueError):
        VideoLesionNet(width=0)


def test_weights_are_small():
    net = VideoLesionNet()  # default width: the shipped configuration
    size = sum(p.numel() * p.element_size() for p in net.state_dict().values())
    assert size < 5 * 2**20 / 10


def test_evaluate_auc_against_brute_force():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            s = x.mean((1, 2, 3, 4))
            return torch.stack([-s, s], 1)

    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 2, 4, 4, generator=g)
    y = torch.randint(0, 2, (20,), generator=g)
    y[0], y[1] = 0, 1
    score = x.mean((1, 2, 3))
    pos, neg = score[y == 1], score[y == 0]
    brute = ((pos[:, None] > neg[None]).float() + 0.5 * (pos[:, None] == neg[None]).float()).mean()
    assert evaluate_auc(Fixed(), x, y, batch_size=7) == pytest.approx(float(brute))
    with pytest.raises(ValueError, match="both classes"):
        evaluate_auc(Fixed(), x, torch.zeros(20, dtype=torch.long))


def test_training_reduced_mode_is_seeded():
    cfg = TrainConfig(**{**QUICK.__dict__, "epochs": 1})
    model_a, sa = train_video_classifier(cfg, log=None)
    model_b, sb = train_video_classifier(cfg, log=None)
    assert sa["test_auc"] == sb["test_auc"]
    for (ka, va), (kb, vb) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert 0.0 <= sa["test_auc"] <= 1.0 and sa["state_dict_bytes"] < 5 * 2**20


def test_old_train_video_path_warns_and_forwards():
    import monai_saliency.models.train_video as old

    with pytest.warns(DeprecationWarning, match="models.training.train_video_classifier"):
        assert old.train_video_classifier is train_video_classifier
    with pytest.warns(DeprecationWarning, match="scripts/train_video.py"):
        assert callable(old.main)


SHIPPED = Path(__file__).resolve().parents[2] / "bundles" / "angiogram_signature_activation" / "models" / "model.pt"


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped angiogram weights not present")
def test_shipped_weights_detect_lesions_on_fresh_cases():
    """The bundle's weights (trained by train_video with default settings) still fit the generator."""
    net = VideoLesionNet()
    net.load_state_dict(torch.load(SHIPPED, weights_only=True))
    net.eval()
    fresh = make_angiogram_dataset(48, seed=2024)  # seeds 0-2 were train/val/test
    assert evaluate_auc(net, fresh.cine, fresh.labels) >= 0.85
    assert SHIPPED.stat().st_size <= 5 * 2**20


def test_scripted_network_matches_eager_for_any_frame_count(net):
    """TorchScript (what the bundle's ckpt_export writes): same logits for frame counts that do and do not fill the
    temporal windows, and the same input checks."""
    scripted = torch.jit.script(net)
    for frames in (16, 7, 2):
        x = torch.rand(2, 1, frames, 32, 28, generator=torch.Generator().manual_seed(frames))
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=0)
    with pytest.raises(torch.jit.Error, match="cine batch"):
        scripted(torch.rand(1, 4, 8, 8))
    with pytest.raises(torch.jit.Error, match="T >= 2"):
        scripted(torch.rand(1, 1, 1, 8, 8))
