"""Benchmarks and experiments of monai_saliency, run as modules from the repository root.

* :mod:`benchmarks.speed`: speed (and round-off) measurements of our methods against MONAI, captum and the
  authors' code, measured in the same run; ``make benchmarks`` writes ``benchmarks/speed/results/*.txt``.
* :mod:`benchmarks.experiments`: reproductions of the seed papers' experiments, the angiogram study and the image
  signature demo; ``make experiments`` writes ``benchmarks/experiments/results/<name>/``.

Run one as ``python -m benchmarks.speed.bench_signature --quick`` or
``python -m benchmarks.experiments.exp_sanity --quick``; their tests are in ``tests/benchmarks/``.
"""
