"""Fixtures: a fresh site (database, seeded articles, frozen clock) per test."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gate import create_app, seed
from gate.clock import Clock
from gate.db import connect

NY = ZoneInfo("America/New_York")
#: Every test starts at this site time, after all demo articles are published.
START = datetime(2026, 11, 28, 12, 0, tzinfo=NY)

METERED = "prisoner-swaps-rewarding-hostage-takers"
FREE = "southwest-atlantic-squid-rush-treaty"
PREMIUM = "digital-currencies-contest-wholesale-plumbing"
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


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


class Reader:
    """Drives the site as one person in one browser, CSRF tokens and all."""

    def __init__(self, client) -> None:
        self.client = client

    def token(self) -> str:
        """The CSRF token of the current session, read from a page's meta tag."""
        page = self.client.get("/signup").get_data(as_text=True)
        return _CSRF.search(page).group(1)

    def post(self, url: str, data: dict | None = None, **kwargs):
        """POST a form with the session's CSRF token."""
        return self.client.post(url, data={"csrf_token": self.token(), **(data or {})}, **kwargs)

    def post_json(self, url: str, **kwargs):
        """POST to the API with the X-CSRFToken header."""
        return self.client.post(url, headers={"X-CSRFToken": self.token()}, **kwargs)

    def signup(self, email: str, password: str = "", next: str = "/"):
        return self.post("/signup", {"email": email, "password": password, "next": next})

    def login(self, email: str, password: str, next: str = "/"):
        return self.post("/login", {"email": email, "password": password, "next": next})

    def logout(self):
        return self.post("/logout")

    def unlock(self, slug: str):
        return self.post(f"/articles/{slug}/unlock")

    def article(self, slug: str) -> dict:
        return self.client.get(f"/api/articles/{slug}").get_json()

    def meter(self) -> dict:
        return self.client.get("/api/meter").get_json()


@pytest.fixture
def reader(client):
    """A reader driving the test client."""
    return Reader(client)


def metered_slugs(db, count: int) -> list[str]:
    """Slugs of ``count`` published metered articles."""
    rows = db.execute(
        "select slug from articles where access_class = 'metered' order by slug limit ?", [count]
    ).fetchall()
    assert len(rows) == count
    return [row[0] for row in rows]

