from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._parallel_runs import SESSION_RUNS, OnDemandThread, Prefetched

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
SCHEMA = BUNDLES / "schema" / "meta_schema_20240725.json"
MULTI_GPU = "['configs/inference.json','configs/multi_gpu_inference.json']"
ANGIO = "angiogram_signature_activation"


def run_bundle(
    bundle: str,
    *args: str,
    torchrun_procs: int = 0,
    timeout: int = 600,
    warnings: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run a bundle in a subprocess from its own folder, as a user would (Python warnings shown if ``warnings``;
    ``env`` adds environment variables)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default" if warnings else "ignore", **(env or {})}
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
    # check=False: callers assert on returncode themselves and print stderr on failure
    return subprocess.run(
        [*cmd, *args, "--bundle_root", "."],
        check=False,
        cwd=BUNDLES / bundle,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_inference(bundle: str, dataset_dir: Path, output_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a bundle's ``configs/inference.json`` over ``dataset_dir`` into ``output_dir`` (more overrides in ``args``)."""
    config = ("--config_file", "configs/inference.json", "--dataset_dir", str(dataset_dir), "--output_dir")
    return run_bundle(bundle, *config, str(output_dir), *args)


def run_multi_gpu(bundle: str, dataset_dir: Path, output_dir: Path, *args: str, procs: int = 2):
    """Run a bundle's multi-GPU inference config under ``torchrun`` with ``procs`` processes (CPU, gloo)."""
    config = ("--config_file", MULTI_GPU, "--dataset_dir", str(dataset_dir), "--output_dir", str(output_dir))
    return run_bundle(bundle, *config, *args, torchrun_procs=procs)


def metadata_offline(bundle: str) -> Callable[[Path], Callable[[], subprocess.CompletedProcess]]:
    """The builder of :func:`verify_metadata_offline` of ``bundle`` as a session run (see tests/_parallel_runs.py)."""
    return lambda folder: lambda: verify_metadata_offline(bundle, folder)


def verify_metadata_offline(bundle: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``python -m monai.bundle verify_metadata`` on a bundle's ``configs/metadata.json`` with the network made
    unreachable, against a local copy of the schema (verify_metadata must not download anything)."""
    schema = tmp_path / "schema.json"
    shutil.copy(SCHEMA, schema)
    meta = BUNDLES / bundle / "configs" / "metadata.json"
    cmd = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta), "--filepath", str(schema)]
    no_network = {"PATH": "", "NO_PROXY": "*", "HTTPS_PROXY": "http://127.0.0.1:9"}
    # check=False: callers assert on returncode themselves and print stderr on failure
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env=no_network)


@pytest.fixture(scope="session")
def background() -> Iterator[OnDemandThread]:
    """The session's one background thread for :class:`Prefetched` runs (one run at a time beside the test process:
    two busy processes on a two-core machine), alive only while runs are queued. At the end of the session the runs
    no test asked for (deselected, or after ``-x`` stopped the session) are dropped, and the one running is waited
    for."""
    pool = OnDemandThread("prefetch")
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def session_runs(request, tmp_path_factory, background) -> Prefetched:
    """The runs registered with ``session_run`` (tests/_parallel_runs.py) by the modules that have selected tests,
    set up at the first use: ``session_runs(key)`` is that run's result. The others run in the background, in the
    order of the modules, during the tests of the modules before theirs."""
    selected = {getattr(item, "module", None) for item in request.session.items}
    modules = {module.__name__ for module in selected if module is not None}
    calls = {
        key: builder(tmp_path_factory.mktemp(key.replace(".", "_")))
        for key, (module, builder) in SESSION_RUNS.items()
        if module in modules
    }
    return Prefetched(background, calls)


@pytest.fixture(scope="session")
def angio_sample_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The angiogram bundle's default inference on its sample data (``--output_dir`` only), run once per session
    as a user runs it; its result and output folder. Shared: tests only read it (copy it to change it)."""
    out = tmp_path_factory.mktemp("angio_sample") / "out"
    return run_bundle(ANGIO, "--config_file", "configs/inference.json", "--output_dir", str(out)), out


@pytest.fixture
def bundle_runner():
    return run_bundle


@pytest.fixture
def bundles_dir() -> Path:
    return BUNDLES


def load_bundle_scripts(bundle: str, module: str):
    """``bundles/<bundle>/scripts/<module>.py``, under a package name private to that bundle (the bundles'
    ``scripts`` packages share one name, so they cannot all be imported as ``scripts``)."""
    from monai_saliency._deprecation import bundle_scripts

    return bundle_scripts(bundle, module)
