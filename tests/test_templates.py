"""Templates live in one folder per blueprint, and every name the code gives one exists.

A template moved without its callers fails only when that page is rendered;
this reads every ``render_template`` call (the abstract syntax tree) and every
``{% extends/include/import %}`` and fails on a name with no file behind it.
"""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

import jinja2.meta
import pytest

import gate
from gate.conf.resources import resource_dir

TEMPLATES = resource_dir("templates")
SOURCES = [Path(gate.__file__).parent, Path(__file__).parents[1] / "benchmarks"]
#: Calls whose first argument is a template name.
RENDERERS = {"render_template", "get_template", "_xml_listing", "_render"}
#: The only files at the top: the layout every page extends and the error page.
TOP_LEVEL = {"base.html", "error.html"}


def _files() -> list[str]:
    """Every template, by the name Jinja knows it."""
    return sorted(path.relative_to(TEMPLATES).as_posix() for path in TEMPLATES.rglob("*") if path.is_file())


def _pattern(node: ast.expr) -> str | None:
    """A constant name as is; an f-string as a glob (``email/{kind}.txt`` → ``email/*.txt``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "*" for part in node.values)
    return None


def _python_references() -> list[tuple[str, str]]:
    """(where, name) for every template the Python code renders."""
    found = []
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                pattern = _pattern(node.args[0]) if name in RENDERERS else None
                if pattern:
                    found.append((f"{path.name}:{node.lineno}", pattern))
    return found


def _template_references(env) -> list[tuple[str, str]]:
    """(where, name) for every template another template extends, includes or imports."""
    found = []
    for name in _files():
        source = (TEMPLATES / name).read_text()
        found += [(name, ref) for ref in jinja2.meta.find_referenced_templates(env.parse(source)) if ref]
    return found


def test_only_the_layout_and_error_page_sit_at_the_top():
    loose = {path.name for path in TEMPLATES.iterdir() if path.is_file()}
    assert loose == TOP_LEVEL, "a page belongs in its blueprint's folder, an include in partials/"


def test_every_rendered_name_has_a_template(app):
    files = _files()
    references = _python_references() + _template_references(app.jinja_env)
    missing = [f"{where}: {name}" for where, name in references if not any(fnmatch(f, name) for f in files)]
    assert not missing, "no such template:\n" + "\n".join(missing)


def test_every_template_is_used(app):
    patterns = {name for _, name in _python_references() + _template_references(app.jinja_env)}
    unused = [f for f in _files() if not any(fnmatch(f, pattern) for pattern in patterns)]
    assert not unused, f"templates nothing renders: {unused}"


@pytest.mark.parametrize("name", ["reading/article.html", "partials/_meter.html", "email/receipt.txt"])
def test_the_walk_sees_a_known_template(app, name):
    patterns = {ref for _, ref in _python_references() + _template_references(app.jinja_env)}
    assert any(fnmatch(name, pattern) for pattern in patterns)
