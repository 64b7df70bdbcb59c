"""`gate outbox`: print the newest messages the site has sent."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from gate.app.db import get_db
from gate.services import mail


@click.command("outbox")
@click.option("--to", "to", default=None, help="Only messages to this address.")
@click.option("--limit", type=click.IntRange(1, 500), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the messages as JSON.")
@with_appcontext
def outbox(to, limit, as_json):
    """Print the newest messages the site has sent."""
    rows = mail.messages(get_db(), to=to.strip().lower() if to else None, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("The outbox is empty.")
    for row in reversed(rows):
        click.echo(f"--- #{row['id']}  {row['created_at']}")
        for key in ("From", "To", "Subject", "Date"):
            click.echo(f"{key}: {row['headers'].get(key, '')}")
        click.echo("")
        click.echo(row["body_text"] or "")
