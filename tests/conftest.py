"""Fixtures: a fresh site (database, seeded articles, frozen clock) per test."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from gate import create_app
from gate.services import seed
from gate.storage.clock import Clock
from gate.storage.db import open_database, open_site_db
from gate.storage.engine import PostgresDatabase, SqliteDatabase
from tests.helpers import ADMIN, START, TEST_POOL, Reader


@pytest.fixture(autouse=True, scope="session")
def instance_folder(tmp_path_factory):
    """Commands run with no GATE_INSTANCE keep their instance folder (its secret key) out of the checkout."""
    folder = tmp_path_factory.mktemp("instance")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GATE_INSTANCE", str(folder))
        yield folder


@pytest.fixture(autouse=True)
def engine(request):
    """The engine a test's site runs on: SQLite, unless its module runs on both.

    A module opts in with ``pytestmark = BOTH_ENGINES`` (tests/helpers.py); every
    test in it then runs once on SQLite and once on PostgreSQL.
    """
    return getattr(request, "param", "sqlite")


def _seed_site(target: str) -> None:
    """Seed the demo articles and freeze the clock at START on a migrated database."""
    db = open_database(target)
    seed.seed_articles(db)
    # On a fresh database the clock is real time; pin "real" to START so the
    # forward-only rule holds whatever day the suite runs on.
    Clock(db, real=lambda: START).set(START, freeze=True)
    db.close()


@pytest.fixture(scope="session")
def seeded_sqlite(tmp_path_factory):
    """A migrated, seeded SQLite site file, built once per session (per xdist worker) and never opened again.

    Migrating, switching to WAL and seeding cost most of a test's setup; copying a
    finished file costs a millisecond. Each test's `app` gets its own copy.
    """
    path = tmp_path_factory.mktemp("template") / "gate.sqlite"
    open_site_db(str(path)).close()
    _seed_site(str(path))
    assert not path.with_name("gate.sqlite-wal").exists()  # closed last: all of it is in the one file
    return path


@pytest.fixture
def app(tmp_path, engine, request):
    """A site on its own database, seeded, with the clock frozen at START."""
    if engine == "sqlite":
        target = str(tmp_path / "gate.sqlite")
        shutil.copyfile(request.getfixturevalue("seeded_sqlite"), target)
    else:
        target = request.getfixturevalue("pg_database")
        _seed_site(target)
    return create_app({
        "TESTING": True,
        "DATABASE": target,  # a SQLite path or a PostgreSQL URL
        "SECRET_KEY": "test-secret-key",
        "SERVER_NAME": "meridian.test",
        "PRESETS_DIR": str(tmp_path / "presets"),  # saved presets: never the checkout's instance folder
    })


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
import re
import uuid
from urllib.parse import urlencode, urlsplit

from gate.storage import engine as storage_engine
from gate.storage import ratelimits


@pytest.fixture(scope="session")
def pg_url():
    """The scratch PostgreSQL server's URL; the tests that need it skip without it, but fail in CI.

    Under pytest-xdist each worker gets a database of its own on that server (gate_test_gw0, …),
    made afresh for the session: schemas are named uniquely anyway, but advisory locks are
    per database, and a lock test must not wait on a race in the other worker.
    """
    url = os.environ.get("GATE_TEST_DATABASE_URL", "").strip()
    if not url:
        message = "GATE_TEST_DATABASE_URL is not set (tools/pg-local start DIR prints one)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing server is a failure, never a silent skip
        pytest.skip(message)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not re.fullmatch(r"gw\d+", worker):
        yield url
        return
    name = f"gate_test_{worker}"
    _pg_admin(url, f"drop database if exists {name} with (force)")
    _pg_admin(url, f"create database {name}")
    yield urlsplit(url)._replace(path=f"/{name}").geturl()
    _pg_admin(url, f"drop database if exists {name} with (force)")


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


# --- pytest-xdist (`make test` runs the suite on two workers with --dist loadgroup) -------------
# Without xdist the markers below change nothing: `pytest tests/test_x.py` runs as before.
#: The one group whose tests run one after another on a single worker: they start servers and
#: processes, race them over one database or measure throughput, and must not overlap each other.
PROCESSES = "processes"


def _group(item) -> str | None:
    """The xdist group a test must share with others, or None when any worker may run it alone.

    Tests that start processes (marked slow) go to PROCESSES. A test on a module- or
    class-scoped fixture (a browser, a live site, a site driven once) stays with its module:
    the fixture is built once, and the tests run in the module's order, which some rely on
    (test_nodes: the audit comes last).
    """
    if item.get_closest_marker("slow"):
        return PROCESSES
    info = getattr(item, "_fixtureinfo", None)
    scopes = {definitions[-1].scope for definitions in info.name2fixturedefs.values()} if info else set()
    return f"module:{item.nodeid.split('::')[0]}" if scopes & {"module", "class", "package"} else None


def pytest_collection_modifyitems(config, items):
    """Mark each test that must share a worker (see _group) for xdist's loadgroup scheduling."""
    for item in items:
        group = _group(item)
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def statements(monkeypatch):
    """The statements the site sends through the engine seam, by their first word (rate-limit counters aside)."""
    sent = Counter()
    for seam, method in ((SqliteDatabase, "execute"), (PostgresDatabase, "execute"), (PostgresDatabase, "_read")):
        real = getattr(seam, method)

        def counted(self, sql, *args, _real=real, **kwargs):
            if "rate_limits" not in sql:
                sent[sql.split(None, 1)[0].lower()] += 1
            return _real(self, sql, *args, **kwargs)

        monkeypatch.setattr(seam, method, counted)
    for seam in (SqliteDatabase, PostgresDatabase):
        def transaction(self, _real=seam.transaction):
            sent["transaction"] += 1
            return _real(self)

        monkeypatch.setattr(seam, "transaction", transaction)
    return sent
