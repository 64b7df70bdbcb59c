"""Where the top-level folders (templates, config) are, installed or in a checkout.

A wheel carries them inside the package (see pyproject.toml); a checkout
or an editable install finds them beside the package.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent


def resource_dir(name: str) -> Path:
    """The folder ``name`` from the installed package, else from the source tree."""
    for candidate in (PACKAGE / name, PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"gate cannot find its {name}/ folder next to {PACKAGE}")
