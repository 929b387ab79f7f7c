"""Importing monai_saliency has no global side effects: no matplotlib backend switch, no MONAI writer registered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_PROBE = r"""
import importlib, json, pkgutil, warnings
import matplotlib
matplotlib.use("svg")  # a user's non-Agg backend (as a notebook would have)
from monai.data import image_writer
before = {k: [w.__qualname__ for w in v] for k, v in image_writer.SUPPORTED_WRITERS.items()}
import monai_saliency
names = []
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # old paths kept as shims warn on import
    for m in pkgutil.walk_packages(monai_saliency.__path__, "monai_saliency."):
        importlib.import_module(m.name)
        names.append(m.name)
after = {k: [w.__qualname__ for w in v] for k, v in image_writer.SUPPORTED_WRITERS.items()}
print(json.dumps({"backend": matplotlib.get_backend(), "before": before, "after": after, "modules": names}))
"""


def test_importing_every_module_has_no_side_effects():
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("MPLBACKEND", None)
    res = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"monai_saliency.visualize.cine", "monai_saliency.visualize.surface3d"} <= set(out["modules"])
    assert out["backend"].lower() == "svg", "an import switched the matplotlib backend"
    assert out["after"] == out["before"], "an import registered a MONAI image writer"
