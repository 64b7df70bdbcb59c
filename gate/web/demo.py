"""Demo mode: the persona switcher and preset preview (only with `gate demo` or GATE_DEMO=1).

A persona is a "view as": an admin who switches keeps their own identity
underneath (the session's instructor) and returns to it in one click. A
preset chosen here changes only this session's view, never the site's.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, flash, redirect, request, session, url_for
from flask_login import current_user, logout_user

from gate.app import site
from gate.app.context import ARRIVAL_NEXT_KEY, current
from gate.app.db import get_db
from gate.services import personas
from gate.storage import events
from gate.web.auth import safe_next, sign_in
from gate.web.forms import ConfirmForm

bp = Blueprint("demo", __name__, url_prefix="/demo")


@bp.before_request
def _demo_only():
    """Personas are a presenter's tool: they do not exist outside demo mode."""
    if not current_app.config.get("DEMO"):
        abort(404)


def _then_back(act, to: str | None = None) -> Response:
    """Do ``act`` for a form this site sent (it returns what to tell the presenter), then go back (or ``to``)."""
    target = to or safe_next(request.form.get("next"))
    if ConfirmForm().validate_on_submit():
        flash(act(), "info")
    return redirect(target, code=303)


@bp.post("/persona")
def switch():
    """Become a persona, reset to its defined state, and go back to the same page (or the persona's own)."""
    landing = personas.BY_ID.get(request.form.get("persona", ""))
    return _then_back(_switch, landing.lands_on if landing else None)


def _switch() -> str:
    try:
        persona = personas.get(request.form.get("persona", ""))
    except personas.PersonaError as error:
        abort(400, description=str(error))
    become(persona.id)
    return f"You are now: {persona.label}. {persona.description}"


@bp.post("/return")
def return_to_instructor():
    """Leave the persona and be the admin underneath again, in a fresh session."""
    return _then_back(_return)


def _return(**detail) -> str:
    admin = current().instructor
    if admin is None:
        abort(403, description="There is no instructor session to return to: log in as an admin.")
    persona = _current_persona()
    session.pop("visitor", None)  # the persona's anonymous meter is not the admin's to keep
    sign_in(admin, "instructor")
    events.record(get_db(), "persona_returned", current().now, reader_id=admin.id,
                  **{"from": persona, "to": "instructor"}, **detail)
    return "You are back in your own account."


@bp.post("/studio")
def back_to_studio():
    """End a Try: be the admin underneath again, read by the site's preset, and go back to the studio."""
    return _then_back(_back_to_studio, safe_next(request.form.get("next"), url_for("admin.rules")))


def _back_to_studio() -> str:
    """The admin again (the one underneath, or the one signed in), by the site's preset."""
    tried = current().tried_preset
    if current().instructor is not None:
        _return(**({"tried": tried} if tried else {}))
    elif not (current_user.is_authenticated and current_user.is_admin):
        abort(403, description="The studio is for admins: log in as an admin to go back to it.")
    start_preview(None)
    return f"Back in the studio. The site runs {current().rules.title} for everyone, you included."


@bp.post("/preview")
def preview():
    """Read the site by another preset in this session only (an empty choice: the site's own)."""
    return _then_back(_preview)


def _preview() -> str:
    name = request.form.get("preset", "")
    if name and name not in site.config().presets:
        abort(400, description=f"There is no preset called {name!r}.")
    start_preview(name or None)
    if name:
        return f"Previewing {current().rules.title}: only you see it; everyone else keeps the site's rules."
    return f"Back to the site's preset: {current().rules.title}."


def start_preview(name: str | None, consent: bool = False) -> None:
    """Set (or clear) this session's preset preview, and its consent lesson, and work the rules out again.

    A Try from the studio ends too: a preview chosen any other way is not the Try's.
    """
    session.pop(site.TRY_KEY, None)
    if name:
        session[site.PREVIEW_KEY] = name
    else:
        session.pop(site.PREVIEW_KEY, None)
    if consent:
        session[site.CONSENT_PREVIEW_KEY] = True
    else:
        session.pop(site.CONSENT_PREVIEW_KEY, None)
    current().after_rules_change()


def _current_persona() -> str | None:
    """The persona this session is (None for an account that is no persona)."""
    return personas.current(current_user.email if current_user.is_authenticated else None)


def _underneath() -> str | None:
    """The session token of the admin who stays underneath a persona switch, if any."""
    if current().instructor is not None:
        return current().instructor.session_token
    if current_user.is_authenticated and current_user.is_admin:
        return current_user.session_token
    return None


def become(persona_id: str, **detail) -> None:
    """Sign out whoever is here, rebuild the persona under the rules it reads by, and sign it in.

    An admin stays underneath (see ``return_to_instructor``); a preset
    preview stays in force.
    """
    db, now = get_db(), current().now
    admin, before = _underneath(), _current_persona()
    preview = {key: session[key] for key in site.PREVIEW_KEYS if key in session}
    if current_user.is_authenticated:
        logout_user()
    session.clear()
    session.update(preview)
    if personas.get(persona_id).arrives_from:  # its next article request comes from a search result (say)
        session[ARRIVAL_NEXT_KEY] = personas.get(persona_id).arrives_from
    current().after_rules_change()  # the rules, variants and viewer worked out so far were the presenter's
    reader = personas.reset(db, site.config(), current().rules_for, persona_id, now)
    if reader is not None:
        sign_in(reader, "persona")  # a fresh session: it carries the preview, not the admin
    if admin:
        session[site.INSTRUCTOR_KEY] = admin
        detail["instructor"] = True
    events.record(db, "persona_switched", now, reader_id=reader.id if reader else None,
                  persona=persona_id, **{"from": before, "to": persona_id}, **detail)
