"""Real anatomy and real noise for :mod:`benchmarks.experiments.exp_morch`, read offline from files that installed
packages ship (no downloads):

* nilearn's MNI152 2009a template and tissue maps (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_
  converted.nii.gz``, 1 mm) as the anatomy of the PET phantom (:func:`mni152_anatomy`), block-averaged to the
  voxel size of the functional series so that its noise is used at its native resolution;
* nibabel's test series ``nibabel/tests/data/functional.nii`` (17 x 21 x 3 voxels of 4 x 4 x 8 mm, 20 frames) as
  real scanner noise (:func:`functional_noise_bank`): the residuals of a per-voxel linear fit over time, relative
  to the voxel's mean, scaled to unit standard deviation.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_saliency.data.synthetic.pet_phantom import PhantomAnatomy

MNI_FILES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
#: voxel size of nibabel's functional.nii (mm); the MNI anatomy is averaged to it
FUNCTIONAL_VOXEL = (4, 4, 8)
#: activated regions in MNI mm: primary visual cortex (calcarine, both banks) and the left hand motor area
MNI_REGIONS = {"graded": (0.0, -84.0, 4.0), "rest_task": (-38.0, -22.0, 56.0)}


def _package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, located without importing the package.

    Raises:
        FileNotFoundError: the package is not installed or does not ship the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} is not installed; `pip install {package}` (it ships {'/'.join(parts)}).")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package}.")
    return path


def mni_file(kind: str) -> Path:
    """Path of nilearn's shipped MNI152 ``"t1"``, ``"gm"`` or ``"wm"`` volume."""
    if kind not in MNI_FILES:
        raise ValueError(f"kind must be one of {sorted(MNI_FILES)}, got {kind!r}.")
    return _package_file("nilearn", "datasets", "data", MNI_FILES[kind])


def functional_file() -> Path:
    """Path of nibabel's test series ``functional.nii``."""
    return _package_file("nibabel", "tests", "data", "functional.nii")


def _block_mean(vol: np.ndarray, block: Sequence[int]) -> np.ndarray:
    """Mean over non-overlapping blocks (zero-padded at the far end): partial-volume averaging to a coarser grid."""
    pad = [(0, (-s) % b) for s, b in zip(vol.shape, block)]
    v = np.pad(vol, pad)
    shp = [s // b for s, b in zip(v.shape, block)]
    return v.reshape(shp[0], block[0], shp[1], block[1], shp[2], block[2]).mean(axis=(1, 3, 5))


def mni152_anatomy(voxel_size: Sequence[int] = FUNCTIONAL_VOXEL, margin: int = 1) -> tuple[PhantomAnatomy, np.ndarray]:
    """The MNI152 template as a :class:`PhantomAnatomy` on a grid of ``voxel_size`` mm voxels.

    The 1 mm volumes are cropped to the template's brain (T1 > 0) plus ``margin`` coarse voxels and block-averaged;
    flow = ``1.0 gm + 0.35 wm + 0.1 (1 - gm - wm)`` (the phantom's grey / white / CSF values) inside the mask
    (block mean of T1 > 0 at least 0.5), 0 outside; ``grey`` is the grey-matter probability.

    Args:
        voxel_size: integer block size in mm per axis (the template is 1 mm isotropic).
        margin: coarse voxels kept around the brain's bounding box.

    Returns:
        ``(anatomy, affine)``: the anatomy and the ``(4, 4)`` voxel-to-MNI-mm affine of its grid.

    Raises:
        FileNotFoundError: nilearn or its MNI files are missing.
        ValueError: a voxel size that is not 3 positive integers.
    """
    block = tuple(int(b) for b in voxel_size)
    if len(block) != 3 or min(block) < 1 or any(float(b) != float(v) for b, v in zip(block, voxel_size)):
        raise ValueError(f"voxel_size must be 3 positive integers (mm), got {voxel_size!r}.")
    imgs = {k: nib.load(str(mni_file(k))) for k in MNI_FILES}
    affine = imgs["t1"].affine
    t1 = np.asarray(imgs["t1"].dataobj, dtype=np.float64)
    gm, wm = (np.asarray(imgs[k].dataobj, dtype=np.float64) / 255.0 for k in ("gm", "wm"))
    brain = t1 > 0
    lo = [
        max(int(np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != ax))).min()) - margin * b, 0)
        for ax, b in enumerate(block)
    ]
    hi = [
        int(np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != ax))).max()) + 1 + margin * b
        for ax, b in enumerate(block)
    ]
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    gm_c, wm_c = _block_mean(gm[crop], block), _block_mean(wm[crop], block)
    mask = _block_mean(brain[crop].astype(np.float64), block) >= 0.5
    flow = np.where(mask, gm_c + 0.35 * wm_c + 0.1 * np.clip(1.0 - gm_c - wm_c, 0.0, 1.0), 0.0)
    grid_affine = affine.copy()
    grid_affine[:3, :3] = affine[:3, :3] * np.array(block, dtype=np.float64)[None]
    # centre of coarse voxel 0 = centre of its 1 mm block
    grid_affine[:3, 3] = (affine @ np.array([*(np.array(lo) + (np.array(block) - 1) / 2.0), 1.0]))[:3]
    anatomy = PhantomAnatomy(flow=flow, mask=mask, grey=np.where(mask, gm_c, 0.0), voxel_size=tuple(map(float, block)))
    return anatomy, grid_affine


def normalised_centre(mm: Sequence[float], affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Normalised grid coordinates ``[-1, 1]^3`` (``make_pet_study``'s ``region_centre``) of a point in mm."""
    ijk = np.linalg.solve(affine, np.array([*map(float, mm), 1.0]))[:3]
    return (ijk + 0.5) / np.asarray(shape, dtype=np.float64) * 2 - 1


def functional_noise_bank() -> tuple[np.ndarray, dict]:
    """Real scanner noise: residuals of nibabel's ``functional.nii`` after a per-voxel linear fit over time.

    Returns:
        ``(bank (F, X, Y, Z) float64 of unit overall standard deviation, info)`` with ``info`` = voxel size (mm),
        frames, the raw relative noise level (residual sd / voxel mean, before scaling) and the lag-1 spatial
        autocorrelation of the residuals along x (to show they are not white).

    Raises:
        FileNotFoundError: nibabel's test data is missing.
    """
    img = nib.load(str(functional_file()))
    data = np.asarray(img.dataobj, dtype=np.float64)  # (X, Y, Z, T)
    t = data.shape[-1]
    design = np.stack([np.ones(t), np.linspace(-1, 1, t)], axis=1)  # (T, 2): mean + linear drift
    flat = data.reshape(-1, t).T  # (T, V)
    beta, *_ = np.linalg.lstsq(design, flat, rcond=None)
    resid = (flat - design @ beta) / np.maximum(flat.mean(0), 1e-12)  # relative to the voxel's mean signal
    rel_sd = float(resid.std())
    bank = (resid / rel_sd).T.reshape(data.shape).transpose(3, 0, 1, 2)
    ac = float(np.corrcoef(bank[:, :-1].ravel(), bank[:, 1:].ravel())[0, 1])
    info = {
        "voxel_size": tuple(float(z) for z in img.header.get_zooms()[:3]),
        "frames": int(t),
        "grid": tuple(int(s) for s in data.shape[:3]),
        "relative_sd": rel_sd,
        "lag1_autocorr_x": ac,
    }
    return bank, info
