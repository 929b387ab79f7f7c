"""Synthetic 2D/3D images with or without a bright blob: the smallest classification task with a known answer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["make_blob_dataset"]


def _smooth_background(n: int, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    coarse = torch.rand(n, 1, *[max(s // 8, 2) for s in shape], generator=generator)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    return F.interpolate(coarse, size=tuple(shape), mode=mode, align_corners=False)


def make_blob_dataset(
    n: int, shape: Sequence[int] = (64, 64), seed: int = 0, blob_sigma: float = 3.0, noise: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` images on a smooth background; label 1 images hold one Gaussian blob at a random place.

    Args:
        n: number of images (about half positive, alternating).
        shape: spatial shape, 2D or 3D.
        seed: generator seed; the same seed gives the same data.
        blob_sigma: blob radius (Gaussian sigma, voxels).
        noise: standard deviation of the additive white noise.

    Returns:
        ``(images (n, 1, *shape) float32, labels (n,) long, blob masks (n, 1, *shape) bool)``; masks are empty
        for label 0 and mark voxels within ``2 * blob_sigma`` of the centre otherwise.

    Raises:
        ValueError: for n < 1, a shape that is not 2D/3D, or a shape too small for the blob.
    """
    shape = tuple(int(s) for s in shape)
    if n < 1 or len(shape) not in (2, 3):
        raise ValueError(f"need n >= 1 and a 2D or 3D shape, got n={n}, shape={shape}.")
    margin = int(3 * blob_sigma)
    if min(shape) <= 2 * margin:
        raise ValueError(f"shape {shape} is too small for blobs of sigma {blob_sigma}.")
    g = torch.Generator().manual_seed(seed)
    images = 0.5 * _smooth_background(n, shape, g) + noise * torch.randn(n, 1, *shape, generator=g)
    labels = torch.arange(n) % 2
    centres = torch.stack([torch.randint(margin, s - margin, (n,), generator=g) for s in shape], dim=1).float()
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    dist2 = sum((grid[None] - centres[:, i].view(n, *[1] * len(shape))) ** 2 for i, grid in enumerate(grids))
    blob = torch.exp(-dist2 / (2 * blob_sigma**2))[:, None]
    positive = labels.bool().view(n, 1, *[1] * len(shape))
    images = images + positive * blob
    masks = positive & (dist2[:, None] <= (2 * blob_sigma) ** 2)
    return images.float(), labels, masks
