"""The package's layout holds: the import-linter contracts of pyproject.toml (layers, ``data`` beside them) are
kept, and no module grows past the size a maintainer can read in one sitting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500


def test_import_contracts_are_kept():
    # a subprocess so that the analysis sees the package as installed, whatever this session imported
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_a_broken_layer_is_reported(tmp_path):
    """The check can fail: a copy of the contracts with ``ops`` above ``core`` is broken by today's imports."""
    text = (ROOT / "pyproject.toml").read_text()
    start = text.index("[tool.importlinter]")
    contracts = text[start:].replace(
        '    "monai_saliency.core",\n    "monai_saliency.ops",\n',
        '    "monai_saliency.ops",\n    "monai_saliency.core",\n',
    )
    assert contracts != text[start:]
    config = tmp_path / "contracts.toml"
    config.write_text(contracts)
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert run.returncode != 0
    assert "BROKEN" in run.stdout


def test_no_module_is_too_long():
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for folder in ("monai_saliency", "bundles", "benchmarks", "tests")
        for path in (ROOT / folder).rglob("*.py")
    }
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them along their seams): {too_long}"


def test_readme_diagram_lists_the_contract_layers():
    """The README's "Architecture" diagram names the layers of the import contract, top to bottom."""
    import re

    import tomllib

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Architecture") :]
    diagram = re.search(r"```text\n(.*?)```", section, flags=re.DOTALL).group(1)
    rows = diagram.split("---")[0].strip().splitlines()
    drawn = [re.split(r"\s{2,}", row.strip())[0] for row in rows]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layers = [layer.replace("monai_saliency.", "") for layer in config["layers"]]
    assert drawn == layers
