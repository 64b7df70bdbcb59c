"""Flask's signed-cookie sessions, with each cookie's signature checked once per process.

A reader's browser sends the same session cookie on every page until the
site changes it. Flask parses the ``Cookie`` header and verifies the cookie
every time: it derives the signing key, checks the HMAC, base64-decodes,
inflates and parses the JSON. Here a cookie that verified once is
remembered (per secret key, in a bounded LRU, by the whole ``Cookie``
header it came in) with what it held and when it was signed, so the next
request with the same header skips all of that. Nothing else changes: a changed, forged or expired cookie
is checked exactly as Flask checks it, the session expires on the same
``PERMANENT_SESSION_LIFETIME``, and a session holding anything but plain
values (a list of flashed messages) is never kept, so no request can change
what another one is handed.

Flask-Login's session protection hashes the browser's address and user agent
on every request; :func:`session_identifier` hashes each pair once. It also
loads the user through Flask's proxies at every step of every request;
:class:`SiteLogin` takes each proxy's object once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from flask import current_app, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, user_accessed
from flask_login import utils as login_utils
from flask_login.config import COOKIE_NAME
from itsdangerous import BadSignature

#: Verified cookies kept per process (one per active session is enough).
KEEP = 4096
_PLAIN = (str, int, float, bool, type(None))


class VerifiedCookies:
    """header → (what its session cookie held, when it was signed, its cookies parsed): the headers this
    process verified a session in, least recent first."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.entries: OrderedDict = OrderedDict()
        self.lock = threading.Lock()  # a worker's threads share it

    def remember(self, key, data: dict, signed_at: float, cookies=None) -> None:
        """Keep a session that just verified, if it holds only plain values (``cookies``: its header parsed, immutable)."""
        if all(isinstance(value, _PLAIN) for value in data.values()):
            with self.lock:
                self.entries[key] = (dict(data), signed_at, cookies)
                if len(self.entries) > self.keep:
                    self.entries.popitem(last=False)

    def recall(self, key, max_age: int) -> tuple[dict, object] | None:
        """A copy of what a verified session held and its header's cookies, unless it has expired since (or was never seen)."""
        with self.lock:
            found = self.entries.get(key)
            if found is None or time.time() - found[1] > max_age:
                return None
            self.entries.move_to_end(key)
        return dict(found[0]), found[2]


class SessionInterface(SecureCookieSessionInterface):
    """The signed-cookie session, verifying each distinct cookie once per process."""

    def __init__(self) -> None:
        self.verified = VerifiedCookies()
        self.serializers: dict = {}

    def get_signing_serializer(self, app):
        """Flask's serializer, built once per set of secret keys rather than once a request."""
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        if keys not in self.serializers:
            self.serializers[keys] = super().get_signing_serializer(app)
        return self.serializers[keys]

    def open_session(self, app, request):
        """The session its cookie holds, recalled by the request's whole ``Cookie`` header when seen before.

        The same header holds the same session cookie and parses to the same
        cookies, so a browser's next request skips parsing the header (the
        request is handed its cookies as parsed before: Flask-Login looks for
        a remember cookie on every signed-out page) as well as verifying the cookie.
        """
        serializer = self.get_signing_serializer(app)
        header = request.environ.get("HTTP_COOKIE")
        if serializer is None or not header:
            return super().open_session(app, request)
        name = self.get_cookie_name(app)
        max_age = int(app.permanent_session_lifetime.total_seconds())
        key = (app.secret_key, name, header)
        found = self.verified.recall(key, max_age)
        if found is not None:
            data, request.cookies = found  # Werkzeug's cached property takes a value set
            return self.session_class(data)
        value = request.cookies.get(name)
        if not value:
            return self.session_class()
        try:
            data, signed_at = serializer.loads(value, max_age=max_age, return_timestamp=True)
        except BadSignature:
            return self.session_class()
        self.verified.remember(key, data, signed_at.timestamp(), request.cookies)
        return self.session_class(data)

    def save_session(self, app, session, response) -> None:
        """Flask's, with the usual case first: a session with nothing to write only varies the answer by cookie.

        Flask looks up six cookie settings before it finds that out, and adds
        ``Vary: Cookie`` through the answer's parsed ``Vary`` header even when
        the answer leaves with it anyway (see :class:`gate.app.plumbing.Answer`).
        """
        if session.modified or (session.permanent and app.config["SESSION_REFRESH_EACH_REQUEST"]):
            return super().save_session(app, session, response)
        if session.accessed and not _leaves_varying(response):
            response.vary.add("Cookie")


def _leaves_varying(response) -> bool:
    """Whether the answer leaves with ``Vary: Cookie`` already."""
    check = getattr(response, "leaves_varying_by_cookie", None)
    return check is not None and check()


#: Session identifiers hashed per process, by the request's (forwarded-for, address, user agent).
_identifiers: dict[tuple, str] = {}


def session_identifier() -> str:
    """Flask-Login's session identifier (SHA-512 of address and user agent), hashed once per pair per process.

    Flask-Login hashes them on every request to check that a session comes back
    from the browser it was made in (``SESSION_PROTECTION``); the answer
    depends only on these three values, so each pair is hashed once.
    """
    environ = request._get_current_object().environ
    key = (environ.get("HTTP_X_FORWARDED_FOR"), environ.get("REMOTE_ADDR"), environ.get("HTTP_USER_AGENT"))
    found = _identifiers.get(key)
    if found is None:
        if len(_identifiers) >= KEEP:
            _identifiers.clear()
        found = _identifiers[key] = login_utils._create_identifier()
    return found


class SiteLogin(LoginManager):
    """Flask-Login's manager, loading a request's user with each of Flask's proxies resolved once.

    Flask-Login loads the user on every request that asks for it, through
    Flask's proxies at every step: it sends ``user_accessed``, checks session
    protection, calls the user loader with the session's user id, and when that
    finds no one looks for a remember cookie, a request loader and a header
    loader. gate has neither loader and "basic" protection, and there this does
    the same, in Flask-Login's order, from the session, the configuration and
    the cookies taken once. What it leaves to Flask-Login: any request loader
    or header loader, "strong" protection, and a signed-in session whose
    browser no longer matches (Flask-Login marks it not fresh). A signed-out
    session is not marked not fresh here, as Flask-Login would mark it: without
    a user nothing reads freshness, and a sign-in sets it anew.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._session_identifier_generator = session_identifier  # Flask-Login's own hook

    def _load_user(self):
        app = current_app._get_current_object()
        config, kept = app.config, session._get_current_object()
        if (self._user_callback is None or self._request_callback is not None or self._header_callback is not None
                or config.get("SESSION_PROTECTION", self.session_protection) == "strong"):
            return super()._load_user()
        user_id = kept.get("_user_id")
        if user_id is not None and kept.get("_id") != self._session_identifier_generator():
            return super()._load_user()  # another browser's session: Flask-Login's protection
        if user_accessed.receivers:  # what Flask-Login sends first, for whoever listens
            user_accessed.send(app)
        user = self._user_callback(user_id) if user_id is not None else None
        if user is None:
            cookies = request._get_current_object().cookies
            name = config.get("REMEMBER_COOKIE_NAME", COOKIE_NAME)
            if name in cookies and kept.get("_remember") != "clear":
                user = self._load_user_from_remember_cookie(cookies[name])
        return self._update_request_context_with_user(user)

    def _update_remember_cookie(self, response):
        """Flask-Login's, after a look at the session itself: most answers have no remember cookie to set or clear."""
        if "_remember" in session._get_current_object() or current_app._get_current_object().config.get(
                "REMEMBER_COOKIE_REFRESH_EACH_REQUEST"):
            return super()._update_remember_cookie(response)
        return response
