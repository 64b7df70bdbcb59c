"""`gate db`: create, seed and back up the site database."""

from __future__ import annotations

import os

import click
from flask import current_app
from flask.cli import with_appcontext

from gate.app import site
from gate.app.db import get_db
from gate.cli.sitetime import now, tz
from gate.services import newsletter, seed
from gate.storage.db import backup


@click.group()
def db():
    """Create, seed and back up the site database."""


@db.command("init")
@with_appcontext
def db_init():
    """Create the database (or bring its schema up to date)."""
    get_db()
    click.echo(f"Database ready at {current_app.config['DATABASE']}")


@db.command("seed")
@click.option("--synthetic", type=click.IntRange(min=0), default=0,
              help="Also add N generated articles (for load tests).")
@click.option("--schedule/--no-schedule", default=True, show_default=True,
              help="Also add the upcoming articles, dated from today's site time.")
@with_appcontext
def db_seed(synthetic, schedule):
    """Load the demo articles (and, with --synthetic N, N generated ones)."""
    database = get_db()
    count = seed.seed_articles(database)
    click.echo(f"Seeded {count} demo articles.")
    if schedule:
        upcoming = seed.seed_schedule(database, now(), tz())
        newsletter.start_schedule(database, site.config(), now())
        click.echo(f"Scheduled {upcoming} upcoming articles (they appear as the clock passes them).")
    if synthetic:
        added = seed.seed_synthetic(database, synthetic, site.config().publication.sections, now())
        click.echo(f"Added {added} synthetic articles ({synthetic} requested).")


@db.command("backup")
@click.argument("destination", type=click.Path(dir_okay=False, writable=True))
@with_appcontext
def db_backup(destination):
    """Write a consistent copy of the database to DESTINATION."""
    if os.path.exists(destination):
        raise click.ClickException(f"{destination} exists; choose a new file name")
    try:
        how = backup(get_db(), destination)
    except RuntimeError as error:  # pg_dump missing or failed
        raise click.ClickException(str(error)) from None
    click.echo(f"Backed up to {destination} ({how})")
