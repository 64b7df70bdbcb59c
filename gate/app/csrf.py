"""CSRF protection (Flask-WTF) that signs each session's token once and recognises it when it comes back.

Flask-WTF signs the session's raw token afresh, with a time stamp, for every
page, and on every POST verifies the signature of what comes back. Where
tokens live as long as their session (``WTF_CSRF_TIME_LIMIT`` is None, as
gate configures it) the time stamp means nothing: each session's token is
signed once per process, and a token that comes back exactly as this
process handed it out is valid without verifying its signature again. A
token another process signed (the next worker, another app server) is
verified once by Flask-WTF and then recognised the same way, so each process
checks each session's signature at most once. With a time limit configured,
or over HTTPS (Flask-WTF's referrer check), every token goes through
Flask-WTF as before.
"""

from __future__ import annotations

import hmac

from flask import current_app, g, request, session
from flask_wtf.csrf import CSRFProtect, generate_csrf
from itsdangerous import URLSafeTimedSerializer

#: Signed tokens kept per process, by (secret, the session's raw token); forgotten wholesale past this.
KEEP_SIGNED = 4096
_signed: dict[tuple, str] = {}


class SiteCSRF(CSRFProtect):
    """Flask-WTF's CSRF protection, checking the method first and recognising the tokens it handed out.

    Flask-WTF looks up the view's exemptions on every request before it
    looks at the method, and verifies a posted token's signature every time.
    A GET needs neither. A posted token that is exactly the one this process
    signed for the session's own token (see :func:`prime_csrf_token`), or one
    Flask-WTF has already found valid for it here, is valid without verifying
    its signature again; anything else goes through Flask-WTF's own check,
    and a token that passes it is kept for the session's next posts.
    """

    def protect(self, apply_exemptions=False):
        config, asked = current_app._get_current_object().config, request._get_current_object()  # not proxies: gate.app.plumbing
        if asked.method not in config["WTF_CSRF_METHODS"]:
            return None
        # The API sends its token in a header: looked at first, it spares parsing a form that isn't there.
        token = asked.headers.get("X-CSRFToken") or self._get_csrf_token()
        recognisable = _untimed(config) and not asked.is_secure  # a kept signature stays valid
        if recognisable and _issued_here(token, config):
            g._get_current_object().csrf_valid = True
            return None
        answer = super().protect(apply_exemptions)  # a wrong token raises CSRFError here
        if recognisable and g._get_current_object().__dict__.get("csrf_valid"):
            _keep_valid(self._get_csrf_token(), config)  # the token Flask-WTF verified (form first, then header)
        return answer


def _issued_here(token: str | None, config) -> bool:
    """Whether ``token`` is the one this process signed for this session's CSRF token (``config``: the app's)."""
    raw = session._get_current_object().get("csrf_token")
    if not token or not isinstance(raw, str):
        return False
    issued = _signed.get((_secret(config), raw))
    return issued is not None and hmac.compare_digest(issued, token)


def _keep_valid(token: str, config) -> None:
    """Keep a token Flask-WTF has just verified as this session's, in place of any this process signed.

    Signed by another process, it would otherwise be verified again on every
    post this process takes. Its time stamp means nothing without a time
    limit, so it is as valid as a signature this process would make, and this
    process's pages hand it out from now on: the processes a session's pages
    come from settle on one token, the one its posts carry.
    """
    raw = session._get_current_object().get("csrf_token")
    if isinstance(raw, str):
        _keep_signed(_secret(config), raw, token)


def _secret(config=None):
    """The key CSRF tokens are signed with, as Flask-WTF chooses it (``config``: the app's, when at hand)."""
    config = config if config is not None else current_app.config
    return config.get("WTF_CSRF_SECRET_KEY") or config["SECRET_KEY"]


def _untimed(config=None) -> bool:
    """Whether tokens live as long as their session (no time limit), so a kept signature stays valid."""
    config = config if config is not None else current_app.config
    return config.get("WTF_CSRF_TIME_LIMIT", 3600) is None


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


#: The attribute of ``g`` holding the token :func:`prime_csrf_token` handed out (nothing to keep after the page).
PRIMED = "csrf_primed"


def prime_csrf_token() -> None:
    """Before the view (a form builds its token as it is made): hand Flask-WTF this session's kept signature."""
    config = current_app._get_current_object().config
    if _untimed(config):
        raw = session._get_current_object().get("csrf_token")
        if isinstance(raw, str):
            token = _signed_csrf(_secret(config), raw)
            kept = g._get_current_object().__dict__
            kept["csrf_token"] = kept[PRIMED] = token  # where generate_csrf looks first


def page_token() -> str:
    """The token a page's forms carry (``csrf_token()`` in templates): the session's primed one, else Flask-WTF's.

    Flask-WTF's ``generate_csrf`` looks up its configuration on every call, and a
    page calls it once per form; the primed token (or the one it made on its first
    call) is on ``g`` already.
    """
    return g._get_current_object().__dict__.get("csrf_token") or generate_csrf()


def keep_csrf_signature(response):
    """After a page that signed a token afresh (a new session's first): keep it for the session's next pages."""
    kept = g._get_current_object().__dict__
    token = kept.get("csrf_token")
    if token is None or token is kept.get(PRIMED):
        return response  # no token, or the one kept already
    config = current_app._get_current_object().config
    if _untimed(config):
        raw = session._get_current_object().get("csrf_token")
        if isinstance(raw, str) and (_secret(config), raw) not in _signed:
            _keep_signed(_secret(config), raw, token)
    return response
