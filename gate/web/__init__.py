"""The web layer: one blueprint per area, thin views over the domain modules."""

from __future__ import annotations

import hmac

from flask import current_app, g, jsonify, render_template, request, session
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from itsdangerous import URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException, SecurityError

from gate.app import context, site
from gate.app.context import current
from gate.app.db import get_db
from gate.rules import billing, paywall, periods
from gate.rules.timeutil import from_iso
from gate.services import personas, subscriptions


class SiteCSRF(CSRFProtect):
    """Flask-WTF's CSRF protection, checking the method first and recognising the tokens it handed out.

    Flask-WTF looks up the view's exemptions on every request before it
    looks at the method, and verifies a posted token's signature every time.
    A GET needs neither. A posted token that is exactly the one this process
    signed for the session's own token (see :func:`csrf_token`) is valid
    without verifying its signature again; anything else, and any request
    over HTTPS (the referrer check), goes through Flask-WTF's own check.
    """

    def protect(self, apply_exemptions=False):
        config = current_app.config
        if request.method not in config["WTF_CSRF_METHODS"]:
            return None
        # The API sends its token in a header: looked at first, it spares parsing a form that isn't there.
        token = request.headers.get("X-CSRFToken") or self._get_csrf_token()
        if not request.is_secure and _issued_here(token):
            g.csrf_valid = True
            return None
        return super().protect(apply_exemptions)


def _issued_here(token: str | None) -> bool:
    """Whether ``token`` is the one this process signed for this session's CSRF token."""
    raw = session.get("csrf_token")
    if not token or not isinstance(raw, str):
        return False
    app = current_app._get_current_object()
    issued = _signed.get((app.config.get("WTF_CSRF_SECRET_KEY") or app.secret_key, raw))
    return issued is not None and hmac.compare_digest(issued, token)


csrf = SiteCSRF()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see that page."
login_manager.login_message_category = "info"


@login_manager.user_loader
def _load_reader(token: str):
    """Resolve the session's rotating token to an account, its subscription settled."""
    state = current()
    reader, spends = subscriptions.signed_in(get_db(), site.config(), token, state.now,
                                             spends=state.may_meter("registered"))
    if reader is not None and spends is not None:
        state.read_with_reader[reader.meter_key] = spends  # the viewer's meter, read in the same statement
    return reader


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _error(error: HTTPException):
    """Errors as a clear page, or as JSON under /api/."""
    code = error.code or 500
    message = error.description or error.name
    if _wants_json():
        return jsonify(error=error.name.lower().replace(" ", "_"), message=message), code
    return render_template("error.html", code=code, name=error.name, message=message), code


def _untrusted_host(error: SecurityError):
    """A Host that is not this site's origin: refuse before anything builds a URL from it."""
    message = "This site answers only for its configured origin (GATE_BASE_URL)."
    if _wants_json():
        return jsonify(error="untrusted_host", message=message), 400
    return f"Bad request: {message}\n", 400, {"Content-Type": "text/plain; charset=utf-8"}


def _csrf_error(error: CSRFError):
    """A missing or stale CSRF token: refuse, change nothing, explain."""
    message = "This form has expired or was not sent by this site. Reload the page and try again."
    if _wants_json():
        return jsonify(error="csrf_failed", message=error.description), 400
    return render_template("error.html", code=400, name="Form expired", message=message), 400


#: No inline script, no plugins, no framing; forms post only to this site.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


#: Headers every response carries (a paywall is an access-control system); a view may set its own.
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)


def _response_headers(response):
    """Security headers on everything; pages and API answers kept out of shared caches."""
    headers = response.headers
    present = {key.lower() for key, _ in headers.items()}
    headers.extend((key, value) for key, value in SECURITY_HEADERS if key.lower() not in present)
    if request.endpoint != "static":  # pages and answers vary by reader
        headers["Cache-Control"] = "private, no-cache"
        if "vary" in present:
            response.vary.add("Cookie")
        else:
            headers["Vary"] = "Cookie"
    return response


#: Each session's signed CSRF token, by (secret, the session's raw token); forgotten wholesale past KEEP_SIGNED.
_signed: dict[tuple, str] = {}
KEEP_SIGNED = 4096


def _signed_csrf(secret, raw: str) -> str:
    """A session's CSRF token signed as Flask-WTF signs it (same salt, so its validation accepts it)."""
    token = _signed.get((secret, raw))
    if token is None:
        token = URLSafeTimedSerializer(secret, salt="wtf-csrf-token").dumps(raw)
        _keep_signed(secret, raw, token)
    return token


def _keep_signed(secret, raw: str, token: str) -> None:
    if len(_signed) >= KEEP_SIGNED:
        _signed.clear()  # a session signed again later gets another valid token for the same raw one
    _signed[(secret, raw)] = token


def csrf_token() -> str:
    """This session's CSRF token for a form or the page's meta tag, signed once per process and session.

    Flask-WTF signs the session's token afresh on every page, a time stamp
    included. Tokens here live as long as their session (WTF_CSRF_TIME_LIMIT
    is None), so the time stamp means nothing and the signature of a
    session's token can be kept; a new session gets a new token as before.
    """
    held = g._get_current_object()  # the request's globals, looked up once
    token = getattr(held, "csrf_token", None)  # where generate_csrf keeps the page's token too
    if token is None:
        app = current_app._get_current_object()
        secret = app.config.get("WTF_CSRF_SECRET_KEY") or app.secret_key
        raw = session.get("csrf_token")
        if isinstance(raw, str):
            token = held.csrf_token = _signed_csrf(secret, raw)
        else:  # a new session: Flask-WTF makes its raw token and signs it; later pages reuse the signature
            token = generate_csrf()
            _keep_signed(secret, session["csrf_token"], token)
    return token


def _template_globals():
    """The site, the clock and the viewer's meter, for every page."""
    state = current()
    rules, viewer, state_clock = state.rules, state.viewer, state.now
    cfg = site.config()
    user = current_user._get_current_object()  # the reader itself: templates ask it several things
    return {
        "current_user": user,
        "site_info": cfg.publication,
        "rules": rules,
        "viewer": viewer,
        "meter": state.meter,
        "site_now": state_clock.astimezone(rules.tz),
        "clock_simulated": state.clock.simulated,
        "sections": cfg.publication.sections,
        "personas": personas.PERSONAS,
        "current_persona": personas.current(user.email if user.is_authenticated else None),
        "instructor": state.instructor,  # demo mode: the admin underneath a persona
        "previewing": state.previewed_preset,
        "signup_lists": cfg.signup_lists,
        "csrf_token": csrf_token,
    }


def init_app(app) -> None:
    """Bind extensions, blueprints, error handlers and response headers."""
    csrf.init_app(app)
    login_manager.init_app(app)
    from gate.web import account, admin, api, auth, demo, devmail, learn, newsletter, reading, subscribe
    from gate.web.access import RowId

    app.url_map.converters["id"] = RowId  # before the blueprints' routes use it

    for module in (reading, auth, account, subscribe, newsletter, learn, devmail, demo, admin, api):
        app.register_blueprint(module.bp)
    app.register_error_handler(HTTPException, _error)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(SecurityError, _untrusted_host)  # TRUSTED_HOSTS said no
    app.before_request(context.tag_request_events)
    app.teardown_request(lambda error=None: context.reset_request_state())
    app.after_request(_response_headers)
    app.after_request(context.write_porous_cookie)
    app.context_processor(_template_globals)
    app.jinja_env.filters["local"] = lambda moment: moment.astimezone(current().rules.tz)
    app.jinja_env.filters["from_iso"] = from_iso
    app.jinja_env.globals["absolute_url"] = site.absolute_url
    app.jinja_env.filters["period_phrase"] = lambda period: periods.describe(period) if period else ""
    # Codes in words, from the one mapping beside each code's definition.
    app.jinja_env.filters["reason_label"] = paywall.reason_label
    app.jinja_env.filters["status_label"] = billing.status_label
    app.jinja_env.filters["charge_label"] = billing.charge_label
    app.jinja_env.filters["decline_label"] = lambda code: billing.DECLINE_LABELS.get(code, code)
