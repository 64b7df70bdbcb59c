"""Rate-limit counters in the site database, so every worker (and every node) shares the counts.

`limits` has no SQLite or PostgreSQL backend; this module registers two
through the library's own storage extension point (defining a class registers
it): ``gate-sqlite://PATH`` and ``gate-postgresql://USER@HOST:PORT/DB``
(the site's ``postgresql://`` URL with ``gate-`` in front). A process-memory
store would let each worker grant its own allowance, and a restart would
forget every count. The ``rate_limits`` table is made by the migrations.
No Flask here: the Flask-Limiter wiring is :mod:`gate.app.ratelimit`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from limits.storage import Storage

from gate.storage.engine import SCHEMES, open_postgres

#: Connections each process keeps for rate limits on PostgreSQL, besides the site's pool.
POOL = 2
#: A hit on PostgreSQL: one atomic statement that starts a new window when the old one has
#: expired, else adds to it; concurrent hits on one key queue on its row, none is lost.
_HIT = """insert into rate_limits (key, count, expires_at) values (:key, :amount, :expires)
    on conflict (key) do update set
        count = case when rate_limits.expires_at <= :now then :amount else rate_limits.count + :amount end,
        expires_at = case when rate_limits.expires_at <= :now then :expires else rate_limits.expires_at end
    returning count"""


def pool_url(url: str) -> str:
    """The URL the counters' own pool opens: the site's, named ``gate-ratelimits`` (a separate pool).

    A limited view checks its limit while its request holds one of the site
    pool's connections; borrowing a second one there could wait on itself.
    """
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), ("application_name", "gate-ratelimits")])
    return urlunsplit(parts._replace(query=query))


def storage_uri(database: str) -> str:
    """The ``limits`` storage URI that keeps counters in a site database (a path or a PostgreSQL URL)."""
    return f"gate-{database}" if str(database).startswith(SCHEMES) else f"gate-sqlite://{database}"


class _TableStorage(Storage):
    """Fixed-window counters in the ``rate_limits`` table: the reads both engines share."""

    STORAGE_SCHEME: list[str] | None = None

    def _one(self, sql: str, params: list) -> tuple | None:
        """The first row of one statement."""
        raise NotImplementedError

    def _run(self, sql: str, params: list) -> int:
        """Run one write; how many rows it changed."""
        raise NotImplementedError

    def get(self, key: str) -> int:
        """The current count of a live window, else 0."""
        row = self._one("select count, expires_at from rate_limits where key = ?", [key])
        return row[0] if row and row[1] > time.time() else 0

    def get_expiry(self, key: str) -> float:
        """When the key's window ends."""
        row = self._one("select expires_at from rate_limits where key = ?", [key])
        return row[0] if row else time.time()

    def check(self) -> bool:
        """Whether the database answers."""
        return self._one("select 1", []) == (1,)

    def reset(self) -> int | None:
        """Forget every counter."""
        return self._run("delete from rate_limits", [])

    def clear(self, key: str) -> None:
        """Forget one counter."""
        self._run("delete from rate_limits where key = ?", [key])


class SQLiteStorage(_TableStorage):
    """Counters in the SQLite site database, one connection per thread."""

    STORAGE_SCHEME = ["gate-sqlite"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        self.path = (uri or "").split("://", 1)[-1]
        self._local = threading.local()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

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

    def _one(self, sql: str, params: list) -> tuple | None:
        return self._conn().execute(sql, params).fetchone()

    def _run(self, sql: str, params: list) -> int:
        return self._conn().execute(sql, params).rowcount

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


class PostgresStorage(_TableStorage):
    """Counters in the PostgreSQL site database, shared by every node: one atomic upsert per hit.

    Each operation borrows a connection for one statement from a small pool of
    the process's own (:func:`pool_url`). Windows are timed by each node's
    clock, as with SQLite.
    """

    STORAGE_SCHEME = ["gate-postgresql", "gate-postgres"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        self.url = pool_url((uri or "").removeprefix("gate-"))
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self):
        import psycopg

        return psycopg.Error

    def _one(self, sql: str, params) -> tuple | None:
        db = open_postgres(self.url, POOL)
        try:
            return db.execute(sql, params).fetchone()
        finally:
            db.close()

    def _run(self, sql: str, params: list) -> int:
        db = open_postgres(self.url, POOL)
        try:
            return db.execute(sql, params).rowcount
        finally:
            db.close()

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add to a counter, starting a new window when the old one has expired (one statement)."""
        now = time.time()
        return self._one(_HIT, {"key": key, "amount": amount, "expires": now + expiry, "now": now})[0]
