"""The running site, the same for every request: its configuration, public origin and start-up preset.

What differs per request (clock, rules, variants, viewer) is :mod:`gate.app.context`.
"""

from __future__ import annotations

import re

from flask import current_app, request, url_for

from gate.conf.settings import Config, ConfigError
from gate.services import presets
from gate.storage.clock import Clock
from gate.storage.db import open_site_db

#: Session keys of demo mode's "view as": the preset this session previews, and the admin underneath a persona.
PREVIEW_KEY, INSTRUCTOR_KEY = "preset_preview", "instructor"
#: A preview of the pre-ticked consent lesson, for this session only (see /learn).
CONSENT_PREVIEW_KEY = "consent_preview"
#: The preset an admin tries from the studio (its preview, with the Try banner on every page).
TRY_KEY = "preset_try"
#: What a preview is made of: carried across persona switches and sign-ins.
PREVIEW_KEYS = (PREVIEW_KEY, CONSENT_PREVIEW_KEY, TRY_KEY)


def config() -> Config:
    """The validated site configuration."""
    return current_app._get_current_object().extensions["gate.config"]  # not the proxy: gate.app.plumbing


def origin() -> str:
    """The public origin every absolute URL starts with: configuration, never the request."""
    return current_app._get_current_object().config.get("BASE_URL") or config().origin


def absolute_url(endpoint: str, **values) -> str:
    """The configured origin plus the path of ``endpoint`` (for mail, feeds, JSON-LD, canonical)."""
    return origin() + url_for(endpoint, **values)


#: A path segment that ``url_for`` writes as it is (nothing to percent-encode).
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]+")


def canonical_url(endpoint: str, key: str, value: str) -> str:
    """:func:`absolute_url` of this request's own page (``endpoint`` with ``key=value``, the route it matched).

    When ``value`` needs no percent-encoding the request's own path is that URL's
    path, and building it again through the URL map (about twenty calls) is skipped.
    """
    asked = request._get_current_object()
    if _PLAIN_SEGMENT.fullmatch(value) and asked.endpoint == endpoint and asked.view_args == {key: value}:
        return origin() + asked.script_root + asked.path
    return absolute_url(endpoint, **{key: value})


#: The routes that serve one article, named by their ``slug``: it is read with the site's state.
ARTICLE_ROUTES = frozenset({"reading.article", "reading.article_json", "reading.unlock", "api.article",
                            "api.unlock", "api.gift", "gifts.make"})


def refresh_presets() -> None:
    """Each request sees presets another process saved or deleted (one ``stat`` when none did).

    An article's route reads the site's state before it uses a preset, and
    every save or delete moves that state's version: it looks at the folder
    then (:func:`gate.services.sitestate.read`), not here.
    """
    if request._get_current_object().endpoint not in ARTICLE_ROUTES:
        config().refresh()


def init_app(app) -> None:
    """Keep saved presets current on every request, and apply GATE_PRESET, if set, when the site starts."""
    app.before_request(refresh_presets)
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
        presets.use(db, cfg, name, Clock(db).now(), by="GATE_PRESET")
    finally:
        db.close()
