"""The code stays clean under ruff (pyflakes, isort, bugbear), as configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_ruff_finds_nothing():
    paths = [name for name in ("gate", "tests", "benchmarks", "tools") if (ROOT / name).is_dir()]
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *paths],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
