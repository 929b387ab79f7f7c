"""Synthetic PET activation studies (phantom) in the spirit of Mørch et al. (1995), §3: 8 subjects x 8 scans.

A brain-shaped phantom (ellipsoidal brain, cortical grey-matter shell and deep grey nuclei over white matter,
ventricles; relative flow grey 1.0, white 0.35, CSF 0.1, blurred to PET resolution) is varied per subject
by a smooth displacement field (anatomy after imperfect spatial normalisation) and a smooth multiplicative
field, scaled per scan by a global-flow factor, and corrupted by spatially correlated Gaussian noise. Two
paradigms:

* ``"graded"``: each subject is scanned once at each of 8 activation levels (random order per subject);
  an occipital ("visual") region's flow rises in proportion to the level; target ``y`` = level (1..8).
* ``"rest_task"``: 4 rest and 4 task scans per subject (alternating); a superior left-lateral ("motor") region
  is activated during the task; target ``y`` = -1 (rest) / +1 (task).

Everything is generated with one seeded numpy Generator, vectorised over scans (no per-scan loop).

Two options replace parts of the phantom with real data (the defaults are unchanged): ``anatomy=``
(:class:`PhantomAnatomy`: a flow volume, brain mask and grey-matter map on the study grid, e.g. a template resampled
to it) replaces the ellipsoid brain, and ``noise_bank=`` (real noise fields, e.g. residuals of a functional series)
replaces the synthetic correlated noise by tiles of the real fields.

Usage::

    study = make_pet_study("graded", shape=(40, 48, 32), seed=0)
    study.images        # (64, *shape) MetaTensor with a 2 x 2 x 3.125 mm affine
    study.mask          # (*shape) bool brain mask;  study.truth: ground-truth activation mask
    save_pet_study_nifti(study, "out/graded");  same = load_pet_study_nifti("out/graded")
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.nifti import save_nifti

__all__ = [
    "PARADIGMS",
    "PETStudy",
    "PhantomAnatomy",
    "brain_phantom",
    "load_pet_study_nifti",
    "make_pet_study",
    "read_pet_study_images",
    "save_pet_study_dicom",
    "save_pet_study_nifti",
]

PARADIGMS = ("graded", "rest_task")
#: region centres in normalised brain coordinates (x: right->left, y: posterior->anterior, z: inferior->superior)
_REGIONS = {"graded": (0.0, -0.8, 0.05), "rest_task": (0.55, 0.05, 0.6)}


@dataclass
class PETStudy:
    """A PET activation study: scans on one grid with one target each, generated (:func:`make_pet_study`) or read
    from a folder (the ``pet_morch_saliency`` bundle's ``scripts.study.load_study``).

    Attributes:
        images: ``(J, *shape)`` float32 MetaTensor (affine in mm, RAS axes).
        mask: ``(*shape)`` bool brain mask (None: a folder without one).
        truth: ``(*shape)`` bool ground-truth activation region (None: unknown).
        targets: ``(J,)`` float64: activation level 1..8 (graded) or -1/+1 (rest/task), or a folder's targets.
        subjects: ``(J,)`` long subject index (None: unknown).
        scans: ``(J,)`` long scan index within the subject (None: unknown).
        anatomy: ``(*shape)`` float32 noise-free template (grey/white/CSF), e.g. for figure backgrounds (or None).
        paradigm: ``"graded"`` or ``"rest_task"`` (``""``: unknown).
        affine: ``(4, 4)`` float64 voxel-to-world matrix.
        folder: the folder the study was read from (None: generated).
        names: scan entries of the folder's targets file, in order.
        sources: the resolved series folders / NIfTI files the scans were read from, in order.
        kind: ``"dicom"`` (all scans PT series), ``"nifti"``, ``"mixed"``, or ``"synthetic"``.
        reference_series: folder of the PT series derived DICOM objects reference, or None.
        extra: further columns of the targets file, per scan.
        files: every file a folder's study was read from (the series' slices, NIfTI files, targets, mask, truth,
            anatomy), resolved; empty for a generated study.
    """

    images: MetaTensor
    mask: torch.Tensor | None
    truth: torch.Tensor | None
    targets: torch.Tensor
    subjects: torch.Tensor | None
    scans: torch.Tensor | None
    anatomy: torch.Tensor | None
    paradigm: str
    affine: torch.Tensor
    folder: Path | None = None
    names: list[str] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    kind: str = "synthetic"
    reference_series: Path | None = None
    extra: list[dict[str, str]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def input_files(self) -> list[Path]:
        """Every input file (never to be overwritten): ``files`` when known, else the files of ``sources``."""
        if self.files:
            return list(self.files)
        files = []
        for s in self.sources:
            files += sorted(p.resolve() for p in s.iterdir()) if s.is_dir() else [s.resolve()]
        return files


@dataclass
class PhantomAnatomy:
    """An anatomy on the study grid for :func:`make_pet_study` (instead of the ellipsoid phantom).

    Attributes:
        flow: ``(X, Y, Z)`` relative flow (grey matter ~ 1), e.g. ``1.0 gm + 0.35 wm + 0.1 csf`` from tissue maps.
        mask: ``(X, Y, Z)`` bool brain mask.
        grey: ``(X, Y, Z)`` grey-matter weight in [0, 1] (the activation is ``0.4 + 0.6 grey`` of its peak).
        voxel_size: voxel spacing in mm (for the study's affine).
    """

    flow: np.ndarray
    mask: np.ndarray
    grey: np.ndarray
    voxel_size: tuple[float, float, float]

    def __post_init__(self) -> None:
        shapes = {np.shape(self.flow), np.shape(self.mask), np.shape(self.grey)}
        if len(shapes) != 1 or len(np.shape(self.flow)) != 3:
            raise ValueError(f"flow, mask and grey must be 3D volumes of one shape, got {sorted(shapes)}.")
        if not np.all(np.isfinite(self.flow)) or not np.any(self.mask):
            raise ValueError("flow must be finite and mask must select at least one voxel.")
        if len(self.voxel_size) != 3 or min(self.voxel_size) <= 0:
            raise ValueError(f"voxel_size must be 3 positive spacings, got {self.voxel_size!r}.")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in np.shape(self.flow))


def _noise_tiles(rng: np.random.Generator, bank: np.ndarray, n: int, shape: Sequence[int]) -> np.ndarray:
    """``(n, *shape)`` noise volumes tiled from ``bank`` ``(F, a, b, c)``: each tile an independent draw of a field
    and of a flip per axis (the fields are used at their native voxel size; seams are independent)."""
    f, tile = bank.shape[0], bank.shape[1:]
    reps = [-(-int(s) // int(t)) for s, t in zip(shape, tile)]
    n_tiles = n * int(np.prod(reps))
    idx = rng.integers(0, f, size=n_tiles)
    flips = rng.random((n_tiles, 3)) < 0.5
    grids = [np.arange(t) for t in tile]
    ii = [np.where(flips[:, a, None], t - 1 - grids[a][None], grids[a][None]) for a, t in enumerate(tile)]
    tiles = bank[idx[:, None, None, None], ii[0][:, :, None, None], ii[1][:, None, :, None], ii[2][:, None, None, :]]
    tiles = tiles.reshape(n, *reps, *tile)  # (n, rx, ry, rz, a, b, c) -> (n, rx a, ry b, rz c)
    vol = tiles.transpose(0, 1, 4, 2, 5, 3, 6).reshape(n, *(r * t for r, t in zip(reps, tile)))
    return vol[:, : shape[0], : shape[1], : shape[2]]


def _grid(shape: Sequence[int]) -> np.ndarray:
    """Normalised coordinates in [-1, 1]^3 of the voxel centres: ``(3, *shape)``."""
    axes = [(np.arange(n) + 0.5) / n * 2 - 1 for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def brain_phantom(shape: Sequence[int], coords: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free relative-flow phantom and brain mask.

    Args:
        shape: ``(X, Y, Z)``.
        coords: optional ``(3, *shape)`` normalised coordinates to evaluate at (for deformed anatomies).

    Returns:
        ``(flow (*shape) float64, mask (*shape) bool)``.
    """
    c = _grid(shape) if coords is None else coords
    radii = np.array([0.78, 0.88, 0.8]).reshape(3, *[1] * (c.ndim - 1))
    u = c / radii
    r = np.sqrt((u**2).sum(0))
    brain = r <= 1.0
    flow = np.where(brain, 0.35, 0.0)
    flow = np.where(brain & (r > 0.78), 1.0, flow)  # cortical grey-matter shell
    for sx in (-0.25, 0.25):  # deep grey nuclei (thalamus / basal ganglia)
        d = ((u[0] - sx) / 0.18) ** 2 + (u[1] / 0.3) ** 2 + ((u[2] + 0.05) / 0.2) ** 2
        flow = np.where(d <= 1, 0.9, flow)
    for sx in (-0.1, 0.1):  # lateral ventricles
        d = ((u[0] - sx) / 0.07) ** 2 + ((u[1] - 0.05) / 0.35) ** 2 + ((u[2] - 0.15) / 0.12) ** 2
        flow = np.where(d <= 1, 0.1, flow)
    return flow, brain


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Gaussian noise smoothed over the trailing 3 axes and rescaled to unit standard deviation."""
    n = rng.standard_normal(tuple(shape))
    sig = (0,) * (len(shape) - 3) + (sigma,) * 3
    n = ndimage.gaussian_filter(n, sigma=sig, mode="wrap")
    return n / max(float(n.std()), 1e-12)


def make_pet_study(
    paradigm: str = "graded",
    shape: Sequence[int] | None = None,
    n_subjects: int = 8,
    n_scans: int = 8,
    seed: int = 0,
    activation: float = 0.15,
    noise: float = 0.06,
    noise_fwhm: float = 2.5,
    resolution_fwhm: float = 1.5,
    anatomy_shift: float = 0.8,
    global_flow_sd: float = 0.08,
    region_radius: float = 0.2,
    voxel_size: Sequence[float] = (2.0, 2.0, 3.125),
    anatomy: PhantomAnatomy | None = None,
    noise_bank: np.ndarray | None = None,
    region_centre: Sequence[float] | None = None,
) -> PETStudy:
    """Generate a synthetic PET activation study.

    Args:
        paradigm: ``"graded"`` (8 levels, occipital region, regression target) or ``"rest_task"`` (on/off,
            motor region, ±1 target).
        shape: volume shape ``(X, Y, Z)``; the paper's is ``(128, 128, 48)``. Default ``(40, 48, 32)``, or the
            anatomy's shape when ``anatomy`` is given.
        n_subjects: subjects (8 in the paper).
        n_scans: scans per subject (8; must be even for rest/task; levels 1..n_scans for graded).
        seed: seed of every random choice.
        activation: peak flow increase of the region at the top level / during the task (grey matter = 1).
        noise: standard deviation of the correlated noise (grey matter = 1).
        noise_fwhm: noise correlation FWHM in voxels.
        resolution_fwhm: PET resolution blur of the phantom and activation (voxels).
        anatomy_shift: amplitude (voxels, typical max) of the per-subject smooth displacement.
        global_flow_sd: relative standard deviation of the per-scan global flow.
        region_radius: activation region radius, as a fraction of the brain half-axes.
        voxel_size: voxel spacing in mm for the affine (the anatomy's when ``anatomy`` is given).
        anatomy: a :class:`PhantomAnatomy` on the study grid instead of the ellipsoid phantom; each subject's
            anatomy is it sampled (linearly) at the displaced voxel positions.
        noise_bank: ``(F, a, b, c)`` real noise fields (e.g. residuals of a functional series, unit standard
            deviation overall) used instead of the synthetic correlated noise: every scan's noise is tiled from
            independently drawn fields (random flips), scaled by ``noise``; ``noise_fwhm`` is then unused.
        region_centre: centre of the activated region in normalised grid coordinates ``[-1, 1]^3`` (default:
            the paradigm's occipital / motor position in the ellipsoid phantom).

    Returns:
        :class:`PETStudy`.

    Raises:
        ValueError: unknown paradigm, a shape that is not 3D or too small (< 8 voxels per axis), fewer than 2
            subjects or scans, an odd ``n_scans`` for rest/task, negative amplitudes, a ``shape`` that differs
            from the anatomy's, a noise bank that is not ``(F, a, b, c)`` finite, or a region centre that is not 3
            numbers.
    """
    if paradigm not in PARADIGMS:
        raise ValueError(f"paradigm must be one of {PARADIGMS}, got {paradigm!r}.")
    if anatomy is not None:
        if shape is not None and tuple(int(s) for s in shape) != anatomy.shape:
            raise ValueError(f"shape {tuple(shape)} differs from the anatomy's {anatomy.shape}; leave shape unset.")
        shape, voxel_size = anatomy.shape, anatomy.voxel_size
    shape = tuple(int(s) for s in ((40, 48, 32) if shape is None else shape))
    if noise_bank is not None:
        noise_bank = np.asarray(noise_bank, dtype=np.float64)
        if noise_bank.ndim != 4 or noise_bank.shape[0] < 1 or not np.all(np.isfinite(noise_bank)):
            raise ValueError(f"noise_bank must be finite (F, a, b, c) fields, got shape {noise_bank.shape}.")
    if region_centre is not None and np.shape(region_centre) != (3,):
        raise ValueError(f"region_centre must be 3 normalised coordinates, got {region_centre!r}.")
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3D with at least 8 voxels per axis, got {shape}.")
    if n_subjects < 1 or n_scans < 2 or n_subjects * n_scans < 2:
        raise ValueError(f"need n_subjects >= 1 and n_scans >= 2, got {n_subjects}, {n_scans}.")
    if paradigm == "rest_task" and n_scans % 2:
        raise ValueError(f"rest/task needs an even number of scans per subject, got {n_scans}.")
    if min(activation, noise, noise_fwhm, resolution_fwhm, anatomy_shift, global_flow_sd) < 0 or region_radius <= 0:
        raise ValueError("amplitudes, widths and the region radius must be non-negative (radius > 0).")
    rng = np.random.default_rng(seed)
    fwhm2sigma = 1.0 / (2 * np.sqrt(2 * np.log(2)))
    grid = _grid(shape)  # (3, *shape)
    if anatomy is None:
        template, mask = brain_phantom(shape)
        grey = (template >= 0.85).astype(np.float64)
    else:
        template, mask = np.asarray(anatomy.flow, np.float64), np.asarray(anatomy.mask, bool)
        grey = np.clip(np.asarray(anatomy.grey, np.float64), 0.0, 1.0)
    spacing = 2.0 / np.array(shape)  # normalised units per voxel

    # per-subject anatomy: smooth displacement (in voxels) + smooth multiplicative flow field
    disp = _smooth_noise(rng, (n_subjects, 3, *shape), sigma=max(min(shape) / 6, 1.0))
    if anatomy is None:
        disp = disp * (anatomy_shift / 2.5) * spacing.reshape(1, 3, 1, 1, 1)
        coords = grid[None] + disp  # (S, 3, *shape)
        flow_s, _ = brain_phantom(shape, np.moveaxis(coords, 1, 0))  # (S, *shape)
    else:  # the same displacement, in voxels, applied to the given volume by linear interpolation
        vox = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
        coords = vox[None] + disp * (anatomy_shift / 2.5)
        flow_s = np.stack([ndimage.map_coordinates(template, c, order=1, mode="nearest") for c in coords])
    flow_s = flow_s * (1 + 0.05 * _smooth_noise(rng, (n_subjects, *shape), sigma=max(min(shape) / 8, 1.0)))

    # design
    j = n_subjects * n_scans
    subjects = np.repeat(np.arange(n_subjects), n_scans)
    scans = np.tile(np.arange(n_scans), n_subjects)
    if paradigm == "graded":
        levels = np.argsort(rng.random((n_subjects, n_scans)), axis=1) + 1  # each level once, random order
        targets = levels.reshape(-1).astype(np.float64)
        amplitude = (targets - 1) / max(n_scans - 1, 1)
    else:
        on = (np.arange(n_scans) % 2 == 1)[None].repeat(n_subjects, 0).reshape(-1)
        targets = np.where(on, 1.0, -1.0)
        amplitude = on.astype(np.float64)

    # activation region (template space: the study is "spatially normalised")
    centre = (
        np.array(_REGIONS[paradigm]).reshape(3, 1, 1, 1) * np.array([0.78, 0.88, 0.8]).reshape(3, 1, 1, 1)
        if region_centre is None
        else np.asarray(region_centre, dtype=np.float64).reshape(3, 1, 1, 1)
    )
    d2 = (((grid - centre) / (region_radius * np.array([0.78, 0.88, 0.8]).reshape(3, 1, 1, 1))) ** 2).sum(0)
    region = np.exp(-d2 * np.log(2))  # half maximum at the region radius
    truth = (region >= 0.5) & mask
    act = region * (0.4 + 0.6 * grey)  # activation mostly in grey matter

    glob = 1 + global_flow_sd * rng.standard_normal(j)
    images = flow_s[subjects] + activation * amplitude[:, None, None, None] * act[None]
    images = images * glob[:, None, None, None]
    if resolution_fwhm > 0:
        images = ndimage.gaussian_filter(images, sigma=(0,) + (resolution_fwhm * fwhm2sigma,) * 3, mode="constant")
    if noise > 0 and noise_bank is not None:
        images = images + noise * _noise_tiles(rng, noise_bank, j, shape)
    elif noise > 0:
        images = images + noise * _smooth_noise(rng, (j, *shape), sigma=max(noise_fwhm * fwhm2sigma, 1e-3))
    anatomy = ndimage.gaussian_filter(template, sigma=resolution_fwhm * fwhm2sigma) if resolution_fwhm > 0 else template

    affine = np.diag([*map(float, voxel_size), 1.0])
    affine[:3, 3] = -np.array(voxel_size) * (np.array(shape) - 1) / 2  # centred field of view
    aff_t = torch.as_tensor(affine)
    return PETStudy(
        images=MetaTensor(torch.as_tensor(images, dtype=torch.float32), affine=aff_t.clone()),
        mask=torch.as_tensor(mask),
        truth=torch.as_tensor(truth),
        targets=torch.as_tensor(targets),
        subjects=torch.as_tensor(subjects, dtype=torch.long),
        scans=torch.as_tensor(scans, dtype=torch.long),
        anatomy=torch.as_tensor(anatomy, dtype=torch.float32),
        paradigm=paradigm,
        affine=aff_t,
    )


_FILES = {"images": "images.nii.gz", "mask": "mask.nii.gz", "truth": "truth.nii.gz", "anatomy": "anatomy.nii.gz"}


def save_pet_study_nifti(study: PETStudy, folder: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write a study as NIfTI (atomically): ``images.nii.gz`` (4D, scans last), ``mask``, ``truth``, ``anatomy``
    and ``study.json`` (targets, subjects, scans, paradigm).

    Args:
        study: the study.
        folder: output folder (created).
        overwrite: replace existing files.

    Returns:
        The folder.
    """
    folder = Path(folder)
    aff = study.affine
    save_nifti(study.images.as_tensor(), folder / _FILES["images"], affine=aff, overwrite=overwrite)
    save_nifti(study.mask[None].to(torch.uint8), folder / _FILES["mask"], affine=aff, overwrite=overwrite)
    save_nifti(study.truth[None].to(torch.uint8), folder / _FILES["truth"], affine=aff, overwrite=overwrite)
    save_nifti(study.anatomy[None], folder / _FILES["anatomy"], affine=aff, overwrite=overwrite)
    info = {
        "paradigm": study.paradigm,
        "targets": study.targets.tolist(),
        "subjects": study.subjects.tolist(),
        "scans": study.scans.tolist(),
    }
    with atomic_output(folder / "study.json", overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return folder


def read_pet_study_images(folder: str | os.PathLike) -> tuple[MetaTensor, dict]:
    """The scans and ``study.json`` of a folder written by :func:`save_pet_study_nifti` (the one reader of that
    layout: :func:`load_pet_study_nifti` and the ``pet_morch_saliency`` bundle use it).

    Returns:
        ``(images (J, X, Y, Z) float32 MetaTensor with the RAS affine, study.json as a dict)``.

    Raises:
        FileNotFoundError: ``images.nii.gz`` or ``study.json`` is missing.
        ValueError: ``study.json`` has no ``targets`` or lists a different number of scans than the images hold.
    """
    folder = Path(folder)
    for name in (_FILES["images"], "study.json"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder / name} is missing; write the study with save_pet_study_nifti.")
    img = nib.load(str(folder / _FILES["images"]))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data = np.moveaxis(data, -1, 0) if data.ndim == 4 else data[None]
    info = json.loads((folder / "study.json").read_text())
    if not isinstance(info, dict) or "targets" not in info:
        raise ValueError(f"{folder / 'study.json'} has no 'targets' list.")
    if len(info["targets"]) != data.shape[0]:
        raise ValueError(f"{data.shape[0]} scans in the images but {len(info['targets'])} targets in study.json.")
    affine = torch.as_tensor(img.affine, dtype=torch.float64)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), affine=affine), info


def load_pet_study_nifti(folder: str | os.PathLike) -> PETStudy:
    """Read a study written by :func:`save_pet_study_nifti`.

    Raises:
        FileNotFoundError: if a file is missing.
        ValueError: if the images and the label file disagree on the number of scans.
    """
    folder = Path(folder)
    for name in [*_FILES.values(), "study.json"]:
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder / name} is missing; write the study with save_pet_study_nifti.")
    images, info = read_pet_study_images(folder)

    def vol(key: str) -> np.ndarray:
        return np.asarray(nib.load(str(folder / _FILES[key])).dataobj)

    return PETStudy(
        images=images,
        mask=torch.from_numpy(vol("mask") > 0),
        truth=torch.from_numpy(vol("truth") > 0),
        targets=torch.tensor(info["targets"], dtype=torch.float64),
        subjects=torch.tensor(info["subjects"], dtype=torch.long),
        scans=torch.tensor(info["scans"], dtype=torch.long),
        anatomy=torch.from_numpy(vol("anatomy").astype(np.float32)),
        paradigm=info["paradigm"],
        affine=images.affine.clone(),
    )


def save_pet_study_dicom(study: PETStudy, folder: str | os.PathLike) -> list[Path]:
    """Write every scan of a study as a PT series: ``folder/sub-XX/scan-YY/slice_*.dcm``; one DICOM study per
    subject, one series per scan (SeriesDescription holds the target), a shared frame of reference per subject.

    Returns:
        The series folders in scan order.
    """
    from pydicom.uid import generate_uid

    from monai_saliency.data.dicom.pet_series import write_pet_series

    folder = Path(folder)
    out = []
    subj_uids = {int(s): (generate_uid(), generate_uid()) for s in study.subjects.unique().tolist()}
    for n in range(study.images.shape[0]):  # one series per scan: I/O loop
        s, k = int(study.subjects[n]), int(study.scans[n])
        study_uid, for_uid = subj_uids[s]
        sub = folder / f"sub-{s + 1:02d}" / f"scan-{k + 1:02d}"
        write_pet_series(
            study.images.as_tensor()[n],
            sub,
            study.affine,
            patient_id=f"SYNTH^{s + 1:02d}",
            study_uid=study_uid,
            frame_of_reference_uid=for_uid,
            series_number=k + 1,
            series_description=f"{study.paradigm} target={float(study.targets[n]):g}",
        )
        out.append(sub)
    return out
