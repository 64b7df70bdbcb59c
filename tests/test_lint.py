"""The code stays clean under ruff (pyflakes, isort, bugbear), as configured in pyproject.toml."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_ruff_finds_nothing():
    paths = [name for name in ("gate", "tests", "benchmarks", "tools") if (ROOT / name).is_dir()]
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *paths],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, as written (``from tests import x`` counts as tests.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "tests")
        elif isinstance(node, ast.ImportFrom):  # relative: from . import x
            found.add("." * node.level + (node.module or ""))
    return found


def _test_modules() -> set[str]:
    """Names a test file could be imported by: tests.x, x, and the conftest files."""
    names = {"conftest", "tests.conftest", "tests.browser.conftest", "screenshots", "tests.screenshots"}
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.update({path.stem, ".".join(path.relative_to(ROOT).with_suffix("").parts)})
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "tests").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_tests_share_code_only_through_helpers(path):
    """A test file imports tests.helpers and no other test module: shared code lives in one place."""
    own = {path.stem, ".".join(path.relative_to(ROOT).with_suffix("").parts)}
    others = (_test_modules() - own) | {"tests"}
    bad = {name for name in _imported_modules(path) if name in others or name.startswith(".")}
    assert not bad, f"{path.name} imports {sorted(bad)}: move what is shared into tests/helpers.py or a conftest.py"
