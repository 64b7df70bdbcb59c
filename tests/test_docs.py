"""The manual in docs/: it names every command, variable and route, and it builds."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from flask.cli import ScriptInfo

from gate.cli import main
from gate.conf.environment import VARIABLES

ROOT = Path(__file__).parents[1]


def _docs_text() -> str:
    """Every page of the manual, as one text."""
    return "\n".join(page.read_text() for page in sorted((ROOT / "docs").rglob("*.md")))


def _command_paths(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()):
    """Every command and subcommand of a click group, as word tuples."""
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield prefix + (name,)
        if isinstance(command, click.Group):
            yield from _command_paths(command, ctx, prefix + (name,))


def _commands(app) -> set[str]:
    """`gate …` for gate's own commands and the ones Flask and its extensions add."""
    ctx = click.Context(main, obj=ScriptInfo(create_app=lambda: app))
    with app.app_context():
        return {"gate " + " ".join(path) for path in _command_paths(main, ctx)}


def _route(rule: str) -> str:
    """A URL rule as the docs write it: `<int:reader_id>` becomes `<reader_id>`."""
    return re.sub(r"<(?:[a-z_]+(?:\([^)]*\))?:)?(\w+)>", r"<\1>", rule)


def test_the_docs_name_every_command(app):
    commands = _commands(app)
    assert {"gate clock advance", "gate db backup", "gate routes"} <= commands
    text = _docs_text()
    missing = sorted(command for command in commands if command not in text)
    assert not missing, f"commands missing from docs/: {missing}"


def test_the_docs_name_every_variable():
    text = _docs_text()
    missing = [variable.name for variable in VARIABLES if f"`{variable.name}`" not in text]
    assert not missing, f"GATE_* variables missing from docs/: {missing}"


def test_the_docs_name_every_route(app):
    rules = {_route(rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert {"/admin/readers/<reader_id>", "/articles/<slug>"} <= rules
    text = _docs_text()
    missing = sorted(rule for rule in rules if f"`{rule}`" not in text)
    assert not missing, f"routes missing from docs/: {missing}"


@pytest.mark.parametrize("rule, written", [
    ("/admin/readers/<int:reader_id>", "/admin/readers/<reader_id>"),
    ("/articles/<slug>", "/articles/<slug>"),
    ("/files/<path:name>", "/files/<name>"),
    ("/x/<any(a, b):kind>", "/x/<kind>"),
])
def test_routes_are_written_without_their_converters(rule, written):
    assert _route(rule) == written


def test_no_stale_backup_method_in_the_docs():
    assert "VACUUM INTO" not in _docs_text() + (ROOT / "README.md").read_text()


def test_the_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    pages = sorted(page.relative_to(ROOT).as_posix() for page in (ROOT / "docs").glob("*.md"))
    missing = [page for page in pages if f"]({page})" not in readme]
    assert not missing, f"docs pages the README's Documentation table doesn't link: {missing}"


@pytest.mark.slow
def test_mkdocs_builds_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed: install the docs extra (pip install -e '.[docs]')")
        pytest.skip("mkdocs is not installed (the docs extra)")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
