"""Rate-limit counters in the site database, so every gunicorn worker shares the counts.

`limits` has no SQLite backend; this module registers one under the scheme
``gate-sqlite://``, and one for PostgreSQL under ``gate-postgresql://`` that
every node shares, through the library's own storage extension point (defining
a class registers it). A process-memory store would let each worker grant its
own allowance, and a restart would forget every count. No Flask here: the
Flask-Limiter wiring is :mod:`gate.app.ratelimit`.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from limits.storage import Storage

from gate.storage.engine import is_url


def storage_uri(database: str) -> str:
    """The limits storage URI for a site database: ``gate-sqlite://PATH`` or ``gate-postgresql://…``."""
    return f"gate-{database}" if is_url(database) else f"gate-sqlite://{database}"


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


_PG_SCHEMA = ("create table if not exists rate_limits "
              "(key text primary key, count bigint, expires_at double precision)")
#: One atomic upsert per hit: a new window when the old one has expired, else one more in it.
_PG_INCR = """insert into rate_limits (key, count, expires_at) values (%s, %s, %s)
on conflict (key) do update set
  count = case when rate_limits.expires_at <= %s then excluded.count else rate_limits.count + excluded.count end,
  expires_at = case when rate_limits.expires_at <= %s then excluded.expires_at else rate_limits.expires_at end
returning count"""


class PostgresStorage(Storage):
    """The same fixed-window counters in PostgreSQL, shared by every process of every node.

    Registered as ``gate-postgresql://`` (the site's URL behind ``gate-``). Each
    thread keeps one autocommit connection of its own, outside the request
    pool: a limit is checked while the request holds its pooled connection,
    and borrowing a second from that pool could wait on itself.
    """

    STORAGE_SCHEME = ["gate-postgresql", "gate-postgres"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        self.url = (uri or "").removeprefix("gate-")
        self._local = threading.local()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._one(_PG_SCHEMA)

    @property
    def base_exceptions(self):
        import psycopg

        return psycopg.Error

    def _one(self, sql: str, params=()):
        """Run one statement on this thread's connection; its first row (or None)."""
        import psycopg

        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = psycopg.connect(self.url, autocommit=True)
        cursor = conn.execute(sql, list(params))
        return cursor.fetchone() if cursor.description else cursor.rowcount

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add to a counter, starting a new window when the old one has expired (one statement)."""
        now = time.time()
        return self._one(_PG_INCR, [key, amount, now + expiry, now, now])[0]

    def get(self, key: str) -> int:
        """The current count of a live window, else 0."""
        row = self._one("select count, expires_at from rate_limits where key = %s", [key])
        return row[0] if row and row[1] > time.time() else 0

    def get_expiry(self, key: str) -> float:
        """When the key's window ends."""
        row = self._one("select expires_at from rate_limits where key = %s", [key])
        return row[0] if row else time.time()

    def check(self) -> bool:
        """Whether the database answers."""
        return self._one("select 1") == (1,)

    def reset(self) -> int | None:
        """Forget every counter."""
        return self._one("delete from rate_limits")

    def clear(self, key: str) -> None:
        """Forget one counter."""
        self._one("delete from rate_limits where key = %s", [key])

    def close(self) -> None:
        """Close this thread's connection (a server's threads keep theirs for the process's life)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
