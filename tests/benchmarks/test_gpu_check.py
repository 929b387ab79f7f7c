"""``make gpu-check`` on a machine without CUDA says so and exits 0; its benchmark code runs (CPU smoke, slow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    # CUDA hidden: the same answer on a GPU machine
    return {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def test_make_gpu_check_without_cuda_prints_no_cuda_and_exits_0():
    if shutil.which("make"):
        cmd = ["make", "--no-print-directory", "gpu-check", f"GPU_PY={sys.executable}"]
    else:  # the script the target calls
        cmd = [sys.executable, "-m", "benchmarks.speed.gpu_check"]
    result = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no CUDA" in result.stdout
    assert "pytest -m cuda" not in result.stdout  # nothing else ran


@pytest.mark.slow
def test_gpu_check_benchmark_code_runs_on_cpu():
    cmd = [sys.executable, "-m", "benchmarks.speed.gpu_check", "--cpu-smoke", "--skip-tests", "--skip-bundle"]
    result = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("SignatureActivation", "GradCAM", "SmoothGrad", "IntegratedGradients", "first+second", "exact"):
        assert f"  {name}" in result.stdout, (name, result.stdout)
    assert "captum/ours x" in result.stdout and "x" in result.stdout
