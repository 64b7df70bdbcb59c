"""The request's database, held in ``g`` for one request.

On SQLite it is this thread's kept-open connection; on PostgreSQL
(``DATABASE`` is a URL) the connection this thread borrowed from its
process's pool and keeps between requests (a thread past the pool's room for
kept connections borrows one per request and gives it back when it ends).
"""

from __future__ import annotations

from flask import current_app, g

from gate.storage.db import check_durability, end_request, open_site_db, thread_connection
from gate.storage.engine import DEFAULT_POOL, PostgresDatabase, SqliteDatabase, is_url, open_postgres


def get_db() -> SqliteDatabase | PostgresDatabase:
    """The request's database connection (either engine's seam)."""
    state = g._get_current_object()  # one context lookup; this runs many times a request
    db = state.get("db")  # not getattr: g's own __getattr__ would raise two errors to say it has none yet
    if db is None:
        config = current_app._get_current_object().config
        target = str(config["DATABASE"])
        if is_url(target):
            # The thread's own connection: a request thread keeps one for all its requests.
            db = state.db = open_postgres(target, config.get("DATABASE_POOL") or DEFAULT_POOL, kept=True)
        else:
            db = state.db = thread_connection(target)
    return db


def close_db(exception=None) -> None:
    """End the request's use of the connection: never leave a transaction open on it."""
    db = g._get_current_object().pop("db", None)
    if isinstance(db, PostgresDatabase):
        db.close()  # kept by the thread or back to the pool, rolled back if a failed request left a transaction open
    elif db is not None:
        end_request(db)


def init_app(app) -> None:
    """Register teardown, bring the schema up to date and (SQLite) check durability settings."""
    app.teardown_appcontext(close_db)
    db = open_site_db(app.config["DATABASE"], app.config.get("DATABASE_POOL") or DEFAULT_POOL)
    try:
        if db.dialect == "sqlite":
            check_durability(db)
    finally:
        db.close()
