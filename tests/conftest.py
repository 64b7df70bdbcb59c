"""Fixtures: a fresh site (database, seeded articles, frozen clock) per test."""

from __future__ import annotations

import pytest

from gate import create_app
from gate.services import seed
from gate.storage.clock import Clock
from gate.storage.db import connect
from tests.helpers import ADMIN, START, Reader


@pytest.fixture
def app(tmp_path):
    """A site on its own database, seeded, with the clock frozen at START."""
    app = create_app({
        "TESTING": True,
        "DATABASE": str(tmp_path / "gate.sqlite"),
        "SECRET_KEY": "test-secret-key",
        "SERVER_NAME": "meridian.test",
    })
    db = connect(app.config["DATABASE"])
    seed.seed_articles(db)
    # On a fresh database the clock is real time; pin "real" to START so the
    # forward-only rule holds whatever day the suite runs on.
    Clock(db, real=lambda: START).set(START, freeze=True)
    db.close()
    return app


@pytest.fixture
def db(app):
    """A direct connection to the test site's database."""
    database = connect(app.config["DATABASE"])
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
