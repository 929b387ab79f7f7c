"""Clinical-size angiogram generator: properties measured on the images (motion, bolus, noise, bits, grades)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from monai_saliency.data.synthetic.angiogram import GRADE_RANGES, GRADES
from monai_saliency.data.synthetic.angiogram_clinical import (
    OFFSET,
    bolus_curve,
    make_clinical_angiogram,
    make_clinical_angiogram_dataset,
)

SHAPE, FRAMES = (128, 128), 45  # 3 s at 15 frames/s


@pytest.fixture(scope="module")
def batch():
    return make_clinical_angiogram_dataset(3, shape=SHAPE, frames=FRAMES, seed=3)


@pytest.fixture(scope="module")
def clean():
    """Noiseless, static vessels: frame 0 is the anatomy before the dye arrives."""
    return make_clinical_angiogram_dataset(3, shape=SHAPE, frames=FRAMES, seed=3, motion=0.0, noise=False)


def test_deterministic_and_seed_dependent(batch):
    again = make_clinical_angiogram_dataset(3, shape=SHAPE, frames=FRAMES, seed=3)
    assert torch.equal(batch.cine, again.cine) and torch.equal(batch.vessel_mask, again.vessel_mask)
    assert torch.equal(batch.boxes, again.boxes) and torch.equal(batch.grades, again.grades)
    other = make_clinical_angiogram_dataset(3, shape=SHAPE, frames=FRAMES, seed=4)
    assert not torch.equal(batch.cine, other.cine)


@pytest.mark.parametrize("bits", [10, 12])
def test_integers_within_bit_depth(bits):
    b = make_clinical_angiogram_dataset(2, shape=(64, 64), frames=6, seed=1, bits=bits, dose=0.05)
    v = b.cine.numpy()
    assert b.cine.dtype == torch.uint16 and b.bits == bits
    assert v.max() <= 2**bits - 1 and v.min() >= 0
    assert v.max() > 2 ** (bits - 1)  # uses the range (not a float in [0, 1] cast to integers)
    assert torch.equal(b.display(), b.cine.float() / (2**bits - 1))


def test_cardiac_motion_moves_vessels_periodically(batch, clean):
    # static generation: one vessel mask for every frame
    assert (clean.vessel_mask == clean.vessel_mask[:, :1]).all()
    m = batch.vessel_mask.float()
    for i in range(len(batch)):  # 3 cases
        period = 15.0 * 60.0 / float(batch.heart_rate_bpm[i])  # frames per heart beat (~1 Hz at 15 frames/s)
        p, half = round(period), round(period / 2)

        def iou(a, b, mi=m[i]):
            return float((mi[a] * mi[b]).sum() / ((mi[a] + mi[b]) > 0).sum())

        # frame-to-frame displacement is present...
        assert min(iou(t, t + 1) for t in range(FRAMES - 1)) < 0.95
        # ...and periodic: a frame overlaps the frame one beat later better than the frame half a beat later
        same_phase = np.mean([iou(t, t + p) for t in range(FRAMES - p)])
        half_phase = np.mean([iou(t, t + half) for t in range(FRAMES - half)])
        assert same_phase > half_phase + 0.1, (same_phase, half_phase)
        assert same_phase > 0.7


def test_lesions_move_with_the_vessels(batch):
    c = batch.centers.round().long()
    for i, k in zip(*torch.nonzero(batch.grades >= 0, as_tuple=True), strict=True):  # lesions of the batch
        near = torch.zeros(FRAMES, dtype=torch.bool)
        for dy, dx in np.ndindex(3, 3):  # within one pixel (a severe lesion's lumen is < 1 px wide at 128 x 128)
            cy = (c[i, k, :, 0] + dy - 1).clamp(0, SHAPE[0] - 1)
            cx = (c[i, k, :, 1] + dx - 1).clamp(0, SHAPE[1] - 1)
            near |= batch.vessel_mask[i, torch.arange(FRAMES), cy, cx]
        assert near.all()  # the lesion centre stays on the moving vessel in every frame
        assert float((batch.centers[i, k] - batch.centers[i, k, :1]).norm(dim=-1).max()) > 1.0  # it moves
        box = batch.boxes[i, k]
        assert ((box[:, 0] <= batch.centers[i, k, :, 0]) & (batch.centers[i, k, :, 0] < box[:, 2])).all()
    masks = batch.lesion_masks()
    assert masks.shape == (3, 2, FRAMES, *SHAPE) and masks.any()


def _darkness(clean) -> torch.Tensor:
    """Per case and frame: mean optical density of the dye in the lumen, ``log(I_0) - log(I_t)`` (frame 0 before
    the dye arrives), from the stored values."""
    q = (clean.cine.double() - OFFSET).clamp(min=1.0).log()
    od = q[:, :1] - q  # (N, T, H, W)
    mask = clean.vessel_mask[:, :1].expand_as(od)
    return (od * mask).sum((2, 3)) / mask.sum((2, 3))


def test_contrast_washes_in_and_out(clean):
    dark = _darkness(clean)
    for i in range(len(clean)):  # 3 cases
        d = dark[i].numpy()
        peak = int(d.argmax())
        assert 3 <= peak <= FRAMES - 8, peak  # rises, peaks inside the run
        assert abs(d[0]) < 0.02 * d.max() and d[-1] < 0.6 * d.max()  # before: none; end: washed out
        assert np.all(np.diff(d[: max(peak - 2, 1)]) >= -1e-3 * d.max())  # wash-in is monotone
        # the image follows the gamma-variate bolus at the ostium (delayed along the tree)
        assert np.corrcoef(d, clean.contrast[i].numpy())[0, 1] > 0.8  # delayed along the tree: not exactly it


def test_bolus_curve_formula():
    t = torch.linspace(0, 5, 501)
    c = bolus_curve(t, torch.tensor(0.5), torch.tensor(1.0), torch.tensor(3.0))
    assert float(c[t < 0.5].abs().max()) == 0.0
    assert abs(float(t[c.argmax()]) - 1.5) < 0.011 and abs(float(c.max()) - 1.0) < 1e-6
    tau = 2.0  # an independent evaluation of the gamma variate at t = 2.5
    assert math.isclose(float(c[250]), tau**3 * math.exp(3 * (1 - tau)), rel_tol=1e-5)


def _temporal_stats(b, clean) -> tuple[np.ndarray, np.ndarray]:
    """Temporal mean and variance of pixels whose expected value is constant over the run (no vessel, no
    catheter; static vessels), as (mean, var) over many pixels: a flat region in time."""
    flat = (clean.cine.int().amax(1) == clean.cine.int().amin(1)) & ~clean.vessel_mask.any(1)
    v = b.cine.double()
    mean, var = v.mean(1)[flat].numpy(), v.var(1)[flat].numpy()
    return mean, var


@pytest.mark.parametrize("exact", [False, True])
def test_noise_is_poisson_gaussian(exact):
    kw = {"shape": (128, 128), "frames": 24, "seed": 5, "motion": 0.0, "grades": ()}
    clean = make_clinical_angiogram_dataset(2, noise=False, **kw)
    b = make_clinical_angiogram_dataset(2, exact_poisson=exact, **kw)
    mean, var = _temporal_stats(b, clean)
    assert mean.size > 5000 and np.ptp(mean) > 1000  # a wide range of signal levels
    # var = gain * (mean - offset) + sigma_e^2 (+ 1/12 rounding): fit the line over the flat pixels
    slope, intercept = np.polyfit(mean - OFFSET, var, 1)
    assert slope == pytest.approx(b.gain, rel=0.08), (slope, b.gain)
    assert abs(intercept - (b.electronic_sigma**2 + 1 / 12)) < 0.15 * var.mean()
    lo, hi = np.quantile(mean, [0.1, 0.9])
    assert var[mean > hi].mean() > 1.5 * var[mean < lo].mean()  # the noise grows with the signal


def test_electronic_noise_floor():
    kw = {"shape": (128, 128), "frames": 24, "seed": 5, "motion": 0.0, "grades": ()}
    clean = make_clinical_angiogram_dataset(1, noise=False, **kw)
    b = make_clinical_angiogram_dataset(1, dose=1e5, electronic_noise=80.0, **kw)  # quantum noise negligible
    mean, var = _temporal_stats(b, clean)
    assert b.electronic_sigma == pytest.approx(20.0)  # 80 at 512 x 512 -> 20 at 128 x 128
    assert np.median(var) == pytest.approx(400.0 + 1 / 12 + b.gain * np.median(mean - OFFSET), rel=0.1)


def test_stenosis_grades_as_requested():
    b = make_clinical_angiogram_dataset(6, shape=(128, 128), frames=8, seed=2, grades=("mild", "severe"))
    assert (b.grades == torch.tensor([GRADES.index("mild"), GRADES.index("severe")])).all()
    assert (b.labels == 1).all()
    for k, name in enumerate(("mild", "severe")):
        lo, hi = GRADE_RANGES[name]
        assert ((b.stenosis[:, k] >= lo) & (b.stenosis[:, k] <= hi)).all()
    neg = make_clinical_angiogram_dataset(4, shape=(128, 128), frames=8, seed=2, grades=("mild",))
    assert (neg.labels == 0).all() and (neg.grades[:, 1] == -1).all()
    case = make_clinical_angiogram(seed=1, grades=("moderate",), shape=(64, 64), frames=6)
    assert case["label"] == 1 and case["lesions"][0]["grade"] == "moderate" and len(case["lesions"][0]["boxes"]) == 6


def test_measured_narrowing_follows_the_grade():
    """Dye density through the lesion centre relative to the densest lumen in its box: the narrowing is visible
    in the image, ~(1 - s) / (1 - 0.3 s) for a diameter reduction s."""
    kw = {"shape": (256, 256), "frames": 12, "seed": 8, "motion": 0.0, "noise": False}
    ratios = {}
    for name in ("mild", "severe"):
        b = make_clinical_angiogram_dataset(4, grades=(name,), **kw)
        q = (b.cine.double() - OFFSET).clamp(min=1.0).log()
        peak = b.contrast.argmax(1)
        od = q[:, 0] - q[torch.arange(4), peak]  # (N, H, W) dye density at peak opacification
        r = []
        for i in range(4):  # 4 cases
            y0, x0, y1, x1 = b.boxes[i, 0, 0].long().tolist()
            cy, cx = b.centers[i, 0, 0].round().long().tolist()
            r.append(float(od[i, cy - 1 : cy + 2, cx - 1 : cx + 2].max() / od[i, y0:y1, x0:x1].max()))
        ratios[name] = float(np.median(r))
    assert ratios["severe"] < 0.45 and ratios["mild"] > 0.6, ratios


def test_invalid_arguments():
    with pytest.raises(ValueError, match="bits"):
        make_clinical_angiogram_dataset(1, shape=(64, 64), frames=4, bits=20)
    with pytest.raises(ValueError, match="64"):
        make_clinical_angiogram_dataset(1, shape=(32, 32), frames=4)
    with pytest.raises(ValueError, match="dose"):
        make_clinical_angiogram_dataset(1, shape=(64, 64), frames=4, dose=0.0)


_MEASURE = """
import resource, sys, time, torch
torch.set_num_threads(1)
import monai, monai_saliency.data
from monai_saliency.data.synthetic.angiogram_clinical import make_clinical_angiogram_dataset
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
b = make_clinical_angiogram_dataset(1, shape=({s}, {s}), frames={t}, seed=0)
print(time.perf_counter() - t, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("side", "frames", "max_s"), [(512, 48, 30.0), (1024, 30, 60.0)])
def test_clinical_sizes_time_and_memory(side, frames, max_s):
    """512 x 512 x 48 takes ~4 s and 1024 x 1024 x 30 ~10 s on one free thread (bounds leave room for a busy
    machine); peak RSS above the imports stays under 1 GB."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE.format(s=side, t=frames)], capture_output=True, text=True, check=True
    )
    seconds, mb = (float(v) for v in out.stdout.split())
    assert seconds < max_s and mb < 1024, (seconds, mb)
