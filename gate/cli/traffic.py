"""`gate traffic`: generate simulated readers' traffic into the site."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from gate.app import site
from gate.app.db import get_db
from gate.cli.base import refusing
from gate.cli.sitetime import now
from gate.services import presets
from gate.storage import events


@click.group("traffic")
def traffic_group():
    """Generate simulated readers' traffic into the site (tagged synthetic)."""


@traffic_group.command("generate")
@click.option("--visitors", type=int, default=1000, show_default=True,
              help="Simulated readers (at most 2,000).")
@click.option("--days", type=int, default=14, show_default=True,
              help="Past days of simulated time the traffic is spread over (at most 60).")
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True,
              help="Random seed: the same seed draws the same readers.")
@with_appcontext
@refusing
def traffic_generate(visitors, days, seed):
    """Run a simulated population through the active preset and its experiments into the database."""
    from gate.simulate import traffic  # NumPy is loaded only when generating

    cfg, database = site.config(), get_db()
    done = traffic.generate(database, cfg, cfg.preset(presets.active_name(database, cfg)), now(),
                            visitors=visitors, days=days, seed=seed, people=traffic.population(cfg.dir))
    events.record(database, "admin_action", now(), admin="cli", action="traffic_generated",
                  target=done.batch, asked=visitors, days=days, **done.counts)
    click.echo(f"Traffic generated: {done.summary()}.")
