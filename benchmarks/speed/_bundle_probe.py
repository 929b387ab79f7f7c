"""Run ``python -m monai.bundle <command> ...`` in this process and record its resources (used by the clinical-size
cine benchmark and its test).

Usage: ``python benchmarks/speed/_bundle_probe.py REPORT.json run --config_file ... [bundle options]``, from the
bundle's folder. Before the bundle runs, torch, MONAI and the package (with every module the angiogram bundle's
config imports) are imported; the resident memory at that point is the *import footprint*, and the peak is reset
(``/proc/self/clear_refs``) so that ``VmHWM`` afterwards is the peak of the run itself. The bundle then runs exactly
as ``python -m monai.bundle`` would (same argument parsing), with a wall-clock timer around each stage:

* ``read``: ``LoadCined`` (header checks, decoding, scaling to [0, 1]);
* ``preprocess``: the other pre-processing transforms (type, copy, resize for the network);
* ``model``: the network's prediction (the inferer inside :class:`~monai_saliency.engines.SaliencyInferer`);
* ``explainers``: every saliency method (:func:`~monai_saliency.engines.inferers.explain_all`);
* ``invert``: ``Invertd`` (maps back to the input's geometry) and ``ScaleToUnitd``;
* ``write:<writer>``: each writer (NIfTI maps, derived XA, GIF, Secondary Capture overlay).

The report holds the stage times (s), the footprint and the peak above it (bytes), and per stage the peak resident
memory reached during it (above the footprint). Linux only (``/proc``).
"""

from __future__ import annotations

import functools
import json
import runpy
import sys
import time
from collections import defaultdict
from pathlib import Path


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}.")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


def main(argv: list[str]) -> None:
    report_path, bundle_args = Path(argv[0]), argv[1:]
    import monai
    import monai.bundle  # noqa: F401
    import torch  # noqa: F401
    from monai.transforms import CopyItemsd, EnsureTyped, Invertd, Resized

    import monai_saliency
    import monai_saliency.engines.cohort
    import monai_saliency.engines.evaluator
    import monai_saliency.visualize.cine
    import monai_saliency.visualize.secondary_capture  # noqa: F401
    from monai_saliency.data.dicom import xa_writer  # noqa: F401
    from monai_saliency.engines import inferers
    from monai_saliency.transforms import SaveMapsd, ScaleToUnitd

    try:
        from monai_saliency.transforms import AntiAliasd
    except ImportError:  # a checkout before it existed (to measure the old pipeline)
        AntiAliasd = EnsureTyped
    from monai_saliency.visualize.cine import SaveCineGifd
    from monai_saliency.visualize.secondary_capture import SaveOverlaySCd

    sys.path.insert(0, str(Path.cwd()))  # the bundle's scripts, imported as MONAI will (bundle root = cwd)
    from scripts.cine_io import LoadCined, SaveXADerivedd

    footprint = _status("VmRSS")
    peak_reset = _reset_peak()
    times: dict[str, float] = defaultdict(float)
    peaks: dict[str, int] = defaultdict(int)
    depth = [0]

    def timed(stage: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if depth[0]:  # nested call (a stage inside another): counted by the outer one
                return fn(*args, **kwargs)
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[stage] += time.perf_counter() - t0
                peaks[stage] = max(peaks[stage], _status("VmHWM") - footprint)
                depth[0] -= 1

        return wrapper

    from monai.inferers import SimpleInferer

    stages = {
        "read": [LoadCined],
        "preprocess": [EnsureTyped, CopyItemsd, AntiAliasd, Resized],
        "model": [SimpleInferer],
        "invert": [Invertd, ScaleToUnitd],
        "write": [SaveMapsd, SaveXADerivedd, SaveCineGifd, SaveOverlaySCd],
    }
    for stage, classes in stages.items():
        for cls in classes:
            name = f"{stage}:{cls.__name__}" if stage == "write" else stage  # each writer separately
            cls.__call__ = timed(name, cls.__call__)
    inferers.explain_all = timed("explainers", inferers.explain_all)

    t0 = time.perf_counter()
    sys.argv = ["monai.bundle", *bundle_args]
    code = 0
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    total = time.perf_counter() - t0
    from monai_saliency.data.dicom import encoding

    encoder = encoding._WORKER.proc  # the background writer's pixel encoder process, if one ran (still alive)
    encoder_peak = 0
    if encoder is not None and encoder.poll() is None:
        for line in Path(f"/proc/{encoder.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                encoder_peak = int(line.split()[1]) * 1024
    report = {
        "footprint_bytes": footprint,
        "peak_above_footprint_bytes": _status("VmHWM") - footprint,  # an upper bound if the reset failed
        "peak_reset": peak_reset,
        "encoder_peak_bytes": encoder_peak,  # the encoder process's whole resident peak (its own interpreter too)
        "stage_seconds": dict(times),
        "stage_peak_above_footprint_bytes": dict(peaks),
        "total_seconds": total,
        "exit_code": code,
    }
    report_path.write_text(json.dumps(report, indent=1))
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
