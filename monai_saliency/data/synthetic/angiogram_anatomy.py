"""Static anatomy and catheter of the synthetic angiograms (:mod:`~monai_saliency.data.synthetic.angiogram` and
:mod:`~monai_saliency.data.synthetic.angiogram_clinical`): attenuation of a smooth field, heart shadow, diaphragm and
ribs, and the catheter's axis from the top border to the ostium."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["anatomy", "catheter_path", "uniform"]


def uniform(g: torch.Generator, shape: Sequence[int] | int, lo: float, hi: float) -> torch.Tensor:
    """``(hi - lo) * U[0, 1) + lo`` of ``shape`` drawn from ``g``."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def anatomy(n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """Attenuation ``mu (n, H, W)`` of the static anatomy: smooth field, heart shadow, diaphragm and ribs."""
    s = float(min(h, w))
    yy = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    coarse = torch.rand(n, 1, 5, 5, generator=g)
    mu = 0.25 + 0.35 * F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[:, 0].clamp(0, 1)
    # heart shadow: soft ellipse around the tree
    cy = uniform(g, (n, 1, 1), 0.45, 0.65) * h
    cx = uniform(g, (n, 1, 1), 0.40, 0.60) * w
    ry, rx = uniform(g, (n, 1, 1), 0.35, 0.5) * h, uniform(g, (n, 1, 1), 0.35, 0.5) * w
    ell = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    mu = mu + uniform(g, (n, 1, 1), 0.10, 0.25) * torch.sigmoid((1.0 - ell) * 6.0)
    # diaphragm: a soft tilted edge near the bottom
    tilt = uniform(g, (n, 1, 1), -0.3, 0.3)
    edge = uniform(g, (n, 1, 1), 0.80, 0.95) * h + tilt * (xx - w / 2)
    mu = mu + 0.35 * torch.sigmoid((yy - edge) / (0.02 * s))
    # ribs: 3 bands, arcs of large circles; bone chord with brighter cortical edges
    nr = 3
    rc_y = uniform(g, (n, nr, 1, 1), -1.5, -0.8) * h
    rc_x = uniform(g, (n, nr, 1, 1), -0.5, 1.5) * w
    dist = ((yy[:, None] - rc_y) ** 2 + (xx[:, None] - rc_x) ** 2).sqrt()
    rr = rc_y.abs() + (torch.arange(nr).view(1, nr, 1, 1) + uniform(g, (n, nr, 1, 1), 0.0, 0.6)) * 0.3 * h
    half = uniform(g, (n, nr, 1, 1), 0.035, 0.05) * s
    off = (dist - rr).abs()
    bone = 2.0 * (half**2 - off**2).clamp(min=0).sqrt() / s
    cortex = torch.exp(-(((off - half) / (0.012 * s)) ** 2))
    return mu + (uniform(g, (n, nr, 1, 1), 1.0, 2.0) * bone + 0.06 * cortex).sum(1)


def catheter_path(
    n: int, h: int, w: int, g: torch.Generator, geo: dict[str, torch.Tensor], spacing: float = 0.4
) -> torch.Tensor:
    """Axis points ``(n, m, 2)`` of a catheter: a quadratic Bezier curve from the top border to the ostium."""
    m = math.ceil(1.2 * max(h, w) / spacing)
    t = torch.linspace(0.0, 1.0, m).view(1, m, 1)
    ost = geo["ostium"][:, None]  # (n, 1, 2)
    top_x = geo["ostium"][:, 1] + geo["side"] * uniform(g, n, -0.3, -0.1) * w
    top = torch.stack([torch.full((n,), -2.0), top_x], -1)[:, None]
    mid = 0.5 * (top + ost) + torch.stack([torch.zeros(n), uniform(g, n, -0.08, 0.08) * w], -1)[:, None]
    return (1 - t) ** 2 * top + 2 * (1 - t) * t * mid + t**2 * ost  # quadratic Bezier
