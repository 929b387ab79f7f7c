"""Checks of written Secondary Capture objects with independent tools: dciodvfy (dicom3tools), dcm2niix, and the
blend of a zero map computed from the source pixels (not with the package's code)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib
import numpy as np

from tests._system_tools import require_tool

__all__ = ["dciodvfy_errors", "dcm2niix_rgb", "zero_map_blend"]


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for ``path`` (empty: valid); skips/fails per ``require_tool``."""
    exe = require_tool("dciodvfy", "dicom3tools")
    result = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    assert any("SCImage" in line for line in lines), lines  # dciodvfy recognised the IOD it checked
    return [line for line in lines if line.startswith("Error")]


def dcm2niix_rgb(path: Path, work: Path) -> np.ndarray:
    """Convert one DICOM file with dcm2niix (alone in a folder) and return the NIfTI as ``(X, Y, Z, 3)`` uint8."""
    import nibabel as nib

    exe = require_tool("dcm2niix", "dcm2niix")
    src, out = work / "in", work / "out"
    src.mkdir(parents=True)
    out.mkdir()
    shutil.copy(path, src / path.name)
    result = subprocess.run([exe, "-o", str(out), str(src)], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    files = sorted(out.glob("*.nii*"))
    assert len(files) == 1, (files, result.stdout)
    data = np.asarray(nib.load(str(files[0])).dataobj)
    assert data.dtype.names == ("R", "G", "B"), data.dtype  # RGB24
    return np.stack([data["R"], data["G"], data["B"]], axis=-1)


def zero_map_blend(source_pixels: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """``(..., 3)`` uint8: the source grey (min-max over all frames) blended with the colour of map value 0."""
    grey = source_pixels.astype(np.float64)
    grey = (grey - grey.min()) / (grey.max() - grey.min())
    zero = np.asarray(matplotlib.colormaps[cmap](0.0)[:3])
    return np.rint(255 * ((1 - alpha) * grey[..., None] + alpha * zero)).astype(np.uint8)
