"""`gate billing`: renewals, retries and expiries of subscriptions."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from gate.app import site
from gate.app.db import get_db
from gate.cli.sitetime import now
from gate.services import passes, subscriptions


@click.group()
def billing():
    """Renewals, retries and expiries of subscriptions."""


@billing.command("tick")
@with_appcontext
def billing_tick():
    """Settle every subscription with a renewal, retry or expiry due now, and expire ended passes."""
    moment = now()
    done = subscriptions.settle_all(get_db(), site.config(), moment)
    expired = passes.expire_due(get_db(), moment)
    click.echo(f"Settled {done['subscriptions']} subscription(s), {done['charges']} charge attempt(s).")
    click.echo(f"Expired {expired} pass(es).")
