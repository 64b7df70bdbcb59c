"""Rate limits (Flask-Limiter) kept in the site database, so every worker and node shares the counts.

The counters live in :mod:`gate.storage.ratelimits` (``gate-sqlite://`` on
SQLite, ``gate-postgresql://`` on PostgreSQL, where every node shares them),
kept across restarts. Set GATE_RATELIMIT_STORAGE to a ``redis://`` URI to keep
them in Redis instead.
"""

from __future__ import annotations

import functools

from flask import request, session
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import current_user

from gate.services import accounts
from gate.storage import ratelimits  # (defining its storage classes registers gate-sqlite:// and gate-postgresql://)


def viewer_key() -> str:
    """Limit per reader or per anonymous visitor (the tab racer shares one session)."""
    user = current_user._get_current_object()  # the objects, not their proxies (gate.app.plumbing)
    if user.is_authenticated:
        return f"reader:{user.id}"
    return f"visitor:{session._get_current_object().get('visitor') or get_remote_address()}"


def email_key() -> str:
    """Limit per target address, whoever asks, in the spelling accounts use.

    Fullwidth, capitalised or punycode spellings of one domain are one inbox, so
    they share one count. A signed-in reader sending no address counts as themselves.
    """
    raw = request.form.get("email") or ""
    if not raw and current_user.is_authenticated:
        return f"reader:{current_user.id}"
    try:
        return "email:" + accounts.normalize_email(raw)
    except accounts.AccountError:
        return "email:" + raw.strip().lower()  # refused by the form anyway; still counted


limiter = Limiter(key_func=get_remote_address, headers_enabled=True, strategy="fixed-window")

#: The limits, by what they protect.
LOGIN = "20 per minute"
SIGNUP = "20 per minute"
#: Checkout creates accounts too, so it is limited like signup, and per address.
CHECKOUT = SIGNUP
CHECKOUT_EMAIL = "10 per hour"


def reached_the_card(response) -> bool:
    """Whether a checkout got as far as a charge (a form refused with 400 writes and charges nothing)."""
    return response.status_code != 400
MAGIC_LINK_IP = "10 per minute"
MAGIC_LINK_EMAIL = "5 per hour"
UNLOCK = "60 per minute"

#: Sign-in links to one inbox, from signup and the link form together (mail bombing);
#: a refused form sends nothing, so it doesn't count.
sign_in_mail = limiter.shared_limit(MAGIC_LINK_EMAIL, scope="sign-in-mail", key_func=email_key,
                                    methods=["POST"], deduct_when=lambda response: response.status_code < 400)


def init_app(app) -> None:
    """Bind the limiter with shared storage (GATE_RATELIMIT_STORAGE, else the site database)."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", ratelimits.storage_uri(str(app.config["DATABASE"])))
    limiter.init_app(app)
    _only_on_limited_routes(app)


def limited(view) -> bool:
    """Whether a view function carries a limit of this limiter (its decorator marks the wrapper)."""
    return getattr(view, "__wrapper-limiter-instance", None) == limiter  # as Flask-Limiter compares it


def _only_on_limited_routes(app) -> None:
    """Run Flask-Limiter's per-request hooks only for the routes that have a limit.

    Flask-Limiter checks every request for app-wide and blueprint limits, and
    gate has none: every limit is on a route (login, signup, checkout, sign-in
    links, unlocks). The pages a reader loads most, articles first, then skip
    the limiter entirely; a limited route runs its hooks as before.
    """
    hooks = {"before": app.before_request_funcs[None], "after": app.after_request_funcs[None],
             "teardown": app.teardown_request_funcs[None]}
    ours = {"before": lambda hook: hook == limiter._check_request_limit,
            "after": lambda hook: getattr(hook, "args", None) == (limiter,),
            "teardown": lambda hook: getattr(hook, "__self__", None) is limiter}
    for kind, funcs in hooks.items():
        for index, hook in enumerate(funcs):
            if ours[kind](hook):
                funcs[index] = _on_limited_routes(app, hook, kind)


def unwrap_when_off(app) -> None:
    """With limits off (GATE_RATE_LIMITS=off), serve each limited view without Flask-Limiter's wrapper.

    Switched off, the wrapper still filters and evaluates limits on every call
    (finding none to apply), about a hundred calls an unlock. Called once every
    blueprint is registered; the switch is this app's, not the process's.
    """
    if app.config.get("RATELIMIT_ENABLED", True):
        return
    for endpoint, view in list(app.view_functions.items()):
        while limited(view):
            view = view.__wrapped__  # the view under Flask-Limiter's functools.wraps
        app.view_functions[endpoint] = view


def _on_limited_routes(app, hook, kind: str):
    """``hook``, run only when this request's view has a limit (an after-request hook passes the response on)."""

    @functools.wraps(hook)
    def only_when_limited(*args):
        if limited(app.view_functions.get(request._get_current_object().endpoint)):
            return hook(*args)
        return args[0] if kind == "after" else None

    return only_when_limited
