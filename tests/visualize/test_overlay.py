from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from monai_saliency.visualize.overlay import save_overlay_png


def test_overlay_png_written(tmp_path):
    path = save_overlay_png(np.random.rand(1, 20, 30), np.random.rand(20, 30), tmp_path / "o.png", title="t")
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_overlay_bad_input(tmp_path):
    with pytest.raises(ValueError, match="shapes differ"):
        save_overlay_png(np.zeros((4, 4)), np.zeros((4, 5)), tmp_path / "o.png")
    with pytest.raises(ValueError, match="2D"):
        save_overlay_png(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), tmp_path / "o.png")
    with pytest.raises(ValueError, match="NaN"):
        save_overlay_png(np.zeros((4, 4)), np.full((4, 4), np.nan), tmp_path / "o.png")
    assert not list(tmp_path.iterdir())
