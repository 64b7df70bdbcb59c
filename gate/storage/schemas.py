"""Whether a database already holds a site, and scratch PostgreSQL schemas for runs that must start empty.

`gate loadtest` seeds and writes: it refuses a database that already holds a
site, or runs in a new schema of it (``--fresh-schema``), dropped after a
clean run. A schema is named in the URL (``options=-csearch_path=NAME``), so
every process the run starts, nodes included, opens the same one.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from urllib.parse import urlencode

from gate.storage.db import open_database
from gate.storage.engine import is_url, pools

#: The tables whose rows mean "a site lives here".
SITE_TABLES = ("articles", "readers")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def site_rows(target: str | Path) -> dict[str, int]:
    """Rows in each of SITE_TABLES at ``target`` (a missing table or file counts as none)."""
    if not is_url(target) and not Path(target).exists():
        return {}
    db = open_database(target)
    try:
        return {table: db.scalar(f"select count(*) from {table}") for table in SITE_TABLES if db.has_table(table)}
    finally:
        db.close()


def schema_url(url: str, name: str) -> str:
    """``url`` with ``name`` as the only schema on its search path."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a schema name: {name!r}")
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'options': f'-csearch_path={name}'})}"


def create_schema(url: str, prefix: str = "gate_scratch") -> tuple[str, str]:
    """A new, empty schema in the PostgreSQL database at ``url``: its name and a URL that opens it."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    scoped = schema_url(url, name)  # checks the name before it reaches SQL
    _admin(url, f"create schema {name}")
    return name, scoped


def drop_schema(url: str, name: str, scoped: str) -> None:
    """Close this process's pool on ``scoped`` and drop the schema ``name`` with everything in it."""
    schema_url(url, name)
    pools.close(scoped)
    _admin(url, f"drop schema {name} cascade")


def _admin(url: str, statement: str) -> None:
    """One statement on its own connection, outside every pool."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)
