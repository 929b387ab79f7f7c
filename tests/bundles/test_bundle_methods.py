"""``--methods`` of the gradient and angiogram bundles, and the shared raw maps of the gradient bundle's explainers
(FORGrad reuses the run's SmoothGrad, the structured solver its VanillaGrad)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from tests._parallel_runs import session_run
from tests.bundles.conftest import run_inference

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
GRADIENT = BUNDLES / "gradient_saliency_3d"
ANGIO = BUNDLES / "angiogram_signature_activation"


def _parser(bundle: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle), **overrides})
    return parser


def test_gradient_bundle_shares_smoothgrad_and_vanillagrad():
    """The bundle's FORGrad and structured explainers are built so that the run's SmoothGrad / VanillaGrad serve
    them (the same raw map, see tests/engines/test_method_selection_sharing.py), with the default methods."""
    explainers = _parser(GRADIENT).get_parsed_content("selected_explainers")
    keys = {name: e.shared_source() for name, e in explainers.items()}
    assert list(keys) == ["vanillagrad", "smoothgrad", "integratedgradients", "forgrad", "structured", "gradcam"]
    assert keys["forgrad"][0] == keys["smoothgrad"][0]
    assert keys["structured"][0] == keys["vanillagrad"][0]
    assert keys["integratedgradients"] is None and keys["gradcam"] is None
    assert len({k[0] for k in keys.values() if k is not None}) == 2  # one VanillaGrad, one SmoothGrad per batch


def _refusal(parser: ConfigParser) -> str:
    """The messages of the error (and its causes) resolving ``map_keys``: MONAI wraps the expression's error."""
    with pytest.raises(Exception) as info:  # the ValueError is the cause of MONAI's RuntimeError
        parser.get_parsed_content("map_keys")
    err, messages = info.value, []
    while err is not None:
        messages.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(messages)


def test_unknown_method_and_unselected_derived_key_refused():
    message = _refusal(_parser(GRADIENT, methods=["smoothgrads"]))
    assert "unknown methods ['smoothgrads']; valid methods are ['vanillagrad', 'smoothgrad'," in message
    message = _refusal(_parser(ANGIO, methods=["gradcam"]))
    assert "derived_key='sigact_spatial' is not among the chosen methods ['gradcam']" in message
    chosen = _parser(ANGIO, methods=["gradcam", "sigact_frames"], derived_key="gradcam")
    assert chosen.get_parsed_content("map_keys") == ["sigact_frames", "gradcam"]


@session_run("bundle_methods")
def _methods_run(root: Path) -> Callable[[], tuple[subprocess.CompletedProcess, Path]]:
    """Two studies copied now; the gradient bundle run over them with two methods, to call later (a session run:
    see tests/_parallel_runs.py)."""
    data, out = root / "data", root / "out"
    data.mkdir()
    for name in ("case_000.nii.gz", "case_001.nii.gz"):
        shutil.copy(GRADIENT / "sample_data" / name, data / name)
    return lambda: (run_inference("gradient_saliency_3d", data, out, "--methods", "['forgrad','smoothgrad']"), out)


def test_methods_run_writes_only_the_chosen_maps(session_runs):
    result, out = session_runs("bundle_methods")
    assert result.returncode == 0, result.stderr[-3000:]
    for stem in ("case_000", "case_001"):
        maps = sorted(p.name for p in (out / stem).glob("*.nii.gz"))
        assert maps == [f"{stem}_forgrad.nii.gz", f"{stem}_smoothgrad.nii.gz"], maps
