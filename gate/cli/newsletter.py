"""`gate newsletter`: list the newsletters, send an issue now, run the schedule."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from gate.app import site
from gate.app.db import get_db
from gate.cli.base import refusing
from gate.cli.sitetime import now
from gate.services import newsletter, newsletter_mail


@click.group("newsletter")
def newsletter_group():
    """Send newsletter issues and run their schedule."""


@newsletter_group.command("list")
@with_appcontext
def newsletter_list():
    """Show each list with its audience, schedule, readers by status and last issue."""
    database = get_db()
    for item in site.config().newsletters:
        counts = newsletter.counts(database, item.id)
        last = newsletter.last_issue(database, item.id)
        when = "weekdays" if item.cadence == "daily" else f"{item.send_day}s"
        click.echo(f"{item.id:<16} {item.audience:<10} {when} {item.send_time}  "
                   + " ".join(f"{k}={counts.get(k, 0)}" for k in newsletter.STATUSES)
                   + (f"  last issue No. {last['number']}" if last else "  no issues yet"))


@newsletter_group.command("send")
@click.argument("list_id")
@click.option("--dry-run", is_flag=True, help="Show what would be sent, send nothing.")
@with_appcontext
@refusing
def newsletter_send(list_id, dry_run):
    """Send the next issue of LIST now: the articles published since the last issue."""
    result = newsletter_mail.send_next(get_db(), site.config(), current_app.secret_key, list_id, now(),
                                       dry_run=dry_run)
    if result is None:
        click.echo(f"Nothing new to send on {list_id}: no articles since the last issue.")
    elif dry_run:
        click.echo(f"Would send {list_id} No. {result['issue']} to {result['recipients']} reader(s):")
        for title in result["articles"]:
            click.echo(f"  - {title}")
    else:
        click.echo(f"Sent {list_id} No. {result['issue']} ({result['articles']} article(s)) "
                   f"to {result['sent']} reader(s); {result['skipped']} paused.")


@newsletter_group.command("schedule")
@with_appcontext
def newsletter_schedule():
    """Send every scheduled issue whose time has passed on the site clock."""
    issues = newsletter_mail.run_due(get_db(), site.config(), current_app.secret_key, now())
    click.echo(f"{len(issues)} issue(s) sent, {sum(i['sent'] for i in issues)} message(s).")
