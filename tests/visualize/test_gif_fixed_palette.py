"""The GIF's fixed palette (``save_cine_gif(palette="fixed")``, the angiogram bundle's ``--gif_palette`` default): one
palette of the grey/map blend for every frame and each pixel's index computed from its grey and map values, checked
against an independent per-entry loop over the palette, a brute-force nearest-colour search, and the exact blend
(within the documented 21 of 255 levels on the overlay, 3.3 on the plain cine), decoded from the written file."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from monai_saliency.visualize.cine import FIXED_PALETTE_LEVELS, _check_pair, _overlay, fixed_palette, save_cine_gif

ALPHA, CMAP = 0.45, "jet"


def _frames(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]).astype(int)


@pytest.fixture(scope="module")
def pair():
    """A noisy cine with a moving blob map (values spread over [0, 1] for both)."""
    g = torch.Generator().manual_seed(3)
    t, h, w = 5, 40, 48
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    cine = (0.5 + 0.4 * torch.sin(3 * xx) * torch.cos(2 * yy) + 0.08 * torch.randn(t, h, w, generator=g)).clamp(0, 1)
    sal = torch.stack([torch.exp(-((xx - 0.2 * k) ** 2 + yy**2) * 3) for k in range(t)])
    return cine, sal


def test_palette_entries_by_an_independent_loop():
    p, g, m = FIXED_PALETTE_LEVELS
    pal = fixed_palette(ALPHA, CMAP)
    assert pal.shape == (p + g * m, 3) == (256, 3) and pal.dtype == np.uint8
    jet = matplotlib.colormaps[CMAP]
    for k in range(p):
        assert tuple(pal[k]) == (round(255 * k / (p - 1)),) * 3
    for i in range(g):
        for j in range(m):
            rgb = jet(j / (m - 1))[:3]
            want = [int(np.floor((1 - ALPHA) * i / (g - 1) * 255 + ALPHA * c * 255 + 0.5)) for c in rgb]
            assert np.abs(pal[p + i * m + j].astype(int) - want).max() <= 1, (i, j)  # rint vs round-half-up
    with pytest.raises(ValueError, match="levels"):
        fixed_palette(levels=(40, 10, 24))  # 280 entries


def test_written_gif_is_the_exact_blend_within_the_stated_error(tmp_path, pair):
    cine, sal = pair
    frames = _frames(save_cine_gif(cine, sal, tmp_path / "f.gif", scale=1, palette="fixed"))
    t, h, w = cine.shape
    assert frames.shape == (t, h + 3, 2 * w, 3)
    grey, heat = _check_pair(cine, sal)
    exact = _overlay(grey, heat, ALPHA, CMAP).astype(int)  # the 8-bit blend the other palettes start from
    over = np.abs(frames[:, :h, w:] - exact)
    plain = np.abs(frames[:, :h, :w] - np.rint(grey * 255)[..., None])
    assert over.max() <= 21 and over.mean() < 6, (over.max(), over.mean())
    assert plain.max() <= 4 and (frames[:, :h, :w].std(-1) == 0).all()  # grey stays grey, within half a step
    # against a brute-force search of the palette for each pixel's nearest colour (Euclidean): the direct index is
    # that colour for most pixels, and costs under a level and a half on average where it is not
    pal = fixed_palette(ALPHA, CMAP).astype(int)
    want, got = exact.reshape(-1, 3), frames[:, :h, w:].reshape(-1, 3)
    distance = np.sqrt(((want[:, None, :] - pal[None]) ** 2).sum(-1))  # (pixels, 256)
    nearest = pal[distance.argmin(1)]
    assert (got == nearest).all(1).mean() > 0.75
    excess = np.abs(got - want).max(1) - np.abs(nearest - want).max(1)
    assert excess.mean() < 1.5 and np.abs(nearest - want).max() <= 21
    # the progress bar keeps its two greys (nearest plain levels of 40 and 230) and grows frame by frame
    bar = frames[:, h + 1, :, 0]
    assert set(np.unique(bar)) <= {39, 229} and (bar == 229).sum(1).tolist() == sorted((bar == 229).sum(1).tolist())


def test_fixed_palette_keeps_every_frame_and_shows_what_octree_shows(tmp_path, pair):
    cine, sal = pair
    constant = torch.full((4, 20, 24), 0.3)
    path = save_cine_gif(constant, torch.zeros_like(constant), tmp_path / "c.gif", palette="fixed", scale=2)
    with Image.open(path) as im:
        assert im.n_frames == 4 and im.mode == "P"
    octree = _frames(save_cine_gif(cine, sal, tmp_path / "o.gif", scale=2, palette="octree"))
    fixed = _frames(save_cine_gif(cine, sal, tmp_path / "x.gif", scale=2, palette="fixed"))
    assert octree.shape == fixed.shape
    assert np.abs(octree - fixed).mean() < 8  # the two palettes show the same picture
