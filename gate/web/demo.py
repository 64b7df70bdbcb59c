"""Demo mode: the persona switcher (only with `gate demo` or GATE_DEMO=1)."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, request, session
from flask_login import current_user, logout_user

from gate import events, personas, site
from gate.db import get_db
from gate.web.auth import safe_next, sign_in
from gate.web.forms import ConfirmForm

bp = Blueprint("demo", __name__, url_prefix="/demo")


@bp.before_request
def _demo_only():
    """Personas are a presenter's tool: they do not exist outside demo mode."""
    if not current_app.config.get("DEMO"):
        abort(404)


@bp.post("/persona")
def switch():
    """Become a persona, reset to its defined state, and go back to the same page."""
    target = safe_next(request.form.get("next"))
    if not ConfirmForm().validate_on_submit():
        return redirect(target, code=303)
    try:
        persona = personas.get(request.form.get("persona", ""))
    except personas.PersonaError as error:
        abort(400, description=str(error))
    become(persona.id)
    flash(f"You are now: {persona.label}. {persona.description}", "info")
    return redirect(target, code=303)


def become(persona_id: str, **detail) -> None:
    """Sign out whoever is here, rebuild the persona under the rules it reads by, and sign it in."""
    db, now = get_db(), site.now()
    if current_user.is_authenticated:
        logout_user()
    session.clear()
    site.forget_rules()  # the rules, variants and viewer worked out so far were the presenter's
    reader = personas.reset(db, site.config(), site.rules_for, persona_id, now)
    if reader is not None:
        sign_in(reader, "persona")
    events.record(db, "persona_switched", now, reader_id=reader.id if reader else None,
                  persona=persona_id, **detail)
