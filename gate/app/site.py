"""The running site's state for one request: config, clock, preset and viewer.

This is the seam between the pure domain modules and Flask: it reads the
clock once per request, picks the active preset from the database and turns
the session into a :class:`gate.rules.paywall.Viewer`.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime

from flask import current_app, g, request, session, url_for
from flask_login import current_user

from gate.app.db import get_db
from gate.conf.settings import Config, ConfigError
from gate.rules import experiments
from gate.rules.paywall import Rules, Viewer
from gate.services import accounts
from gate.storage import events
from gate.storage.clock import Clock, real_now
from gate.storage.db import open_site_db
from gate.storage.quota import MemoryQuotaStore, SQLiteQuotaStore

PRESET_KEY = "preset"
#: Session keys of demo mode's "view as": the preset this session previews, and the admin underneath a persona.
PREVIEW_KEY, INSTRUCTOR_KEY = "preset_preview", "instructor"
#: A preview of the pre-ticked consent lesson, for this session only (see /learn).
CONSENT_PREVIEW_KEY = "consent_preview"
#: What a preview is made of: carried across persona switches and sign-ins.
PREVIEW_KEYS = (PREVIEW_KEY, CONSENT_PREVIEW_KEY)


def config() -> Config:
    """The validated site configuration."""
    return current_app.extensions["gate.config"]


#: Where links point when no origin is configured: the demo's own address, never a request's Host.


def origin() -> str:
    """The public origin every absolute URL starts with: configuration, never the request."""
    return current_app.config.get("BASE_URL") or config().origin


def absolute_url(endpoint: str, **values) -> str:
    """The configured origin plus the path of ``endpoint`` (for mail, feeds, JSON-LD, canonical)."""
    return origin() + url_for(endpoint, **values)


def request_state():
    """This request's ``g`` itself: one context lookup, where each ``g.name`` is another.

    The helpers below are called many times a page; they keep what they
    compute on this object once and read it back without the proxy.
    """
    return g._get_current_object()


def clock_state():
    """The clock row, read once per request."""
    state = request_state()
    if "clock_state" not in state:
        state.clock_state = Clock(get_db()).state()
    return state.clock_state


def now() -> datetime:
    """The site time, read once per request so every decision in it agrees."""
    state = request_state()
    if "now" not in state:
        state.now = clock_state().now(real_now())
    return state.now


def active_preset_name(db, cfg: Config) -> str:
    """The preset stored in the database, else the site default."""
    row = db.execute("select value from settings where key = ?", [PRESET_KEY]).fetchone()
    if row and row[0] in cfg.presets:
        return row[0]
    return cfg.publication.default_preset


def use_preset(db, cfg: Config, name: str, at: datetime, by: str) -> tuple[str, str]:
    """Switch the running site to another preset; returns (from, to)."""
    cfg.preset(name)  # raises ConfigError for an unknown name
    before = active_preset_name(db, cfg)
    db.execute(
        "insert or replace into settings (key, value) values (?, ?)", [PRESET_KEY, name]
    )
    if before != name:
        events.record(db, "preset_changed", at, by=by, **{"from": before, "to": name})
    return before, name


def previewed_preset() -> str | None:
    """The preset this session previews instead of the site's (demo mode only), or None.

    A student's Try it changes only their own view; the console always shows
    the site's own preset (``show_site_preset``).
    """
    state = request_state()
    if not current_app.config.get("DEMO") or state.get("site_preset_only"):
        return None
    name = session.get(PREVIEW_KEY)
    return name if isinstance(name, str) and name in config().presets else None


def show_site_preset() -> None:
    """This request reads by the site's preset whatever the session previews (the console)."""
    request_state().site_preset_only = True
    forget_rules()


def preset_name() -> str:
    """The preset this viewer reads by: their preview, else the site's active preset."""
    cfg = config()
    return previewed_preset() or active_preset_name(get_db(), cfg)


def base_rules() -> Rules:
    """The viewer's preset as configured, before any experiment variant."""
    state = request_state()
    if "base_rules" not in state:
        state.base_rules = config().preset(preset_name())
    return state.base_rules


def reader_unit(reader) -> str:
    """What experiments assign a reader by: their first visitor id, else their account."""
    return reader.experiment_unit or f"reader:{reader.id}"


def experiment_unit() -> str:
    """What experiments assign this viewer by: the signed-in reader's unit, else this visitor's id."""
    if current_user.is_authenticated:
        return reader_unit(current_user)
    return f"visitor:{visitor_id()}"  # an arm given is kept, so the visitor stays in it


def _assign(unit_of) -> dict[str, str]:
    """The variant of each active experiment for the unit ``unit_of()`` names (asked only if any is active)."""
    active = [exp for exp in base_rules().experiments if exp.active]
    unit = unit_of() if active else None
    return {exp.id: experiments.assign(exp, unit).id for exp in active}


def _with_variants(chosen: dict[str, str]) -> Rules:
    applied = base_rules()
    for exp in applied.experiments:
        if exp.id in chosen:
            applied = experiments.apply(applied, exp.variant(chosen[exp.id]))
    return applied


def variants() -> dict[str, str]:
    """This viewer's variant of each active experiment in the preset."""
    state = request_state()
    if "variants" not in state:
        state.variants = _assign(experiment_unit)
    return state.variants


def _variant_tags() -> dict:
    """The tags of an event recorded in this request: the viewer's variants, and a previewed preset.

    The audit reads the site's preset from its history; an event recorded
    under a preview names its preset so it is checked by the rules it had.
    """
    chosen, preview = variants(), previewed_preset()
    return {**({"variants": chosen} if chosen else {}), **({"preset": preview} if preview else {})}


def rules() -> Rules:
    """The rules the site applies to this viewer: the preset, with their variants applied."""
    state = request_state()
    if "rules" not in state:
        state.rules = _with_variants(variants())
    return state.rules


def rules_for(reader) -> Rules:
    """The rules another reader sees (an admin's view of them, a persona being built)."""
    return _with_variants(_assign(lambda: reader_unit(reader)))


def quota_store() -> SQLiteQuotaStore:
    """The meter store of this site."""
    return SQLiteQuotaStore(get_db())


def _visitor() -> str:
    """This visitor's id: the session's, or one chosen for this request and kept only once it is used.

    Reading the meter does not keep it; recording an event or a spend, or
    placing the visitor in an experiment, does (``visitor_id``). A feed
    reader, a crawler or a 404 gets no cookie and adds no visitor.
    """
    if "visitor" in session:
        return session["visitor"]
    state = request_state()
    if "new_visitor" not in state:
        state.new_visitor = secrets.token_urlsafe(12)
    return state.new_visitor


def visitor_id() -> str:
    """The anonymous visitor id, kept in the signed session cookie and the visitors table from now on."""
    if "visitor" not in session:
        session["visitor"] = _visitor()
        get_db()["visitors"].insert(
            {"id": session["visitor"], "created_at": now().isoformat()}, ignore=True
        )
    return session["visitor"]


def porous_meter() -> bool:
    """Whether this viewer's meter is the UNSAFE cookie of the bypass-lab preset."""
    return rules().porous and not current_user.is_authenticated


def quota_store_for_viewer():
    """The store this viewer's meter lives in: the database, or (bypass lab) a cookie."""
    if not porous_meter():
        return quota_store()
    if "porous_store" not in g:
        g.porous_store = MemoryQuotaStore()
        for slug, at in _cookie_spends():
            g.porous_store.spend(POROUS_KEY, slug, at.isoformat(), at, lambda spends: True)
    return g.porous_store


POROUS_KEY, POROUS_COOKIE = "cookie", "porous_meter"


def _cookie_spends():
    """The plain, unsigned cookie meter: a list of [slug, time]. Anyone can edit it."""
    try:
        raw = json.loads(request.cookies.get(POROUS_COOKIE, "[]"))
        return [(str(slug), datetime.fromisoformat(at)) for slug, at in raw][:500]
    except (ValueError, TypeError):
        return []


def write_porous_cookie(response):
    """Send the cookie meter back, when this request spent from it."""
    store = g.get("porous_store")
    if store is not None and g.get("porous_dirty"):
        spends = [[s.slug, s.at.isoformat()] for s in store.spends(POROUS_KEY)]
        response.set_cookie(POROUS_COOKIE, json.dumps(spends), max_age=3600 * 24 * 400, samesite="Lax")
    return response


def viewer() -> Viewer:
    """The current viewer with the spends of their meter."""
    state = request_state()
    if "viewer" not in state:
        user = current_user._get_current_object()
        verified = not user.is_authenticated or user.email_verified_at is not None
        if user.is_authenticated:
            tier, key = user.tier, user.meter_key
        elif porous_meter():
            tier, key = "anonymous", POROUS_KEY
        else:
            tier, key = "anonymous", f"visitor:{_visitor()}"
        state.viewer = Viewer(tier, key, quota_store_for_viewer().spends(key), verified)
    return state.viewer


def forget_viewer() -> None:
    """Drop the cached viewer after a spend, login or logout."""
    g.pop("viewer", None)


def instructor() -> accounts.Reader | None:
    """The admin underneath this session's persona (demo mode's "view as"), or None.

    The session keeps the admin's rotating session token, so signing the
    admin out anywhere (or removing their admin flag) ends it too.
    """
    state = request_state()
    if "instructor" not in state:
        token = session.get(INSTRUCTOR_KEY) if current_app.config.get("DEMO") else None
        reader = accounts.by_session_token(get_db(), token) if isinstance(token, str) else None
        state.instructor = reader if reader is not None and reader.is_admin else None
    return state.instructor


def act_as_instructor() -> bool:
    """In the console, be the admin underneath the persona for this request; False if there is none."""
    admin = instructor()
    if admin is None:
        return False
    g._login_user = admin  # what flask-login's current_user reads for the rest of this request
    forget_rules()
    return True


def forget_rules() -> None:
    """Drop the cached preset, variants and viewer after the site's rules change."""
    for key in ("base_rules", "rules", "variants", "viewer", "porous_store"):
        g.pop(key, None)


def tag_request_events() -> None:
    """Every event this request records carries the viewer's variants, whatever the view."""
    events.TAGS.set(_variant_tags)


def reset_request_state() -> None:
    """End each request with no event tags (contexts may be reused)."""
    events.TAGS.set({})


def init_app(app) -> None:
    """Apply GATE_PRESET, if set, when the site starts."""
    name = app.config.get("PRESET")
    if not name:
        return
    cfg: Config = app.extensions["gate.config"]
    if name not in cfg.presets:
        raise ConfigError(
            f"GATE_PRESET: no preset named {name!r} (have: {', '.join(sorted(cfg.presets))})"
        )
    db = open_site_db(app.config["DATABASE"])
    try:
        use_preset(db, cfg, name, Clock(db).now(), by="GATE_PRESET")
    finally:
        db.close()
