"""FORGrad (Muzellec et al., ICML 2024): ideal Fourier low-pass of an input-space attribution.

White-box attributions carry high-frequency artifacts inherited from max-pooling and striding. FORGrad
keeps only the frequencies within radius ``sigma`` (in frequency bins, i.e. cycles per field of view) of
the zero frequency (a hard circular / spherical mask; :func:`monai_saliency.ops.fourier.ideal_lowpass`),
then reduces channels. ``sigma`` at least the largest spatial size keeps every bin: no filtering
(the seed's ``sigma_max = 224`` for 224-pixel images). :meth:`FORGrad.calibrate` picks ``sigma*`` that
maximises a faithfulness score on held-out data and returns the whole curve.

The default faithfulness score here is a *minimal internal* insertion − deletion AUC
(:func:`insertion_deletion_score`), kept inside this module so FORGrad does not depend on the metrics
package; pass ``metric=`` to use another one (e.g. the metrics package's, once available).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from monai_saliency.core import check_input, evaluation_mode, model_logits, select_class
from monai_saliency.core.outputs import model_output
from monai_saliency.core.targets import ClassTarget, Target, explainer_target, resolve_target
from monai_saliency.methods.base import Explainer, wrapped_base_map, wrapped_source
from monai_saliency.ops.blur import gaussian_blur
from monai_saliency.ops.fourier import check_cutoff, ideal_lowpass
from monai_saliency.ops.normalize import minmax_normalize, reduce_channels
from monai_saliency.ops.precision import model_input_dtype, working_tensor

__all__ = ["CalibrationResult", "FORGrad", "default_sigmas", "insertion_deletion_score"]

MetricFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def default_sigmas(spatial_shape: Sequence[int], num: int = 12) -> list[float]:
    """Geometric grid of cut-offs from 1 bin to the largest spatial size (no filtering), rounded, unique.

    Args:
        spatial_shape: spatial size of the maps.
        num: number of grid points before de-duplication.

    Returns:
        Increasing list of radii; the last one is ``max(spatial_shape)``.
    """
    top = float(max(spatial_shape))
    grid = sorted({round(top ** (i / (num - 1)), 2) for i in range(num)} | {top}) if num > 1 else [top]
    return [g for g in grid if g >= 1.0]


def _blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of the spatial axes of ``(B, C, *sp)``: radius ``ceil(3 sigma)``, mirrored borders
    (torch's ``"reflect"`` padding) on axes longer than the radius, replicated borders on the others."""
    if not (math.isfinite(sigma_px) and sigma_px > 0):
        raise ValueError(f"blur_sigma must be a positive number of voxels, got {sigma_px!r}.")
    radius = max(1, math.ceil(3 * sigma_px))
    modes = ["mirror" if n > radius else "nearest" for n in x.shape[2:]]
    return gaussian_blur(x, sigma_px, mode=modes, radius=radius)


def insertion_deletion_score(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: torch.Tensor | Target,
    n_steps: int = 16,
    batch_size: int = 64,
    blur_sigma: float | None = None,
) -> torch.Tensor:
    """Minimal internal faithfulness score: insertion AUC − deletion AUC, per item (higher is better).

    Positions (all channels of a voxel together) are ranked by ``saliency`` (descending). Deletion replaces
    the top ``k/n_steps`` fraction of ``x`` with 0; insertion starts from a Gaussian-blurred ``x`` and puts
    back the top fraction of the original (Petsiuk et al. 2018). The curves are the target class
    probability (softmax; sigmoid for a single output) at ``k = 0..n_steps``, or, for a bound
    :class:`~monai_saliency.core.targets.Target`, its probability version when it has one (a class or region
    target) and else its own score (a regression unit, a callable); AUCs by the trapezoid rule
    over the fraction in [0, 1]. All ``2 (n_steps + 1) B`` perturbed inputs run ``batch_size`` at a time.
    This is the minimal version documented in :mod:`monai_saliency.methods.forgrad`; the metrics package
    holds the full one.

    Args:
        model: classifier.
        x: inputs ``(B, C, *sp)``.
        saliency: maps ``(B, 1 or C, *sp)`` (channels are summed in absolute value).
        class_idx: target class per item ``(B,)``, or a target bound to ``x``
            (:func:`~monai_saliency.core.targets.resolve_target`).
        n_steps: perturbation steps.
        batch_size: model inputs per forward pass.
        blur_sigma: Gaussian sigma (voxels) of the insertion start; default ``max(sp) / 16``.

    Returns:
        ``(B,)`` scores, in [-1, 1] for probabilities.
    """
    score_of = _target_scorer(class_idx)
    b, c = x.shape[:2]
    sp = x.shape[2:]
    n = int(torch.tensor(sp).prod())
    sal = saliency.abs().sum(1).reshape(b, n) if saliency.shape[1] > 1 else saliency.reshape(b, n)
    order = sal.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=x.device).expand(b, n))
    counts = torch.round(torch.linspace(0, n, n_steps + 1, device=x.device)).long()  # (S,)
    blurred = _blur(x, blur_sigma if blur_sigma is not None else max(1.0, max(sp) / 16))
    xf, bf = x.reshape(b, c, n), blurred.reshape(b, c, n)
    s = n_steps + 1
    total = 2 * s * b  # flat index: mode (0 deletion, 1 insertion), step, item
    probs = torch.empty(total, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for start in range(0, total, batch_size):  # memory-bounded chunks
            flat = torch.arange(start, min(start + batch_size, total), device=x.device)
            mode, step, item = flat // (s * b), (flat // b) % s, flat % b
            top = (rank[item] < counts[step][:, None])[:, None, :]  # (chunk, 1, N)
            deleted = torch.where(top, torch.zeros((), dtype=x.dtype, device=x.device), xf[item])
            inserted = torch.where(top, xf[item], bf[item])
            inp = torch.where((mode == 0)[:, None, None], deleted, inserted).reshape(-1, c, *sp)
            probs[flat] = score_of(model(inp), item).to(x.dtype)
    curves = probs.reshape(2, s, b)
    frac = counts.to(x.dtype) / n
    auc = torch.trapezoid(curves, frac, dim=1)  # (2, B)
    return auc[1] - auc[0]


def _target_scorer(class_idx: torch.Tensor | Target) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """``score(output, item)`` of the rows ``item`` of a chunk: the class probability for class indices, a bound
    target's probability version when it has one, else the target's own score."""
    if isinstance(class_idx, ClassTarget):  # its indices (a single-output classifier scores the sigmoid)
        class_idx = class_idx.class_indices
    if isinstance(class_idx, Target):
        try:
            scored = class_idx.probabilities()
        except ValueError:  # a regression unit or a callable: its own score
            scored = class_idx
        return lambda output, item: scored.rows(item)(model_output(output).float())

    def by_class(output: Any, item: torch.Tensor) -> torch.Tensor:
        logits = model_logits(output)
        p = logits.softmax(1) if logits.shape[1] > 1 else logits.sigmoid()
        cls = class_idx[item] if logits.shape[1] > 1 else torch.zeros_like(item)
        return p.gather(1, cls[:, None])[:, 0]

    return by_class


@dataclass
class CalibrationResult:
    """Outcome of :meth:`FORGrad.calibrate`.

    Attributes:
        sigmas: the radii tried (increasing).
        scores: mean faithfulness score per radius.
        per_item: ``(num_sigmas, N)`` score of every held-out item.
        best_sigma: the argmax of ``scores`` (first one on ties).
        best_score: ``scores`` at ``best_sigma``.
    """

    sigmas: list[float]
    scores: list[float]
    per_item: torch.Tensor = field(repr=False)
    best_sigma: float = 0.0
    best_score: float = 0.0


def _iter_batches(data: Any) -> Iterable[tuple[torch.Tensor, Any]]:
    """Yield ``(x, class_idx or None)`` from a tensor, a (x, labels) pair, a dict batch, or an iterable of those."""
    if isinstance(data, torch.Tensor):
        yield data, None
        return
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and isinstance(data[0], torch.Tensor)
        and not isinstance(data[1], dict)
        and (data[1] is None or isinstance(data[1], (torch.Tensor, int)))
    ):
        yield data[0], data[1]
        return
    if isinstance(data, dict):
        if "image" not in data:
            raise ValueError(f"dictionary batches need an 'image' key (and optionally 'label'); got {list(data)}.")
        yield data["image"], data.get("label")
        return
    for item in data:
        if isinstance(item, (torch.Tensor, dict)) or (isinstance(item, (tuple, list)) and len(item) == 2):
            yield from _iter_batches(tuple(item) if isinstance(item, list) else item)
        else:
            raise ValueError(
                "calibrate expects a tensor (B, C, *sp), an (images, labels) pair, a dict with 'image', or a loader "
                f"yielding those; got an item of type {type(item).__name__}."
            )


class FORGrad(Explainer):
    """Fourier low-pass of any input-space explainer's map, before the channel reduction.

    ``maps = reduce(ideal_lowpass(base(x), sigma))``. The base explainer must return ``(B, C, *spatial)``
    attributions (e.g. ``VanillaGrad(model)``, ``SmoothGrad(model)``, ``IntegratedGradients(model)`` with
    ``reduce="none"``); a ``(B, 1, *spatial)`` map is filtered as is (filtering after a non-linear reduction
    such as ``abs_sum`` is not the method's definition: reduce inside FORGrad instead).

    Args:
        explainer: an :class:`Explainer` (its ``model`` is used for calibration) or a callable
            ``(x, class_idx) -> (B, C, *sp)``; for a plain callable give ``nn_module``.
        sigma: cut-off radius in frequency bins (> 0); ``>= max(spatial size)`` means no filtering.
        reduce: channel reduction after filtering (``"none"``, ``"abs_sum"``, ``"l2"``, ``"mean"``, ``"max_abs"``).
        normalize: min-max normalise each item to [0, 1] after the reduction (default False).
        nn_module: the model, when ``explainer`` is not an :class:`Explainer`.

    Raises:
        ValueError: for ``sigma <= 0`` or an unknown reduction.
        TypeError: if the model cannot be determined.
    """

    def __init__(
        self,
        explainer: Explainer | Callable[..., torch.Tensor],
        sigma: float = 16.0,
        reduce: str = "none",
        normalize: bool = False,
        nn_module: nn.Module | None = None,
    ) -> None:
        model = nn_module if nn_module is not None else getattr(explainer, "model", None)
        if not isinstance(model, nn.Module):
            raise TypeError("FORGrad needs the model: pass an Explainer or nn_module=...")
        super().__init__(model)
        if not callable(explainer):
            raise TypeError(f"explainer must be callable, got {type(explainer).__name__}.")
        self.base = explainer
        self.sigma = check_cutoff(sigma)
        reduce_channels(torch.zeros(1, 1, 1), reduce)
        self.reduce = reduce
        self.normalize = normalize

    def shared_source(self) -> tuple[Hashable, Explainer] | None:
        return wrapped_source(self.base)

    def base_maps(self, x: torch.Tensor, class_idx: Any = None, base_map: torch.Tensor | None = None) -> torch.Tensor:
        """Base explainer's map for a validated plain tensor (no metadata), or ``base_map`` if given."""
        return wrapped_base_map(self.base, x, class_idx, base_map)

    def filter(self, maps: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """Low-pass ``maps`` ``(B, C, *sp)`` with radius ``sigma`` (default ``self.sigma``), then reduce/normalise."""
        sig = self.sigma if sigma is None else check_cutoff(sigma)
        out = reduce_channels(ideal_lowpass(maps, sig), self.reduce)
        return minmax_normalize(out) if self.normalize else out

    def explain(self, x: torch.Tensor, class_idx: Any = None, base_map: torch.Tensor | None = None) -> torch.Tensor:
        return self.filter(self.base_maps(x, class_idx, base_map))

    def calibrate(
        self,
        data: Any,
        sigmas: Sequence[float] | None = None,
        metric: MetricFn | None = None,
        apply: bool = True,
        n_steps: int = 16,
        batch_size: int = 64,
        target: Any = None,
    ) -> CalibrationResult:
        """Pick ``sigma*`` maximising a faithfulness score on held-out data; return the whole curve.

        The base map of each batch is computed once; each radius only re-filters it. Without ``target``, the
        explained class is the label when the data provides one, else the model's argmax; with ``target`` (any
        model: a segmentation region, a regression unit, a callable), it is bound to each clean batch and the
        data's labels are not used (a segmentation batch's ``"label"`` is a mask, not a class). The model runs
        in eval mode throughout (its sub-modules' flags are restored afterwards), as in every explanation.

        Args:
            data: a tensor ``(B, C, *sp)``, an ``(images, labels)`` pair, a dict batch with ``"image"``
                (and ``"label"``), or an iterable / DataLoader yielding any of those.
            sigmas: radii to try; default :func:`default_sigmas` of the first batch's spatial shape
                (1 bin ... max size = no filtering).
            metric: ``metric(model, x, saliency (B,1|C,*sp), class_idx) -> (B,)`` scores, higher is better, where
                ``class_idx`` is the ``(B,)`` class indices, or the bound target when ``target`` is not a class
                target; default :func:`insertion_deletion_score` (the minimal internal insertion − deletion AUC,
                on the target's probability when it has one, else on its score).
            apply: set ``self.sigma`` to the best radius.
            n_steps: perturbation steps of the default metric.
            batch_size: model inputs per forward pass of the default metric.
            target: what is explained, as every explainer and metric takes it
                (:mod:`~monai_saliency.core.targets`: ``ClassTarget``, ``RegionTarget``, ``RegressionTarget``, a
                callable ``output -> (B,)``, or class indices); None uses the labels or the argmax.

        Returns:
            :class:`CalibrationResult` with every radius's mean score and per-item scores.

        Raises:
            ValueError: for empty data, non-positive radii, or a metric returning the wrong shape / NaN.
        """
        sig_list = None if sigmas is None else sorted(check_cutoff(s) for s in sigmas)
        if sig_list is not None and not sig_list:
            raise ValueError("give at least one sigma.")
        # as in __call__: no BatchNorm update, no dropout while scoring; half precision computed in float32
        with evaluation_mode(self.model), model_input_dtype(self.model):
            per_batch, sig_list = self._calibration_scores(data, sig_list, metric, n_steps, batch_size, target)
        if not per_batch:
            raise ValueError("calibrate got no data.")
        per_item = torch.cat(per_batch, dim=1)
        means = per_item.mean(1)
        best = int(means.argmax())
        result = CalibrationResult(
            sigmas=list(sig_list),
            scores=means.tolist(),
            per_item=per_item,
            best_sigma=sig_list[best],
            best_score=float(means[best]),
        )
        if apply:
            self.sigma = result.best_sigma
        return result

    def _calibration_scores(
        self,
        data: Any,
        sig_list: list[float] | None,
        metric: MetricFn | None,
        n_steps: int,
        batch_size: int,
        target: Any = None,
    ) -> tuple[list[torch.Tensor], list[float]]:
        """Scores ``(len(sigmas), B)`` of every batch of ``data`` and the radii tried (see :meth:`calibrate`)."""
        per_batch: list[torch.Tensor] = []
        for x_raw, labels in _iter_batches(data):
            x = working_tensor(check_input(x_raw, self.spatial_dims))
            if sig_list is None:
                sig_list = default_sigmas(x.shape[2:])
            if target is None:
                with torch.no_grad():
                    idx = select_class(model_logits(self.model(x)), None if labels is None else _as_index(labels, x))
                maps = self.base_maps(x, idx)
            else:  # bound once on the clean batch; a class target hands its indices to the base and a custom metric
                bound = resolve_target(self.model, x, target)
                maps = self.base_maps(x, explainer_target(bound))
                idx = bound if metric is None else explainer_target(bound)
            scores = []
            for sig in sig_list:  # loop over the hyper-parameter grid
                sal = self.filter(maps, sig)
                if metric is None:
                    val = insertion_deletion_score(self.model, x, sal, idx, n_steps=n_steps, batch_size=batch_size)
                else:
                    val = torch.as_tensor(metric(self.model, x, sal, idx)).reshape(-1)
                    if val.numel() != x.shape[0] or not torch.isfinite(val).all():
                        raise ValueError(
                            f"metric must return {x.shape[0]} finite scores per batch, got shape {tuple(val.shape)}."
                        )
                scores.append(val.detach().to(torch.float64).cpu())
            per_batch.append(torch.stack(scores))
        return per_batch, sig_list


def _as_index(labels: Any, x: torch.Tensor) -> torch.Tensor:
    """Class indices from labels: ints, (B,) or (B, 1) tensors, or one-hot (B, K)."""
    lab = torch.as_tensor(labels, device=x.device)
    if lab.ndim == 2 and lab.shape[1] > 1:
        lab = lab.argmax(1)
    return lab.reshape(-1).long()
