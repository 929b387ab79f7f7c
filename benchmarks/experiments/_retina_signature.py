"""The real-image part of :mod:`benchmarks.experiments.demo_image_signature`: scikit-image's fundus photograph,
an independent vessel mask, the image-signature maps and their controls, per-tile vessel AUC and mass on vessels,
their verdicts (``_verdicts``) and the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from benchmarks.experiments import _verdicts as V
from monai_saliency.data.atomic import atomic_output
from monai_saliency.transforms import ImageSignature

SIG_NONE = "Image signature, whole image (no smoothing)"
SIG_GAUSS = "Image signature, whole image (Gaussian, Hou et al.)"
SIG_TILE = "Image signature of each tile (no smoothing)"
SIGNATURES = (SIG_NONE, SIG_GAUSS, SIG_TILE)
UNIFORM = "Uniform map (control)"
INVERTED = "1 - intensity (control: the input, inverted)"
SOBEL = "Sobel edge magnitude (control)"
RETINA_CONTROLS = (UNIFORM, INVERTED, SOBEL)
RETINA_FAMILY = "retina tiles: every image-signature map vs every control, AUC and mass on vessels"


def minmax(m: np.ndarray) -> np.ndarray:
    span = m.max() - m.min()
    return (m - m.min()) / span if span > 0 else np.zeros_like(m)


def sobel(img: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of every frame (last two axes), min-max scaled (scikit-image's ``filters.sobel``)."""
    from skimage.filters import sobel as sk_sobel

    frames = img.reshape(-1, *img.shape[-2:])
    return minmax(np.stack([sk_sobel(fr) for fr in frames]).reshape(img.shape))


def retina_inputs(size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(grey, vessel_mask, info)`` of scikit-image's fundus photograph at ``size x size``.

    The central square inside the circular field of view (no black border, whose edge every map would light up)
    is converted to grey (``rgb2gray``) and resized with anti-aliasing. The vessel mask comes from the *green*
    channel (the usual vessel channel) resized the same way: Frangi vesselness for dark ridges at scales 1-4 px,
    thresholded by the triangle method, connected components under ``size / 16`` pixels removed. It is computed
    independently of every compared map (none uses the Hessian), but it is an automatic segmentation, not a manual
    annotation.
    """
    from skimage import color, data, filters, morphology, transform

    rgb = data.retina()
    lit = rgb.sum(-1) > 30  # the field of view
    ys, xs = np.nonzero(lit)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    radius = min(ys.max() - ys.min(), xs.max() - xs.min()) / 2
    half = int(radius / np.sqrt(2)) - 8  # inscribed square, a small margin
    crop = rgb[int(cy) - half : int(cy) + half, int(cx) - half : int(cx) + half]
    grey = transform.resize(color.rgb2gray(crop), (size, size), anti_aliasing=True)
    green = transform.resize(crop[..., 1] / 255.0, (size, size), anti_aliasing=True)
    scale = size / 480  # the scales below are for a 480-px image
    vesselness = filters.frangi(green, sigmas=[s * scale for s in (1, 1.5, 2, 3, 4)], black_ridges=True)
    threshold = filters.threshold_triangle(vesselness)
    mask = morphology.remove_small_objects(vesselness > threshold, max_size=max(1, size // 16))
    info = {
        "crop": [int(cy) - half, int(cy) + half, int(cx) - half, int(cx) + half],
        "frangi_threshold": float(threshold),
        "vessel_fraction": float(mask.mean()),
    }
    return grey, mask, info


def tiles(a: np.ndarray, tile: int) -> np.ndarray:
    """``(H, W)`` -> ``(n_tiles, tile * tile)`` in raster order (H and W multiples of ``tile``)."""
    h, w = a.shape
    return a.reshape(h // tile, tile, w // tile, tile).transpose(0, 2, 1, 3).reshape(-1, tile * tile)


def untile(t: np.ndarray, shape: tuple[int, int], tile: int) -> np.ndarray:
    h, w = shape
    return t.reshape(h // tile, w // tile, tile, tile).transpose(0, 2, 1, 3).reshape(h, w)


def retina_maps(grey: np.ndarray, tile: int) -> dict[str, np.ndarray]:
    """Every compared map of the grey image, ``(H, W)``."""
    img = torch.from_numpy(grey)[None]
    per_tile = torch.from_numpy(tiles(grey, tile).reshape(-1, tile, tile))  # tiles as channels: one DCT each
    rec = ImageSignature(output="reconstruction")(per_tile).numpy().reshape(per_tile.shape[0], -1) ** 2
    span = rec.max(1, keepdims=True) - rec.min(1, keepdims=True)
    rec = (rec - rec.min(1, keepdims=True)) / np.where(span > 0, span, 1.0)
    return {
        SIG_NONE: ImageSignature(smooth="none")(img)[0].numpy(),
        SIG_GAUSS: ImageSignature()(img)[0].numpy(),
        SIG_TILE: untile(rec, grey.shape, tile),
        UNIFORM: np.ones_like(grey),
        INVERTED: minmax(1.0 - grey),
        SOBEL: sobel(grey),
    }


def roc_auc(scores_: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC (Mann-Whitney, ties count 1/2) of ``scores_`` ``(k, P)`` for the boolean labels ``(k, P)``."""
    ranks = rankdata(scores_, axis=1)
    n1 = positive.sum(1)
    n0 = positive.shape[1] - n1
    return ((ranks * positive).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def retina_metrics(maps: dict, mask: np.ndarray, tile: int, min_vessel: float) -> tuple[dict, np.ndarray]:
    """Per kept tile: AUC and mass on vessels of every map; ``kept`` = tiles with vessel fraction in
    ``[min_vessel, 1 - min_vessel]``."""
    m = tiles(mask, tile)
    frac = m.mean(1)
    kept = (frac >= min_vessel) & (frac <= 1 - min_vessel)
    m = m[kept]
    out = {}
    for name, mp in maps.items():
        t = tiles(mp, tile)[kept]
        mass = t.sum(1)
        out[name] = {
            "auc": roc_auc(t, m),
            "mass_on_vessels": (t * m).sum(1) / np.where(mass > 0, mass, 1.0),
            "auc_whole_image": float(roc_auc(mp.reshape(1, -1), mask.reshape(1, -1))[0]),
            "mass_whole_image": float((mp * mask).sum() / mp.sum()),
        }
    return out, kept


def retina_comparisons(metrics: dict) -> dict:
    fam = {}
    for s in SIGNATURES:
        for c in RETINA_CONTROLS:
            for key, label in (("auc", "vessel AUC"), ("mass_on_vessels", "mass on vessels")):
                fam[(s, c, key)] = V.compare(
                    s, c, metrics[s][key], metrics[c][key], metric=label, control=True, n_resamples=2000
                )
    V.adjust(list(fam.values()))
    return fam


def write_figure(grey: np.ndarray, mask: np.ndarray, maps: dict, kept: np.ndarray, tile: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("grey-scale fundus (input)", grey, "gray", None),
        ("vessel mask (Frangi, green channel)", mask, "gray", None),
    ]
    # maps shown up to their 99th percentile: a few extreme pixels would otherwise hide the unsmoothed signatures
    panels += [
        (name, maps[name], "magma", float(np.percentile(maps[name], 99))) for name in (*SIGNATURES, INVERTED, SOBEL)
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 9), layout="constrained")
    for ax, (title, img, cmap, vmax) in zip(axes.flat, panels):
        ax.imshow(img, cmap=cmap, vmax=vmax)
        ax.set_title(title.replace(" (", "\n(") + ("\n(shown up to its 99th percentile)" if vmax else ""), fontsize=8)
        ax.axis("off")
    ax = axes.flat[-1]
    ax.imshow(grey, cmap="gray")
    left_out = untile(np.repeat(~kept[:, None], tile * tile, 1).astype(float), grey.shape, tile)
    ax.imshow(np.ma.masked_where(left_out == 0, left_out), alpha=0.5, cmap="autumn", vmin=0, vmax=1)
    ax.set_title(
        f"tiles used: {int(kept.sum())} of {kept.size}\n"
        "(yellow: left out, too few vessel pixels; uniform map not shown)",
        fontsize=8,
    )
    ax.axis("off")
    with atomic_output(out / "figure.png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
