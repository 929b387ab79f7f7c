"""The README's Python snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_exactly_two_shell_commands():
    shell = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert [b.strip() for b in shell] == ["make demo", "make test"]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_snippet_runs(index):
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md:python[{index}]", "exec"), namespace)  # noqa: S102  running README code is the test
