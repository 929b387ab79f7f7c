"""The package is pure Python (issue 18): no C sources, no compiled modules, no build script with extensions."""

from __future__ import annotations

from pathlib import Path

import monai_saliency


def test_no_compiled_code_in_the_package():
    root = Path(monai_saliency.__file__).resolve().parent
    compiled = [p for p in root.rglob("*") if p.suffix in (".c", ".cc", ".cpp", ".so", ".pyd", ".dylib")]
    assert not compiled, f"compiled code or C sources in the package: {compiled}"
    assert not (root.parent / "setup.py").exists()
