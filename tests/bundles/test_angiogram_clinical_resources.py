"""The angiogram bundle (clinical configuration) on one clinical-size cine of the realistic generator (512 x 512 x 48,
12-bit XA with detector noise), run as a user would
(``python -m monai.bundle run`` in a fresh subprocess, under the resource probe of
``benchmarks/speed/bench_clinical_cine.py``): issue #22 §1's bounds per study, from one shared run. Peak resident
memory <= 1 GiB above the import footprint, bytes written <= 2 x the input, GIF <= 5 MB with its longest side <= 512.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from benchmarks.speed import bench_clinical_cine as bench
from tests._parallel_runs import session_run

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the probe reads /proc (Linux)")


@session_run("angiogram_clinical_resources")
def _clinical_run(root: Path) -> Callable[[], tuple[Path, Path, dict, dict]]:
    """The clinical-size study written now; its run under the probe and the measures, to call later."""
    study = bench.write_study(root / "data", (512, 512), 48, bench.clinical_cine)  # the realistic generator
    out = root / "out"

    def run() -> tuple[Path, Path, dict, dict]:
        report = bench.run_study(root / "data", out, config_file=bench.CONFIGS["clinical"])  # the 128 x 128 model
        return study, out, report, bench.measure(study, out, report)

    return run


@pytest.fixture(scope="module")
def clinical_run(session_runs):
    """The one shared run (a session run: see tests/_parallel_runs.py)."""
    return session_runs("angiogram_clinical_resources")


def test_peak_memory_above_the_import_footprint(clinical_run):
    _, _, report, m = clinical_run
    assert report["exit_code"] == 0  # without the peak reset (report["peak_reset"]) the peak is an upper bound
    assert m["peak"] <= bench.RSS_BOUND, f"peak {m['peak'] / 2**20:.0f} MiB, stages {report}"


def test_bytes_written_and_gif(clinical_run):
    _, _, _, m = clinical_run
    assert m["written_bytes"] <= bench.BYTES_RATIO_BOUND * m["input_bytes"], m["files"]
    assert m["gif_bytes"] <= bench.GIF_BYTES_BOUND and m["gif_side"] <= bench.GIF_SIDE_BOUND, m


def test_outputs_keep_their_meaning(clinical_run):
    """Maps in the input's geometry (uint8 with a header scale, values in [0, 1]), a JPEG 2000 derived XA and
    overlay of the input's frame count and size."""
    study, out, _, m = clinical_run
    assert set(m["files"]) == {
        f"{study.stem}_{k}"
        for k in (
            "gradcam.nii.gz",
            "sigact_frames.nii.gz",
            "sigact_spatial.nii.gz",
            "sigact_spatial.dcm",
            "sigact_spatial.gif",
            "sigact_spatial_overlay.dcm",
        )
    }
    folder = out / study.stem
    img = nib.load(str(folder / f"{study.stem}_sigact_spatial.nii.gz"))
    assert img.shape == (48, 512, 512) and img.get_data_dtype() == np.uint8
    data = img.get_fdata()
    assert data.min() >= -1e-6 and data.max() <= 1 + 1e-6 and data.max() - data.min() > 0.5
    for name in (f"{study.stem}_sigact_spatial.dcm", f"{study.stem}_sigact_spatial_overlay.dcm"):
        ds = pydicom.dcmread(folder / name, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless  # the clinical configuration
        assert int(ds.NumberOfFrames) == 48 and int(ds.Columns) == 512
