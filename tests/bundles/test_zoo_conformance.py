"""MONAI model-zoo conformance of the three bundles (``bundles/conformance.py``): verify_metadata, verify_net_in_out
with the metadata's input shape, ckpt_export to TorchScript (checked on a second input shape), check_properties of
the inference configs, and the weights of ``large_files.yml`` (shipped, md5 matching); and that these checks fail on
a broken bundle. One subprocess runs every command of the three bundles (about 20 s on the shared machine), one
more the failing copy in ``--subprocess`` mode."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_saliency.models.video import VideoLesionNet
from tests._parallel_runs import Prefetched
from tests.bundles.conftest import BUNDLES, REPO, load_bundle_scripts

SCRIPT = BUNDLES / "conformance.py"
NAMES = ("angiogram_signature_activation", "gradient_saliency_3d", "pet_morch_saliency")
CHECKS = ("verify_metadata", "verify_net_in_out", "ckpt_export", "check_properties", "large_files")


def _conformance(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # check=False: the callers assert on the return code and the PASS/FAIL lines
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _load_script():
    spec = importlib.util.spec_from_file_location("bundle_conformance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _broken_copy(tmp: Path) -> Path:
    """A copy of the cine bundle whose metadata promises 3 output channels and whose large_files.yml has a stale
    md5."""
    src = BUNDLES / "angiogram_signature_activation"
    root = tmp / "angiogram_signature_activation"
    shutil.copytree(
        src, root, ignore=shutil.ignore_patterns("sample_data", "sample_data_clinical", "outputs", "__pycache__")
    )
    meta_path = root / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 3
    meta_path.write_text(json.dumps(meta))
    large = root / "large_files.yml"
    text = large.read_text()
    md5 = text.split('hash_val: "')[1].split('"')[0]
    large.write_text(text.replace(md5, "0" * 32))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, background) -> Prefetched:
    """The two conformance command lines, ``runs("all")`` and ``runs("broken")``: the first asked for runs at once,
    the other in the background (see tests/_parallel_runs.py)."""

    def broken() -> subprocess.CompletedProcess:
        root = _broken_copy(tmp_path_factory.mktemp("broken"))
        args = ("--root", str(root), "--subprocess", "--only", "verify_net_in_out", "large_files")
        return _conformance("angiogram_signature_activation", *args)

    return Prefetched(background, {"all": _conformance, "broken": broken})


def test_all_bundles_pass_the_model_zoo_checks(runs):
    result = runs("all")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    for name in NAMES:
        for check in CHECKS:
            assert f"PASS {name} {check} " in result.stdout, (name, check, result.stdout[-4000:])
        assert (BUNDLES / name / "docs" / "data_license.txt").is_file()
        assert "models/model.pt" in (BUNDLES / name / "large_files.yml").read_text()
    assert "all model-zoo checks passed" in result.stdout


def test_checks_fail_on_a_broken_bundle(runs):
    """A copy of the cine bundle whose metadata promises 3 output channels and whose large_files.yml has a stale
    md5: verify_net_in_out and download_large_files (each in its own ``python -m monai.bundle``) both fail."""
    result = runs("broken")
    assert result.returncode == 1
    assert "FAIL angiogram_signature_activation verify_net_in_out: " in result.stdout
    assert "doesn't match: `3`" in result.stdout
    assert "FAIL angiogram_signature_activation large_files: " in result.stdout
    assert "md5 hash check of existing file failed" in result.stdout


def test_export_check_catches_a_trace_that_baked_the_frame_count(tmp_path):
    """The second-shape comparison is what makes scripting VideoLesionNet necessary: a trace at 16 frames drops
    the temporal padding of a 7-frame cine and is rejected."""
    conformance = _load_script()
    root = BUNDLES / "angiogram_signature_activation"
    net = VideoLesionNet()
    net.load_state_dict(torch.load(root / "models" / "model.pt", weights_only=True))
    ts_path = tmp_path / "traced.ts"
    torch.jit.trace(net.eval(), torch.rand(1, 1, 16, 64, 64), check_trace=False).save(str(ts_path))
    with pytest.raises(RuntimeError, match="differs from the checkpointed one"):
        conformance.check_export("angiogram_signature_activation", root, ts_path)
    torch.jit.script(net).save(str(ts_path))
    conformance.check_export("angiogram_signature_activation", root, ts_path)


def test_pet_network_def_reads_the_bundle_checkpoint_and_its_own_state():
    model_io = load_bundle_scripts("pet_morch_saliency", "model")
    path = BUNDLES / "pet_morch_saliency" / "models" / "model.pt"
    fitted = model_io.load_model(path)
    net = model_io.load_network(path)
    x = torch.rand(3, 1, *fitted.pca.item_shape, generator=torch.Generator().manual_seed(0))
    want = fitted.net(fitted.pca(x))
    out = net(x)
    assert out.shape == (3, 1) and out.dtype == torch.float64
    torch.testing.assert_close(out[:, 0], want, rtol=0, atol=0)
    with torch.no_grad():  # scramble, then load the nested bundle checkpoint as ckpt_export does (strict)
        for p in net.net.parameters():
            p.normal_()
    net.load_state_dict(torch.load(path, weights_only=True))
    torch.testing.assert_close(net(x)[:, 0], want, rtol=0, atol=0)
    flat = net.state_dict()
    assert {k.split(".")[0] for k in flat} == {"pca", "net"}
    net.load_state_dict(flat)
    ckpt = torch.load(path, weights_only=True)
    ckpt["format"] = "something/else"
    with pytest.raises(ValueError, match="checkpoint format"):
        net.load_state_dict(ckpt)
