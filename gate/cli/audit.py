"""`gate audit`: check a site database against every quota, access, billing and newsletter rule.

A thin click layer over :mod:`gate.audit`: one line per violation
and a summary, or a JSON report; exit status 1 when anything was broken.
"""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from gate import audit as invariants
from gate.app import site
from gate.app.db import get_db
from gate.storage.db import open_site_db
from gate.storage.engine import is_url


def _report(found: list[invariants.Violation], covered: dict) -> dict:
    """The JSON report: verdict, counts by kind, what was read, and every violation."""
    return {"ok": not found, "violations": len(found), "by_kind": invariants.by_kind(found),
            "scope": covered, "found": [violation.as_dict() for violation in found]}


def _summary(found: list[invariants.Violation], covered: dict) -> str:
    """One line: clean, or how many violations of which kinds."""
    read = ", ".join(f"{count} {name}" for name, count in covered.items())
    if not found:
        return f"Audit clean: no rule broken ({read})."
    kinds = ", ".join(f"{kind} x{count}" for kind, count in invariants.by_kind(found).items())
    return f"Audit FAILED: {len(found)} violation(s): {kinds} ({read})."


def _database(ctx, param, value):
    """A PostgreSQL URL as given, else a SQLite file that must exist."""
    if value is None or is_url(value):
        return value
    return click.Path(exists=True, dir_okay=False, readable=True).convert(value, param, ctx)


@click.command("audit")
@click.option("--database", "database", default=None, callback=_database,
              help="The SQLite file or postgresql:// URL to audit (default: the site's database).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@with_appcontext
def audit(database, as_json):
    """Check the database against every quota, access, billing and newsletter rule; exit 1 on any violation."""
    db = open_site_db(database) if database else get_db()
    try:
        found = invariants.run(db, site.config())
        covered = invariants.scope(db)
    finally:
        if database:
            db.close()
    if as_json:
        click.echo(json.dumps(_report(found, covered), indent=2, default=str))
    else:
        for violation in found:
            click.echo(f"{violation.kind}: {violation.message}")
        click.echo(_summary(found, covered))
    if found:
        raise click.exceptions.Exit(1)
