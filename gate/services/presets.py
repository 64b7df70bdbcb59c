"""Which preset the running site reads by: a row of the settings table, changed with an event."""

from __future__ import annotations

from datetime import datetime

from gate.conf.settings import Config
from gate.storage import events

PRESET_KEY = "preset"


def active_name(db, cfg: Config) -> str:
    """The preset stored in the database, else the site default."""
    return known_or_default(cfg, db.scalar("select value from settings where key = ?", [PRESET_KEY]))


def known_or_default(cfg: Config, name: str | None) -> str:
    """A stored preset name, or the site default when none is stored or the config no longer has it."""
    return name if name in cfg.presets else cfg.publication.default_preset


def use(db, cfg: Config, name: str, at: datetime, by: str) -> tuple[str, str]:
    """Switch the running site to another preset; returns (from, to)."""
    cfg.preset(name)  # raises ConfigError for an unknown name
    before = active_name(db, cfg)
    db.upsert("settings", {"key": PRESET_KEY, "value": name}, ["key"])
    if before != name:
        events.record(db, "preset_changed", at, by=by, **{"from": before, "to": name})
    return before, name
