"""Timing helpers shared by the speed benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def timeit(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class Paired:
    """Interleaved timings of two callables: medians (s) and the ratio ``reference / ours`` with a 95 % CI."""

    ours: float
    reference: float
    ratio: float
    ci: tuple[float, float]
    pairs: int

    def __str__(self) -> str:
        return f"x{self.ratio:.2f} [95% CI {self.ci[0]:.2f}, {self.ci[1]:.2f}; {self.pairs} pairs]"


def paired(ours: Callable[[], object], reference: Callable[[], object], repeats: int, seed: int = 0) -> Paired:
    """Time ``ours`` and ``reference`` alternately (order flipped every round), after one warm-up call each.

    On a shared machine the speed drifts by tens of percent over minutes; alternating the two puts the same drift on
    both, and the per-pair ratios ``t_reference / t_ours`` show how stable the comparison is. The ratio reported is
    the median of the per-pair ratios, with a percentile-bootstrap 95 % CI of that median (a single pair gives a
    degenerate interval).
    """
    ours()
    reference()
    t_ours, t_ref = [], []
    for i in range(repeats):
        order = ((ours, t_ours), (reference, t_ref)) if i % 2 == 0 else ((reference, t_ref), (ours, t_ours))
        for fn, sink in order:
            t0 = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t0)
    ratios = np.asarray(t_ref) / np.asarray(t_ours)
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(ratios, size=(2000, len(ratios)), replace=True), axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Paired(
        statistics.median(t_ours), statistics.median(t_ref), float(np.median(ratios)), (float(lo), float(hi)), repeats
    )
