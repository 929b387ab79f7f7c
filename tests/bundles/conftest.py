from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
SCHEMA = BUNDLES / "schema" / "meta_schema_20240725.json"


def run_bundle(bundle: str, *args: str, torchrun_procs: int = 0, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a bundle in a subprocess from its own folder, as a user would."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if torchrun_procs:
        cmd = [
            str(Path(sys.executable).with_name("torchrun")),
            "--standalone",
            "--nnodes=1",
            f"--nproc_per_node={torchrun_procs}",
            "-m",
            "monai.bundle",
            "run",
        ]
    else:
        cmd = [sys.executable, "-m", "monai.bundle", "run"]
    return subprocess.run(
        [*cmd, *args, "--bundle_root", "."],
        cwd=BUNDLES / bundle,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def bundle_runner():
    return run_bundle


@pytest.fixture
def bundles_dir() -> Path:
    return BUNDLES


@pytest.fixture
def schema_path() -> Path:
    return SCHEMA


def load_bundle_scripts(bundle: str, module: str):
    """``bundles/<bundle>/scripts/<module>.py``, under a package name private to that bundle (the bundles'
    ``scripts`` packages share one name, so they cannot all be imported as ``scripts``)."""
    from monai_saliency._deprecation import bundle_scripts

    return bundle_scripts(bundle, module)
