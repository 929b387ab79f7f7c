"""Dense lesion-box supervision of a classifier's feature map, for training only.

A cine-level label ("has a moderate-or-severe lesion") is a weak signal for a small network: it must find a
~20-pixel lesion in 8 x 128 x 128 pixels from one bit per cine. The synthetic generators know where the lesions
are (per-frame boxes), so during training a ``1 x 1 x 1`` convolution on a feature layer (``features.stage3`` of
:class:`~monai_saliency.models.video.VideoLesionNet`) predicts, per position and frame, whether the box of a lesion
of grade >= ``min_grade`` covers it; its binary cross-entropy (``pos_weight`` for the rare positive cells) is added
to the classification loss. The auxiliary head is not part of the network: it reads the layer through a forward
hook, so the trained network's ``state_dict`` is that of the plain classifier.

* :func:`box_target_grid`: the boxes' grades max-pooled onto the layer's grid (closed form, no pixel masks).
* :class:`BoxSupervision`: the head, the hook and the loss (used by
  :func:`monai_saliency.models.training.train_video_classifier`).
* :func:`lesion_crops`: small windows around the lesions (jittered) and on random vessel pixels, labelled "holds a
  lesion of grade >= ``min_grade``", to pre-train the same fully convolutional network as a lesion detector before
  the whole-cine training (on whole cines alone the cine-level label does not find the lesions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BoxSupervision", "box_target_grid", "lesion_crops"]


def box_target_grid(boxes: torch.Tensor, grades: torch.Tensor, shape: tuple[int, int], stride: int) -> torch.Tensor:
    """Per-frame cells of a ``stride`` grid labelled with the highest grade of the lesion boxes touching them.

    A cell holds ``1 + max grade code`` of the boxes that touch it (0 = no lesion box, 1 = mild, 2 = moderate,
    3 = severe with :data:`~monai_saliency.data.synthetic.angiogram.GRADES`): the boxes' pixel masks (pixel
    ``(y, x)`` is inside ``(y0, x0, y1, x1)`` if ``y0 <= y < y1`` and ``x0 <= x < x1``, as
    :meth:`~monai_saliency.data.synthetic.angiogram_clinical.ClinicalAngiogramBatch.lesion_masks`) max-pooled by
    ``stride`` x ``stride``, computed from the box edges.

    Args:
        boxes: ``(N, L, T, 4)`` half-open pixel boxes ``(y0, x0, y1, x1)`` per frame (or ``(N, L, 4)``: static).
        grades: ``(N, L)`` grade codes, ``-1`` for an empty slot.
        shape: ``(H, W)`` of the images the boxes live in (divisible by ``stride``).
        stride: pixels per grid cell along each axis.

    Returns:
        ``(N, T, H / stride, W / stride)`` uint8 grade codes + 1 (``T = 1`` for static boxes).

    Raises:
        ValueError: for mismatched shapes or an ``H, W`` not divisible by ``stride``.
    """
    if boxes.ndim == 3:
        boxes = boxes[:, :, None]
    if boxes.ndim != 4 or boxes.shape[-1] != 4 or tuple(grades.shape) != tuple(boxes.shape[:2]):
        raise ValueError(f"need boxes (N, L, T, 4) and grades (N, L), got {tuple(boxes.shape)}, {tuple(grades.shape)}.")
    h, w = shape
    if stride < 1 or h % stride or w % stride:
        raise ValueError(f"shape {shape} must be divisible by stride {stride} >= 1.")
    # integer pixel rows inside a box: ceil(y0) <= y <= ceil(y1) - 1; a cell i holds rows i*s .. i*s + s - 1
    lo, hi = torch.ceil(boxes[..., :2].float()), torch.ceil(boxes[..., 2:].float()) - 1  # (N, L, T, 2)

    def overlap(axis: int, cells: int) -> torch.Tensor:  # (N, L, T, cells)
        start = torch.arange(cells, dtype=torch.float32) * stride
        a, b = lo[..., axis, None], hi[..., axis, None]
        return (torch.maximum(a, start) <= torch.minimum(b, start + stride - 1)) & (a <= b)

    hit = overlap(0, h // stride)[..., :, None] & overlap(1, w // stride)[..., None, :]  # (N, L, T, h, w)
    code = (grades.clamp(min=-1) + 1).view(*grades.shape, 1, 1, 1)  # empty slots -> 0
    return (hit * code).amax(1).to(torch.uint8)


class BoxSupervision(nn.Module):
    """Auxiliary per-position lesion head on one layer of a classifier, attached by a forward hook.

    Args:
        model: the classifier (e.g. a :class:`~monai_saliency.models.video.VideoLesionNet`).
        layer: dotted name of the layer whose ``(B, C, T', h, w)`` output the head reads (``"features.stage3"``).
        channels: ``C`` of that output.
        weight: ``lambda``, the auxiliary loss weight relative to the classification cross-entropy.
        pos_weight: BCE weight of positive cells (``None``: set from the training targets by :meth:`fit_pos_weight`).
        min_grade: lowest grade code whose boxes are positive (1 = moderate).
        hard_weight: BCE weight of the cells of lower-grade boxes (e.g. mild lesions: the negatives that look most
            like positives); ``None`` = ``pos_weight``.

    Raises:
        ValueError: for an unknown layer or a negative weight.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        channels: int,
        weight: float = 1.0,
        pos_weight: float | None = None,
        min_grade: int = 1,
        hard_weight: float | None = None,
    ) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}.")
        modules = dict(model.named_modules())
        if layer not in modules:
            raise ValueError(f"no layer {layer!r} in {type(model).__name__}.")
        self.head = nn.Conv3d(channels, 1, 1)
        self.weight = float(weight)
        self.pos_weight = pos_weight
        self.min_grade = int(min_grade)
        self.hard_weight = hard_weight
        self._act: torch.Tensor | None = None
        self._handle = modules[layer].register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        self._act = output

    def fit_pos_weight(self, targets: torch.Tensor, cap: float = 100.0) -> float:
        """Set ``pos_weight`` to negatives / positives of ``targets`` (codes of :func:`box_target_grid`; at most
        ``cap``) if it is unset; return it."""
        if self.pos_weight is None:
            pos = float((targets > self.min_grade).sum())
            self.pos_weight = min(cap, (targets.numel() - pos) / max(pos, 1.0))
        return self.pos_weight

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        """``weight * BCE`` of the head on the layer's last output against ``target`` ``(B, T, h, w)``.

        ``target`` holds the codes of :func:`box_target_grid` (cells with a code > ``min_grade`` are positive, cells
        of lower-grade boxes weigh ``hard_weight``); a target on a finer time axis than the layer's (a temporal
        window) is max-pooled onto it.

        Raises:
            RuntimeError: if the model has not run since the last call.
        """
        if self._act is None:
            raise RuntimeError("run the model forward before BoxSupervision.loss().")
        logits = self.head(self._act)[:, 0]  # (B, T', h, w)
        self._act = None
        code = target.to(logits.dtype)
        if code.shape != logits.shape:
            code = F.adaptive_max_pool3d(code[:, None], logits.shape[1:])[:, 0]
        pos = code > self.min_grade
        pw = self.pos_weight if self.pos_weight is not None else 1.0
        hw = pw if self.hard_weight is None else self.hard_weight
        cell_weight = torch.where(pos, pw, torch.where(code > 0, hw, 1.0)).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, pos.to(logits.dtype), reduction="none")
        return self.weight * (cell_weight * bce).mean()

    def remove(self) -> None:
        """Detach the hook from the model (the model is then exactly the plain classifier again)."""
        self._handle.remove()


def lesion_crops(
    cines: torch.Tensor,
    boxes: torch.Tensor,
    grades: torch.Tensor,
    size: int = 32,
    background: int = 6,
    jitter: int = 8,
    quantile: float = 0.15,
    min_grade: int = 1,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``size`` x ``size`` windows (all frames) around every lesion and on random vessel pixels of each cine.

    A lesion window is centred on the lesion's box centre averaged over the frames, shifted by up to ``jitter``
    pixels per axis (uniform), and labelled 1 if the lesion's grade is >= ``min_grade``. Each cine also gives
    ``background`` windows centred on pixels among its darkest ``quantile`` (minimum over frames: opacified vessels,
    the catheter, rib edges) more than ``size * 3 / 4`` pixels from every lesion centre, labelled 0. Windows reaching
    outside the image are padded with the cine's mean. Vectorised over cines and windows.

    Args:
        cines: ``(N, T, H, W)`` display intensities, vessels dark.
        boxes: ``(N, L, T, 4)`` lesion boxes ``(y0, x0, y1, x1)`` per frame; grades: ``(N, L)``, ``-1`` = empty.
        size: window side (pixels); background: background windows per cine; jitter: maximal lesion-window shift.
        quantile: fraction of darkest pixels the background centres are drawn from.
        min_grade: lowest grade code labelled positive (1 = moderate).
        seed: seed of the jitter and the background draws.

    Returns:
        ``(windows (K, T, size, size), labels (K,) long, centres (K, 3) long)``: the lesion windows (cine-major),
        then the background windows; ``centres`` holds each window's ``(cine, y, x)``, the image pixel at its
        ``(size // 2, size // 2)``.

    Raises:
        ValueError: for mismatched shapes or non-positive sizes.
    """
    n, t, h, w = cines.shape
    if tuple(boxes.shape) != (n, grades.shape[1], t, 4) or grades.shape[0] != n or size < 1 or background < 0:
        raise ValueError(
            f"need cines (N, T, H, W), boxes (N, L, T, 4), grades (N, L), size >= 1 and background >= 0, got "
            f"{tuple(cines.shape)}, {tuple(boxes.shape)}, {tuple(grades.shape)}, {size}, {background}."
        )
    g = torch.Generator().manual_seed(seed)
    centre = ((boxes[..., :2] + boxes[..., 2:]) / 2).mean(2)  # (N, L, 2) (y, x)
    active = grades >= 0
    item, slot = active.nonzero(as_tuple=True)
    shift = torch.randint(-jitter, jitter + 1, (item.numel(), 2), generator=g)
    lim = torch.tensor([h - 1, w - 1])
    les_c = torch.minimum(torch.maximum(centre[item, slot].long() + shift, torch.zeros(2, dtype=torch.long)), lim)
    les_y = (grades[item, slot] >= min_grade).long()
    # background centres: darkest pixels of the temporal minimum, away from every lesion
    tmin = cines.amin(1).flatten(1)  # (N, H * W)
    dark = tmin <= torch.quantile(tmin, quantile, dim=1, keepdim=True)
    yy, xx = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
    dist2 = (yy.view(1, 1, -1) - centre[..., :1]) ** 2 + (xx.view(1, 1, -1) - centre[..., 1:]) ** 2  # (N, L, HW)
    far = (dist2 > (0.75 * size) ** 2) | ~active[..., None]
    weights = (dark & far.all(1)).float() + 1e-12  # never an all-zero row
    pick = torch.multinomial(weights, background, replacement=True, generator=g) if background else weights[:, :0]
    bg_item = torch.arange(n).repeat_interleave(background)
    bg_c = torch.stack([pick.flatten() // w, pick.flatten() % w], 1)
    centres = torch.cat([les_c, bg_c]).long()
    owner = torch.cat([item, bg_item])
    offs = torch.arange(size) - size // 2
    rows = (centres[:, 0, None] + offs).view(-1, 1, size, 1)
    cols = (centres[:, 1, None] + offs).view(-1, 1, 1, size)
    owner4 = owner.view(-1, 1, 1, 1)
    windows = cines[owner4, torch.arange(t).view(1, -1, 1, 1), rows.clamp(0, h - 1), cols.clamp(0, w - 1)]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # no padded copy of the cines: fill afterwards
    windows = torch.where(inside, windows, cines.mean((1, 2, 3))[owner4])
    labels = torch.cat([les_y, torch.zeros(n * background, dtype=torch.long)])
    return windows, labels, torch.cat([owner[:, None], centres], 1)
