"""`gate passes`: the day and week passes readers bought."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from gate.app.db import get_db
from gate.cli.sitetime import now
from gate.services import accounts, passes


@click.group("passes")
def passes_group():
    """The day and week passes readers bought."""


@passes_group.command("list")
@with_appcontext
def passes_list():
    """List passes, newest first, with whether each still gives access on the site clock."""
    database, moment = get_db(), now()
    for item in passes.all_passes(database):
        reader = accounts.by_id(database, item.reader_id)
        running = "running" if item.starts_at <= moment < item.ends_at else \
            "waiting" if moment < item.starts_at else "ended"
        click.echo(f"{item.id:>5} {reader.email:<36} {item.kind:<6} {item.status:<8} {running:<8}"
                   f" until {item.ends_at.isoformat()}  {item.amount_cents / 100:.2f} {item.currency}")
