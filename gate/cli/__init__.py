"""The `gate` command: a thin click layer over the library (FlaskGroup, so `gate run` works too).

One module per command group; :func:`gate.cli.base.refusing` turns domain
errors into clean refusals for all of them.
"""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from gate.cli.base import build_app
from gate.conf import environment


def _environment_help() -> str:
    """The GATE_* table for `gate --help` (click keeps \b paragraphs as written)."""
    return "\b\nEnvironment (booleans: 1/true/yes/on or 0/false/no/off):\n" + environment.table()


@click.group(cls=FlaskGroup, create_app=build_app, add_version_option=False,
             load_dotenv=False, set_debug_flag=False, epilog=_environment_help())
def main():
    """gate: a metered-paywall and subscription-gate simulator."""


def init_app(app) -> None:
    """Register gate's commands on the app, so `gate` and app.test_cli_runner() see them."""
    from gate.cli.audit import audit
    from gate.cli.billing import billing
    from gate.cli.clock import clock
    from gate.cli.db import db
    from gate.cli.loadtest import loadtest
    from gate.cli.newsletter import newsletter_group
    from gate.cli.offers import offers_group
    from gate.cli.orgs import orgs_group
    from gate.cli.outbox import outbox
    from gate.cli.passes import passes_group
    from gate.cli.preset import preset
    from gate.cli.readers import readers
    from gate.cli.serving import demo, serve
    from gate.cli.simulate import simulate
    from gate.cli.traffic import traffic_group

    for command in (db, readers, billing, clock, newsletter_group, preset, outbox, audit, simulate,
                    loadtest, serve, demo, traffic_group, passes_group,
                    offers_group, orgs_group):
        app.cli.add_command(command)
