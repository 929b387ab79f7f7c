from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image, ImageSequence

from monai_saliency.visualize.cine import SaveCineGifd, cine_strip_png, gif_frame_ms, save_cine_gif


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    cine = torch.rand(6, 12, 10, generator=g)
    sal = torch.rand(6, 12, 10, generator=g)
    return cine, sal


def _read(path):
    with Image.open(path) as im:
        frames = [(f.size, f.info.get("duration")) for f in ImageSequence.Iterator(im)]
        im.seek(0)
        first = np.asarray(im.convert("RGB"))
    return frames, first


def test_gif_frames_size_and_durations(tmp_path, pair):
    cine, sal = pair
    path = save_cine_gif(cine, sal, tmp_path / "a.gif", frame_time_ms=66.7, scale=2)
    frames, _ = _read(path)
    assert len(frames) == 6
    assert all(size == (2 * 2 * 10, 2 * 12 + 3) for size, _ in frames)  # two panels wide, progress bar below
    assert all(d == 70 for _, d in frames)  # GIF stores centiseconds
    save_cine_gif(cine, sal, tmp_path / "b.gif", fps=25, side_by_side=False, scale=1)
    frames, _ = _read(tmp_path / "b.gif")
    assert [s for s, _ in frames] == [(10, 15)] * 6 and {d for _, d in frames} == {40}


def test_constant_cine_keeps_every_frame(tmp_path):
    """Pillow merges identical consecutive frames; the progress bar keeps T frames and their timing."""
    cine = torch.ones(5, 8, 8)
    path = save_cine_gif(cine, torch.zeros(5, 8, 8), tmp_path / "c.gif", frame_time_ms=100, scale=1)
    frames, first = _read(path)
    assert len(frames) == 5 and all(d == 100 for _, d in frames)
    # constant cine shows as black (its own min-max), zero map as the colormap's low end (jet: dark blue)
    assert first[:8].max() <= 130


def test_overlay_pixels_match_reference(tmp_path):
    """The right panel equals (1-a)*grey + a*cmap(map) computed independently (up to GIF quantisation)."""
    import matplotlib

    cine = torch.linspace(0, 1, 2 * 4 * 4).reshape(2, 4, 4)
    sal = torch.zeros(2, 4, 4)
    sal[:, 0, 0] = 1.0
    path = save_cine_gif(cine, sal, tmp_path / "d.gif", alpha=0.5, cmap="gray", scale=1)
    _, first = _read(path)
    grey = cine[0].numpy()
    expected = 0.5 * grey + 0.5 * matplotlib.colormaps["gray"](sal[0].numpy())[..., 0]
    np.testing.assert_allclose(first[:4, 4:, 0] / 255.0, expected, atol=2.5 / 255)
    np.testing.assert_allclose(first[:4, :4, 0] / 255.0, grey, atol=2.5 / 255)


def test_large_cine_is_subsampled_to_max_width(tmp_path):
    cine = torch.rand(3, 40, 300)
    frames, _ = _read(save_cine_gif(cine, cine, tmp_path / "w.gif", max_width=256))
    assert frames[0][0][0] <= 256 and len(frames) == 3


@pytest.mark.parametrize(
    "cine_shape,sal_shape,kw,msg",
    [
        ((4, 8, 8), (4, 8, 9), {}, "shapes differ"),
        ((8, 8), (8, 8), {}, "must be a cine"),
        ((4, 8, 8), (4, 8, 8), {"alpha": 1.5}, "alpha"),
        ((4, 8, 8), (4, 8, 8), {"fps": 10, "frame_time_ms": 100}, "not both"),
        ((4, 8, 8), (4, 8, 8), {"frame_time_ms": 0}, "frame_time_ms"),
        ((4, 8, 8), (4, 8, 8), {"cmap": "nope"}, "colormap"),
        ((4, 8, 8), (4, 8, 8), {"scale": 0}, "scale"),
    ],
)
def test_bad_input_errors_and_no_file(tmp_path, cine_shape, sal_shape, kw, msg):
    with pytest.raises(ValueError, match=msg):
        save_cine_gif(torch.rand(cine_shape), torch.rand(sal_shape), tmp_path / "x.gif", **kw)
    assert list(tmp_path.iterdir()) == []


def test_nan_rejected(tmp_path):
    sal = torch.rand(3, 4, 4)
    sal[1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        save_cine_gif(torch.rand(3, 4, 4), sal, tmp_path / "n.gif")
    with pytest.raises(ValueError, match="NaN"):
        cine_strip_png(torch.rand(3, 4, 4), sal, tmp_path / "n.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path, pair, monkeypatch):
    cine, sal = pair

    def boom(self, fp, *a, **k):
        fp_path = str(fp)
        with open(fp_path, "wb") as f:
            f.write(b"GIF89a partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_cine_gif(cine, sal, tmp_path / "p.gif")
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites_the_input(tmp_path, pair):
    cine, sal = pair
    src = tmp_path / "study.gif"
    src.write_bytes(b"original")
    meta_cine = MetaTensor(cine, meta={"filename_or_obj": str(src)})
    with pytest.raises(FileExistsError):
        save_cine_gif(meta_cine, sal, src)
    assert src.read_bytes() == b"original"


def test_strip_png(tmp_path, pair):
    cine, sal = pair
    path = cine_strip_png(cine, sal, tmp_path / "s.png", frames=3, frame_time_ms=50, title="t")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]
    cine_strip_png(cine, sal, tmp_path / "s2.png", frames=[0, -1])
    with pytest.raises(ValueError, match="frame indices"):
        cine_strip_png(cine, sal, tmp_path / "s3.png", frames=[0, 6])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png", "s2.png"]


def test_dictionary_transform_names_file_after_input(tmp_path, pair):
    cine, sal = pair
    image = MetaTensor(cine[None], meta={"filename_or_obj": "/data/case_007.nii.gz", "frame_time_ms": 100.0})
    out = SaveCineGifd(("image", "map"), output_dir=tmp_path, output_postfix="sig", path_key="gif", scale=1)(
        {"image": image, "map": sal[None]}
    )
    assert out["gif"] == str(tmp_path / "case_007_sig.gif")
    frames, _ = _read(out["gif"])
    assert len(frames) == 6 and frames[0][1] == 100
    with pytest.raises(ValueError, match="two keys"):
        SaveCineGifd("image", output_dir=tmp_path)


def test_gif_frame_ms():
    assert gif_frame_ms(66.67) == 70 and gif_frame_ms(5) == 20 and gif_frame_ms(33.3) == 30
    with pytest.raises(ValueError):
        gif_frame_ms(float("nan"))
