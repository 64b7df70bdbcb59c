"""The folders are the layers, and imports only point down.

rules ← conf ← storage ← services ← app ← {web, cli}; audit, simulate and
loadtest use rules, conf, storage and services only. This reads every
module's imports (the abstract syntax tree, so an import inside a function
counts too) and fails on the first one that points the wrong way.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import gate

PACKAGE = Path(gate.__file__).parent
FLASK = ("flask", "flask_login", "flask_wtf", "flask_limiter", "wtforms")

#: What each layer of gate may import from gate itself.
ALLOWED = {
    "rules": {"rules"},
    "conf": {"rules", "conf"},
    "storage": {"rules", "conf", "storage"},
    "services": {"rules", "conf", "storage", "services"},
    "audit": {"rules", "conf", "storage", "services", "audit"},
    "simulate": {"rules", "conf", "storage", "services", "simulate"},
    "loadtest": {"rules", "conf", "storage", "services", "loadtest"},
    "app": {"rules", "conf", "storage", "services", "audit", "simulate", "loadtest", "app"},
    "web": {"rules", "conf", "storage", "services", "audit", "simulate", "app", "web"},
    "cli": {"rules", "conf", "storage", "services", "audit", "simulate", "loadtest", "app", "cli"},
}
#: Third-party packages a rules module may use: pydantic for strict models, itsdangerous for tokens.
RULES_THIRD_PARTY = {"pydantic", "itsdangerous"}


def modules() -> list[Path]:
    """Every module of the package except the factory (gate/__init__.py wires all layers)."""
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0]


def imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it, as dotted names (``from a import b`` gives a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def gate_layers(names: set[str]) -> set[str]:
    """The gate layers among imported names (``gate.rules.paywall`` → rules)."""
    return {n.split(".")[1] for n in names if n.startswith("gate.") and n.count(".") >= 1} - {"__version__", "create_app"}


def ids(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


@pytest.mark.parametrize("path", modules(), ids=ids)
def test_imports_point_down(path):
    layer = layer_of(path)
    names = imports(path)
    wrong = gate_layers(names) - ALLOWED[layer]
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports gate.{', gate.'.join(sorted(wrong))}"
    if layer not in ("app", "web", "cli"):
        flask = sorted(n for n in names if n.split(".")[0] in FLASK)
        assert not flask, f"{path.relative_to(PACKAGE)} ({layer}) imports {flask}: only app, web and cli may"
    if layer != "cli":  # the CLI builds the app (FlaskGroup); nothing else imports the factory
        assert "gate" not in names, f"{path.relative_to(PACKAGE)}: import a layer's module, not the factory"


@pytest.mark.parametrize("path", [p for p in modules() if layer_of(p) == "rules"], ids=ids)
def test_rules_use_only_the_stdlib_and_pydantic(path):
    outside = {
        n.split(".")[0]
        for n in imports(path)
        if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] not in RULES_THIRD_PARTY | {"gate", "__future__"}
    }
    assert not outside, f"{path.name} imports {sorted(outside)}"
    source = path.read_text()
    for clock in (".now(", ".utcnow(", ".today(", "time.time("):  # time is an input (DESIGN principle 2)
        assert clock not in source, f"{path.name} reads a clock: {clock}"


SQL = re.compile(r"\b(select\b.+\bfrom|insert\s+(or\s+\w+\s+)?into|update\s+\w+\s+set|delete\s+from|create\s+(table|index))\b", re.I | re.S)


def sql_in(path: Path) -> list[str]:
    """SQL statements in a file's string literals, and raw database calls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
            found.append(f"line {node.lineno}: {node.value.strip()[:60]!r}")
        elif isinstance(node, ast.Attribute) and node.attr in ("execute", "executemany", "executescript", "query"):
            found.append(f"line {node.lineno}: .{node.attr}(")
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "db":
            found.append(f"line {node.lineno}: db[...]")  # a sqlite-utils table
    return found


@pytest.mark.parametrize("path", [p for p in modules() if layer_of(p) in ("web", "cli", "app")], ids=ids)
def test_sql_lives_in_storage_and_services(path):
    assert not sql_in(path), f"{path.relative_to(PACKAGE)} holds SQL: {sql_in(path)}"


def test_the_walk_sees_every_layer():
    """A layer test that found no modules could not fail: it sees all ten folders and the rules in them."""
    assert {layer_of(p) for p in modules()} == set(ALLOWED)
    assert {p.stem for p in modules() if layer_of(p) == "rules"} >= {"paywall", "periods", "billing", "experiments"}
    assert gate_layers(imports(PACKAGE / "web" / "admin.py")) >= {"app", "services"}
    assert sql_in(PACKAGE / "storage" / "quota.py")
