"""`gate readers`: add, list and comp reader accounts."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from gate.app import site
from gate.app.db import get_db
from gate.cli.base import refusing
from gate.cli.sitetime import now, tz
from gate.rules.timeutil import parse_moment
from gate.services import accounts, subscriptions
from gate.storage import events


@click.group()
def readers():
    """Manage reader accounts."""


@readers.command("add")
@click.argument("email")
@click.option("--password", default=None, help="Password (optional: without one, sign in by emailed link).")
@click.option("--subscriber", is_flag=True,
              help="Start a paid-up subscription (test card 4242) on --plan.")
@click.option("--plan", default=None, help="Plan id for --subscriber (default: the first plan).")
@click.option("--admin", is_flag=True, help="Make the account an admin.")
@with_appcontext
@refusing
def readers_add(email, password, subscriber, plan, admin):
    """Create an account (or update an existing one)."""
    database, cfg = get_db(), site.config()
    plan = plan or cfg.plans[0].id
    subscriptions.plan_terms(cfg, plan)
    address = accounts.normalize_email(email)
    reader = accounts.by_email(database, address)
    created = reader is None
    if reader:
        accounts.set_flags(database, reader.id, now(), admin=admin or None, password=password)
        events.record(database, "reader_changed", now(), reader_id=reader.id,
                      admin=admin, password=bool(password), by="cli")
    else:
        reader = accounts.create(database, address, password, now(), admin=admin)
        events.record(database, "signup", now(), reader_id=reader.id, source="cli")
    if subscriber:
        subscriptions.grant(database, cfg, reader.id, plan, now(), by="cli")
    sub = subscriptions.current(database, reader.id)
    status = f"subscription {sub.plan_id} {sub.status}" if sub else "no subscription"
    click.echo(f"{'Created' if created else 'Updated'} {reader.email}"
               f" ({status}{', admin' if reader.is_admin or admin else ''})")


@readers.command("list")
@with_appcontext
def readers_list():
    """List accounts."""
    database, moment = get_db(), now()
    for reader_id in accounts.all_ids(database):
        reader = subscriptions.refresh(database, site.config(), accounts.by_id(database, reader_id), moment)
        sub = subscriptions.current(database, reader.id)
        flags = [f"{sub.plan_id} {sub.status}"] if sub else []
        flags += ["comp"] if reader.comp_active(moment) else []
        flags += ["admin"] if reader.is_admin else []
        click.echo(f"{reader.email:<36} {'subscriber' if reader.is_subscriber else 'registered':<11}"
                   f" {', '.join(flags)}")


@readers.command("comp")
@click.argument("email")
@click.option("--until", "until", required=True,
              help="Last moment of access (ISO date or date-time, site time zone), or 'never' to remove.")
@with_appcontext
@refusing
def readers_comp(email, until):
    """Grant complimentary full access until a date (or remove it with --until never)."""
    database = get_db()
    reader = accounts.by_email(database, accounts.normalize_email(email))
    if reader is None:
        raise click.ClickException(f"no account for {email}")
    moment = None if until == "never" else parse_moment(until, tz())
    if moment is not None and moment <= now():
        raise click.ClickException(f"--until must be in the future (site time is {now().isoformat()})")
    accounts.grant_comp(database, reader.id, moment, by="cli")
    events.record(database, "comp_changed", now(), reader_id=reader.id, by="cli",
                  **{"from": reader.comp_until.isoformat() if reader.comp_until else None,
                     "to": moment.isoformat() if moment else None})
    click.echo(f"{reader.email}: complimentary access "
               + (f"until {moment.astimezone(tz()).isoformat(timespec='minutes')}" if moment else "removed"))
