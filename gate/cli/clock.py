"""`gate clock`: show and move the site's simulated clock."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from gate.app import clockops
from gate.app.db import get_db
from gate.cli.base import refusing
from gate.cli.sitetime import now, tz
from gate.storage.clock import Clock, parse_step, parse_target


@click.group()
def clock():
    """Show and move the site's simulated clock."""


def _show():
    clock = Clock(get_db())
    state, moment = clock.state(), clock.now().astimezone(tz())
    label = {"real": "real time", "offset": "simulated (running)", "frozen": "simulated (frozen)"}
    click.echo(f"{moment.isoformat(timespec='seconds')}  [{label[state.mode]}]")


def _changed(before, how):
    """Record the move, then run everything that fell due while time passed."""
    _report(clockops.moved(before, how, by="cli"))


def _report(done):
    """Say what billing and the newsletters did while time passed."""
    if done["subscriptions"]:
        click.echo(f"Billing: settled {done['subscriptions']} subscription(s), "
                   f"{done['charges']} charge attempt(s).")
    if done["passes_expired"]:
        click.echo(f"Passes: {done['passes_expired']} expired.")
    if done["issues"]:
        click.echo(f"Newsletters: {done['issues']} issue(s) sent, {done['messages']} message(s).")


@clock.command("show")
@with_appcontext
def clock_show():
    """Print the site time."""
    _show()


@clock.command("advance")
@click.argument("duration")
@with_appcontext
@refusing
def clock_advance(duration):
    """Move the clock forward by DURATION (90min, 12h, 31d, 2w, 1mo; at most 100 years ahead)."""
    _report(clockops.advance(parse_step(duration), tz(), who="cli"))
    _show()


@clock.command("set")
@click.argument("moment")
@click.option("--freeze", is_flag=True, help="Stop the clock at MOMENT.")
@with_appcontext
@refusing
def clock_set(moment, freeze):
    """Jump to MOMENT (ISO 8601; site time zone if none given). Never backward, at most 100 years ahead."""
    target = parse_target(moment, tz())
    before = now()
    Clock(get_db()).set(target, freeze=freeze)
    _changed(before, f"set {moment}")
    _show()


@clock.command("reset")
@with_appcontext
def clock_reset():
    """Return to real time (for a fresh demo)."""
    before = now()
    Clock(get_db()).reset()
    _changed(before, "reset")
    _show()
