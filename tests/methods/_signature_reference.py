"""Independent references for Signature Activation tests: the authors' notebook formula, per item and per channel
(scipy.fft, OpenCV / NumPy bilateral filter, cv2 resize)."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import scipy.fft as sfft
import torch
from torch import nn

from monai_saliency.ops.signature import ZERO_TOL_EPS

# The authors' notebook filters the 0..255 map with cv2.bilateralFilter(map, 2, 140, 140): literal values, not read
# from BILATERAL_DEFAULTS, so that the reference checks the defaults. 3D maps: the same window rule (offsets of norm
# <= d // 2 = 1) in 3D.
NB_D, NB_SIGMA_COLOR, NB_SIGMA_SPACE = 2, 140.0, 140.0
TOL32 = ZERO_TOL_EPS * np.finfo(np.float32).eps


# ----------------------------------------------------------------------------------------------------------------------
# Independent reference: per item, per channel (per frame) loops with scipy.fft, OpenCV / NumPy bilateral, cv2 resize.
# ----------------------------------------------------------------------------------------------------------------------
def _signature_sq(a: np.ndarray, tol: float) -> np.ndarray:
    c = sfft.dctn(a, norm="ortho")
    sig = np.where(np.abs(c) > tol * np.linalg.norm(a), np.sign(c), 0.0)
    return sfft.idctn(sig, norm="ortho") ** 2


def _minmax(m: np.ndarray) -> np.ndarray:
    span = m.max() - m.min()
    return np.zeros_like(m) if span <= 0 else (m - m.min()) / span


def _bilateral_numpy(m: np.ndarray, sp_sigma: float, r_sigma: float, radius: int) -> np.ndarray:
    """Brute-force N-d bilateral filter, ball window, reflect-101 borders."""
    pad = np.pad(m, radius, mode="reflect")
    num = np.zeros_like(m)
    den = np.zeros_like(m)
    for off in itertools.product(range(-radius, radius + 1), repeat=m.ndim):
        if math.sqrt(sum(o * o for o in off)) > radius:
            continue
        nb = pad[tuple(slice(radius + o, radius + o + n) for o, n in zip(off, m.shape))]
        w = np.exp(-sum(o * o for o in off) / (2 * sp_sigma**2)) * np.exp(-((nb - m) ** 2) / (2 * r_sigma**2))
        num += w * nb
        den += w
    return num / den


def _bilateral_ref(m: np.ndarray) -> np.ndarray:
    """The notebook's filter of a ``[0, 1]`` map, on its 0..255 scale (OpenCV on 2D maps, brute force in 3D)."""
    if m.ndim == 2:
        m255 = (255.0 * m).astype(np.float32)
        return cv2.bilateralFilter(m255, NB_D, NB_SIGMA_COLOR, NB_SIGMA_SPACE).astype(np.float64) / 255.0
    return _bilateral_numpy(255.0 * m, NB_SIGMA_SPACE, NB_SIGMA_COLOR, NB_D // 2) / 255.0


def _resize_ref(m: np.ndarray, size) -> np.ndarray:
    if tuple(m.shape) == tuple(size):
        return m
    if m.ndim == 2:  # OpenCV INTER_LINEAR = half-pixel bilinear (align_corners=False) for upsampling
        return cv2.resize(m.astype(np.float64), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    t = torch.from_numpy(m)[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="trilinear", align_corners=False)[0, 0].numpy()


def reference_map(
    acts: np.ndarray, size, frames: bool = False, bilateral: bool = True, tol: float = TOL32
) -> np.ndarray:
    """Per-item, per-channel (and per-frame) Signature Activation, float64; ``tol=0``: plain ``np.sign`` (the
    notebook)."""
    out = []
    for b in range(acts.shape[0]):
        acc = np.zeros(acts.shape[2:])
        for s in range(acts.shape[1]):
            a = acts[b, s].astype(np.float64)
            if frames:
                acc += np.stack([_signature_sq(a[t], tol) for t in range(a.shape[0])])
            else:
                acc += _signature_sq(a, tol)
        m = _minmax(acc / acts.shape[1])
        if bilateral:
            m = np.stack([_bilateral_ref(f) for f in m]) if frames else _bilateral_ref(m)
        out.append(_minmax(_resize_ref(m, size)))
    return np.stack(out)[:, None]


# ----------------------------------------------------------------------------------------------------------------------
# Models whose target activations are known exactly.
# ----------------------------------------------------------------------------------------------------------------------
class Pooled(nn.Module):
    """The target layer ``features`` is an average pooling of the input: activations known in closed form."""

    def __init__(self, spatial_dims: int, factor: int | tuple = 4) -> None:
        super().__init__()
        pool = nn.AvgPool2d if spatial_dims == 2 else nn.AvgPool3d
        self.features = pool(factor)
        self.factor = factor

    def forward(self, x):
        f = self.features(x)
        return f.flatten(2).mean(-1)  # (B, K=C)


def _pool_np(x: np.ndarray, f) -> np.ndarray:
    f = (f,) * (x.ndim - 2) if isinstance(f, int) else f
    shape = list(x.shape[:2])
    for n, k in zip(x.shape[2:], f):
        shape += [n // k, k]
    return x.reshape(shape).mean(axis=tuple(range(3, len(shape), 2)))
