"""`gate preset`: list, switch, and make, edit, export and delete saved paywall presets.

The same service functions as the rule studio at /admin/rules and the JSON API
(:mod:`gate.services.presets`); a refused value names its key, as the TOML loader does.
"""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import with_appcontext

from gate.app import site
from gate.app.db import get_db
from gate.cli.base import refusing
from gate.cli.sitetime import now
from gate.rules import describe
from gate.services import presets


@click.group()
def preset():
    """List, switch, and make, edit, export and delete saved paywall presets."""


@preset.command("list")
@with_appcontext
def preset_list():
    """List presets; the active one is marked with *, saved ones with (saved)."""
    cfg = site.config()
    for info in presets.catalogue(get_db(), cfg):
        click.echo(f"{'*' if info.running else ' '} {info.name:<20} {info.title}{'  (saved)' if info.saved else ''}")
    for name, problem in sorted(cfg.saved.problems.items()):
        click.echo(f"skipped saved preset {name}: {problem}", err=True)


@preset.command("use")
@click.argument("name")
@with_appcontext
@refusing
def preset_use(name):
    """Make NAME the active preset (the running site applies it at once)."""
    before, after = presets.use(get_db(), site.config(), name, now(), by="cli")
    click.echo(f"Preset {after} is active (was {before}).")


@preset.command("new")
@click.argument("name")
@click.option("--from", "source", metavar="OTHER", help="Copy this preset (built-in or saved); else the defaults.")
@click.option("--title", help="The new preset's title.")
@with_appcontext
@refusing
def preset_new(name, source, title):
    """Save a new preset NAME in the instance folder, copied from OTHER or made from the defaults."""
    cfg = site.config()
    rules = presets.create(get_db(), cfg, name, now(), by="cli", source=source, title=title)
    click.echo(f"Preset {name} saved in {cfg.saved.path(name)}: {rules.title}.")


@preset.command("edit")
@click.argument("name")
@click.option("--set", "settings", multiple=True, required=True, metavar="KEY=VALUE",
              help="A dotted key and a TOML value, e.g. tiers.registered.limit=5 (repeat it).")
@with_appcontext
@refusing
def preset_edit(name, settings):
    """Change keys of the saved preset NAME; the whole preset is checked before it is saved."""
    cfg = site.config()
    before = cfg.preset(name)
    after = presets.edit(get_db(), cfg, name, list(settings), now(), by="cli")
    changes = describe.differences(before, after)
    click.echo(f"Preset {name} saved" + (":" if changes else ", unchanged."))
    for sentence in changes:
        click.echo(f"  {sentence}")


@preset.command("export")
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE, not stdout.")
@with_appcontext
@refusing
def preset_export(name, output):
    """Print the TOML file of preset NAME (built-in or saved), or write it to a file."""
    text = presets.export(site.config(), name)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise click.ClickException(f"cannot write {output}: {error.strerror}") from None
    click.echo(f"Preset {name} written to {output}.")


@preset.command("delete")
@click.argument("name")
@with_appcontext
@refusing
def preset_delete(name):
    """Delete the saved preset NAME (refused while the site runs it)."""
    presets.delete(get_db(), site.config(), name, now(), by="cli")
    click.echo(f"Preset {name} deleted.")
