"""`gate preset`: list the paywall presets and switch the running site's rules."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from gate.app import site
from gate.app.db import get_db
from gate.cli.base import refusing
from gate.cli.sitetime import now
from gate.services import presets


@click.group()
def preset():
    """List the paywall presets and switch the running site's rules."""


@preset.command("list")
@with_appcontext
def preset_list():
    """List presets; the active one is marked with *."""
    cfg = site.config()
    active = presets.active_name(get_db(), cfg)
    for name, rules in sorted(cfg.presets.items()):
        click.echo(f"{'*' if name == active else ' '} {name:<20} {rules.title}")


@preset.command("use")
@click.argument("name")
@with_appcontext
@refusing
def preset_use(name):
    """Make NAME the active preset (the running site applies it at once)."""
    before, after = presets.use(get_db(), site.config(), name, now(), by="cli")
    click.echo(f"Preset {after} is active (was {before}).")
