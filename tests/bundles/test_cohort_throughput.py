"""The angiogram bundle's cohort path with DataLoader workers and background writing (issue #22 section 2), run in
this process over the sample cines plus a truncated DICOM in the middle of the sorted study list:

* ``--num_workers 2 --async_write true --write_process false`` (the writer thread) and ``--num_workers 0
  --async_write false`` give the same files: NIfTI maps
  and GIFs byte for byte, the same ``predictions.csv``; the DICOM files equal in every element but the ones a DICOM
  writer must make new for each write (UIDs, creation dates and times: they differ between two synchronous runs too);
* the bundle run as a user runs it (``python -m monai.bundle run``, its ``scripts`` package imported from the bundle
  folder) with its defaults (the writers in a forked child process, ``--write_process true``) gives the same files
  too;
* the corrupt study costs only itself with workers and with the writer process (its reason, a ``FAILED`` line, exit
  status 1);
* the quick benchmark runs and prints its numbers, the model-time definition, a verdict and the per-stage CPU
  profile.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
import torch

from benchmarks.speed import bench_cohort_throughput as bench
from benchmarks.speed._cohort_profile import ENCODER_STAGE
from tests.bundles.conftest import run_inference

SAMPLE = bench.BUNDLE / "sample_data"
CORRUPT = "case_002b.dcm"
PER_WRITE = ("UID", "Date", "Time", "ContributingEquipmentSequence")


def _run(data: Path, out: Path, **overrides) -> dict:
    parser = bench.bundle_parser(data, out, **overrides)
    evaluator = parser.get_parsed_content("evaluator")
    bench.load_weights(evaluator.network)
    cohort = parser.get_parsed_content("cohort")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        evaluator.run()
        counts = cohort.finish()
    with pytest.raises(SystemExit) as stop:
        cohort.exit()
    return {
        "counts": counts,
        "stderr": err.getvalue(),
        "exit": stop.value.code,
        "files": _files(out),
        "evaluator": evaluator,
    }


def _files(out: Path) -> dict[str, Path]:
    return {
        p.relative_to(out).as_posix(): p
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.relative_to(out).parts[0] not in (".cohort", "run_manifest.json", "report.html")
    }


def _cli_run(data: Path, out: Path, *args: str) -> dict:
    """The bundle run in a subprocess from its folder, as a user runs it."""
    result = run_inference(bench.BUNDLE.name, data, out, *args)
    return {"stdout": result.stdout, "stderr": result.stderr, "exit": result.returncode, "files": _files(out)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("throughput")
    data = root / "data"
    shutil.copytree(SAMPLE, data)
    (data / CORRUPT).write_bytes((SAMPLE / "case_003.dcm").read_bytes()[:40000])  # sorts between 002 and 003
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the command-line run (OMP_NUM_THREADS=1): the same floating-point sums
    # the command-line run (a subprocess, waited for by a helper thread) goes on while this process runs the others
    with ThreadPoolExecutor(max_workers=1) as helper:
        process = helper.submit(_cli_run, data, root / "process")  # the defaults: the writer process
        try:
            return {
                "sync": _run(data, root / "sync", num_workers=0, async_write=False),
                "async": _run(data, root / "async", num_workers=2, async_write=True, write_process=False),
                "process": process.result(),
            }
        finally:
            torch.set_num_threads(threads)


@pytest.mark.parametrize("mode", ["async", "process"])
def test_workers_and_async_writing_same_outputs(runs, mode):
    sync, fast = runs["sync"]["files"], runs[mode]["files"]
    assert ("the writers run in a child process" in runs[mode].get("stdout", "")) == (mode == "process")  # its log
    assert runs["async"]["evaluator"].data_loader.num_workers == 2 and runs["async"]["evaluator"].async_write
    assert runs["async"]["evaluator"].writer_process is None  # the writer thread
    assert not runs["sync"]["evaluator"].async_write
    assert sorted(sync) == sorted(fast)
    assert {rel.split("/")[0] for rel in sync if "/" in rel} == {f"case_00{i}" for i in range(5)}
    assert {rel.rsplit(".", 1)[-1] for rel in sync} == {"gz", "dcm", "gif", "csv"}
    assert fast["predictions.csv"].read_bytes() == sync["predictions.csv"].read_bytes()
    for rel, path in sync.items():
        if not rel.endswith(".dcm"):
            assert path.read_bytes() == fast[rel].read_bytes(), rel
            continue
        a, b = pydicom.dcmread(path), pydicom.dcmread(fast[rel])
        assert a.PixelData == b.PixelData, rel
        differ = {e.keyword for e in a if e.tag in b and b[e.tag].value != e.value}
        assert all(any(k in kw for k in PER_WRITE) for kw in differ), (rel, differ)


@pytest.mark.parametrize("mode", ["sync", "async", "process"])
def test_corrupt_study_with_workers_costs_only_itself(runs, mode):
    run = runs[mode]
    if "counts" in run:
        assert run["counts"] == {"ok": 5, "skipped": 0, "failed": 1, "not processed": 0}
    assert run["exit"] == 1
    failed = [line for line in run["stderr"].splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED {CORRUPT}: XACineError") and "truncated" in failed[0]
    assert not any(rel.startswith("case_002b") for rel in run["files"])


def test_quick_benchmark_runs(tmp_path):
    out = tmp_path / "cohort_throughput.txt"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick", "--studies", "4", "--out", str(out), "--workdir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert "definition: model time = wall-clock seconds inside the inferer call" in text
    lines = [line for line in text.splitlines() if "studies/min" in line]
    assert [line.split()[0] for line in lines] == ["sequential", "evaluator"] and all("4 studies" in x for x in lines)
    verdict = next(line for line in text.splitlines() if line.startswith("goal:"))
    fraction = float(lines[1].split("model fraction")[1].split("%")[0])
    assert verdict.endswith("PASS" if fraction >= 80 else "FAIL")
    # the per-stage CPU profile: every stage of the evaluator path by thread, the encoder process, the total
    table = text.split("per-stage CPU time")[1].split("\n\n")[0].splitlines()[2:]
    stages = {(row[:8].strip(), row[9:61].strip()): float(row[61:]) for row in table}
    for stage in ("read + decode (LoadCined)", "model (inferer: network + explainers)"):
        assert stages[("compute", stage)] > 0, stage
    # the whole post-processing runs in the write job, off the compute path
    assert not any(role == "compute" and stage.startswith("post:") for role, stage in stages)
    for stage in (
        "post: Invertd (maps to the input grid)",
        "write: NIfTI maps (SaveMapsd)",
        "write: animated GIF (SaveCineGifd)",
        "write: DICOM overlay (SaveOverlaySCd)",
    ):
        assert stages[("writer", stage)] > 0, stage
    assert stages[("encoder", ENCODER_STAGE)] > 0  # the bundle's JPEG-LS overlay
    total = next(v for (role, stage), v in stages.items() if role == "both")
    parts = sum(v for (role, stage), v in stages.items() if role != "both" and not stage.startswith("="))
    assert abs(total - parts) <= 0.05 * (len(table) + 1)  # rounding of the printed rows
    assert not list(tmp_path.glob("bench_cohort_*"))  # its studies and outputs are removed
