"""The engine seam: one small database interface over SQLite and PostgreSQL.

Services write their SQL once, with ``?`` (or ``:name``) placeholders, and
call the same few operations on either engine: ``execute``, ``rows``,
``first``, ``scalar``, ``transaction()``, ``lock(key)``, ``insert`` (returning
the new id), ``insert_ignore`` and ``upsert``. Where the engines differ the
difference lives here and nowhere else: placeholders, locking, the id column
type, JSON access.

On SQLite the seam *is* the ``sqlite_utils.Database`` callers already hold
(:class:`SqliteDatabase` subclasses it), so code that still calls
``db.conn.execute`` or ``db["t"].insert`` keeps working until it is ported.
On PostgreSQL a :class:`PostgresDatabase` holds one connection borrowed from
the process's pool (one ``psycopg_pool.ConnectionPool`` per database URL and
process) until it is closed. psycopg is imported only when a PostgreSQL URL is
opened: SQLite sites start as fast as before.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import re
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence

import sqlite_utils

from gate.storage import forks

SCHEMES = ("postgresql://", "postgres://")
#: Connections one process may hold to PostgreSQL (GATE_DATABASE_POOL's default): one that each of
#: `gate serve`'s 4 threads per worker keeps, one that the background event writer keeps, and one
#: spare (`gate serve --threads N` makes it N + 2; see :meth:`_Pools.kept_seam`).
DEFAULT_POOL = 6
#: Rows from which PostgreSQL appends with COPY (:meth:`PostgresDatabase.insert_rows`).
COPY_FROM = 16
#: Parameters one multi-row insert carries at most (far below either engine's limit).
INSERT_PARAMETERS = 3000
#: Seconds to wait for a free pooled connection before failing the request.
POOL_TIMEOUT_SECONDS = 30

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JSON_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOKENS = re.compile(r"""
      '(?:[^']|'')*'      # a string literal: its ? and :words are text, not parameters
    | "(?:[^"]|"")*"      # a quoted identifier
    | --[^\n]*            # a line comment
    | /\*.*?\*/           # a block comment
    | ::                  # a PostgreSQL cast, not a named parameter
    | :[A-Za-z_]\w*       # a named parameter
    | \?                  # a positional parameter
    | %                   # a literal percent sign (LIKE 'x%'), which psycopg would read as a placeholder
""", re.VERBOSE | re.DOTALL)


def is_url(target: object) -> bool:
    """Whether a database target names PostgreSQL (else it is a SQLite path)."""
    return str(target).startswith(SCHEMES)


def _pyformat(match: re.Match) -> str:
    """One SQL token in psycopg's spelling."""
    token = match.group()
    if token == "?":
        return "%s"
    if token.startswith(":") and token != "::":
        return f"%({token[1:]})s"
    return token.replace("%", "%%")


#: Per engine, a subquery giving one JSON array text with one inner array per row of a ``from ... where``.
_JSON_ROWS = {
    "sqlite": "(select json_group_array(json_array({values})) {source})",
    "postgresql": "coalesce((select json_agg(json_build_array({values}))::text {source}), '[]')",  # none: '[]'
}


def json_row(dialect: str, alias: str, columns: Sequence[str]) -> str:
    """SQL for the row a join named ``alias`` found as one JSON object text (NULL when it found none).

    One column instead of one per field: on PostgreSQL each column of a result costs the server
    about 4 K instructions a read. There the object holds every column of the table (``row_to_json``),
    on SQLite the ``columns`` named (which must include ``id``); readers take the keys they know.
    """
    if dialect == "postgresql":
        return f"row_to_json({alias})::text"
    pairs = ", ".join(f"'{column}', {alias}.{column}" for column in columns)
    return f"case when {alias}.id is null then null else json_object({pairs}) end"


def json_rows(dialect: str, values: Sequence[str], source: str) -> str:
    """SQL for one JSON array text of ``[value, ...]`` per row ``source`` (``from ... where ...``) finds, in no order.

    A read that needs a list of child rows beside one parent row takes them as one
    column: a join would repeat the parent's columns on every child row.
    """
    return _JSON_ROWS[dialect].format(values=", ".join(values), source=source)


@functools.lru_cache(maxsize=2048)
def to_pyformat(sql: str) -> str:
    """SQL written with ``?``/``:name`` placeholders, for psycopg (``%s``/``%(name)s``, ``%`` doubled)."""
    return _TOKENS.sub(_pyformat, sql)


def _name(identifier: str) -> str:
    """A table or column name, refused unless it is a plain identifier (names are never user input)."""
    if not _IDENTIFIER.fullmatch(identifier):
        raise ValueError(f"not a plain SQL identifier: {identifier!r}")
    return identifier


def _json_keys(*keys: str) -> tuple[str, ...]:
    """JSON object keys spelled into SQL, refused unless letters, digits, ``_`` and ``-`` (config ids)."""
    for key in keys:
        if not _JSON_KEY.fullmatch(key):
            raise ValueError(f"not a plain JSON key: {key!r}")
    return keys


def _insert_sql(table: str, row: Mapping, suffix: str = "") -> str:
    """``insert into table (columns) values (?, ...)`` plus a conflict or returning clause."""
    columns = ", ".join(_name(column) for column in row)
    marks = ", ".join("?" for _ in row)
    return f"insert into {_name(table)} ({columns}) values ({marks}){suffix}"


def _upsert_sql(table: str, row: Mapping, key: Sequence[str]) -> str:
    """An insert that updates the non-key columns of the row already holding ``key``."""
    updates = ", ".join(f"{_name(column)} = excluded.{column}" for column in row if column not in key)
    action = f"do update set {updates}" if updates else "do nothing"
    return _insert_sql(table, row, f" on conflict ({', '.join(_name(column) for column in key)}) {action}")


class NotInTransaction(RuntimeError):
    """``lock()`` outside ``transaction()``: the lock would end with the statement and protect nothing."""


class _Seam:
    """The operations both engines share, over each engine's ``execute``."""

    dialect = ""
    BEGIN = "begin"

    def rows(self, sql: str, params=()) -> list[dict]:
        """A read as a list of dicts."""
        cursor = self.execute(sql, params)
        keys = [column[0] for column in cursor.description]
        return [dict(zip(keys, row)) for row in cursor.fetchall()]

    def first(self, sql: str, params=()) -> dict | None:
        """The first row of a read as a dict, or None."""
        cursor = self.execute(sql, params)
        row = cursor.fetchone()
        return dict(zip([column[0] for column in cursor.description], row)) if row else None

    def scalar(self, sql: str, params=()):
        """The first column of the first row (a count, a max), or None."""
        row = self.execute(sql, params).fetchone()
        return row[0] if row else None

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        """Append many rows (no ids back): multi-row inserts of up to :data:`INSERT_PARAMETERS` parameters each."""
        into = f"insert into {_name(table)} ({', '.join(_name(column) for column in columns)}) values "
        marks = f"({', '.join('?' for _ in columns)})"
        per_statement = max(1, INSERT_PARAMETERS // len(columns))
        for start in range(0, len(rows), per_statement):
            chunk = rows[start:start + per_statement]
            self.execute(into + ", ".join([marks] * len(chunk)), [value for one in chunk for value in one])

    def insert_ignore(self, table: str, row: Mapping) -> bool:
        """Insert unless a unique key already holds the row; whether it went in (an "at most once")."""
        return self.execute(_insert_sql(table, row, " on conflict do nothing"), list(row.values())).rowcount == 1

    def upsert(self, table: str, row: Mapping, key: Sequence[str]) -> None:
        """Insert the row, or update the one with the same ``key`` columns (a unique key)."""
        self.execute(_upsert_sql(table, row, key), list(row.values()))

    def lock(self, key: str) -> None:
        """Serialise this transaction with every other one that locks ``key`` (until commit)."""
        if not self.in_transaction:
            raise NotInTransaction(f"lock({key!r}) outside a transaction")
        self._lock(key)

    @contextlib.contextmanager
    def transaction(self):
        """One transaction, committed on success and rolled back on any exception.

        Inside an open transaction it joins it (no savepoint): one user action
        is one transaction however many services it calls.
        """
        if self.in_transaction:
            yield self
            return
        self.conn.execute(self.BEGIN)
        try:
            yield self
        except BaseException:
            self.conn.execute("rollback")
            raise
        else:
            self.conn.execute("commit")


class SqliteDatabase(_Seam, sqlite_utils.Database):
    """A sqlite-utils database that also speaks the seam (what :func:`gate.storage.db.connect` returns)."""

    dialect = "sqlite"
    #: Take the write lock first: a deferred BEGIN's read-then-write fails with "locked" under concurrency.
    BEGIN = "begin immediate"

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on this connection."""
        return self.conn.in_transaction

    def insert(self, table: str, row: Mapping) -> int:
        """Insert one row and return its id."""
        return self.conn.execute(_insert_sql(table, row), list(row.values())).lastrowid

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        """Append many rows (no ids back): multi-row inserts of a power of two rows each, in one transaction.

        A batch of 325 goes in as 256, 64, 4 and 1 rows, so a table sees a handful of statements
        however its batches vary. Each number of rows is another statement, which Python's sqlite3
        compiles and keeps in the connection's statement cache (128 of them): the event writer's batches
        come in every size up to 500, so its connection compiled most of them afresh and kept up to 128
        of the largest, which grew a `gate serve` worker by about 20 MiB in a minute of views. One
        single-row insert stepped once a row would be one statement, but it hands the GIL to the
        request threads and back once a row, which cost a page about a third more in process.
        """
        most = 1 << (max(1, INSERT_PARAMETERS // len(columns)).bit_length() - 1)
        chunks, start = [], 0
        while start < len(rows):
            size = min(most, 1 << ((len(rows) - start).bit_length() - 1))
            chunks.append(rows[start:start + size])
            start += size
        # Several statements in one transaction, so the batch is still written whole or not at all;
        # one commits whole by itself, and none needs nothing.
        with self.transaction() if len(chunks) > 1 else contextlib.nullcontext():
            for chunk in chunks:
                super().insert_rows(table, columns, chunk)

    def has_table(self, name: str) -> bool:
        """Whether the table exists."""
        return self.scalar("select count(*) from sqlite_master where type = 'table' and name = ?", [name]) > 0

    def json_text(self, column: str, key: str, *inner: str) -> str:
        """SQL for the text at one key of a JSON text column (``inner`` keys go down into objects)."""
        path = ".".join(k if _IDENTIFIER.fullmatch(k) else f'"{k}"' for k in _json_keys(key, *inner))
        return f"json_extract({_name(column)}, '$.{path}')"

    def _lock(self, key: str) -> None:
        """Nothing: BEGIN IMMEDIATE already holds the database-wide write lock."""


class PostgresDatabase(_Seam):
    """One PostgreSQL connection borrowed from the process's pool, in autocommit between transactions."""

    dialect = "postgresql"
    #: A plain READ COMMITTED transaction: locks on what a write protects, not isolation, order writers.
    BEGIN = "begin"

    def __init__(self, pool, kept: _KeptConnection | None = None) -> None:
        self.pool = pool
        self.kept = kept  # this thread's own connection, which stays with the thread when closed
        self.conn = kept.conn if kept is not None else pool.getconn()

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (or failed and not yet rolled back) on this connection."""
        return _busy(self.conn)

    def execute(self, sql: str, params=()):
        """Run one statement written with ``?``/``:name`` placeholders; the psycopg cursor."""
        return self.conn.execute(to_pyformat(sql), _params(params))

    def rows(self, sql: str, params=()) -> list[dict]:
        """A read as a list of dicts (the column names of a statement are read once per process, not per call)."""
        cursor = self._read(sql, params)
        names = _names(sql, cursor)
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def first(self, sql: str, params=()) -> dict | None:
        """The first row of a read as a dict, or None."""
        cursor = self._read(sql, params)
        row = cursor.fetchone()
        return dict(zip(_names(sql, cursor), row)) if row is not None else None

    def _read(self, sql: str, params):
        """The connection's kept read cursor, having run one read (its rows are tuples, named by the caller)."""
        return self.conn.reads().execute(to_pyformat(sql), _params(params))

    def query(self, sql: str, params=()) -> Iterator[dict]:
        """The rows of a read as dicts (sqlite-utils' ``db.query``, for code being ported)."""
        yield from self.rows(sql, params)

    def insert(self, table: str, row: Mapping) -> int:
        """Insert one row and return its id."""
        return self.execute(_insert_sql(table, row, " returning id"), list(row.values())).fetchone()[0]

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        """Append many rows; from :data:`COPY_FROM` rows on with COPY, which skips the SQL text and parameters.

        Per row in batches of 75: 10 K client instructions against 116 K for a multi-row insert (whose
        450 parameters psycopg neither prepares nor caches), the server's CPU equal; below about ten
        rows COPY's own set-up costs more than it saves.
        """
        if len(rows) < COPY_FROM:
            super().insert_rows(table, columns, rows)
            return
        sql = f"copy {_name(table)} ({', '.join(_name(column) for column in columns)}) from stdin"
        with self.conn.cursor().copy(sql) as copy:
            for row in rows:
                copy.write_row(row)

    def has_table(self, name: str) -> bool:
        """Whether the table exists (on the search path)."""
        return self.scalar("select to_regclass(?) is not null", [name])

    def json_text(self, column: str, key: str, *inner: str) -> str:
        """SQL for the text at one key of a JSON text column (``inner`` keys go down into objects)."""
        if not inner:
            return f"({_name(column)}::jsonb ->> '{_json_keys(key)[0]}')"
        return f"({_name(column)}::jsonb #>> '{{{','.join(_json_keys(key, *inner))}}}')"

    def close(self) -> None:
        """Give the connection back to the pool, or to its thread if kept (rolling back anything left open)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if not conn.closed and _busy(conn):
                conn.rollback()
        finally:  # a connection that broke even as it rolled back still leaves: the pool replaces it
            if self.kept is not None:
                self.kept.done()  # kept for the thread's next request, or back to the pool if broken
            else:
                self.pool.putconn(conn)

    def _lock(self, key: str) -> None:
        """A transaction-scoped advisory lock on a 64-bit hash of the key.

        Two keys that collide only wait for each other; they never share a grant.
        """
        self.conn.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])


def _params(params):
    """Statement parameters as psycopg takes them: a mapping for ``:name``, else a list."""
    return params if isinstance(params, Mapping) else list(params or ())


def _busy(conn) -> bool:
    """Whether a psycopg connection has a transaction open (or failed and not yet rolled back)."""
    return conn.pgconn.transaction_status != _IDLE  # libpq's status as an int: no ConnectionInfo, no enum


#: libpq's PQTRANS_IDLE (psycopg.pq.TransactionStatus.IDLE), compared without importing psycopg for SQLite sites.
_IDLE = 0
#: Column names by statement, for reads whose SQL names every column (``*`` may change with the schema).
_NAMES: dict[str, tuple[str, ...]] = {}
_NAMES_KEPT = 2048


def _names(sql: str, cursor) -> tuple[str, ...]:
    """The column names of a read's result: psycopg's ``dict_row`` decodes them from the result on every call."""
    names = _NAMES.get(sql)
    if names is None:
        result = cursor.pgresult  # as dict_row reads them: cursor.description would build a Column per name
        names = tuple(result.fname(number).decode() for number in range(result.nfields))
        if "*" not in sql:
            if len(_NAMES) >= _NAMES_KEPT:  # statements built per call (IN lists) must not grow it for ever
                _NAMES.clear()
            _NAMES[sql] = names
    return names


@functools.cache
def _connection_class():
    """psycopg's connection with one kept cursor for reads, defined on first use (psycopg loads lazily)."""
    import psycopg

    class Connection(psycopg.Connection):
        """A pooled connection whose reads share one cursor (a new one per read cost 39 K instructions of 490 K)."""

        _reads = None

        def reads(self):
            """The kept cursor (tuple rows; a read fetches everything before the next read reuses it)."""
            cursor = self._reads
            if cursor is None or cursor.closed:
                cursor = self._reads = self.cursor()
            return cursor

    return Connection


def integrity_errors() -> tuple[type[Exception], ...]:
    """The exceptions a broken unique or foreign key raises, on whichever engines are loaded.

    On PostgreSQL the failed statement also aborts the transaction: to insert
    "if absent" inside one, use :meth:`_Seam.insert_ignore` rather than catching.
    """
    import sys

    errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    if "psycopg" in sys.modules:
        errors += (sys.modules["psycopg"].IntegrityError,)
    return errors


class _KeptConnection:
    """A connection one thread borrowed from a pool once and keeps for all its requests.

    A request thread of `gate serve` serves requests for as long as its worker
    lives. Borrowing from the pool and giving back on every request costs the
    pool's lock, its bookkeeping and a round of the pool's connections (a
    thread seldom gets back the one it gave); the pooled baseline keeps one
    connection per thread, and so does a kept thread. The connection goes back
    to the pool when its thread ends (its thread-local slots are dropped), when
    it breaks, and when the pool is closed.
    """

    def __init__(self, pool) -> None:
        self.pool, self.pid = pool, forks.pid()
        self.conn = pool.getconn()
        self.busy = False  # lent to a seam that is not closed yet

    def usable(self, pool) -> bool:
        """Whether the next request may have it: from this pool, and still open."""
        return self.conn is not None and self.pool is pool and not self.conn.closed

    def done(self) -> None:
        """The seam that had it closed: keep it for the next request, or give it back if it broke."""
        self.busy = False
        conn = self.conn
        if conn is not None and (conn.closed or conn.pgconn.transaction_status != _IDLE):
            self.give_back()

    def give_back(self) -> None:
        """Back to the pool (which closes a broken or surplus one); never a parent's connection in a forked child."""
        conn, self.conn = self.conn, None
        if conn is not None and self.pid == forks.pid():
            try:
                self.pool.putconn(conn)
            except Exception:  # noqa: BLE001 - a pool closed meanwhile, or the interpreter's exit: nothing to give back to
                pass


class _Slots(dict):
    """One thread's kept connections by URL (a dict that can be watched for the thread's end)."""


class _ThreadKept(threading.local):
    """Each thread's kept connection per database URL; its slots are dropped when the thread ends."""

    def __init__(self) -> None:
        self.by_url = _Slots()


class _Pools:
    """One connection pool per database URL in this process (a forked child makes its own)."""

    def __init__(self) -> None:
        self.pid = forks.pid()
        self.by_url: dict[str, object] = {}
        self.inherited: list = []  # a forked child never uses, nor closes, its parent's sockets
        self.guard = threading.Lock()
        self.threads = _ThreadKept()
        self.kept: dict[str, weakref.WeakSet] = {}  # by URL: every thread's kept connection, to close with the pool

    def get(self, url: str, size: int):
        """This process's pool for ``url``, opened on first use at ``size`` (one setting per process)."""
        with self.guard:
            if self.pid != forks.pid():
                self.inherited.extend(self.by_url.values())
                self.by_url, self.kept, self.pid = {}, {}, forks.pid()
            pool = self.by_url.get(url)
            if pool is None:
                pool = self.by_url[url] = _open_pool(url, size)
            return pool

    def kept_seam(self, url: str, size: int) -> PostgresDatabase:
        """A seam over this thread's kept connection to ``url`` (see :class:`_KeptConnection`).

        Threads keep at most ``size`` − 2 connections of a pool: one is left for
        the event writer and one for whatever else borrows (a second connection
        within a request, the writer's last flush at exit), so a pool smaller
        than the threads is shared by borrowing, never starved by keeping. A
        thread whose kept connection is already lent (a second seam within one
        request) borrows as before.
        """
        pool = self.get(url, size)
        kept = self.threads.by_url.get(url)
        if kept is not None and kept.pid != forks.pid():  # a forked child: its parent's, left alone
            self.inherited.append(kept)
            kept = self.threads.by_url[url] = None
        if kept is not None and not kept.usable(pool):
            kept.give_back()
            kept = self.threads.by_url[url] = None
        if kept is None:
            with self.guard:
                keeping = self.kept.setdefault(url, weakref.WeakSet())
                room = sum(1 for other in keeping if other.conn is not None) < size - 2
            if not room:
                return PostgresDatabase(pool)
            kept = _KeptConnection(pool)
            with self.guard:
                keeping.add(kept)
            self.threads.by_url[url] = kept
            weakref.finalize(self.threads.by_url, kept.give_back)  # the thread ended: back to the pool
        if kept.busy:
            return PostgresDatabase(pool)
        kept.busy = True
        return PostgresDatabase(pool, kept)

    def close(self, url: str | None = None) -> None:
        """Close one URL's pool (before dropping its database), or all of them (at exit), kept connections too."""
        with self.guard:
            if self.pid != forks.pid():
                return
            for key in [url] if url else list(self.by_url):
                for kept in list(self.kept.pop(key, ())):
                    kept.give_back()
                pool = self.by_url.pop(key, None)
                if pool is not None:
                    pool.close()


def _open_pool(url: str, size: int):
    """A psycopg pool of up to ``size`` autocommit connections that load numbers as SQLite does."""
    from psycopg_pool import ConnectionPool

    return ConnectionPool(url, min_size=1, max_size=size, open=True, timeout=POOL_TIMEOUT_SECONDS,
                          connection_class=_connection_class(), kwargs={"autocommit": True},
                          configure=_configure, name="gate")


def _configure(conn) -> None:
    """Load ``numeric`` (what ``sum()`` of integers returns) as int or float, as SQLite returns them."""
    from psycopg.types.numeric import NumericLoader

    class SqliteLikeNumeric(NumericLoader):
        """An integral numeric as int, any other as float."""

        def load(self, data):
            value = super().load(data)
            return int(value) if value.is_finite() and value == value.to_integral_value() else float(value)

    conn.adapters.register_loader("numeric", SqliteLikeNumeric)


pools = _Pools()
atexit.register(pools.close)


def open_postgres(url: str, pool_size: int = DEFAULT_POOL, kept: bool = False) -> PostgresDatabase:
    """A seam over one connection from this process's pool for ``url``; ``kept``: this thread's own, if it may keep one."""
    if kept:
        return pools.kept_seam(url, pool_size)
    return PostgresDatabase(pools.get(url, pool_size))
