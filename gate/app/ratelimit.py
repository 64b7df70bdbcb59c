"""Rate limits (Flask-Limiter) kept in SQLite, so every gunicorn worker shares the counts.

`limits` has no SQLite backend; this module registers one under the scheme
``gate-sqlite://`` through the library's own storage extension point. A
process-memory store would let each worker grant its own allowance, and a
restart would forget every count. Set GATE_RATELIMIT_STORAGE to a
``redis://`` URI to share limits across machines instead.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from flask import request, session
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import current_user
from limits.storage import Storage

from gate.services import accounts

_SCHEMA = "create table if not exists rate_limits (key text primary key, count integer, expires_at real)"


class SQLiteStorage(Storage):
    """Fixed-window counters in a table of the site database."""

    STORAGE_SCHEME = ["gate-sqlite"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        self.path = (uri or "").split("://", 1)[-1]
        self._local = threading.local()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._conn().execute(_SCHEMA)

    @property
    def base_exceptions(self):
        return sqlite3.Error

    def _conn(self) -> sqlite3.Connection:
        """One connection per thread (gunicorn threads share the storage object)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._local.conn = conn
        return conn

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add to a counter, starting a new window when the old one has expired."""
        conn, now = self._conn(), time.time()
        conn.execute("begin immediate")
        try:
            row = conn.execute("select count, expires_at from rate_limits where key = ?", [key]).fetchone()
            if row is None or row[1] <= now:
                count, expires = amount, now + expiry
            else:
                count, expires = row[0] + amount, row[1]
            conn.execute("insert or replace into rate_limits (key, count, expires_at) values (?, ?, ?)",
                         [key, count, expires])
        except BaseException:
            conn.execute("rollback")
            raise
        conn.execute("commit")
        return count

    def get(self, key: str) -> int:
        """The current count of a live window, else 0."""
        row = self._conn().execute("select count, expires_at from rate_limits where key = ?", [key]).fetchone()
        return row[0] if row and row[1] > time.time() else 0

    def get_expiry(self, key: str) -> float:
        """When the key's window ends."""
        row = self._conn().execute("select expires_at from rate_limits where key = ?", [key]).fetchone()
        return row[0] if row else time.time()

    def check(self) -> bool:
        """Whether the database answers."""
        return self._conn().execute("select 1").fetchone() == (1,)

    def reset(self) -> int | None:
        """Forget every counter."""
        return self._conn().execute("delete from rate_limits").rowcount

    def clear(self, key: str) -> None:
        """Forget one counter."""
        self._conn().execute("delete from rate_limits where key = ?", [key])


def viewer_key() -> str:
    """Limit per reader or per anonymous visitor (the tab racer shares one session)."""
    if current_user.is_authenticated:
        return f"reader:{current_user.id}"
    return f"visitor:{session.get('visitor') or get_remote_address()}"


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
    app.config.setdefault("RATELIMIT_STORAGE_URI", f"gate-sqlite://{app.config['DATABASE']}")
    limiter.init_app(app)
