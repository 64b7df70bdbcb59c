"""Try a preset as a persona (issue 18): the studio's preview of a preset, in this browser only.

An admin presses *Try* beside a preset: this session previews it (demo mode's
per-session preview), becomes the chosen persona with the admin underneath,
and lands on a metered article. Nobody else's site changes. While trying,
every page shows a banner (templates/partials/_personas.html) with *Switch
persona*, *Back to the studio* and *Stop trying*; the last two are demo-mode
routes (``demo.back_to_studio`` and ``demo.preview``).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, abort, current_app, flash, redirect, request, session, url_for
from flask_login import current_user
from werkzeug.exceptions import HTTPException
from wtforms import HiddenField, StringField
from wtforms.validators import InputRequired, ValidationError

from gate.app import site
from gate.app.context import current
from gate.app.db import get_db
from gate.services import accounts, content, personas
from gate.web.admin import _admins_only
from gate.web.auth import safe_next
from gate.web.demo import become, start_preview
from gate.web.forms import TextForm

bp = Blueprint("admin_try", __name__, url_prefix="/admin")
bp.before_request(_admins_only)

#: Why there is nothing to try outside demo mode (the partial says it too).
DEMO_ONLY = ("Trying a preset as a persona needs demo mode (gate demo, or GATE_DEMO=1): "
             "personas exist only there. Outside it, switch the site's preset instead.")
#: How many newest articles are searched for a metered one to land on.
LANDING_SEARCH = 50


def _known_persona(form, field) -> None:
    """A forged persona id is a field error, never a default."""
    if field.data not in personas.BY_ID:
        raise ValidationError(f"There is no persona called {field.data!r}: choose one of the personas listed.")


class TryForm(TextForm):
    """Which persona tries the preset, and (optionally) which page of this site to open."""

    #: Rendered as radios in templates/admin/_try.html, each with its persona's one line.
    persona = StringField("Try as", validators=[InputRequired("Choose a persona to try the preset as."),
                                                _known_persona])
    next = HiddenField()


@dataclass(frozen=True)
class Trial:
    """What the Try banner names: the tried preset, the site's own, and the way back to the studio."""

    name: str
    title: str
    #: Who tries it: the persona's label, else the account's email, else Anonymous.
    persona: str
    running: str
    studio: str


@bp.post("/rules/<name>/try")
def try_preset(name: str):
    """Preview preset NAME in this browser only, as a persona, on a metered article (or ``next``)."""
    if not current_app.config.get("DEMO"):
        abort(400, description=DEMO_ONLY)
    if name not in site.config().presets:
        abort(400, description=f"There is no preset called {name!r}.")
    form = TryForm()
    if not form.validate_on_submit():
        abort(400, description=" ".join(form.persona.errors or form.next.errors) or "Choose a persona.")
    persona = personas.get(form.persona.data)
    current().show_preview()  # the console read by the site's preset; the persona is built by the tried one
    start_preview(name)
    session[site.TRY_KEY] = name
    become(persona.id, tried=name)
    flash(f"Trying {current().rules.title} as {persona.label}: only this browser reads by it.", "info")
    return redirect(_landing(persona, form.next.data), code=303)


def _landing(persona: personas.Persona, asked: str | None) -> str:
    """The page asked for, else the persona's own page, else the newest metered article (where the gate shows)."""
    if asked:
        return safe_next(asked)
    if persona.lands_on:
        return persona.lands_on
    found = content.latest(get_db(), current().now, limit=LANDING_SEARCH)
    article = next((item for item in found if item.access_class == "metered"), None)
    return url_for("reading.article", slug=article.slug) if article else url_for("reading.index")


def studio_url(name: str) -> str:
    """The studio's page of preset ``name`` when the site has one (/admin/rules/NAME), else /admin/rules."""
    page = f"{url_for('admin.rules')}/{name}"
    try:
        current_app.create_url_adapter(request).match(page, method="GET")
    except HTTPException:  # no such page (yet): the rules page lists every preset
        return url_for("admin.rules")
    return page


def trial() -> Trial | None:
    """This session's Try, for the banner on every page (None when it tries nothing)."""
    state = current()
    name = state.tried_preset
    if name is None:
        return None
    cfg = site.config()
    return Trial(name, cfg.preset(name).title, _tried_as(), cfg.preset(state.site.preset).title, studio_url(name))


def _tried_as() -> str:
    """Who tries the preset: the session's reader (the console acts as the admin underneath: read it by its token)."""
    reader, admin = current_user, current().instructor
    if admin is not None and reader.is_authenticated and reader.id == admin.id:
        token = session.get("_user_id")
        reader = accounts.by_session_token(get_db(), token) if isinstance(token, str) else None
    email = reader.email if reader is not None and reader.is_authenticated else None
    persona = personas.current(email)
    return personas.get(persona).label if persona else email


@bp.app_context_processor
def _try_globals() -> dict:
    """Every page's Try banner (templates/partials/_personas.html)."""
    return {"trying": trial()}
