"""MONAI model-zoo conformance of the bundles in this folder: the checks the model zoo's CI runs on a new bundle.

Per bundle, from its root folder, the same command lines as a user types them:

- ``verify_metadata``: ``python -m monai.bundle verify_metadata`` against the shipped schema
  (``bundles/schema/meta_schema_20240725.json``: nothing is downloaded);
- ``verify_net_in_out``: ``python -m monai.bundle verify_net_in_out network_def`` with the input shape of the
  metadata (``"*"``, the cine bundle's frame count, is the sample cines' 16 frames);
- ``ckpt_export``: ``python -m monai.bundle ckpt_export network_def`` of ``models/model.pt`` to TorchScript
  (``VideoLesionNet`` and the DenseNet are scripted; the PET bundle's PCA + tanh net is traced, ``--use_trace``),
  then the exported file is loaded and must give the checkpointed network's outputs on a *second* input shape
  (another batch size, and for the cine another frame count), so a trace that baked a shape fails;
- ``check_properties``: ``ConfigWorkflow(workflow_type="inference")`` of ``configs/inference.json``, initialised,
  must miss no required property (``monai.bundle`` has no command line for it; the model zoo calls it as here);
- ``large_files``: ``python -m monai.bundle download_large_files``: every weight listed in ``large_files.yml`` is
  shipped with the bundle and its md5 matches, so nothing is downloaded (a stale hash fails).

Usage (from the repository root, with the package importable)::

    python bundles/conformance.py                      # all bundles, every command in this one process
    python bundles/conformance.py --subprocess         # each bundle command in its own `python -m monai.bundle`
    python bundles/conformance.py angiogram_signature_activation --only verify_net_in_out ckpt_export

In-process mode runs each command through ``fire`` exactly as ``python -m monai.bundle`` parses it, without paying
for a new interpreter per command (``check_properties`` and the export comparison, which are no ``monai.bundle``
commands, always run in this process). Prints one ``PASS``/``FAIL`` line per check; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "schema" / "meta_schema_20240725.json"
CHECKS = ("verify_metadata", "verify_net_in_out", "ckpt_export", "check_properties", "large_files")
META = ("--meta_file", "configs/metadata.json")
CONFIG = ("--config_file", "configs/inference.json")

# Per bundle: extra arguments of verify_net_in_out / ckpt_export, and the second input shape the export must handle.
BUNDLES: dict[str, dict] = {
    "angiogram_signature_activation": {"net_in_out": ("--any", "16"), "export": (), "second_shape": (2, 1, 7, 64, 64)},
    "gradient_saliency_3d": {"net_in_out": (), "export": (), "second_shape": (2, 1, 32, 32, 32)},
    "pet_morch_saliency": {"net_in_out": (), "export": ("--use_trace", "True"), "second_shape": (3, 1, 20, 24, 16)},
}


def commands(bundle: str, ts_path: Path) -> dict[str, list[str]]:
    """The ``python -m monai.bundle`` argument lists of the checks that are bundle commands."""
    spec = BUNDLES[bundle]
    return {
        "verify_metadata": ["verify_metadata", *META, "--filepath", str(SCHEMA)],
        "verify_net_in_out": [
            "verify_net_in_out",
            "network_def",
            *META,
            *CONFIG,
            "--bundle_root",
            ".",
            *spec["net_in_out"],
        ],
        "ckpt_export": [
            "ckpt_export",
            "network_def",
            "--filepath",
            str(ts_path),
            "--ckpt_file",
            "models/model.pt",
            *META,
            *CONFIG,
            "--bundle_root",
            ".",
            *spec["export"],
        ],
        "large_files": ["download_large_files", "--bundle_path", "."],
    }


@contextlib.contextmanager
def bundle_context(root: Path):
    """cwd = the bundle root and its ``scripts`` package importable (each bundle has its own ``scripts``)."""
    old_cwd, old_path = os.getcwd(), list(sys.path)
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]
    os.chdir(root)
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path


def run_in_process(argv: Sequence[str]) -> None:
    """One ``python -m monai.bundle`` command line, parsed by ``fire`` as the module's ``__main__`` does."""
    import fire
    import monai.bundle.__main__ as cli

    fire.Fire(cli, command=list(argv), name="monai.bundle")


def run_subprocess(argv: Sequence[str], root: Path) -> None:
    """One ``python -m monai.bundle`` command line in its own process, from the bundle root."""
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *argv], cwd=root, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {result.stderr[-3000:]}")


def check_properties(root: Path) -> None:
    """``ConfigWorkflow`` of ``configs/inference.json`` (inference type) must have every required property.

    Raises:
        RuntimeError: with the names of the missing (or wrongly referenced optional) properties.
    """
    from monai.bundle import ConfigWorkflow

    with bundle_context(root):
        workflow = ConfigWorkflow(
            workflow_type="inference",
            config_file="configs/inference.json",
            meta_file="configs/metadata.json",
            logging_file="configs/logging.conf",
            bundle_root=".",
        )
        workflow.initialize()
        missing = workflow.check_properties()
    if missing is None or missing:
        raise RuntimeError(f"check_properties: missing or wrongly referenced properties {missing}")


def check_export(bundle: str, root: Path, ts_path: Path) -> None:
    """The exported TorchScript gives the checkpointed network's outputs on a second input shape.

    Raises:
        RuntimeError: outputs differ (e.g. a trace that baked the export's input shape).
    """
    import torch
    from monai.bundle import ConfigParser

    with bundle_context(root):
        parser = ConfigParser()
        parser.read_config("configs/inference.json")
        parser["bundle_root"] = "."
        net = parser.get_parsed_content("network_def")
        state = torch.load("models/model.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    net = net.cpu().eval()
    exported = torch.jit.load(str(ts_path), map_location="cpu").eval()
    x = torch.rand(BUNDLES[bundle]["second_shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = net(x), exported(x)
    if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-5, atol=1e-6):
        raise RuntimeError(
            f"exported network differs from the checkpointed one on input {tuple(x.shape)}: shapes "
            f"{tuple(got.shape)} vs {tuple(want.shape)}, max |diff| {(got - want).abs().max().item():.3g}"
        )


def run_bundle_checks(bundle: str, only: Sequence[str], use_subprocess: bool, root: Path | None = None) -> list[str]:
    """Run the selected checks of one bundle; print one line per check; return the names of the failed ones."""
    root = HERE / bundle if root is None else root
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        ts_path = Path(tmp) / "model.ts"
        cmds = commands(bundle, ts_path)
        for name in only:
            start = time.perf_counter()
            steps: list[Callable[[], None]] = []
            if name in cmds:
                argv = cmds[name]
                if use_subprocess:
                    steps.append(lambda argv=argv: run_subprocess(argv, root))
                else:
                    steps.append(lambda argv=argv: _quiet(lambda: _in_bundle(root, lambda: run_in_process(argv))))
            if name == "ckpt_export":
                steps.append(lambda: check_export(bundle, root, ts_path))
            if name == "check_properties":
                steps.append(lambda: _quiet(lambda: check_properties(root)))
            try:
                for step in steps:
                    step()
            except (Exception, SystemExit) as e:  # noqa: BLE001  any failure of a check is reported, not raised
                failed.append(name)
                detail = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()
                print(f"FAIL {bundle} {name}: {' | '.join(detail)[-1500:]}", flush=True)
            else:
                print(f"PASS {bundle} {name} ({time.perf_counter() - start:.1f} s)", flush=True)
    return failed


def _in_bundle(root: Path, fn: Callable[[], None]) -> None:
    with bundle_context(root):
        fn()


def _quiet(fn: Callable[[], None]) -> None:
    """Run ``fn`` with its stdout captured (MONAI's commands log their full config); printed again on failure."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            fn()
    except BaseException:
        sys.stdout.write(buf.getvalue()[-4000:])
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry; returns the exit status (0: every check passed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="*", default=list(BUNDLES), help="bundle names (default: all)")
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS), help="checks to run")
    parser.add_argument("--subprocess", action="store_true", help="each command in its own python process")
    parser.add_argument("--root", type=Path, help="bundle folder to check instead of bundles/<name> (one bundle)")
    args = parser.parse_args(argv)
    if args.root is not None and len(args.bundles) != 1:
        parser.error("--root needs exactly one bundle name (it selects the per-bundle settings).")
    failed = []
    for bundle in args.bundles:
        if bundle not in BUNDLES:
            parser.error(f"unknown bundle {bundle!r}; known: {sorted(BUNDLES)}")
        root = None if args.root is None else args.root.resolve()
        failed += [f"{bundle}:{n}" for n in run_bundle_checks(bundle, args.only, args.subprocess, root)]
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all model-zoo checks passed'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
