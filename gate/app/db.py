"""The request's database: this thread's kept-open connection, held in ``g`` for one request."""

from __future__ import annotations

import sqlite_utils
from flask import current_app, g

from gate.storage.db import check_durability, end_request, open_site_db, thread_connection


def get_db() -> sqlite_utils.Database:
    """The request's database connection (this thread's, kept open between requests)."""
    state = g._get_current_object()  # one context lookup; this runs many times a request
    db = getattr(state, "db", None)
    if db is None:
        db = state.db = thread_connection(str(current_app.config["DATABASE"]))
    return db


def close_db(exception=None) -> None:
    """End the request's use of the connection: never leave a transaction open on it."""
    db = g.pop("db", None)
    if db is not None:
        end_request(db)


def init_app(app) -> None:
    """Register teardown, bring the schema up to date and check durability settings."""
    app.teardown_appcontext(close_db)
    db = open_site_db(app.config["DATABASE"])
    try:
        check_durability(db)
    finally:
        db.close()
