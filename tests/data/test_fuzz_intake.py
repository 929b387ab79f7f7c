"""Fuzzed intake (issue #23, property 10): 1,200 seeded mutants of the sample DICOM and NIfTI files (the bundles'
sample_data and nibabel's test files; byte flips, truncations, header fields set to extreme or inconsistent values,
non-finite values) through the bundles' loaders, in-process: the cine bundle's ``LoadCined`` and the 3D bundle's
``LoadVolume``. Each one loads (a finite image of the expected layout) or raises one of the named intake errors
(``monai_saliency.data.checks.INTAKE_ERRORS``) whose message names the file; no other exception escapes, no file
takes longer than ``TIME_BOUND_S`` (a SIGALRM timer interrupts a hang) and none raises the process's peak memory by
more than ``MEMORY_BOUND_MB`` (the loaders refuse studies above ``max_study_mb`` from the header)."""

from __future__ import annotations

import collections
import importlib.util
import mmap
import signal
import time
import traceback
import warnings
from pathlib import Path

import pytest
import torch

from monai_saliency.data.checks import INTAKE_ERRORS, UnreadableStudyError
from monai_saliency.data.volume import LoadVolume
from tests.data._intake_mutations import CINE_SAMPLES, REPO, mutants

pytestmark = pytest.mark.slow

SEED = 20231
N_MUTANTS = 1200
MAX_STUDY_MB = 16
TIME_BOUND_S = 10.0
MEMORY_BOUND_MB = 8 * MAX_STUDY_MB


def _cine_io():
    spec = importlib.util.spec_from_file_location("_fuzz_cine_io", CINE_SAMPLES.parent / "scripts" / "cine_io.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Hang(BaseException):
    """Raised by the per-file timer (a BaseException so that no loader's ``except Exception`` swallows it)."""


def _on_alarm(signum, frame):
    raise _Hang


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak() -> float:
    """Reset the peak RSS (Linux ``clear_refs``) and return the current RSS in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_mb("VmRSS")


def _named_problem(error: Exception, path: Path) -> str | None:
    """A refusal must name the file; a parser error that the catch-all boundary (``checks.parsing``) wraps must
    come from a parser, not from our own code (an error of ours, e.g. ``len(None)`` on an empty element, is a crash
    even when the boundary catches it)."""
    if path.name not in str(error):
        return f"{type(error).__name__} does not name the file: {error}"
    cause = error.__cause__
    if isinstance(error, UnreadableStudyError) and cause is not None and cause.__traceback__ is not None:
        origin = Path(traceback.extract_tb(cause.__traceback__)[-1].filename).resolve()
        if REPO in origin.parents and "site-packages" not in origin.parts:  # .venv lives inside the checkout
            return f"our code raised {type(cause).__name__} at {origin.relative_to(REPO)}: {cause}"
    return None


def _check_loaded(img: torch.Tensor, cine: bool) -> str | None:
    if img.ndim != 4 or img.shape[0] != 1:
        return f"loaded with shape {tuple(img.shape)}"
    if not bool(torch.isfinite(img).all()) or not bool(torch.isfinite(torch.as_tensor(img.affine)).all()):
        return "loaded with non-finite values or affine"
    if cine and not (float(img.min()) >= -1e-6 and float(img.max()) <= 1 + 1e-6):
        return f"cine loaded outside [0, 1]: [{float(img.min())}, {float(img.max())}]"
    return None


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to bound memory")
def test_mutated_studies_load_or_are_refused_by_name(tmp_path):
    cine_io = _cine_io()
    # require_cine_marker=False so that unmarked NIfTI mutants reach the decoder too (the marker is checked first)
    loaders = {
        "LoadCined": (cine_io.LoadCined("image", max_study_mb=MAX_STUDY_MB, require_cine_marker=False).load, True),
        "LoadVolume": (LoadVolume(max_study_mb=MAX_STUDY_MB), False),
    }
    escaped, outcomes = [], collections.Counter()
    slowest, biggest = (0.0, ""), (0.0, "")
    previous, threads = signal.signal(signal.SIGALRM, _on_alarm), torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: thread hand-offs cost more than they save on a busy machine
    start = time.perf_counter()
    try:
        for name, suffix, make in mutants(SEED, N_MUTANTS):
            what, data = make()
            path = tmp_path / f"{name}{suffix}"
            path.write_bytes(data)
            for loader_name, (load, cine) in loaders.items():
                if suffix == ".dcm" and not cine:
                    continue  # the 3D bundle lists NIfTI files only
                label = f"{loader_name}({path.name}: {what})"
                base = _reset_peak()
                t0 = time.perf_counter()
                signal.setitimer(signal.ITIMER_REAL, TIME_BOUND_S)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        problem = _check_loaded(load(str(path)), cine)
                    outcomes["loaded"] += 1
                except _Hang:
                    problem = f"no answer within {TIME_BOUND_S} s"
                except INTAKE_ERRORS as e:
                    outcomes[type(e).__name__] += 1
                    problem = _named_problem(e, path)
                except Exception as e:  # noqa: BLE001  the defect under test: an unnamed error escaped
                    problem = f"{type(e).__name__} escaped: {str(e)[:200]}"
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                elapsed, grown = time.perf_counter() - t0, _rss_mb("VmHWM") - base
                slowest = max(slowest, (elapsed, label))
                biggest = max(biggest, (grown, label))
                if grown > MEMORY_BOUND_MB:
                    problem = (problem or "") + f" peak memory +{grown:.0f} MiB"
                if problem:
                    escaped.append(f"{label}: {problem}")
            path.unlink()
    finally:
        signal.signal(signal.SIGALRM, previous)
        torch.set_num_threads(threads)
    total = time.perf_counter() - start
    print(f"{N_MUTANTS} mutants in {total:.1f} s; outcomes {dict(outcomes)}; slowest {slowest}; peak {biggest}")
    assert not escaped, f"{len(escaped)} of {N_MUTANTS} mutants broke the intake contract:\n" + "\n".join(escaped[:30])
    assert sum(outcomes.values()) >= N_MUTANTS  # every mutant went through at least one loader
    assert outcomes["loaded"] > 0 and len(outcomes) >= 5  # loads and several kinds of refusal: the fuzz reaches depth


def test_peak_memory_probe_sees_an_allocation():
    """The memory bound can fail: 64 MiB of fresh pages touched after a reset show in the peak (an anonymous
    mapping, so that memory the process already holds, e.g. freed by earlier tests, cannot serve it)."""
    size = 64 * 1024 * 1024
    base = _reset_peak()
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    grown = _rss_mb("VmHWM") - base
    block.close()
    assert grown > 60
