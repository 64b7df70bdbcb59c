"""The web layer: one blueprint per area, thin views over the domain modules."""

from __future__ import annotations

from flask import jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, SecurityError

from gate.app import context, plumbing, ratelimit, sessions, site
from gate.app.context import current
from gate.app.csrf import SiteCSRF, keep_csrf_signature, page_token, prime_csrf_token
from gate.rules import billing, paywall, periods
from gate.rules.timeutil import from_iso
from gate.services import personas

csrf = SiteCSRF()
login_manager = sessions.SiteLogin()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see that page."
login_manager.login_message_category = "info"


@login_manager.user_loader
def _load_reader(token: str):
    """Resolve the session's rotating token to an account, its subscription settled."""
    return current().signed_in(token)


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


#: What a page or API answer gets when it set none of these itself (the usual case): added in one go.
_PAGE_HEADERS = (*SECURITY_HEADERS, ("Cache-Control", "private, no-cache"), ("Vary", "Cookie"))
_PAGE_NAMES = frozenset(key.lower() for key, _ in _PAGE_HEADERS)
#: The same, checked once, for an answer to add as it leaves (see gate.app.plumbing.Answer).
_PAGE_LEAVING = plumbing.leaving_headers(_PAGE_HEADERS)


def _response_headers(response):
    """Security headers on everything; pages and API answers kept out of shared caches."""
    headers = response.headers
    present = {key.lower() for key, _ in headers.items()}
    page = request._get_current_object().endpoint != "static"  # pages and answers vary by reader
    if page and not present & _PAGE_NAMES:
        if isinstance(response, plumbing.Answer):
            response.leave_with(_PAGE_LEAVING)  # added as it leaves, without checking each again
        else:
            headers.extend(_PAGE_HEADERS)
        return response
    headers.extend([(key, value) for key, value in SECURITY_HEADERS if key.lower() not in present])
    if page:
        headers["Cache-Control"] = "private, no-cache"
        if "vary" in present:
            response.vary.add("Cookie")
        else:
            headers["Vary"] = "Cookie"
    return response


def _template_globals():
    """The site, the clock and the viewer's meter, for every page."""
    state = current()
    rules, viewer, state_clock = state.rules, state.viewer, state.now
    cfg = site.config()
    user = context.account()  # the reader itself: templates ask it several things
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
        "csrf_token": page_token,  # over Flask-WTF's, registered before
    }


def _register_licences(app) -> None:
    """Group licences: the readers' organisation pages and the console's."""
    from gate.web import admin_orgs, orgs

    for module in (orgs, admin_orgs):
        app.register_blueprint(module.bp)


def init_app(app) -> None:
    """Bind extensions, blueprints, error handlers and response headers."""
    csrf.init_app(app)
    app.before_request(prime_csrf_token)  # before any form builds its token
    app.after_request(keep_csrf_signature)
    app.jinja_env.globals["csrf_token"] = page_token  # a template without the page's context
    login_manager.init_app(app, add_context_processor=False)  # _template_globals gives templates the reader
    from gate.web import (
        account,
        admin,
        admin_forecast,
        admin_offers,
        admin_try,
        api,
        auth,
        demo,
        devmail,
        gifts,
        learn,
        newsletter,
        passes,
        reading,
        studio,
        subscribe,
    )
    from gate.web.access import RowId

    app.url_map.converters["id"] = RowId  # before the blueprints' routes use it

    # The rule studio: its list is admin.rules; studio edits, exports and deletes; admin_try and
    # admin_forecast act on a saved preset.
    for module in (reading, auth, account, subscribe, passes, newsletter, learn, devmail, demo, admin, admin_offers,
                   api, gifts, studio, admin_try, admin_forecast):
        app.register_blueprint(module.bp)
    _register_licences(app)
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
    plumbing.drop_repeated_context_processors(app)  # after every blueprint is registered
    ratelimit.unwrap_when_off(app)  # likewise
