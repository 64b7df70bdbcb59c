"""Fixtures: a fresh site (database, seeded articles, frozen clock) per test."""

from __future__ import annotations

import pytest

from gate import create_app
from gate.services import seed
from gate.storage.clock import Clock
from gate.storage.db import open_database
from tests.helpers import ADMIN, START, TEST_POOL, Reader


@pytest.fixture(autouse=True)
def engine(request):
    """The engine a test's site runs on: SQLite, unless its module runs on both.

    A module opts in with ``pytestmark = BOTH_ENGINES`` (tests/helpers.py); every
    test in it then runs once on SQLite and once on PostgreSQL.
    """
    return getattr(request, "param", "sqlite")


@pytest.fixture
def app(tmp_path, engine, request):
    """A site on its own database, seeded, with the clock frozen at START."""
    target = str(tmp_path / "gate.sqlite") if engine == "sqlite" else request.getfixturevalue("pg_database")
    app = create_app({
        "TESTING": True,
        "DATABASE": target,  # a SQLite path or a PostgreSQL URL
        "SECRET_KEY": "test-secret-key",
        "SERVER_NAME": "meridian.test",
    })
    db = open_database(app.config["DATABASE"])
    seed.seed_articles(db)
    # On a fresh database the clock is real time; pin "real" to START so the
    # forward-only rule holds whatever day the suite runs on.
    Clock(db, real=lambda: START).set(START, freeze=True)
    db.close()
    return app


@pytest.fixture
def db(app):
    """A direct connection to the test site's database (either engine)."""
    database = open_database(app.config["DATABASE"])
    yield database
    database.close()


@pytest.fixture
def clock(db):
    """The site clock (frozen at START); advance it to travel."""
    return Clock(db)


@pytest.fixture
def client(app):
    """A browser-like client with cookies."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """The `gate` CLI against the test site."""
    return app.test_cli_runner()


@pytest.fixture
def reader(client):
    """A reader driving the test client."""
    return Reader(client)


@pytest.fixture
def admin(runner, reader):
    """A reader signed in as an administrator (ADMIN)."""
    runner.invoke(args=["readers", "add", ADMIN[0], "--password", ADMIN[1], "--admin"])
    reader.login(*ADMIN)
    return reader


# --- PostgreSQL: a scratch server from GATE_TEST_DATABASE_URL (`.ci/run` starts one) ----------
# (imported here so that this section merges as one appended block)
import os
import uuid
from urllib.parse import urlencode

from gate.storage import engine as storage_engine
from gate.storage import ratelimits
from gate.storage.db import open_site_db


@pytest.fixture(scope="session")
def pg_url():
    """The scratch PostgreSQL server's URL; the tests that need it skip without it, but fail in CI."""
    url = os.environ.get("GATE_TEST_DATABASE_URL", "").strip()
    if not url:
        message = "GATE_TEST_DATABASE_URL is not set (tools/pg-local start DIR prints one)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing server is a failure, never a silent skip
        pytest.skip(message)
    return url


def _pg_admin(url: str, statement: str) -> None:
    """Run one statement on the scratch server, outside any test's pool."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture
def pg_empty(pg_url):
    """A fresh, empty PostgreSQL schema for one test, dropped after it; a URL that opens it.

    A schema on the search path, not a database: CREATE DATABASE copies files and
    takes a checkpoint (about a second on a loaded machine), a schema takes milliseconds.
    """
    name = f"gate_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(pg_url, f"create schema {name}")
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}{urlencode({'options': f'-csearch_path={name}'})}"
    yield url
    storage_engine.pools.close(url)
    storage_engine.pools.close(ratelimits.pool_url(url))  # the site's rate limits keep a pool of their own
    _pg_admin(pg_url, f"drop schema {name} cascade")


@pytest.fixture
def pg_database(pg_empty):
    """A fresh, migrated PostgreSQL database (schema) for one test; its URL."""
    open_site_db(pg_empty, TEST_POOL).close()
    return pg_empty


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_target(request, tmp_path):
    """A fresh, migrated database on each engine: a SQLite path or a PostgreSQL URL."""
    if request.param == "sqlite":
        path = str(tmp_path / "backend.sqlite")
        open_site_db(path).close()
        return path
    return request.getfixturevalue("pg_database")


@pytest.fixture
def backend(backend_target):
    """An open seam (gate.storage.engine) on each engine, for contract tests."""
    db = open_database(backend_target, TEST_POOL)
    yield db
    db.close()
