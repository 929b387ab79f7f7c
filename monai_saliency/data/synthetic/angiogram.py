"""Synthetic coronary angiogram cines with graded stenoses: a video lesion task with a known answer.

Each case is a 2D projection of a coronary-like vessel tree (a trunk that branches twice, radius tapering by
generation) filled by contrast over ``T`` frames, on an X-ray-like background: smooth anatomy and a heart
shadow, rib bands (bone chords with cortical edges), a contrast-filled catheter entering from the image border to
the ostium, and quantum (Poisson-like) noise. Stenoses are graded by *diameter* reduction at the lesion centre
(the clinical convention): mild ``< 50 %``, moderate ``50-69 %``, severe ``>= 70 %``. The label is the paper's task
(seed 001, §4-§5): "has a moderate-or-severe lesion". Cases with a mild and a moderate lesion in different
branches exist (the paper's §5 scenario), as do mild-only negatives, so a classifier must judge the degree of
narrowing, not mere irregularity.

Image formation (Beer-Lambert): ``I = exp(-mu)`` with ``mu`` the background attenuation plus, for every tube, the
attenuation coefficient times the chord length ``2 sqrt(r^2 - d^2)`` through a cylinder of radius ``r`` at
distance ``d`` from its axis; contrast opacity rises along the tree with the dye's arrival time. Vessels are
therefore dark on a bright background, as in a displayed XA cine (MONOCHROME2). Geometry is static (no cardiac
motion), so one vessel mask and one set of lesion boxes hold for every frame. Sizes are stylised: vessels are
thick relative to the field of view (trunk radius ~8 % of the image side) and lesions sit on the trunk or the two
main branches, so that a small CNN can learn the task from a thousand 64 x 64 cines on a CPU.

Everything is vectorised over cases (rendering in chunks of at most ``_CHUNK_ELEMENTS`` point-pixel pairs); the
same ``(n, shape, frames, seed, scenarios)`` always gives the same data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from monai_saliency.data.synthetic.angiogram_anatomy import anatomy as _anatomy
from monai_saliency.data.synthetic.angiogram_anatomy import catheter_path as _catheter_path
from monai_saliency.data.synthetic.angiogram_anatomy import uniform as _u

__all__ = [
    "DEFAULT_SCENARIOS",
    "GRADES",
    "GRADE_RANGES",
    "AngiogramBatch",
    "grade_of_stenosis",
    "make_angiogram",
    "make_angiogram_dataset",
]

GRADES: tuple[str, ...] = ("mild", "moderate", "severe")
"""Grade names; a grade code is the index in this tuple (``-1`` = no lesion in that slot)."""

GRADE_RANGES: dict[str, tuple[float, float]] = {"mild": (0.10, 0.35), "moderate": (0.55, 0.69), "severe": (0.72, 0.90)}
"""Diameter-reduction ranges sampled for each grade. The clinical thresholds are 50 % and 70 %; the sampled
ranges leave small gaps around them so that a grade is unambiguous at the image resolution."""

DEFAULT_SCENARIOS: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 0.20),
    (("mild",), 0.20),
    (("mild", "mild"), 0.10),
    (("moderate",), 0.15),
    (("severe",), 0.15),
    (("mild", "moderate"), 0.12),
    (("mild", "severe"), 0.08),
)
"""``(grades, probability)`` pairs: half the cases are positive; 12 % hold a mild and a moderate lesion."""

MAX_LESIONS = 2
_CHUNK_ELEMENTS = 1 << 22  # point x pixel pairs per rendering chunk (~16 MB per float temporary)
_PARENT = (-1, 0, 0, 1, 1, 2, 2)  # segment tree: trunk, two main branches, four distal branches
_GENERATION = (0, 1, 1, 2, 2, 2, 2)
_LESION_SEGMENTS = 3  # lesions sit on the trunk or a main branch (proximal/mid disease)


def grade_of_stenosis(stenosis: torch.Tensor | float) -> torch.Tensor:
    """Grade code of a diameter reduction: 0 mild (< 0.5), 1 moderate (0.5-0.7), 2 severe (>= 0.7).

    Args:
        stenosis: diameter-reduction fraction(s) in [0, 1].

    Returns:
        Long tensor of grade codes, same shape as ``stenosis``.
    """
    s = torch.as_tensor(stenosis, dtype=torch.float32)
    return (s >= 0.5).long() + (s >= 0.7).long()


@dataclass
class AngiogramBatch:
    """A batch of synthetic angiogram cines and their ground truth.

    Attributes:
        cine: ``(N, T, H, W)`` float32 in [0, 1], vessels dark (displayed X-ray intensity).
        vessel_mask: ``(N, H, W)`` bool, pixels whose centre lies inside a vessel lumen (catheter excluded).
        labels: ``(N,)`` long, 1 if the case has a moderate or severe lesion.
        grades: ``(N, MAX_LESIONS)`` long grade codes (index into :data:`GRADES`), ``-1`` for an empty slot.
        stenosis: ``(N, MAX_LESIONS)`` float32 diameter reduction at the lesion centre (0 for empty slots).
        boxes: ``(N, MAX_LESIONS, 4)`` float32 half-open pixel boxes ``(y0, x0, y1, x1)`` (zeros for empty slots).
        centers: ``(N, MAX_LESIONS, 2)`` float32 lesion centres ``(y, x)`` in pixels, on the vessel axis.
        reference_radius: ``(N, MAX_LESIONS)`` float32 lumen radius (pixels) the vessel would have without the
            lesion, at its centre.
        segment: ``(N, MAX_LESIONS)`` long, tree segment (0 trunk, 1-2 main branches) of each lesion, -1 if empty.
        frame_time_ms: time between frames in milliseconds.
        seed: the generator seed.
    """

    cine: torch.Tensor
    vessel_mask: torch.Tensor
    labels: torch.Tensor
    grades: torch.Tensor
    stenosis: torch.Tensor
    boxes: torch.Tensor
    centers: torch.Tensor
    reference_radius: torch.Tensor
    segment: torch.Tensor
    frame_time_ms: float
    seed: int

    def __len__(self) -> int:
        return int(self.cine.shape[0])

    def case(self, i: int) -> dict[str, Any]:
        """One case as a dict: ``cine (T,H,W)``, ``vessel_mask (H,W)``, ``label`` (int) and ``lesions``, a list of
        ``{"grade", "stenosis", "box", "center", "reference_radius", "segment"}`` dicts (python scalars)."""
        lesions = []
        for k in range(self.grades.shape[1]):  # at most MAX_LESIONS slots of one case: metadata only
            g = int(self.grades[i, k])
            if g < 0:
                continue
            lesions.append(
                {
                    "grade": GRADES[g],
                    "stenosis": float(self.stenosis[i, k]),
                    "box": tuple(int(v) for v in self.boxes[i, k].tolist()),
                    "center": tuple(float(v) for v in self.centers[i, k].tolist()),
                    "reference_radius": float(self.reference_radius[i, k]),
                    "segment": int(self.segment[i, k]),
                }
            )
        return {
            "cine": self.cine[i],
            "vessel_mask": self.vessel_mask[i],
            "label": int(self.labels[i]),
            "lesions": lesions,
            "frame_time_ms": self.frame_time_ms,
        }

    def lesion_masks(self) -> torch.Tensor:
        """``(N, MAX_LESIONS, H, W)`` bool masks of the lesion boxes (all False for empty slots)."""
        h, w = self.cine.shape[-2:]
        yy = torch.arange(h).view(1, 1, h, 1)
        xx = torch.arange(w).view(1, 1, 1, w)
        b = self.boxes.view(*self.boxes.shape[:2], 4, 1, 1)
        inside = (yy >= b[:, :, 0]) & (yy < b[:, :, 2]) & (xx >= b[:, :, 1]) & (xx < b[:, :, 3])
        return inside & (self.grades >= 0).view(*self.grades.shape, 1, 1)


def _tree_geometry(
    n: int,
    h: int,
    w: int,
    frames: int,
    g: torch.Generator,
    spacing: float = 0.4,
    foreshorten: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Centre lines, radii and dye arrival times of the 7-segment tree for ``n`` cases (pixels / frames).

    Args:
        spacing: largest distance (pixels, in 3D) between axis points.
        foreshorten: optional ``(n, 7)`` factors in (0, 1] (cosine of each segment's elevation out of the image
            plane) shrinking the projected steps; ``lengths`` and ``path`` stay 3D arclengths.
    """
    s = float(min(h, w))
    nseg = len(_PARENT)
    length_rng = {0: (0.16, 0.22), 1: (0.24, 0.32), 2: (0.16, 0.24)}
    lengths = torch.stack([_u(g, n, *length_rng[_GENERATION[j]]) for j in range(nseg)], 1) * s  # (n, nseg)
    npts = math.ceil(float(lengths.max()) / spacing) + 1  # <= spacing px along the axis
    u = torch.linspace(0.0, 1.0, npts)
    bend = _u(g, (n, nseg), -0.45, 0.45)  # total change of direction along a segment (rad)
    split = _u(g, (n, nseg), 0.30, 0.65)  # branching half-angle
    side = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)  # mirror the tree left/right
    ostium = torch.stack([_u(g, n, 0.14, 0.24) * h, _u(g, n, 0.22, 0.34) * w], 1)
    ostium[:, 1] = torch.where(side > 0, ostium[:, 1], w - 1 - ostium[:, 1])
    # trunk heads down and towards the far side: angle measured from +x, y grows downwards
    theta0 = torch.where(side > 0, 0.0, math.pi) + side * _u(g, n, 0.55, 0.95)
    r_root = _u(g, n, 0.075, 0.085) * s
    pts = torch.zeros(n, nseg, npts, 2)
    radius = torch.zeros(n, nseg, npts)
    path = torch.zeros(n, nseg, npts)  # arclength from the ostium (pixels)
    end_angle = torch.zeros(n, nseg)
    for j in range(nseg):  # 7 tree segments, each vectorised over all cases
        p = _PARENT[j]
        if p < 0:
            start, angle0, r0, path0 = ostium, theta0, r_root, torch.zeros(n)
        else:
            sgn = 1.0 if j % 2 == 1 else -1.0
            start = pts[:, p, -1]
            angle0 = end_angle[:, p] + sgn * side * split[:, p]
            r0 = radius[:, p, -1] * _u(g, n, 0.74, 0.86)
            path0 = path[:, p, -1]
        angle = angle0[:, None] + bend[:, j, None] * u[None]
        step = lengths[:, j, None] / (npts - 1)
        if foreshorten is not None:
            step = step * foreshorten[:, j, None]
        d = torch.stack([torch.sin(angle), torch.cos(angle)], -1) * step[..., None]  # (n, npts, 2) as (dy, dx)
        d = 0.5 * (d[:, 1:] + d[:, :-1])
        pts[:, j] = start[:, None] + torch.cat([torch.zeros(n, 1, 2), d.cumsum(1)], 1)
        radius[:, j] = r0[:, None] * (1.0 - 0.15 * u[None])
        path[:, j] = path0[:, None] + lengths[:, j, None] * u[None]
        end_angle[:, j] = angle[:, -1]
    # dye: arrives at the ostium at t0 and fills the tree within ~40 % of the run
    t0 = _u(g, n, 0.5, 2.0) * frames / 16
    speed = path.amax((1, 2)) / (0.4 * frames)
    arrival = t0[:, None, None] + path / speed[:, None, None]
    return {
        "pts": pts,
        "radius": radius,
        "arrival": arrival,
        "u": u,
        "lengths": lengths,
        "ostium": ostium,
        "theta0": theta0,
        "side": side,
        "path": path,
    }


def _place_lesions(
    geo: dict[str, torch.Tensor], grades: torch.Tensor, h: int, w: int, g: torch.Generator
) -> dict[str, torch.Tensor]:
    """Choose lesion sites (different segments, inside the image, preferably > 2.5 (r1 + r2) apart) and narrow
    the radii there."""
    n = grades.shape[0]
    pts, radius, u = geo["pts"], geo["radius"], geo["u"]
    npts = u.numel()
    cand_u = torch.linspace(0.4, 0.75, 8)
    idx = (cand_u * (npts - 1)).round().long()
    cpos = pts[:, :_LESION_SEGMENTS, idx]  # (n, 3, 9, 2)
    crad = radius[:, :_LESION_SEGMENTS, idx]
    margin = 2.0 * crad + 2.0
    inside = (
        (cpos[..., 0] >= margin)
        & (cpos[..., 0] <= h - 1 - margin)
        & (cpos[..., 1] >= margin)
        & (cpos[..., 1] <= w - 1 - margin)
    ).float()
    seg_of = torch.arange(_LESION_SEGMENTS).view(1, -1, 1).expand(inside.shape)
    chosen_seg = torch.full((n, MAX_LESIONS), -1, dtype=torch.long)
    chosen_i = torch.zeros(n, MAX_LESIONS, dtype=torch.long)
    other_seg = torch.ones_like(inside)  # 1 where no earlier lesion sits on the candidate's segment
    far = torch.ones_like(inside)  # 1 where the candidate is > 2.5 (r + r_k) from every earlier lesion k
    for k in range(MAX_LESIONS):  # 2 lesion slots, vectorised over cases
        # priorities: another segment > inside the image > far from earlier lesions > random
        score = 8.0 * other_seg + 4.0 * inside + 2.0 * far + torch.rand(inside.shape, generator=g)
        best = score.reshape(n, -1).argmax(1)
        seg = best // cand_u.numel()
        ci = best % cand_u.numel()
        active = grades[:, k] >= 0
        chosen_seg[:, k] = torch.where(active, seg, -1)
        chosen_i[:, k] = ci
        act = active.view(n, 1, 1)
        other_seg = torch.where(act, other_seg * (seg_of != seg.view(n, 1, 1)).float(), other_seg)
        dist = (cpos - cpos[torch.arange(n), seg, ci].view(n, 1, 1, 2)).norm(dim=-1)
        r_chosen = crad[torch.arange(n), seg, ci].view(n, 1, 1)
        far = torch.where(act, far * (dist > 2.5 * (crad + r_chosen)).float(), far)
    active = grades >= 0
    lo = torch.tensor([GRADE_RANGES[name][0] for name in GRADES])
    hi = torch.tensor([GRADE_RANGES[name][1] for name in GRADES])
    gc = grades.clamp(min=0)
    sten = torch.where(active, lo[gc] + (hi[gc] - lo[gc]) * torch.rand(n, MAX_LESIONS, generator=g), 0.0)
    seg_c = chosen_seg.clamp(min=0)
    pidx = idx[chosen_i]  # point index along the segment (n, L)
    ar = torch.arange(n)[:, None]
    centre = pts[ar, seg_c, pidx]  # (n, L, 2)
    r_ref = radius[ar, seg_c, pidx]
    width = _u(g, (n, MAX_LESIONS), 1.0, 1.5) * r_ref.clamp(min=1.2)  # Gaussian sigma of the narrowing (px)
    # narrow: r(s) *= 1 - sten * exp(-(s - s_c)^2 / (2 width^2)), on the lesion's own segment only
    arc = geo["lengths"][:, :, None] * u.view(1, 1, -1)  # (n, nseg, npts) arclength within a segment
    arc_c = geo["lengths"][ar, seg_c] * u[pidx]  # (n, L)
    on_seg = (torch.arange(len(_PARENT)).view(1, 1, -1) == chosen_seg[..., None]).float()  # (n, L, nseg)
    bump = torch.exp(-((arc[:, None] - arc_c[..., None, None]) ** 2) / (2 * width[..., None, None] ** 2))
    factor = (1.0 - sten[..., None, None] * on_seg[..., None] * bump).prod(1)  # (n, nseg, npts)
    geo = dict(geo, radius=radius * factor)
    half = 1.5 * torch.maximum(width, r_ref) + 0.5
    boxes = torch.stack(
        [
            (centre[..., 0] - half).floor().clamp(0, h),
            (centre[..., 1] - half).floor().clamp(0, w),
            (centre[..., 0] + half).ceil().clamp(0, h) + 1,
            (centre[..., 1] + half).ceil().clamp(0, w) + 1,
        ],
        -1,
    ).clamp(max=torch.tensor([h, w, h, w], dtype=torch.float32))
    boxes = torch.where(active[..., None], boxes, 0.0)
    return {
        "geo": geo,
        "stenosis": sten.float(),
        "centers": torch.where(active[..., None], centre, 0.0),
        "reference_radius": torch.where(active, r_ref, 0.0),
        "segment": chosen_seg,
        "boxes": boxes,
        "half": half,
    }


def _render_tubes(
    pts: torch.Tensor, radius: torch.Tensor, attr: torch.Tensor, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chord length through the union of discs (pts, radius) at each pixel, and ``attr`` of the thickest point.

    Args:
        pts: ``(n, M, 2)`` axis points ``(y, x)``; radius, attr: ``(n, M)``.

    Returns:
        ``(chord (n, H, W), attr_at_max (n, H, W))``.
    """
    n, m = radius.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    grid = torch.stack([yy.reshape(-1), xx.reshape(-1)], -1)  # (HW, 2)
    hw = h * w
    chunk = max(1, _CHUNK_ELEMENTS // max(1, m * hw))  # cases per step
    block = max(1, _CHUNK_ELEMENTS // (chunk * m))  # pixels per step (< hw only for large images)
    chords, attrs = [], []
    for i in range(0, n, chunk):  # bounded memory: chunk * M * block elements per temporary
        p, r2, at = pts[i : i + chunk], radius[i : i + chunk, :, None] ** 2, attr[i : i + chunk]
        best_c, best_a = [], []
        for j in range(0, hw, block):
            gb = grid[j : j + block]
            c2 = r2 - (p[:, :, None, 0] - gb[None, None, :, 0]) ** 2 - (p[:, :, None, 1] - gb[None, None, :, 1]) ** 2
            best, arg = c2.max(1)  # (c, block)
            best_c.append(2.0 * best.clamp(min=0).sqrt())
            best_a.append(at.gather(1, arg))
        chords.append(torch.cat(best_c, 1))
        attrs.append(torch.cat(best_a, 1))
    return torch.cat(chords).view(n, h, w), torch.cat(attrs).view(n, h, w)


def _background(n: int, h: int, w: int, g: torch.Generator, geo: dict[str, torch.Tensor]) -> torch.Tensor:
    """Attenuation ``mu`` of the anatomy: smooth field, heart shadow, diaphragm, ribs and the catheter."""
    mu = _anatomy(n, h, w, g)
    cath = _catheter_path(n, h, w, g, geo)
    m = cath.shape[1]
    chord, _ = _render_tubes(cath, torch.full((n, m), 0.012 * float(min(h, w)) + 0.3), torch.zeros(n, m), h, w)
    return mu + 0.20 * chord


def _check_size(n: int, shape: Sequence[int], frames: int, min_side: int = 32) -> tuple[int, int]:
    """``(H, W)`` after checking the case count, the frame size and the frame count."""
    h, w = (int(v) for v in shape)
    if n < 1:
        raise ValueError(f"need n >= 1 cases, got {n}.")
    if len(tuple(shape)) != 2 or min(h, w) < min_side:
        raise ValueError(f"shape must be (H, W) with both sides >= {min_side}, got {tuple(shape)}.")
    if frames < 4:
        raise ValueError(f"need at least 4 frames for a contrast wash-in, got {frames}.")
    return h, w


def _sample_grades(
    n: int,
    scenarios: Sequence[tuple[Sequence[str], float]] | None,
    grades: Sequence[str] | None,
    g: torch.Generator,
) -> torch.Tensor:
    """``(n, MAX_LESIONS)`` grade codes drawn from the scenarios (or ``grades`` for every case), validated."""
    if grades is not None:
        scenarios = [(tuple(grades), 1.0)]
    scenarios = DEFAULT_SCENARIOS if scenarios is None else tuple((tuple(s), float(p)) for s, p in scenarios)
    for names, p in scenarios:
        if len(names) > MAX_LESIONS or any(name not in GRADES for name in names):
            raise ValueError(f"a scenario holds at most {MAX_LESIONS} lesions named from {GRADES}, got {names!r}.")
        if not p > 0:
            raise ValueError(f"scenario probabilities must be > 0, got {p} for {names!r}.")
    table = torch.full((len(scenarios), MAX_LESIONS), -1, dtype=torch.long)
    for i, (names, _) in enumerate(scenarios):  # the scenario table, not the cases
        table[i, : len(names)] = torch.tensor([GRADES.index(nm) for nm in names], dtype=torch.long)
    probs = torch.tensor([p for _, p in scenarios], dtype=torch.float64)
    return table[torch.multinomial(probs / probs.sum(), n, replacement=True, generator=g)]


def make_angiogram_dataset(
    n: int,
    shape: Sequence[int] = (64, 64),
    frames: int = 16,
    seed: int = 0,
    scenarios: Sequence[tuple[Sequence[str], float]] | None = None,
    grades: Sequence[str] | None = None,
    noise: float = 1.0,
    frame_time_ms: float = 1000.0 / 15.0,
) -> AngiogramBatch:
    """Generate ``n`` synthetic coronary angiogram cines with graded stenoses, deterministically.

    Args:
        n: number of cases.
        shape: ``(H, W)``; at least 32 x 32. Vessel radii scale with the image (trunk radius ~8 % of the side,
            thicker than real coronaries relative to the field of view, so moderate lesions stay visible at 64 x 64).
        frames: number of frames ``T`` (>= 4); the dye reaches the ostium within the first eighth of the run and
            fills the tree by ~half of it.
        seed: generator seed; the same arguments give identical data.
        scenarios: ``(grades, probability)`` pairs to sample lesion configurations from (probabilities are
            renormalised); default :data:`DEFAULT_SCENARIOS`. Each grade tuple holds at most 2 names from
            :data:`GRADES`.
        grades: if given, every case gets exactly these lesions (e.g. ``("mild", "moderate")``); overrides
            ``scenarios``.
        noise: quantum-noise scale; 1.0 is ~2000 detected quanta per pixel behind an unattenuated path, 0 = noiseless.
        frame_time_ms: time between frames (stored in the batch; 66.7 ms = 15 frames/s, a common cine rate).

    Returns:
        An :class:`AngiogramBatch`.

    Raises:
        ValueError: for ``n < 1``, too small a shape or frame count, an unknown grade name, more than
            ``MAX_LESIONS`` lesions, or non-positive scenario probabilities.
    """
    h, w = _check_size(n, shape, frames)
    if noise < 0 or frame_time_ms <= 0:
        raise ValueError(f"need noise >= 0 and frame_time_ms > 0, got {noise}, {frame_time_ms}.")
    g = torch.Generator().manual_seed(int(seed))
    grade_codes = _sample_grades(n, scenarios, grades, g)
    geo = _tree_geometry(n, h, w, frames, g)
    les = _place_lesions(geo, grade_codes, h, w, g)
    geo = les["geo"]
    m = geo["pts"].shape[1] * geo["pts"].shape[2]
    chord, arrival = _render_tubes(
        geo["pts"].reshape(n, m, 2), geo["radius"].reshape(n, m), geo["arrival"].reshape(n, m), h, w
    )
    vessel_mask = chord > 0
    mu_bg = _background(n, h, w, g, geo)
    mu_vessel = _u(g, (n, 1, 1, 1), 0.10, 0.14)  # attenuation per pixel of contrast-filled lumen
    t = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1)
    opacity = torch.sigmoid((t - arrival[:, None]) / 0.6)
    washout = _u(g, (n, 1, 1, 1), 0.85, 1.2) * frames
    opacity = opacity * (1.0 - 0.4 * torch.sigmoid((t - washout) / 1.5))
    intensity = torch.exp(-(mu_bg[:, None] + mu_vessel * chord[:, None] * opacity))  # (n, T, H, W)
    quanta = 2000.0
    if noise > 0:
        intensity = intensity + noise * (intensity / quanta).sqrt() * torch.randn(intensity.shape, generator=g)
    cine = intensity.clamp(0.0, 1.0).float()
    labels = (grade_codes >= 1).any(1).long()
    return AngiogramBatch(
        cine=cine,
        vessel_mask=vessel_mask,
        labels=labels,
        grades=grade_codes,
        stenosis=les["stenosis"],
        boxes=les["boxes"],
        centers=les["centers"],
        reference_radius=les["reference_radius"],
        segment=les["segment"],
        frame_time_ms=float(frame_time_ms),
        seed=int(seed),
    )


def make_angiogram(
    seed: int = 0,
    grades: Sequence[str] | None = ("mild", "moderate"),
    shape: Sequence[int] = (64, 64),
    frames: int = 16,
    noise: float = 1.0,
) -> dict[str, Any]:
    """One case as a dict (see :meth:`AngiogramBatch.case`); by default the paper's mild + moderate scenario.

    Args:
        seed: generator seed.
        grades: lesions of the case (``None`` samples from :data:`DEFAULT_SCENARIOS`, ``()`` for none).
        shape: ``(H, W)``.
        frames: ``T``.
        noise: quantum-noise scale.

    Returns:
        ``{"cine" (T,H,W), "vessel_mask" (H,W), "label", "lesions", "frame_time_ms"}``.
    """
    return make_angiogram_dataset(1, shape=shape, frames=frames, seed=seed, grades=grades, noise=noise).case(0)
