"""Clinical-size synthetic coronary angiogram cines: moving vessels, a contrast bolus, detector noise and bit depth.

The stylised generator :mod:`monai_saliency.data.synthetic.angiogram` (static 64 x 64 cines, thick vessels) made a
CPU-trainable task; this one makes cines that look and behave like a clinical XA run at any size (512 x 512 and
1024 x 1024 at 15 frames/s for 3-5 s; 128 x 128 for training), sharing that module's tree geometry, lesion
grading and placement, anatomy (heart shadow, diaphragm, ribs) and catheter path:

* **Geometry and projection.** Two coronary trees leave one ostium (a left main splitting into two 7-segment
  trees, e.g. LAD and circumflex, whose branches cross in projection); each segment leaves the image plane by an
  elevation angle (up to 55 degrees), so it is *foreshortened* (its projected length shrinks by ``cos``) and looks
  denser (the ray's chord through the oblique tube grows by ``1 / cos``). Vessel radii are ~4.5 % of the image
  side at the ostium: about twice a left main's radius in a 150 mm field of view, a concession that keeps moderate
  lesions learnable by a small CNN at the 128 x 128 network input (at 2.8 % it stayed at chance within the CPU
  training budget). Overlapping vessels *add* attenuation (each tree is the
  union of its discs, the trees and the catheter are summed along the ray), so crossings are darker.
* **Cardiac motion.** Every vessel point moves with a periodic deformation at the heart rate (55-85 beats/min,
  ~1 Hz): contraction towards a heart centre, a twist and a translation, weighted by a smooth systolic profile
  ``(1 - cos(2 pi f t + phase)) / 2``; the catheter follows near its tip. Lesion centres and boxes move with it
  (per frame).
* **Contrast bolus.** A gamma-variate time-intensity curve ``((t - t0) / tp)^a exp(a (1 - (t - t0) / tp))``
  (peak 1 at ``t0 + tp``) fills the tree with a delay proportional to the path length from the ostium: wash-in,
  peak opacification around 30-50 % of the run, wash-out by its end (the curve is scaled to the run's duration, so
  short test cines show it too). The catheter holds contrast in proportion to the curve at the ostium.
* **Detector.** Beer-Lambert transmission ``I = exp(-mu)``, then *Poisson-Gaussian* noise: detected quanta
  ``Poisson(N0 * I)`` with ``N0 = dose * 1000 * (512 / side)^2`` per pixel (a fixed field of view: a pixel's
  quanta scale with its area, so a 128 x 128 cine matches a 512 x 512 one averaged over 4 x 4 pixels), an
  electronic Gaussian of ``electronic_noise * side / 512`` digital units, a linear gain to ``bits``-bit integers
  (offset 64, unattenuated path at 90 % of the range), clipped and rounded. Stored values ``v`` therefore have
  ``var(v) = gain_per_quantum * (E[v] - offset) + sigma_e^2`` (the Poisson-Gaussian model), vessels dark
  (MONOCHROME2), as :func:`monai_saliency.data.dicom.xa_writer.write_xa_cine` stores integers.

Stenoses are graded as in the stylised generator (:data:`~monai_saliency.data.synthetic.angiogram.GRADE_RANGES`,
diameter reduction at the lesion centre), on the trunk or a main branch of the first tree; the label is "has a
moderate-or-severe lesion".

Memory and time: rendering splats each axis point onto a disc of pixels around it (``scatter_reduce`` amax,
vectorised over cases, frames and points in chunks of at most ``_CHUNK_ELEMENTS``), never a point x pixel product
over the whole image; frames are processed in chunks of ``_FRAME_CHUNK_PIXELS`` pixels. A 512 x 512 x 48 cine takes
a few seconds on one thread, and a 1024 x 1024 x 30 cine stays well below 1 GB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from monai_saliency.data.synthetic.angiogram import (
    GRADES,
    AngiogramBatch,
    _anatomy,
    _catheter_path,
    _check_size,
    _place_lesions,
    _sample_grades,
    _tree_geometry,
    _u,
)

__all__ = [
    "CLINICAL_SIZES",
    "ClinicalAngiogramBatch",
    "bolus_curve",
    "cardiac_weight",
    "make_clinical_angiogram",
    "make_clinical_angiogram_dataset",
]

CLINICAL_SIZES: dict[str, tuple[tuple[int, int], int]] = {"512": ((512, 512), 48), "1024": ((1024, 1024), 30)}
"""Named clinical cine sizes: ``(frame shape, frames)``."""

REFERENCE_SIDE = 512
"""Image side at which ``dose=1`` gives ``QUANTA_PER_PIXEL`` quanta per unattenuated pixel (fixed field of view)."""
QUANTA_PER_PIXEL = 1000.0
OFFSET = 64.0  # detector dark offset, digital units
_ROOT_RADIUS = 0.045  # trunk radius / image side (the stylised generator uses ~0.08)
_CATHETER_RADIUS = 0.007
_MAX_ELEVATION = 0.96  # rad (55 degrees): at most 1.74 x foreshortening of the chord
_CHUNK_ELEMENTS = 1 << 20  # point x window-pixel pairs per splatting step (~50 MB of temporaries)
_FRAME_CHUNK_PIXELS = 1 << 21  # frame pixels per compositing step (~8 MB per float temporary)


@dataclass
class ClinicalAngiogramBatch(AngiogramBatch):
    """A batch of clinical-size synthetic angiogram cines and their ground truth (per frame where things move).

    The fields of :class:`~monai_saliency.data.synthetic.angiogram.AngiogramBatch`, with a frame axis on the vessel
    mask, boxes and centres, integer cines, and the acquisition's parameters.

    Attributes:
        cine: ``(N, T, H, W)`` uint16 stored detector values in ``[0, 2**bits - 1]``, vessels dark.
        bits: detector bit depth (BitsStored).
        vessel_mask: ``(N, T, H, W)`` bool, pixels inside a vessel lumen in that frame (catheter excluded).
        labels: ``(N,)`` long, 1 if the case has a moderate or severe lesion.
        grades: ``(N, L)`` long grade codes (index into :data:`GRADES`), ``-1`` for an empty slot.
        stenosis: ``(N, L)`` float32 diameter reduction at the lesion centre (0 for empty slots).
        boxes: ``(N, L, T, 4)`` float32 half-open pixel boxes ``(y0, x0, y1, x1)`` per frame (zeros if empty).
        centers: ``(N, L, T, 2)`` float32 lesion centres ``(y, x)`` per frame.
        reference_radius: ``(N, L)`` float32 lumen radius (pixels) without the lesion at its centre.
        segment: ``(N, L)`` long tree segment (0 trunk, 1-2 main branches) of each lesion, -1 if empty.
        contrast: ``(N, T)`` float32 bolus curve at the ostium (peak 1).
        cardiac: ``(N, T)`` float32 systolic weight in [0, 1] of each frame (0 = end-diastole).
        heart_rate_bpm: ``(N,)`` float32.
        quanta_per_pixel: mean detected quanta per pixel behind an unattenuated path.
        gain: digital units per detected quantum; electronic_sigma: electronic noise (digital units).
        frame_time_ms: time between frames in milliseconds.
        seed: the generator seed.
    """

    bits: int
    contrast: torch.Tensor
    cardiac: torch.Tensor
    heart_rate_bpm: torch.Tensor
    quanta_per_pixel: float
    gain: float
    electronic_sigma: float

    def display(self) -> torch.Tensor:
        """``(N, T, H, W)`` float32 in [0, 1]: stored values / ``2**bits - 1``, as the bundle reads XA DICOM."""
        return self.cine.float() / float((1 << self.bits) - 1)

    def case(self, i: int) -> dict[str, Any]:
        """One case: ``cine (T,H,W)`` uint16, ``vessel_mask (T,H,W)``, ``label``, ``bits``, ``frame_time_ms`` and
        ``lesions``, a list of ``{"grade", "stenosis", "boxes" (T x 4 ints), "centers" (T x 2), "segment"}``."""
        active = [k for k in range(self.grades.shape[1]) if int(self.grades[i, k]) >= 0]  # <= 2 lesion slots
        lesions = [
            {
                "grade": GRADES[int(self.grades[i, k])],
                "stenosis": float(self.stenosis[i, k]),
                "boxes": self.boxes[i, k].long().tolist(),
                "centers": self.centers[i, k].tolist(),
                "reference_radius": float(self.reference_radius[i, k]),
                "segment": int(self.segment[i, k]),
            }
            for k in active
        ]
        case = {"cine": self.cine[i], "vessel_mask": self.vessel_mask[i], "label": int(self.labels[i])}
        return dict(case, lesions=lesions, bits=self.bits, frame_time_ms=self.frame_time_ms)

    def lesion_masks(self) -> torch.Tensor:
        """``(N, L, T, H, W)`` bool masks of the per-frame lesion boxes (all False for empty slots)."""
        h, w = self.cine.shape[-2:]
        yy = torch.arange(h).view(1, 1, 1, h, 1)
        xx = torch.arange(w).view(1, 1, 1, 1, w)
        b = self.boxes[..., None, None]
        inside = (yy >= b[..., 0, :, :]) & (yy < b[..., 2, :, :]) & (xx >= b[..., 1, :, :]) & (xx < b[..., 3, :, :])
        return inside & (self.grades >= 0).view(*self.grades.shape, 1, 1, 1)


def bolus_curve(t: torch.Tensor, t0: torch.Tensor, tp: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Gamma-variate contrast time-intensity curve, 0 before ``t0`` and peak 1 at ``t0 + tp``.

    Args:
        t: times (any shape broadcastable with the others), same unit as ``t0`` and ``tp``.
        t0: arrival time; tp: time from arrival to peak (> 0); alpha: shape (> 0; larger = sharper bolus).

    Returns:
        ``(tau / tp)^alpha * exp(alpha * (1 - tau / tp))`` with ``tau = max(t - t0, 0)``.
    """
    x = ((t - t0) / tp).clamp(min=0.0)
    return torch.where(x > 0, torch.exp(alpha * (torch.log(x.clamp(min=1e-12)) + 1.0 - x)), torch.zeros_like(x))


def cardiac_weight(t_s: torch.Tensor, rate_hz: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Systolic weight ``(1 - cos(2 pi (f t + phase))) / 2`` in [0, 1]: periodic with period ``1 / f`` seconds."""
    return 0.5 * (1.0 - torch.cos(2.0 * math.pi * (rate_hz * t_s + phase)))


def _splat(
    pts: torch.Tensor, radius: torch.Tensor, attrs: Sequence[torch.Tensor], h: int, w: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Chord length through the union of discs, and attributes of the thickest disc, by splatting each point.

    Every axis point is written onto the pixels of a disc around it (``scatter_reduce`` amax), so the cost is
    points x disc area, not points x image pixels.

    Args:
        pts: ``(B, M, 2)`` axis points ``(y, x)``; radius: ``(B, M)``; attrs: ``(B, M)`` non-negative tensors.

    Returns:
        ``(chord (B, H, W), [attr at the thickest disc (B, H, W), ...])`` (0 outside every disc).
    """
    b, m = pts.shape[:2]
    reach = math.ceil(float(radius.max())) + 1
    off = torch.arange(-reach, reach + 1)
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    keep = oy**2 + ox**2 <= (reach + 1) ** 2
    oy, ox = oy[keep], ox[keep]  # (K,) window offsets, a disc
    hw = h * w
    base = pts.round().long()
    r2 = radius**2
    bidx = (torch.arange(b) * hw).view(b, 1, 1)
    step = max(1, _CHUNK_ELEMENTS // max(1, b * oy.numel()))

    def chunks() -> Any:
        for j in range(0, m, step):  # chunks of axis points, vectorised over B and the window
            py = base[:, j : j + step, 0, None] + oy
            px = base[:, j : j + step, 1, None] + ox
            dy = py - pts[:, j : j + step, 0, None]
            dx = px - pts[:, j : j + step, 1, None]
            c2 = (r2[:, j : j + step, None] - dy * dy - dx * dx).clamp(min=0.0)
            inside = (py >= 0) & (py < h) & (px >= 0) & (px < w)
            yield j, torch.where(inside, bidx + py * w + px, b * hw).reshape(-1), c2.reshape(-1)

    c2_out = torch.zeros(b * hw + 1)  # last slot: out-of-image pixels
    for _, idx, c2 in chunks():
        c2_out.scatter_reduce_(0, idx, c2, "amax")
    outs = [torch.zeros(b * hw + 1) for _ in attrs]
    for j, idx, c2 in chunks():  # second pass: attributes of the winning (thickest) disc
        win = (c2 > 0) & (c2 >= c2_out[idx])
        for out, attr in zip(outs, attrs, strict=True):
            val = attr[:, j : j + step, None].expand(-1, -1, oy.numel()).reshape(-1)
            out.scatter_reduce_(0, idx, torch.where(win, val, 0.0), "amax")
    chord = 2.0 * c2_out[:-1].sqrt().view(b, h, w)
    return chord, [o[:-1].view(b, h, w) for o in outs]


def _displacement(
    p: torch.Tensor,
    centre: torch.Tensor,
    motion: dict[str, torch.Tensor],
    wt: torch.Tensor,
    s: float,
    per_frame: bool = False,
) -> torch.Tensor:
    """Cardiac displacement ``(n, T, ..., 2)`` of points ``p (n, ..., 2)`` at systolic weights ``wt (n, T)``.

    Contraction by ``contract * wt`` towards ``centre``, a twist by ``twist * wt`` radians about it, a translation
    ``shift * s * wt`` and a smooth non-rigid ripple of amplitude ``ripple * s * wt``; all per case. With
    ``per_frame``, ``p`` already has the frame axis: ``(n, T, ..., 2)``.
    """
    n, t = wt.shape
    if not per_frame:
        p = p[:, None]
    extra = p.ndim - 3
    view = (n,) + (1,) * (extra + 1)
    wt = wt.view((n, t) + (1,) * extra)
    rel = p - centre.view((n, 1) + (1,) * extra + (2,))  # (n, T or 1, ..., 2)
    ang = motion["twist"].view(view) * wt
    scale = 1.0 - motion["contract"].view(view) * wt
    cos, sin = torch.cos(ang), torch.sin(ang)
    ry, rx = rel[..., 0], rel[..., 1]
    ripple = motion["ripple"].view(view) * s * wt
    dy = (ry * cos + rx * sin) * scale - ry + motion["shift"][:, 0].view(view) * s * wt
    dx = (rx * cos - ry * sin) * scale - rx + motion["shift"][:, 1].view(view) * s * wt
    dy = dy + ripple * torch.sin(2 * math.pi * motion["freq"][:, 1].view(view) * p[..., 1] / s)
    dx = dx + ripple * torch.sin(2 * math.pi * motion["freq"][:, 0].view(view) * p[..., 0] / s)
    return torch.stack([dy, dx], -1)


def _warp(img: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``img (B, C, H, W)`` at pixel positions ``where (B, H, W, 2)`` ``(y, x)``; 0 outside."""
    h, w = img.shape[-2:]
    gy = where[..., 0] * (2.0 / max(h - 1, 1)) - 1.0
    gx = where[..., 1] * (2.0 / max(w - 1, 1)) - 1.0
    return F.grid_sample(img, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros", align_corners=True)


def _rotate_tree(geo: dict[str, torch.Tensor], ostium: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Points of ``geo`` rotated by ``angle (n,)`` about their own ostium and moved to ``ostium (n, 2)``."""
    rel = geo["pts"] - geo["ostium"].view(-1, 1, 1, 2)
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    # (dy, dx) = L (sin a, cos a): adding `angle` to a
    dy = rel[..., 0] * cos + rel[..., 1] * sin
    dx = rel[..., 1] * cos - rel[..., 0] * sin
    return torch.stack([dy, dx], -1) + ostium.view(-1, 1, 1, 2)


def make_clinical_angiogram_dataset(
    n: int,
    shape: Sequence[int] = (512, 512),
    frames: int = 48,
    seed: int = 0,
    grades: Sequence[str] | None = None,
    scenarios: Sequence[tuple[Sequence[str], float]] | None = None,
    frame_rate: float = 15.0,
    motion: float = 1.0,
    dose: float = 1.0,
    electronic_noise: float = 4.0,
    bits: int = 12,
    noise: bool = True,
    exact_poisson: bool = False,
) -> ClinicalAngiogramBatch:
    """Generate ``n`` clinical-like angiogram cines with graded stenoses, deterministically (see the module doc).

    Args:
        n: number of cases.
        shape: ``(H, W)``, both sides >= 64 (128 x 128 for training, 512 x 512 or 1024 x 1024 clinical).
        frames: ``T`` (>= 4); 45-75 frames at 15 frames/s are 3-5 s, a typical coronary run.
        seed: generator seed; the same arguments give identical data.
        grades, scenarios: lesion configurations, as in
            :func:`~monai_saliency.data.synthetic.angiogram.make_angiogram_dataset`.
        frame_rate: frames per second.
        motion: scale of the cardiac motion (0 = static vessels, 1 = ~5 % of the side at the tree's far end).
        dose: scale of the detected quanta (``1000 * (512 / side)^2`` per unattenuated pixel at 1).
        electronic_noise: electronic (Gaussian) noise in digital units at 512 x 512 (scaled by ``side / 512``).
        bits: detector bit depth, 8 to 16 (values in ``[0, 2**bits - 1]``, stored as uint16).
        noise: False gives the noiseless expected values (rounded), e.g. to measure geometry.
        exact_poisson: draw the quanta from ``torch.poisson`` (~10 x slower) instead of the heteroskedastic normal
            approximation of the Poisson-Gaussian model (same mean and variance; the quanta per pixel are >= ~25
            even behind the densest vessel at 1024 x 1024, where the approximation is close).

    Returns:
        A :class:`ClinicalAngiogramBatch`.

    Raises:
        ValueError: for ``n < 1``, too small a shape or frame count, a non-positive rate or dose, a negative motion
            or noise, a bit depth outside 8-16, or invalid lesion scenarios.
    """
    h, w = _check_size(n, shape, frames, min_side=64)
    if not (frame_rate > 0 and dose > 0 and motion >= 0 and electronic_noise >= 0):
        raise ValueError(
            f"need frame_rate > 0, dose > 0, motion >= 0 and electronic_noise >= 0, got {frame_rate}, {dose}, "
            f"{motion}, {electronic_noise}."
        )
    if not 8 <= bits <= 16:
        raise ValueError(f"bits must be in 8..16, got {bits}.")
    s = float(min(h, w))
    g = torch.Generator().manual_seed(int(seed))
    grade_codes = _sample_grades(n, scenarios, grades, g)
    spacing = max(0.4, 0.05 * _ROOT_RADIUS * s)  # axis points closer than a severe lesion's residual radius
    trees, chord_scale = [], []
    for _ in range(2):  # two trees from one ostium (e.g. LAD and circumflex), vectorised over cases
        cos_el = torch.cos(_u(g, (n, 7), 0.0, _MAX_ELEVATION))
        geo = _tree_geometry(n, h, w, frames, g, spacing=spacing, foreshorten=cos_el)
        geo["radius"] = geo["radius"] * (_ROOT_RADIUS / 0.08)
        trees.append(geo)
        chord_scale.append((1.0 / cos_el)[..., None].expand(geo["radius"].shape))
    les = _place_lesions(trees[0], grade_codes, h, w, g)
    trees[0] = les["geo"]
    side = trees[0]["side"]
    turn = trees[0]["theta0"] + side * _u(g, n, 1.1, 1.8) - trees[1]["theta0"]
    trees[1]["pts"] = _rotate_tree(trees[1], trees[0]["ostium"], turn)
    trees[1]["radius"] = trees[1]["radius"] * 0.9
    ostium = trees[0]["ostium"]
    mu_bg = _anatomy(n, h, w, g)
    cath = _catheter_path(n, h, w, g, trees[0], spacing=max(0.4, 0.5 * _CATHETER_RADIUS * s))
    # motion (per case): heart centre below-beside the ostium, ~1 Hz
    rate = _u(g, n, 55.0, 85.0) / 60.0
    phase = _u(g, n, 0.0, 1.0)
    allp = torch.cat([t["pts"].reshape(n, -1, 2) for t in trees], 1)
    centre = allp.mean(1) + torch.stack([_u(g, n, 0.0, 0.1), _u(g, n, -0.05, 0.05)], -1) * s
    mot = {
        "contract": motion * _u(g, n, 0.06, 0.10),
        "twist": motion * side * _u(g, n, 0.04, 0.08),
        "shift": motion * torch.stack([_u(g, n, 0.01, 0.03), _u(g, n, -0.02, 0.02)], -1),
        "ripple": motion * _u(g, n, 0.004, 0.008),
        "freq": _u(g, (n, 2), 0.8, 1.6),
    }
    t_s = torch.arange(frames, dtype=torch.float32) / frame_rate
    wt = cardiac_weight(t_s[None], rate[:, None], phase[:, None])  # (n, T)
    # bolus (scaled to the run): arrival, time to peak, shape; fill delay along the tree
    dur = frames / frame_rate
    t0 = _u(g, (n, 1), 0.05, 0.15) * dur
    tp = _u(g, (n, 1), 0.25, 0.35) * dur
    alpha = _u(g, (n, 1), 2.5, 4.0)
    fill = _u(g, (n, 1, 1), 0.12, 0.2) * dur  # time for the dye to reach the farthest point
    contrast = bolus_curve(t_s[None], t0, tp, alpha)  # (n, T) at the ostium
    mu_v = _u(g, (n, 1, 1, 1), 0.45, 0.7) / (2 * _ROOT_RADIUS * s)  # per pixel of chord: ~0.45-0.7 at the trunk
    mu_cath = _u(g, (n, 1, 1, 1), 0.5, 0.8) / (2 * _CATHETER_RADIUS * s)
    n0 = dose * QUANTA_PER_PIXEL * (REFERENCE_SIDE / s) ** 2
    top = float((1 << bits) - 1)
    gain_i = 0.9 * (top - OFFSET)  # digital units of an unattenuated pixel above the offset
    sigma_e = electronic_noise * s / REFERENCE_SIDE * (top / 4095.0)
    # static render (reference phase): per tree the chord x foreshortening, the dye's arrival delay, the lumen
    vessel_atten = torch.zeros(n, h, w)
    arrival = torch.zeros(n, h, w)
    lumen = torch.zeros(n, h, w, dtype=torch.bool)
    for tree, cs in zip(trees, chord_scale, strict=True):  # two trees, summed along the ray where they overlap
        m = tree["pts"].shape[1] * tree["pts"].shape[2]
        delay = tree["path"] / tree["path"].amax((1, 2), keepdim=True).clamp(min=1e-6)
        chord, (scale, delay_px) = _splat(
            tree["pts"].reshape(n, m, 2), tree["radius"].reshape(n, m), [cs.reshape(n, m), delay.reshape(n, m)], h, w
        )
        inside = chord > 0
        # where the trees overlap, the delay of the denser one
        arrival = torch.where(inside & (~lumen | (chord * scale > vessel_atten)), delay_px, arrival)
        vessel_atten = vessel_atten + chord * scale
        lumen |= inside
    vessel_atten = vessel_atten * mu_v[:, 0]
    arrival = t0[..., None] + arrival * fill[..., 0, None]  # (n, H, W) seconds
    cath_chord, _ = _splat(cath, torch.full(cath.shape[:2], _CATHETER_RADIUS * s + 0.3), [], h, w)
    cath_atten = cath_chord * mu_cath[:, 0]
    # lesions: per-frame centres (forward motion, the fixed point of the backward warp) and boxes
    centers = les["centers"][:, None].expand(n, frames, -1, 2)
    for _ in range(6):  # fixed-point iteration c_t = c + D_t(c_t); D is a small smooth displacement
        centers = les["centers"][:, None] + _displacement(centers, centre, mot, wt, s, per_frame=True)
    centers = centers.permute(0, 2, 1, 3)  # (n, L, T, 2)
    half = les["half"][..., None]
    active = (grade_codes >= 0)[..., None, None]
    boxes = torch.stack(
        [
            (centers[..., 0] - half).floor().clamp(0, h),
            (centers[..., 1] - half).floor().clamp(0, w),
            ((centers[..., 0] + half).ceil() + 1).clamp(0, h),
            ((centers[..., 1] + half).ceil() + 1).clamp(0, w),
        ],
        -1,
    )
    boxes = torch.where(active, boxes, 0.0)
    centers = torch.where(active, centers, 0.0)

    cine = torch.empty(n, frames, h, w, dtype=torch.uint16)
    vessel = torch.empty(n, frames, h, w, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    grid = torch.stack([yy, xx], -1)  # (H, W, 2) as (y, x)
    # the catheter's tip follows the heart, its shaft stays: the field fades with the distance from the ostium
    fade = torch.exp(-((grid[None] - ostium.view(n, 1, 1, 2)) ** 2).sum(-1) / (2 * (0.15 * s) ** 2))
    tc = max(1, _FRAME_CHUNK_PIXELS // (n * h * w))  # frames per compositing step
    for f in range(0, frames, tc):  # chunks of frames, each vectorised over cases, frames and pixels
        k = min(tc, frames - f)
        w_k = wt[:, f : f + k]
        disp = _displacement(grid.expand(n, h, w, 2), centre, mot, w_k, s)  # (n, k, H, W, 2)
        opac = bolus_curve(
            t_s[f : f + k].view(1, k, 1, 1), arrival[:, None], tp[..., None, None], alpha[..., None, None]
        )
        ref = torch.stack([vessel_atten[:, None] * opac, lumen[:, None].float().expand(n, k, h, w)], 2)
        moved = _warp(ref.reshape(n * k, 2, h, w), grid - disp.reshape(n * k, h, w, 2))
        cmoved = _warp(
            cath_atten[:, None].expand(n, k, h, w).reshape(n * k, 1, h, w),
            grid - (disp * fade[:, None, ..., None]).reshape(n * k, h, w, 2),
        )
        del disp
        atten = mu_bg[:, None] + moved[:, 0].view(n, k, h, w)
        atten += cmoved[:, 0].view(n, k, h, w) * (0.3 + 0.7 * contrast[:, f : f + k, None, None])
        vessel[:, f : f + k] = moved[:, 1].view(n, k, h, w) > 0.5
        del moved, cmoved
        mean = torch.exp(-atten).mul_(gain_i).add_(OFFSET)  # expected value: offset + gain * quanta / n0
        del atten
        if noise:
            if exact_poisson:
                mean = OFFSET + torch.poisson((mean - OFFSET) * (n0 / gain_i), generator=g) * (gain_i / n0)
                mean += sigma_e * torch.randn(mean.shape, generator=g)
            else:  # heteroskedastic normal approximation: var = gain * (mean - offset) + sigma_e^2
                sd = ((mean - OFFSET) * (gain_i / n0) + sigma_e**2).sqrt_()
                mean += sd * torch.randn(mean.shape, generator=g)
        cine[:, f : f + k] = mean.round_().clamp_(0.0, top).to(torch.int32).to(torch.uint16)
    return ClinicalAngiogramBatch(
        cine=cine,
        bits=int(bits),
        vessel_mask=vessel,
        labels=(grade_codes >= 1).any(1).long(),
        grades=grade_codes,
        stenosis=les["stenosis"],
        boxes=boxes.float(),
        centers=centers.float(),
        reference_radius=les["reference_radius"],
        segment=les["segment"],
        contrast=contrast.float(),
        cardiac=wt.float(),
        heart_rate_bpm=(rate * 60.0).float(),
        quanta_per_pixel=float(n0),
        gain=float(gain_i / n0),
        electronic_sigma=float(sigma_e if noise else 0.0),
        frame_time_ms=1000.0 / float(frame_rate),
        seed=int(seed),
    )


def make_clinical_angiogram(
    seed: int = 0,
    grades: Sequence[str] | None = ("moderate",),
    shape: Sequence[int] = (512, 512),
    frames: int = 48,
    **kwargs: Any,
) -> dict[str, Any]:
    """One clinical-size case as a dict (see :meth:`ClinicalAngiogramBatch.case`).

    Args:
        seed: generator seed.
        grades: lesions of the case (``None`` samples the default scenarios, ``()`` for none).
        shape: ``(H, W)``.
        frames: ``T``.
        kwargs: further arguments of :func:`make_clinical_angiogram_dataset`.

    Returns:
        ``{"cine" (T,H,W) uint16, "vessel_mask" (T,H,W), "label", "lesions", "bits", "frame_time_ms"}``.
    """
    return make_clinical_angiogram_dataset(1, shape=shape, frames=frames, seed=seed, grades=grades, **kwargs).case(0)
