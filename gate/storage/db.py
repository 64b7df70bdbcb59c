"""The site database without Flask: connections, transactions, reads as dicts, backup.

:func:`connect` returns the SQLite side of the engine seam (:mod:`gate.storage.engine`);
:func:`open_database` opens either engine from a path or a ``postgresql://`` URL.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import threading
from collections import OrderedDict
from pathlib import Path

import sqlite_utils

from gate.storage import forks, migrations
from gate.storage.engine import DEFAULT_POOL, PostgresDatabase, SqliteDatabase, is_url, open_postgres, pools

BUSY_TIMEOUT_SECONDS = 30
#: Reads of the database file through a memory map, not a ``pread`` each: every commit of another
#: connection (the event writer's, every quarter second) empties this connection's page cache, and the next
#: page then reads the article's pages again, two to four system calls a page without the map.
MMAP_BYTES = 256 * 2**20


def connect(path: str | Path) -> SqliteDatabase:
    """Open the database with WAL, a busy timeout and foreign keys on.

    ``isolation_level=None`` leaves transactions to us: writes outside
    :func:`immediate` commit at once, and :func:`immediate` takes the write
    lock before reading, which a deferred ``BEGIN`` would not. A PostgreSQL URL
    is refused (:func:`open_database` opens either engine) rather than taken for a file name.
    """
    if is_url(path):
        raise ValueError("connect() opens a SQLite file; open a PostgreSQL URL with open_database()")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    db = SqliteDatabase(conn)
    if db.journal_mode != "wal":
        db.enable_wal()
    conn.execute("pragma foreign_keys = on")
    conn.execute("pragma synchronous = normal")
    conn.execute(f"pragma mmap_size = {MMAP_BYTES}")
    return db


def open_database(target: str | Path, pool_size: int = DEFAULT_POOL) -> SqliteDatabase | PostgresDatabase:
    """Either engine's seam: PostgreSQL for a ``postgresql://`` URL, else the SQLite file at that path."""
    return open_postgres(str(target), pool_size) if is_url(target) else connect(target)


def immediate(db: SqliteDatabase | PostgresDatabase) -> contextlib.AbstractContextManager:
    """A write transaction that holds SQLite's write lock from its first statement.

    A deferred BEGIN followed by a read and then a write can fail with
    "database is locked" when another writer got in between; BEGIN IMMEDIATE
    waits (up to the busy timeout) for the lock instead, so a check and the
    write that depends on it cannot interleave with another process. On
    PostgreSQL it is a plain transaction: take ``db.lock(key)`` on what it protects.
    """
    return db.transaction()


def rows(db: SqliteDatabase | PostgresDatabase, sql: str, params=()) -> list[dict]:
    """A read as dicts through one plain statement.

    sqlite-utils' ``query()`` guards every statement with a SAVEPOINT and a
    RELEASE: three statements, and three releases of the GIL, per read. The
    request path reads several rows per page, so it reads through this.
    """
    return db.rows(sql, params)


def first(db: SqliteDatabase | PostgresDatabase, sql: str, params=()) -> dict | None:
    """The first row of a read as a dict, or None."""
    return db.first(sql, params)


def end_request(db: SqliteDatabase) -> None:
    """Hand a kept-open connection back with no transaction left open on it (a request that failed mid-write)."""
    if db.conn.in_transaction:
        db.conn.execute("rollback")


def ping(db: SqliteDatabase | PostgresDatabase) -> None:
    """Fail unless the database answers a trivial read (the health check)."""
    db.first("select 1")


def open_site_db(target: str | Path, pool_size: int = DEFAULT_POOL) -> SqliteDatabase | PostgresDatabase:
    """Open either engine and bring the schema up to date."""
    db = open_database(target, pool_size)
    migrations.apply(db)
    return db


class _ThreadConnections(threading.local):
    """Each thread keeps its connections open between requests (a few database files at most).

    Opening a connection per request costs a connect, pragmas and, on close of
    the last one, a WAL checkpoint with an fsync: most of a page's time.
    """

    def __init__(self) -> None:
        self.pid = forks.pid()
        self.open: OrderedDict[str, sqlite_utils.Database] = OrderedDict()


_threads = _ThreadConnections()
_inherited: list = []  # a forked child never uses, nor closes, its parent's connections
KEEP_OPEN = 4


def thread_connection(path: str) -> sqlite_utils.Database:
    """This thread's open connection to ``path``, or a new one."""
    if _threads.pid != forks.pid():
        _inherited.extend(_threads.open.values())
        _threads.open, _threads.pid = OrderedDict(), forks.pid()
    db = _threads.open.pop(path, None) or connect(path)
    _threads.open[path] = db
    while len(_threads.open) > KEEP_OPEN:
        _, oldest = _threads.open.popitem(last=False)
        oldest.close()
    return db


def close_thread_connections() -> None:
    """Close this thread's SQLite connections and this process's PostgreSQL pools.

    Called before serving: each forked worker opens its own, and the master
    holds no PostgreSQL connection while it only watches its workers.
    """
    if _threads.pid != forks.pid():
        return
    while _threads.open:
        _, db = _threads.open.popitem()
        db.close()
    pools.close()


def check_durability(db: sqlite_utils.Database) -> None:
    """Refuse to start without WAL and a busy timeout of at least 5 s."""
    mode = db.execute("pragma journal_mode").fetchone()[0]
    timeout = db.execute("pragma busy_timeout").fetchone()[0]
    if mode != "wal" or timeout < 5000:
        raise RuntimeError(f"database must use WAL with busy_timeout >= 5000 ms (got {mode}, {timeout} ms)")


def backup(db: SqliteDatabase | PostgresDatabase, destination: str | Path) -> str:
    """A consistent copy of a live database at ``destination``; how it was made.

    SQLite: the online backup API, a database file. PostgreSQL: ``pg_dump`` in
    its custom format (restore with ``pg_restore``) of the schema the site
    lives in, from one snapshot.
    """
    if db.dialect == "postgresql":
        return _pg_dump(db, destination)
    target = sqlite3.connect(str(destination))
    try:
        db.conn.backup(target)
    finally:
        target.close()
    return "SQLite online backup"


def pg_tool(name: str) -> str:
    """A PostgreSQL client program: the newest Debian install's (as tools/pg-local finds it), else on PATH."""
    installed = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                       key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    found = str(installed[-1]) if installed else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install the PostgreSQL client (apt-get install postgresql-client)")
    return found


def _pg_dump(db: PostgresDatabase, destination: str | Path) -> str:
    """``pg_dump --format=custom`` of the site's schema; a failed dump leaves no file behind."""
    schema = db.scalar("select current_schema()")
    command = [pg_tool("pg_dump"), "--format=custom", f"--schema={schema}", f"--file={destination}",
               f"--dbname={db.pool.conninfo}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        Path(destination).unlink(missing_ok=True)
        raise RuntimeError(f"pg_dump failed: {done.stderr.strip()}")
    return f"pg_dump custom format of schema {schema}; restore with pg_restore"
