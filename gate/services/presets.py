"""Which preset the running site reads by, and the presets the rule studio saves, edits and deletes.

The running preset is a row of the settings table, changed with a ``preset_changed``
event. Saved presets are TOML files in the instance folder (:mod:`gate.conf.saved`),
written whole or not at all, each save a ``preset_saved`` event carrying the rules
before and after (so the audit can replay spends against the rules of the day) and
each delete a ``preset_deleted`` event. The web studio, `gate preset` and the JSON
API call the same functions here, and refuse bad rules with the TOML loader's words.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from gate.conf import presetfile
from gate.conf.saved import name_problem
from gate.conf.settings import RESERVED_KEYS, Config, ConfigError, field_errors, foreign_sections
from gate.rules.paywall import Rules
from gate.storage import events
from gate.storage.migrations import NEW_VERSION

PRESET_KEY = "preset"
#: The lock every change of the running preset or of a saved file takes (one at a time, across processes).
LOCK = "presets"
#: The comment at the top of every saved file.
FILE_HEADER = ("A preset saved by gate (the rule studio at /admin/rules, `gate preset`, or the JSON API).\n"
               "Edit it there, or by hand: gate checks it as it checks config/presets/.")


class PresetInvalid(ValueError):
    """Rules or a name that cannot be saved: each problem by dotted key, in the TOML loader's words."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("\n".join(f"{key}: {reason}" for key, reason in errors.items()))


class PresetRefused(ValueError):
    """An operation the presets' state forbids: deleting the running one, overwriting a built-in one."""


@dataclass(frozen=True)
class PresetInfo:
    """One preset as the studio and `GET /api/presets` list it."""

    name: str
    title: str
    description: str
    saved: bool
    running: bool

    def as_dict(self) -> dict:
        """The preset as the JSON API lists it."""
        return {"name": self.name, "title": self.title, "description": self.description,
                "kind": "saved" if self.saved else "built-in", "running": self.running}


def active_name(db, cfg: Config) -> str:
    """The preset stored in the database, else the site default."""
    return known_or_default(cfg, db.scalar("select value from settings where key = ?", [PRESET_KEY]))


def known_or_default(cfg: Config, name: str | None) -> str:
    """A stored preset name, or the site default when none is stored or the config no longer has it."""
    return name if name in cfg.presets else cfg.publication.default_preset


def use(db, cfg: Config, name: str, at: datetime, by: str) -> tuple[str, str]:
    """Switch the running site to another preset; returns (from, to)."""
    cfg.preset(name)  # raises ConfigError for an unknown name
    with db.transaction():
        db.lock(LOCK)  # a delete of this preset in another process waits, then sees it running
        if cfg.refresh():
            cfg.preset(name)  # deleted meanwhile: refused, nothing changes
        before = active_name(db, cfg)
        db.upsert("settings", {"key": PRESET_KEY, "value": name}, ["key"])
        if before != name:
            events.record(db, "preset_changed", at, by=by, **{"from": before, "to": name})
    return before, name


# --- the catalogue ------------------------------------------------------------------


def catalogue(db, cfg: Config) -> list[PresetInfo]:
    """Every preset, built-in ones first then saved ones, each by name, the running one marked."""
    running = active_name(db, cfg)
    return [PresetInfo(name, rules.title, rules.description, name in cfg.saved.rules, name == running)
            for name, rules in sorted(cfg.presets.items(), key=lambda item: (item[0] in cfg.saved.rules, item[0]))]


def is_saved(cfg: Config, name: str) -> bool:
    """Whether ``name`` is a preset saved in the instance folder (not a built-in one)."""
    return name in cfg.saved.rules


def editable(rules: Rules) -> dict:
    """A preset's rules as its file holds them: the keys its author set (what the studio edits, the API sends).

    Keys left to their defaults stay out, so a saved copy says what its author chose and
    nothing else (a dynamic tier, for one, must not carry a ``limit``).
    """
    return rules.model_dump(mode="json", exclude=set(RESERVED_KEYS), exclude_unset=True)


def scratch(title: str | None = None) -> dict:
    """The rules of a preset made from nothing: the model's defaults (teaser only but for subscribers)."""
    return editable(Rules(name="new", title=title or "New preset"))


def export(cfg: Config, name: str) -> str:
    """A preset's file as it is on disk (built-in or saved), for *Export TOML* and `gate preset export`."""
    cfg.preset(name)  # ConfigError for an unknown name
    path = cfg.saved.path(name) if is_saved(cfg, name) else cfg.dir / "presets" / f"{name}.toml"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:  # deleted by another process a moment ago
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


# --- checking -----------------------------------------------------------------------


def build(cfg: Config, name: str, data: dict) -> Rules:
    """The rules ``data`` describes, checked exactly as a preset file is; PresetInvalid says what is wrong."""
    if not isinstance(data, dict):
        raise PresetInvalid({"(top level)": "must be a table of preset keys"})
    reserved = {key: "unknown key (set by gate, not the preset)" for key in RESERVED_KEYS if key in data}
    if reserved:
        raise PresetInvalid(reserved)
    try:
        rules = Rules.model_validate({**data, "name": name, "timezone": cfg.publication.timezone})
    except ValidationError as error:
        raise PresetInvalid(field_errors(error)) from None
    foreign = foreign_sections(rules, cfg.publication.sections)
    if foreign:
        key, _, reason = foreign.partition(": ")
        raise PresetInvalid({key: reason})
    return rules


def file_text(rules: Rules) -> str:
    """The TOML file of a preset (PresetInvalid for text no file can hold)."""
    try:
        return presetfile.dumps(editable(rules), FILE_HEADER)
    except presetfile.TomlValueError as error:
        raise PresetInvalid({error.key: error.reason}) from None


def check_name(cfg: Config, name: str, new: bool) -> None:
    """A name a saved preset may take (not a built-in one's; a new one not taken either), else PresetInvalid."""
    problem = name_problem(name)
    if problem is None and name in cfg.builtin:
        problem = f"{name!r} is a built-in preset: save your copy under another name"
    elif problem is None and new and name in cfg.presets:
        problem = f"there is already a saved preset called {name!r}: choose another name, or edit it"
    if problem:
        raise PresetInvalid({"name": problem})


def checked(cfg: Config, name: str, data: dict, new: bool) -> Rules:
    """The rules to save under ``name``; PresetInvalid lists the name's problem and the rules' together."""
    errors: dict[str, str] = {}
    try:
        check_name(cfg, name, new)
    except PresetInvalid as invalid:
        errors.update(invalid.errors)
    try:
        rules = build(cfg, name, data)
    except PresetInvalid as invalid:
        raise PresetInvalid({**invalid.errors, **errors}) from None  # the name's own problem first
    if errors:
        raise PresetInvalid(errors)
    return rules


# --- saving and deleting --------------------------------------------------------------


def save(db, cfg: Config, name: str, data: dict, at: datetime, by: str, *, new: bool = False,
         then_use: bool = False) -> Rules:
    """Check and write a saved preset, record who saved what over what, and switch the site to it if asked."""
    rules = checked(cfg, name, data, new)
    text = file_text(rules)
    with db.transaction():
        db.lock(LOCK)
        cfg.refresh()  # what another process saved meanwhile is the "before" (or takes a new name first)
        check_name(cfg, name, new)
        before = cfg.saved.rules.get(name)
        events.record(db, "preset_saved", at, by=by, name=name, created=before is None,
                      **{"from": editable(before) if before else None, "to": editable(rules)})
        _site_moved(db)
        presetfile.write_atomic(cfg.saved.path(name), text)  # last: a failed write rolls the event back
        cfg.refresh()
        if then_use:
            use(db, cfg, name, at, by)
    return rules


def _site_moved(db) -> None:
    """A new version of the site's state, seen when the transaction commits (after the file is in place).

    An article's page looks at the presets folder only when that version
    moved (:func:`gate.services.sitestate.read`), so every process's next
    article page sees this save or delete.
    """
    db.execute(f"update site_version set version = {NEW_VERSION[db.dialect]} where id = 1")


def delete(db, cfg: Config, name: str, at: datetime, by: str) -> Rules:
    """Delete a saved preset that is not running; the event keeps its rules."""
    if name in cfg.builtin:
        raise PresetRefused(f"{name} is a built-in preset: it ships with gate and cannot be deleted")
    with db.transaction():
        db.lock(LOCK)
        cfg.refresh()
        if not is_saved(cfg, name):
            raise ConfigError(f"no saved preset named {name!r}")
        if active_name(db, cfg) == name:
            raise PresetRefused(f"{name} is running: switch the site to another preset first, then delete it")
        rules = cfg.saved.rules[name]
        events.record(db, "preset_deleted", at, by=by, name=name, **{"from": editable(rules), "to": None})
        _site_moved(db)
        cfg.saved.path(name).unlink()
        cfg.refresh()
    return rules


def create(db, cfg: Config, name: str, at: datetime, by: str, *, source: str | None = None,
           title: str | None = None) -> Rules:
    """A new saved preset: a copy of ``source`` (any preset), or the defaults; ``title`` renames it."""
    data = editable(cfg.preset(source)) if source else scratch(title)
    if title:
        data["title"] = title
    return save(db, cfg, name, data, at, by, new=True)


# --- `gate preset edit NAME --set key=value` ------------------------------------------


def parse_value(text: str):
    """A ``--set`` value as TOML reads it (5, true, "x", [1, 2]); anything else is taken as plain text."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def assign(data: dict, key: str, value) -> None:
    """Set a dotted key in preset data (``tiers.registered.limit``), tables made as needed."""
    parts = key.split(".")
    if not key or not all(parts):
        raise PresetInvalid({key or "(empty)": "not a key: write it dotted, like tiers.registered.limit"})
    table = data
    for depth, part in enumerate(parts[:-1]):
        inner = table.setdefault(part, {})
        if not isinstance(inner, dict):
            raise PresetInvalid({key: f"{'.'.join(parts[:depth + 1])} is a value, not a table"})
        table = inner
    table[parts[-1]] = value


def edit(db, cfg: Config, name: str, settings: list[str], at: datetime, by: str) -> Rules:
    """Change some keys of a saved preset (``key=value`` each, values as TOML), checked and saved as a whole."""
    if not is_saved(cfg, name):
        cfg.preset(name)  # an unknown name: ConfigError listing the known ones
        raise PresetRefused(f"{name} is a built-in preset: copy it first (gate preset new NAME --from {name})")
    data = editable(cfg.saved.rules[name])
    for setting in settings:
        key, equals, text = setting.partition("=")
        if not equals:
            raise PresetInvalid({key or "(empty)": "write key=value, like tiers.registered.limit=5"})
        assign(data, key.strip(), parse_value(text.strip()))
    return save(db, cfg, name, data, at, by)
