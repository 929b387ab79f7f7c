"""Safe output writing: atomic replace, never over an input, and NIfTI maps in the input's geometry."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor, NibabelWriter

__all__ = ["AtomicNibabelWriter", "atomic_output", "save_nifti", "source_paths"]

_MULTI_SUFFIXES = (".nii.gz", ".tar.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in _MULTI_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix


def source_paths(*tensors: torch.Tensor) -> list[Path]:
    """Files the given MetaTensors were read from (``meta["filename_or_obj"]``), resolved."""
    paths = []
    for t in tensors:
        if isinstance(t, MetaTensor):
            src = t.meta.get("filename_or_obj")
            srcs = src if isinstance(src, (list, tuple)) else [src]
            paths += [Path(s).resolve() for s in srcs if isinstance(s, (str, os.PathLike)) and str(s)]
    return paths


@contextmanager
def atomic_output(
    path: str | os.PathLike, protect: Iterable[str | os.PathLike] = (), overwrite: bool = True
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched, so no partial output
    is ever visible under the final name.

    Args:
        path: final destination; parent folders are created.
        protect: input files that must never be overwritten.
        overwrite: if False, refuse to replace an existing ``path``.

    Yields:
        The temporary path (same folder and suffix as ``path``) to write to.

    Raises:
        FileExistsError: if ``path`` is a protected input, or exists and ``overwrite`` is False.
    """
    final = Path(path).resolve()
    if any(final == Path(p).resolve() for p in protect):
        raise FileExistsError(f"refusing to overwrite the input file {final}; choose another output folder.")
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True or choose another name.")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{_suffix(final)}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions a plain open() would
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_nifti(
    image: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    affine: torch.Tensor | np.ndarray | None = None,
    protect: Iterable[str | os.PathLike] = (),
    overwrite: bool = True,
) -> Path:
    """Write a channel-first image ``(C, *spatial)`` as NIfTI, atomically, with the given or carried affine.

    One channel is written as a plain 2D/3D image; several channels follow MONAI's NIfTI convention
    (spatial axes padded to 3, channels last), so a 2D multi-channel map reads back as ``(C, H, W, 1)``.

    Args:
        image: ``(C, *spatial)``; a MetaTensor contributes its affine (and the input file it came from is
            protected from being overwritten).
        path: destination ``.nii`` or ``.nii.gz``.
        affine: 4x4 voxel-to-world matrix; default the MetaTensor's affine, else identity.
        protect: further input files never to overwrite.
        overwrite: replace an existing output.

    Returns:
        The written path.

    Raises:
        ValueError: if ``image`` is not channel-first with 1 to 3 spatial axes, or the suffix is not NIfTI.
        FileExistsError: see :func:`atomic_output`.
    """
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(f"NIfTI output needs a .nii or .nii.gz name, got {path.name!r}.")
    if image.ndim not in (2, 3, 4):
        raise ValueError(
            f"expected a channel-first image (C, *spatial) with 1-3 spatial axes, got {tuple(image.shape)}."
        )
    if affine is None and isinstance(image, MetaTensor):
        affine = image.affine
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    data = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    data = data.astype(np.float32)
    if data.shape[0] == 1:
        data = data[0]
    else:  # MONAI's NIfTI convention: spatial axes padded to 3, channels last
        spatial = data.shape[1:] + (1,) * (3 - (data.ndim - 1))
        data = np.moveaxis(data, 0, -1).reshape(*spatial, data.shape[0])
    nifti = nib.Nifti1Image(data, affine)
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    with atomic_output(path, protect=[*source_paths(image), *protect], overwrite=overwrite) as tmp:
        nib.save(nifti, str(tmp))
    return path


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`atomic_output`: no partial file is ever visible.

    Use it with ``SaveImage(d)(..., writer=AtomicNibabelWriter)`` (or ``"monai_saliency.data.io.AtomicNibabelWriter"``
    in a bundle config).
    """

    def set_metadata(self, meta_dict: Mapping | None, resample: bool = True, **options) -> None:
        """Take the affine from ``meta_dict``; resample to the original affine only if ``resample``.

        ``NibabelWriter`` always goes through MONAI's resampler, which fails on 2D maps ``(1, H, W)`` even when
        nothing is to be resampled; without ``resample`` the data are written as they are, with their affine.

        Args:
            meta_dict: metadata with ``affine`` (and ``original_affine``, ``spatial_shape`` for resampling).
            resample: resample to ``original_affine`` (MONAI's behaviour).
            options: as ``NibabelWriter.set_metadata``.
        """
        if resample:
            super().set_metadata(meta_dict, resample=True, **options)
            return
        _, affine, _ = self.get_meta_info(meta_dict)
        if self.output_dtype is None and hasattr(self.data_obj, "dtype"):
            self.output_dtype = self.data_obj.dtype
        self.affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)

    def write(self, filename: os.PathLike | str, verbose: bool = False, **obj_kwargs) -> None:
        """Write to a temporary file beside ``filename`` and rename it into place.

        Args:
            filename: destination ``.nii`` / ``.nii.gz``.
            verbose: log the progress.
            obj_kwargs: passed to ``NibabelWriter.write``.
        """
        with atomic_output(filename) as tmp:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
