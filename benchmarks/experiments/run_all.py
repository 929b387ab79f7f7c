"""``make experiments``: every experiment's full run, then the README summary, with the wall time stated.

The scripts run as subprocesses, ``--jobs`` at a time (default 2, one per core of the reference machine), each
with one thread (``OMP_NUM_THREADS=1``), longest first so the two streams end close together. Each script's log
goes to ``outputs/experiments/<name>.log``; the times go to ``benchmarks/experiments/results/RUN.md``. A failed
script fails the run (exit 1) after the others finish; the summary is then not regenerated.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.experiments._output import RESULTS, ROOT

# longest first (single-thread full-run times of the last run decide the order, not correctness)
SCRIPTS = (
    "study_angiogram",
    "exp_morch",
    "exp_forgrad",
    "exp_sanity",
    "exp_seed000_structured",
    "demo_image_signature",
)
BUDGET_MINUTES = 20.0


def _run(name: str, log_dir: Path) -> tuple[str, int, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    with open(log_dir / f"{name}.log", "w") as log:
        rc = subprocess.call(
            [sys.executable, "-m", f"benchmarks.experiments.{name}"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    return name, rc, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the experiments; returns the exit code (0 when every script succeeded)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="scripts run at once (default 2)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these scripts (no RUN.md, no summary)")
    args = parser.parse_args(argv)
    names = list(args.only) if args.only else list(SCRIPTS)
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; known: {list(SCRIPTS)}")
    log_dir = ROOT / "outputs" / "experiments"
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda n: _run(n, log_dir), names))
    wall = time.perf_counter() - t0
    failed = [n for n, rc, _ in results if rc != 0]
    for n, rc, sec in results:
        print(f"{n}: {'ok' if rc == 0 else f'FAILED (exit {rc}), log {log_dir / n}.log'} in {sec / 60:.1f} min")
    print(f"wall time {wall / 60:.1f} min with {args.jobs} parallel job(s) (budget {BUDGET_MINUTES:g} min)")
    if failed or args.only:
        return 1 if failed else 0
    lines = [
        "# make experiments: last full run",
        "",
        (
            f"{len(names)} scripts, {args.jobs} at a time, one thread each, on {os.cpu_count()} logical CPU(s) "
            f"({platform.processor() or platform.machine()}), Python {platform.python_version()}."
        ),
        "",
        "| script | minutes (wall, one thread) |",
        "|---|---|",
        *[f"| {n} | {sec / 60:.1f} |" for n, _, sec in results],
        (
            f"| **all, {args.jobs} parallel** | **{wall / 60:.1f}** (budget {BUDGET_MINUTES:g}: "
            f"{'within' if wall / 60 <= BUDGET_MINUTES else 'OVER'}) |"
        ),
        "",
    ]
    (RESULTS / "RUN.md").write_text("\n".join(lines))
    from benchmarks.experiments import summary

    return summary.main([])


if __name__ == "__main__":
    sys.exit(main())
