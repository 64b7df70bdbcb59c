"""Rate-limit counters in the site database, so every gunicorn worker shares the counts.

`limits` has no SQLite backend; this module registers one under the scheme
``gate-sqlite://`` through the library's own storage extension point (defining
the class registers it). A process-memory store would let each worker grant its
own allowance, and a restart would forget every count. No Flask here: the
Flask-Limiter wiring is :mod:`gate.app.ratelimit`.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from limits.storage import Storage

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
