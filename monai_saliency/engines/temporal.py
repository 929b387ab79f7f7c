"""Long cines through models that take a fixed number of frames: overlapping temporal windows, maps blended.

A video model trained on clips of ``window`` frames (or one that only fits ``window`` frames in memory) explains a
cine of any length ``T`` by sliding a window of ``window`` frames over the time axis, the first spatial axis of a
``(B, C, T, *spatial)`` input, with ``overlap`` (a fraction of the window, as MONAI's ``overlap``):

* :class:`TemporalWindows` wraps any explainer (Signature Activation, Grad-CAM, Grad-CAM++, Eigen-CAM, the gradient
  methods, ...). Its map is MONAI's :func:`~monai.inferers.sliding_window_inference` over the time axis
  (``roi_size=(window, -1, ...)``: full frames, only time is windowed) with the explainer as the predictor: the windows
  run ``sw_batch_size`` at a time and each frame's map is the weighted average of the maps of the windows that cover
  it. Peak memory is that of ``sw_batch_size`` windows plus the input, the blended map and, while blending, MONAI's
  count map (one value per input voxel), so a 120-frame cine needs no more working memory than a 48-frame one.
* :class:`TemporalWindowInferer` is the matching MONAI ``Inferer`` for the prediction: the same windows run through
  the network and the cine's logits aggregate the windows' logits.

Rules (the ones a MONAI user expects; each is tested against a brute-force loop over windows):

* **Windows.** MONAI's: a window every ``max(int(window * (1 - overlap)), 1)`` frames from frame 0, plus a last
  window ending at the last frame (:func:`window_starts`).
* **Blending weights.** ``compute_importance_map((window,), mode, sigma_scale)`` along time, the same for every frame
  of the window's field of view (``"constant"``: plain average; ``"gaussian"``: frames near a window's centre count
  more: ``exp(-(i - (window - 1) / 2)^2 / (2 (sigma_scale * window)^2))`` clamped to ``>= 1e-3``, as MONAI
  does). The map of frame ``t`` is ``sum_w k(t - s_w) m_w(t) / sum_w k(t - s_w)``.
* **One scale per cine.** Explainers that min-max normalise each item (the CAM family's ``normalize=True``) are
  run unnormalised on the windows and the blended map is normalised once per cine, so a window that holds no lesion
  is not stretched to the range of one that does (with several ``target_layers`` the per-layer fusion still
  normalises each layer per window: the CAM family's rule; Signature Activation's own min-max, a step of the
  method before its bilateral filter, is per window too).
* **Targets are per cine.** ``class_idx=None`` / ``ClassTarget(None)`` is the argmax of the cine's aggregated logits
  (the class :class:`TemporalWindowInferer` predicts), fixed before the windows run, so every window explains the same
  class; explicit classes, ``RegressionTarget`` and bound targets are handed to each window's rows. Targets read
  from a window's own output (``RegionTarget`` without a mask) are bound per window.
* **Prediction.** ``aggregate="mean"`` (default) averages the windows' logits: the standard multi-clip test of video
  classifiers (SlowFast, X3D, MoviNet report clip-averaged scores), on the same scale as one window's logits, and
  exactly the model's output when the cine is one window. ``"max"`` takes each class's largest window logit (a
  multiple-instance rule: "some window shows it"), for findings visible in part of a cine only.
* **Short cines.** ``T <= window`` runs the explainer and the network on the whole cine unchanged (a model that
  takes any ``T`` gives the same result as without windows). ``pad_short=True`` is for models that need exactly
  ``window`` frames: the cine is padded to ``window`` by repeating its first and last frames (half before, half
  after, MONAI's ``padding_mode="replicate"``) and the map cropped back.

MetaTensor in -> MetaTensor out with the input's metadata; the maps are on the input's device and in its dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import Inferer, sliding_window_inference
from torch import nn

from monai_saliency import core as _core
from monai_saliency.core.targets import ClassTarget, as_target
from monai_saliency.methods.base import Explainer
from monai_saliency.ops.normalize import minmax_normalize

__all__ = ["TemporalWindowInferer", "TemporalWindows", "temporal_weights", "temporal_windows", "window_starts"]

AGGREGATES = ("mean", "max")
BLEND_MODES = ("constant", "gaussian")


def _check_window(window: int, overlap: float) -> tuple[int, float]:
    if isinstance(window, bool) or int(window) != window or int(window) < 1:
        raise ValueError(f"window must be a positive number of frames, got {window!r}.")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap is a fraction of the window in [0, 1), got {overlap!r}.")
    return int(window), float(overlap)


def window_starts(frames: int, window: int, overlap: float) -> list[int]:
    """First frame of each window over ``frames`` frames: MONAI's sliding-window positions along one axis.

    Args:
        frames: length of the time axis.
        window: frames per window.
        overlap: fraction of the window shared by consecutive windows, in ``[0, 1)``.

    Returns:
        Window starts, ascending; ``[0]`` when ``frames <= window``.
    """
    window, overlap = _check_window(window, overlap)
    if frames <= window:
        return [0]
    step = max(int(window * (1 - overlap)), 1)
    return [int(s[0].start) for s in dense_patch_slices((frames,), (window,), (step,))]


def temporal_weights(
    window: int, mode: str = "constant", sigma_scale: float = 0.125, device: Any = None
) -> torch.Tensor:
    """Blending weight of each frame of a window, ``(window,)``: MONAI's importance map along time."""
    return compute_importance_map((int(window),), mode=mode, sigma_scale=sigma_scale, device=device or "cpu")


def _cine_logits(
    network: nn.Module, x: torch.Tensor, window: int, overlap: float, sw_batch_size: int, aggregate: str, pad: bool
) -> torch.Tensor:
    """Aggregated logits ``(B, K)`` of the windows of ``x`` (a plain tensor), ``sw_batch_size`` windows per call."""
    b, t = x.shape[0], x.shape[2]
    if t <= window and not (pad and t < window):
        return _core.model_logits(network(x))
    if t < window:  # one padded window, as sliding_window_inference pads
        half = (window - t) // 2
        idx = torch.arange(-half, window - half, device=x.device).clamp(0, t - 1)
        return _core.model_logits(network(x.index_select(2, idx)))
    starts = window_starts(t, window, overlap)
    pairs = [(i, s) for i in range(b) for s in starts]  # item-major, the order of sliding_window_inference
    logits = []
    for c in range(0, len(pairs), sw_batch_size):
        win = torch.cat([x[i : i + 1, :, s : s + window] for i, s in pairs[c : c + sw_batch_size]])
        logits.append(_core.model_logits(network(win)))
    per_window = torch.cat(logits).reshape(b, len(starts), -1)  # (B, windows, K): a few numbers per window
    return per_window.mean(1) if aggregate == "mean" else per_window.amax(1)


class TemporalWindowInferer(Inferer):
    """MONAI inferer predicting a cine ``(B, C, T, *spatial)`` from overlapping windows of ``window`` frames.

    The windows are :func:`window_starts`'s; their logits are averaged (``aggregate="mean"``) or maxed per class
    (``"max"``), see :mod:`monai_saliency.engines.temporal`. Runs under the caller's grad mode.

    Args:
        window: frames per window (the model's clip length).
        overlap: fraction of a window shared with the next, in ``[0, 1)``.
        sw_batch_size: windows per network call (memory is that of ``sw_batch_size`` windows).
        aggregate: ``"mean"`` or ``"max"``.
        pad_short: pad cines shorter than ``window`` to ``window`` frames (replicating the end frames).

    Raises:
        ValueError: for a non-positive window or sw_batch_size, an overlap outside ``[0, 1)``, or an unknown
            aggregate.
    """

    def __init__(
        self,
        window: int,
        overlap: float = 0.5,
        sw_batch_size: int = 1,
        aggregate: str = "mean",
        pad_short: bool = False,
    ) -> None:
        super().__init__()
        self.window, self.overlap = _check_window(window, overlap)
        if int(sw_batch_size) < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size!r}.")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}.")
        self.sw_batch_size, self.aggregate, self.pad_short = int(sw_batch_size), aggregate, bool(pad_short)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Logits ``(B, K)`` of ``inputs`` ``(B, C, T, *spatial)``.

        Raises:
            ValueError: if ``inputs`` has no time axis (rank < 4).
        """
        x = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        if x.ndim < 4:
            raise ValueError(f"expected a cine batch (B, C, T, *spatial), got shape {tuple(x.shape)}.")
        if args or kwargs:
            network = _Partial(network, args, kwargs)
        return _cine_logits(network, x, self.window, self.overlap, self.sw_batch_size, self.aggregate, self.pad_short)


class _Partial(nn.Module):
    def __init__(self, network: nn.Module, args: tuple, kwargs: dict) -> None:
        super().__init__()
        self.network, self.args, self.kwargs = network, args, kwargs

    def forward(self, x: torch.Tensor) -> Any:
        return self.network(x, *self.args, **self.kwargs)


class TemporalWindows(Explainer):
    """An explainer run over overlapping temporal windows of a long cine, its window maps blended.

    ``TemporalWindows(GradCAM(net, "features.stage3"), window=48, overlap=0.5)(cine)`` gives the Grad-CAM of a
    ``(B, C, T, H, W)`` cine of any length, computed 48 frames at a time; the rules (windows, weights, one
    normalisation and one target per cine, short cines) are in :mod:`monai_saliency.engines.temporal`.

    Args:
        explainer: the explainer applied to each window.
        window: frames per window.
        overlap: fraction of a window shared with the next, in ``[0, 1)``.
        mode: blending weights along time, ``"constant"`` or ``"gaussian"`` (MONAI's ``BlendMode``).
        sigma_scale: the gaussian's standard deviation as a fraction of the window.
        sw_batch_size: windows explained per call of ``explainer`` (the memory is that of this many windows).
        aggregate: how the windows' logits give the cine's class for ``class_idx=None``: ``"mean"`` or ``"max"``
            (as :class:`TemporalWindowInferer`).
        pad_short: pad cines shorter than ``window`` (models that need exactly ``window`` frames).

    Raises:
        TypeError: if ``explainer`` is not an :class:`~monai_saliency.methods.base.Explainer`.
        ValueError: for invalid window settings.
    """

    def __init__(
        self,
        explainer: Explainer,
        window: int,
        overlap: float = 0.5,
        mode: str = "constant",
        sigma_scale: float = 0.125,
        sw_batch_size: int = 1,
        aggregate: str = "mean",
        pad_short: bool = False,
    ) -> None:
        if not isinstance(explainer, Explainer):
            raise TypeError(f"explainer must be an Explainer, got {type(explainer).__name__}.")
        super().__init__(explainer.model)
        self.inferer = TemporalWindowInferer(window, overlap, sw_batch_size, aggregate, pad_short)
        if mode not in BLEND_MODES:
            raise ValueError(f"mode must be one of {BLEND_MODES} (MONAI's BlendMode), got {mode!r}.")
        if not float(sigma_scale) > 0:
            raise ValueError(f"sigma_scale must be positive, got {sigma_scale!r}.")
        self.explainer, self.mode, self.sigma_scale = explainer, mode, float(sigma_scale)
        self.class_agnostic = explainer.class_agnostic

    @property
    def window(self) -> int:
        return self.inferer.window

    def explain(self, x: torch.Tensor, class_idx: Any = None) -> torch.Tensor:
        """Blended maps of a validated plain tensor ``(B, C, T, *spatial)``.

        Raises:
            ValueError: if ``x`` has no time axis.
        """
        if x.ndim < 4:
            raise ValueError(f"expected a cine batch (B, C, T, *spatial), got shape {tuple(x.shape)}.")
        inf = self.inferer
        t = x.shape[2]
        target = None if self.class_agnostic else self._cine_target(x, class_idx)
        renormalize = getattr(self.explainer, "normalize", None) is True
        if renormalize:
            self.explainer.normalize = False
        try:
            if t <= inf.window and not (inf.pad_short and t < inf.window):
                maps = self._maps(x, target)
            else:
                weights = temporal_weights(inf.window, self.mode, self.sigma_scale, x.device)
                maps = sliding_window_inference(
                    x,
                    roi_size=(inf.window, *([-1] * (x.ndim - 3))),
                    sw_batch_size=inf.sw_batch_size,
                    predictor=self._window_predictor,
                    overlap=inf.overlap,
                    padding_mode="replicate",
                    roi_weight_map=weights.reshape(-1, *([1] * (x.ndim - 3))),
                    with_coord=True,
                    target=target,
                )
        finally:
            if renormalize:
                self.explainer.normalize = True
        return minmax_normalize(maps, inplace=True) if renormalize else maps  # the blend is ours: no copy

    def _cine_target(self, x: torch.Tensor, spec: Any) -> Any:
        """``spec`` fixed per cine: the argmax of the aggregated window logits for ``None`` / ``ClassTarget(None)``."""
        tgt = as_target(spec)
        if isinstance(tgt, ClassTarget) and tgt.needs_output and tgt.class_indices is None:
            inf = self.inferer
            with torch.no_grad():
                logits = _cine_logits(
                    self.model, x, inf.window, inf.overlap, inf.sw_batch_size, inf.aggregate, inf.pad_short
                )
            return tgt.bind(logits, x.shape[0])
        return tgt if tgt.needs_output else tgt.bind(None, x.shape[0])

    def _maps(self, x: torch.Tensor, target: Any) -> torch.Tensor:
        out = self.explainer(x) if self.class_agnostic else self.explainer(x, target=target)
        return out.as_tensor() if hasattr(out, "as_tensor") else out

    def _window_predictor(self, windows: torch.Tensor, coords: Sequence[Sequence[slice]], target: Any) -> torch.Tensor:
        if target is not None:
            target = target.rows(torch.tensor([c[0].start for c in coords], device=windows.device))
        return self._maps(windows, target).to(windows.dtype)

    def close(self) -> None:
        """Remove the wrapped explainer's hooks."""
        self.explainer.close()

    def __del__(self) -> None:  # a dropped wrapper leaves the wrapped explainer usable (it closes itself when dropped)
        pass


def temporal_windows(
    explainers: Mapping[str, Explainer], window: int | None, overlap: float = 0.5, **options: Any
) -> dict[str, Explainer]:
    """Each explainer wrapped in :class:`TemporalWindows` (a bundle's ``--window_frames``), or unchanged when
    ``window`` is 0 or None (windows off).

    Args:
        explainers: ``name -> explainer``.
        window: frames per window; 0 / None leaves the explainers as they are.
        overlap: fraction of a window shared with the next.
        options: further :class:`TemporalWindows` arguments (``mode``, ``sw_batch_size``, ...).

    Returns:
        ``{name: explainer}`` in the same order.
    """
    if not window:
        return dict(explainers)
    return {name: TemporalWindows(e, int(window), overlap, **options) for name, e in explainers.items()}
