"""The GIF's longest side is capped by default (``save_cine_gif(max_side=512)``), by lowering the magnification and
then box-averaging; frame count and timing are kept; the octree palette keeps noisy clinical cines small."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from skimage.measure import block_reduce

from monai_saliency.visualize.cine import _box_reduce, save_cine_gif


def _info(path):
    with Image.open(path) as im:
        frames = [(f.size, f.info.get("duration")) for f in ImageSequence.Iterator(im)]
    return frames


def test_scale_that_would_exceed_the_cap_is_lowered(tmp_path):
    cine = torch.rand(4, 120, 100)
    frames = _info(save_cine_gif(cine, cine, tmp_path / "a.gif", frame_time_ms=66.7, scale=3))
    assert len(frames) == 4 and all(d == 70 for _, d in frames)
    (w, h), _ = frames[0]
    assert (w, h) == (400, 243)  # scale 3 -> 2 (3 would give 600 px): 2 panels x 100 x 2, 120 x 2 + a 3-pixel bar
    assert max(w, h) <= 512
    uncapped = _info(save_cine_gif(cine, cine, tmp_path / "b.gif", scale=3, max_side=None))
    assert uncapped[0][0] == (600, 363)  # the old behaviour when asked for


@pytest.mark.parametrize(
    "shape,frame_ms,cap",
    [((3, 512, 512), 66.7, 512), ((2, 1024, 1024), 33.3, 512), ((3, 700, 300), 100, 512), ((2, 90, 257), 40, 257)],
)
def test_clinical_sizes_fit_the_cap(tmp_path, shape, frame_ms, cap):
    cine = torch.rand(*shape)
    frames = _info(save_cine_gif(cine, cine, tmp_path / "c.gif", frame_time_ms=frame_ms, scale=3, max_side=cap))
    assert len(frames) == shape[0]
    assert all(max(size) <= cap for size, _ in frames), frames[0]
    assert all(d == int(max(20, 10 * round(frame_ms / 10))) for _, d in frames)


def test_box_reduce_matches_skimage_block_means():
    arr = np.random.default_rng(0).random((3, 12, 18))
    np.testing.assert_allclose(_box_reduce(arr, 3), block_reduce(arr, (1, 3, 3), np.mean))
    ragged = np.random.default_rng(1).random((2, 13, 10))  # edges padded by replication
    padded = np.pad(ragged, ((0, 0), (0, 2), (0, 2)), mode="edge")
    np.testing.assert_allclose(_box_reduce(ragged, 3), block_reduce(padded, (1, 3, 3), np.mean))
    assert _box_reduce(arr, 1) is arr


def test_octree_palette_is_smaller_on_noise_and_checked(tmp_path):
    g = torch.Generator().manual_seed(0)
    cine = (torch.linspace(0, 1, 128).view(1, 1, 128) + 0.1 * torch.randn(6, 128, 128, generator=g)).clamp(0, 1)
    sal = torch.linspace(0, 1, 128).view(1, 128, 1).expand(6, 128, 128)
    median = save_cine_gif(cine, sal, tmp_path / "m.gif", scale=1).stat().st_size
    octree = save_cine_gif(cine, sal, tmp_path / "o.gif", scale=1, palette="octree")
    assert octree.stat().st_size < median and len(_info(octree)) == 6
    with pytest.raises(ValueError, match="palette"):
        save_cine_gif(cine, sal, tmp_path / "x.gif", palette="web")
    with pytest.raises(ValueError, match="max_side"):
        save_cine_gif(cine, sal, tmp_path / "y.gif", max_side=8)
