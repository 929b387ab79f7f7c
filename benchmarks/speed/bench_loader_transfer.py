"""CPU per study of a DataLoader worker handing studies to the main process: MONAI's ``DataLoader`` (torch collates
in the worker, every tensor through its own shared-memory segment) against
:class:`monai_saliency.data.PackedDataLoader` (items packed into one bytes buffer, collated in the main process).

Data: ``--studies`` (default 40) generated 16-frame 64 x 64 angiogram cines written alternately as XA DICOM and
NIfTI (:func:`benchmarks.speed.bench_cohort_throughput.make_studies`), read by the angiogram bundle's dataset
(``configs/inference.json``: ``TolerantDataset`` with its preprocessing, ``tolerant_collate``), batch size 1, one
worker, one torch thread. Every study is two ``MetaTensor`` (``image`` and ``cine``).

Steady state: the first 8 studies are left out. Main process: CPU time (all its threads) of ``next(iterator)``
plus dropping the previous batch. Worker: utime + stime of its ``/proc/<pid>/stat`` (10 ms ticks, hence the
number of studies), read while the main process sleeps between studies so the worker has finished the studies it
reads ahead (``prefetch_factor`` 2). ``in-process`` is ``num_workers=0`` (getitem + collate in the main process).
The loaders alternate over ``--rounds`` (default 3) and their rows sum the rounds.

Usage: ``python -m benchmarks.speed.bench_loader_transfer [--studies N] [--rounds R] [--out FILE]``; about 30 s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.speed.bench_cohort_throughput import bundle_parser, make_studies

RESULTS = Path(__file__).resolve().parent / "results" / "loader_transfer.txt"
WARMUP = 8
PREFETCH = 2


def _worker_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(loader_cls: type, dataset, num_workers: int, pause: float = 0.06) -> tuple[float, float]:
    """Main-process and worker CPU ms per study after :data:`WARMUP` studies (worker 0.0 without workers)."""
    from monai_saliency.data.tolerant import tolerant_collate

    loader = loader_cls(dataset, batch_size=1, num_workers=num_workers, collate_fn=tolerant_collate)
    n = len(loader)
    iterator = iter(loader)
    pid = iterator._workers[0].pid if num_workers else None
    main, batch, first = 0.0, None, 0.0
    for k in range(1, n + 1):
        c0 = time.process_time()
        batch = next(iterator)  # the previous batch is dropped here
        if k > WARMUP:
            main += time.process_time() - c0
        time.sleep(pause if pid else 0.0)  # the worker finishes the studies it reads ahead
        if pid and k == WARMUP:
            first = _worker_cpu(pid)  # covers WARMUP + PREFETCH studies
    worker = (_worker_cpu(pid) - first) / (n - WARMUP - PREFETCH) if pid else 0.0
    del batch, iterator
    return 1e3 * main / (n - WARMUP), 1e3 * worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from monai.data import DataLoader

    from monai_saliency.data.loader import PackedDataLoader

    paths = {"in-process (num_workers=0)": (DataLoader, 0), "DataLoader, 1 worker": (DataLoader, 1)}
    paths["PackedDataLoader, 1 worker"] = (PackedDataLoader, 1)
    sums = {name: [0.0, 0.0] for name in paths}
    with tempfile.TemporaryDirectory() as tmp:
        make_studies(Path(tmp) / "studies", args.studies)
        dataset = bundle_parser(Path(tmp) / "studies", Path(tmp) / "out").get_parsed_content("dataset")
        for r in range(args.rounds):
            for name in list(paths)[:: 1 if r % 2 == 0 else -1]:
                loader_cls, workers = paths[name]
                main_ms, worker_ms = measure(loader_cls, dataset, workers)
                sums[name][0] += main_ms / args.rounds
                sums[name][1] += worker_ms / args.rounds
    title = (
        f"CPU ms per study, {args.studies} generated 64x64x16 cines (XA DICOM / NIfTI alternating), angiogram bundle "
        f"dataset, batch 1, steady state after {WARMUP} studies, mean of {args.rounds} rounds"
    )
    lines = [title, f"{'loader':<30}{'main':>8}{'worker':>9}{'total':>8}"]
    lines += [f"{name:<30}{m:>8.1f}{w:>9.1f}{m + w:>8.1f}" for name, (m, w) in sums.items()]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
