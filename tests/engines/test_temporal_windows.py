"""Long cines through fixed-length video models: ``TemporalWindows`` / ``TemporalWindowInferer`` (issue #22 §1).

The blended maps are checked against a brute-force loop over the windows written here from the documented rules
(MONAI's window positions, weights along time, the cine's class, one normalisation per cine), and the working memory
is counted byte by byte (a torch dispatch mode tracking every storage allocated during the call): 120 frames must not
need more than 48. Both checks are shown to catch the naive implementations (per-window classes and normalisation;
all windows at once).
"""

from __future__ import annotations

import math
import weakref

import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch
from monai.inferers import sliding_window_inference
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from monai_saliency.core.targets import ClassTarget
from monai_saliency.engines.temporal import TemporalWindowInferer, TemporalWindows, temporal_windows, window_starts
from monai_saliency.methods import (
    EigenCAM,
    GradCAM,
    GradCAMpp,
    IntegratedGradients,
    SignatureActivation,
    SmoothGrad,
    VanillaGrad,
)


class ClipNet(nn.Module):
    """A video classifier that only takes clips of exactly ``frames`` frames (as fixed-length video models do)."""

    def __init__(self, frames: int, channels: int = 6) -> None:
        super().__init__()
        self.frames = frames
        self.conv = nn.Conv3d(1, channels, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != self.frames:
            raise ValueError(f"ClipNet takes exactly {self.frames} frames, got {x.shape[2]}.")
        return self.head(self.act(self.conv(x)).mean((2, 3, 4)))


def _cine(b: int, t: int, hw: int = 8, seed: int = 0) -> torch.Tensor:
    """Frames getting brighter over time, so windows early and late in the cine are classified differently."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.1, 1.0, t)[None, None, :, None, None]
    return torch.rand(b, 1, t, hw, hw, generator=g) * ramp


def _ref_starts(t: int, w: int, overlap: float) -> list[int]:
    step = max(int(w * (1 - overlap)), 1)
    starts = list(range(0, t - w + 1, step))
    return starts if starts[-1] == t - w else [*starts, t - w]


def _ref_weights(w: int, mode: str) -> torch.Tensor:
    if mode == "constant":
        return torch.ones(w)
    i = torch.arange(w, dtype=torch.float64)
    return torch.exp(-((i - (w - 1) / 2) ** 2) / (2 * (0.125 * w) ** 2)).clamp(min=1e-3).float()


def _flip_net(window: int, x: torch.Tensor, overlap: float) -> ClipNet:
    """A ClipNet whose class flips between the windows of ``x`` (bias at the median window score)."""
    torch.manual_seed(0)
    net = ClipNet(window).eval()
    with torch.no_grad():
        net.head.bias.zero_()
        logits = [net(x[:, :, s : s + window]) for s in _ref_starts(x.shape[2], window, overlap)]
        m = float(torch.stack([v[:, 0] - v[:, 1] for v in logits]).median())
        net.head.bias.copy_(torch.tensor([-m / 2, m / 2]))
    return net


def _brute_force(explain, net, x, w, overlap, mode, normalize, class_idx=None):
    """Explicit loop over windows: the cine's class (mean of window logits), maps weighted and averaged per frame."""
    starts = _ref_starts(x.shape[2], w, overlap)
    with torch.no_grad():
        logits = sum(net(x[:, :, s : s + w]) for s in starts) / len(starts)
    cls = logits.argmax(1) if class_idx is None else class_idx
    k = _ref_weights(w, mode)[:, None, None]
    num, den = None, torch.zeros(x.shape[2], 1, 1)
    for s in starts:  # one item at a time: the windows of every item are explained alone
        m = torch.cat([explain(x[i : i + 1, :, s : s + w], cls[i : i + 1]).detach() for i in range(x.shape[0])])
        num = torch.zeros(*m.shape[:2], *x.shape[2:]) if num is None else num
        num[:, :, s : s + w] += k * m
        den[s : s + w] += k
    out = num / den
    if normalize:
        flat = out.flatten(1)
        lo, hi = flat.min(1).values, flat.max(1).values
        out = ((flat - lo[:, None]) / (hi - lo)[:, None]).reshape(out.shape)
    return out, logits


def test_fixed_length_model_runs_on_a_120_frame_cine():
    """(a) A model that raises unless it gets exactly ``window`` frames predicts and explains 120 frames."""
    w, x = 16, _cine(1, 120)
    net = _flip_net(w, x, 0.5)
    cam = GradCAM(net, "act")
    with pytest.raises(ValueError, match="exactly 16 frames"):
        cam(x)
    maps = TemporalWindows(cam, w, overlap=0.5)(x)
    assert maps.shape == (1, 1, 120, 8, 8) and torch.isfinite(maps).all() and float(maps.max()) == 1.0
    with torch.no_grad():
        pred = TemporalWindowInferer(w, 0.5)(x, net)
        windows = torch.stack([net(x[:, :, s : s + w]) for s in range(0, 105, 8)])
    assert window_starts(120, w, 0.5) == list(range(0, 105, 8))
    torch.testing.assert_close(pred, windows.mean(0))
    with torch.no_grad():  # "max": each class's largest window logit
        torch.testing.assert_close(TemporalWindowInferer(w, 0.5, aggregate="max")(x, net), windows.amax(0))
    short = _cine(1, 10)
    with pytest.raises(ValueError, match="exactly 16 frames"):
        TemporalWindows(cam, w)(short)  # short cines run unchanged by default
    padded = TemporalWindows(cam, w, pad_short=True)(short)  # replicated end frames, cropped back
    assert padded.shape == (1, 1, 10, 8, 8)
    with torch.no_grad():
        rep = short[:, :, torch.arange(-3, 13).clamp(0, 9)]
        torch.testing.assert_close(TemporalWindowInferer(w, pad_short=True)(short, net), net(rep))


def _signature(net: nn.Module, normalize: bool) -> SignatureActivation:
    explainer = SignatureActivation(net, "act")
    explainer.normalize = normalize  # the CAM family's final min-max (always on for Signature Activation)
    return explainer


CASES = {
    "signature": (_signature, True, "gaussian", 1),
    "gradcam": (lambda net, norm: GradCAM(net, "act", normalize=norm), True, "constant", 3),
    "vanillagrad": (lambda net, norm: VanillaGrad(net), False, "gaussian", 3),
    "gradcampp": (lambda net, norm: GradCAMpp(net, "act", normalize=norm), True, "gaussian", 2),
    "eigencam": (lambda net, norm: EigenCAM(net, "act", normalize=norm), True, "constant", 3),
    "integratedgradients": (lambda net, norm: IntegratedGradients(net, n_steps=4), False, "constant", 3),
    # seeded noise: the same noise for each window as in the loop (windows one at a time)
    "smoothgrad": (lambda net, norm: SmoothGrad(net, n_samples=3, seed=0), False, "gaussian", 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_blended_maps_equal_a_brute_force_loop_over_windows(name):
    """(b) TemporalWindows equals an explicit loop: MONAI's windows (with a tail window), the documented weights,
    the cine's class for every window, one min-max per cine; the naive per-window explainer does not."""
    make, normalize, mode, sw_batch_size = CASES[name]
    w, overlap, x = 16, 0.6, _cine(2, 60, seed=1)
    net = _flip_net(w, x, overlap)
    classes = torch.stack([net(x[:, :, s : s + w]).argmax(1) for s in _ref_starts(60, w, overlap)])
    assert (classes != classes[0]).any()  # the windows disagree on the class: the cine's class must be used
    ref, logits = _brute_force(lambda v, c: make(net, False)(v, c), net, x, w, overlap, mode, normalize)
    with torch.no_grad():  # the cine's prediction, whose argmax every window explains
        torch.testing.assert_close(TemporalWindowInferer(w, overlap, sw_batch_size=3)(x, net), logits)
    got = TemporalWindows(make(net, True), w, overlap, mode=mode, sw_batch_size=sw_batch_size)(x)
    scale = float(ref.abs().max())  # gradients are ~1e-4: tolerances relative to the map's range
    torch.testing.assert_close(got, ref, atol=1e-5 * scale, rtol=1e-4)
    # an explicit class is honoured in every window, the same class for every window of a cine
    fixed = torch.tensor([1, 0])
    ref1, _ = _brute_force(lambda v, c: make(net, False)(v, c), net, x, w, overlap, mode, normalize, fixed)
    got1 = TemporalWindows(make(net, True), w, overlap, mode=mode, sw_batch_size=2)(x, target=ClassTarget(fixed))
    torch.testing.assert_close(got1, ref1, atol=1e-5 * float(ref1.abs().max()), rtol=1e-4)
    # negative control: MONAI's sliding window with the explainer as is (each window its own argmax class and, for
    # CAMs, its own normalisation) is a different map, so this test catches that naive implementation
    naive = sliding_window_inference(
        x, (w, -1, -1), 3, lambda v: make(net, True)(v), overlap, mode=mode, roi_weight_map=None
    )
    assert float((naive - ref).abs().max()) > 0.1 * float(ref.abs().max())


class PeakBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages allocated while active (freed storages are subtracted when they die)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.current = self.peak = 0

    def _free(self, n: int) -> None:
        self.current -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if st not in self.seen:
                    n = st.nbytes()
                    self.seen[st] = weakref.finalize(st, self._free, n)
                    self.current += n
                    self.peak = max(self.peak, self.current)
        return out


def _peak(frames: int, sw_batch_size: int) -> int:
    w, x = 16, _cine(1, frames, hw=16)
    torch.manual_seed(0)
    explainer = TemporalWindows(GradCAM(ClipNet(w, channels=64).eval(), "act"), w, 0.5, sw_batch_size=sw_batch_size)
    with PeakBytes() as counter:
        maps = explainer(x)
    assert maps.shape[2] == frames
    return counter.peak


def test_memory_of_120_frames_is_that_of_48():
    """(c) Working memory is bounded by the window: 120 frames peak within 15 % of 48 frames (the rest is the map
    itself, 3 single-channel frames per input frame); all windows at once (the naive way) needs > 2x."""
    p48, p120 = _peak(48, 1), _peak(120, 1)
    assert p120 <= 1.15 * p48, (p48, p120)
    at_once48, at_once120 = _peak(48, 64), _peak(120, 64)
    assert at_once120 > 2 * at_once48 and at_once120 > 1.15 * p48, (at_once48, at_once120)


def test_collated_metatensor_batch_keeps_meta_and_device():
    """(d) A collated MONAI batch (B=2, different affines) gives MetaTensor maps with each item's own meta, under
    no_grad, and a float16 cine gives a float16 map."""
    affines = [torch.diag(torch.tensor([1.0, 2.0, 3.0, 1.0])), torch.diag(torch.tensor([0.5, 0.7, 1.5, 1.0]))]
    items = [
        {"image": MetaTensor(_cine(1, 40, seed=i)[0], affine=a, meta={"id": f"c{i}"})} for i, a in enumerate(affines)
    ]
    batch = next(iter(DataLoader(Dataset(items), batch_size=2)))["image"]
    assert isinstance(batch, MetaTensor) and batch.affine.shape == (2, 4, 4)
    net = ClipNet(16).eval()
    with torch.no_grad():
        maps = temporal_windows({"cam": GradCAM(net, "act")}, 16, 0.5, mode="gaussian")["cam"](batch)
    assert isinstance(maps, MetaTensor) and maps.shape == (2, 1, 40, 8, 8) and maps.device == batch.device
    torch.testing.assert_close(maps.affine, batch.affine)
    for item, affine, i in zip(decollate_batch(maps), affines, range(2)):
        torch.testing.assert_close(item.affine.float(), affine)
        assert item.meta["id"] == f"c{i}"
    half = TemporalWindows(GradCAM(net, "act"), 16, mode="gaussian")(batch.half())
    assert half.dtype == torch.float16 and isinstance(half, MetaTensor)
    torch.testing.assert_close(half.float(), maps.as_tensor(), atol=2e-3, rtol=0)  # MetaTensor vs tensor compare


def test_settings_refused_and_windows_off():
    net = ClipNet(8)
    cam = GradCAM(net, "act")
    for bad in ({"window": 0}, {"window": 8, "overlap": 1.0}, {"window": 8, "aggregate": "median"}):
        with pytest.raises(ValueError):
            TemporalWindows(cam, **bad)
    with pytest.raises(ValueError, match="mode"):
        TemporalWindows(cam, 8, mode="cosine")
    assert temporal_windows({"cam": cam}, 0) == {"cam": cam}
    assert math.isclose(float(TemporalWindows(cam, 8, mode="gaussian").sigma_scale), 0.125)


def test_inplace_minmax_normalize_equals_the_copy():
    """The blended map is normalised in place (one cine-sized buffer less); same values as the copying version."""
    from monai_saliency.ops.normalize import minmax_normalize

    x = torch.randn(3, 1, 5, 4, 4)
    x[1] = 2.0  # a constant item gives zeros
    expected = minmax_normalize(x)
    out = minmax_normalize(x, inplace=True)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out, expected)
    assert float(out[1].abs().max()) == 0.0
