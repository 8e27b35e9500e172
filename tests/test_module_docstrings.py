"""Every module of services/ and shared/ opens with a one-line summary; details follow a blank line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(path for top in ("services", "shared") for path in (ROOT / top).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_module_opens_with_a_one_line_summary(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False)
    assert docstring, "no module docstring"
    summary = docstring.strip().split("\n\n")[0]
    assert "\n" not in summary.strip(), f"the summary runs over several lines: {summary!r}"
