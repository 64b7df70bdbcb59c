"""Crash safety: kill -9 gunicorn (master and workers) under load, restart, and find every
acknowledged write in the database, an intact file and a clean audit, on SQLite and PostgreSQL."""

from __future__ import annotations

import http.client
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from gate.loadtest.server import ServerProcess, database_env, gate_command, site_env
from gate.storage.db import open_database
from gate.storage.engine import is_url
from tests.helpers import WireReader

CARD = {"name": "Crash Test", "card_number": "4242 4242 4242 4242", "expiry": "12/30", "cvc": "123"}


def _reader_traffic(base: str, number: int, slugs: list[str], acked: dict, stop: threading.Event) -> None:
    """Sign up, unlock, subscribe, change newsletters; remember every acknowledged write."""
    person = WireReader(base)
    email = f"crash{number}@example.com"
    try:
        status, _ = person.request("/signup", {"email": email, "csrf_token": person.token(), "next": "/"})
        if status != 303:
            return
        acked["signups"].add(email)
        for slug in slugs[number % 4:number % 4 + 3]:
            if stop.is_set():
                return
            status, body = person.request(f"/api/articles/{slug}/unlock", {},
                                          {"X-CSRFToken": person.token("/account")})
            if status == 200 and '"spent":true' in body.replace(" ", ""):
                acked["unlocks"].add((email, slug))
        page = person.request("/subscribe/monthly")[1]
        key = re.search(r'name="idempotency_key" type="hidden" value="([^"]+)"', page).group(1)
        status, _ = person.request("/subscribe/monthly", {**CARD, "idempotency_key": key,
                                                          "csrf_token": person.csrf(page)})
        if status == 303:
            acked["subscriptions"].add(email)
        status, _ = person.request("/account/newsletters", {"list": "daily-review", "action": "off",
                                                            "csrf_token": person.token("/account")})
        if status == 303:
            acked["unsubscribed"].add(email)
    except (OSError, AttributeError, http.client.HTTPException):
        return  # the server died mid-request or mid-answer: that request was never acknowledged


def _kill_once_under_way(server: ServerProcess, acked: dict, deadline: float = 20.0) -> None:
    """kill -9 the server once a few unlocks are acknowledged (a loaded machine is slow to get there)."""
    give_up = time.monotonic() + deadline
    while len(acked["unlocks"]) < 5 and time.monotonic() < give_up:
        time.sleep(0.05)
    server.kill()


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_target(request, tmp_path):
    """The database the crashed site runs on: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "crash.sqlite")
    return request.getfixturevalue("pg_database")


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path, crash_target: str):
    env = site_env(**database_env(crash_target), GATE_SECRET_KEY="crash-key", GATE_RATE_LIMITS="off",
                   GATE_BASE_URL="http://127.0.0.1")  # the origin's host; any loopback port is it
    subprocess.run([*gate_command(), "db", "seed", "--no-schedule"], env=env, check=True, capture_output=True)
    db = open_database(crash_target)
    slugs = [r["slug"] for r in db.rows("select slug from articles where access_class = 'metered' order by slug")]
    db.close()
    server = ServerProcess.gate_serve(env, tmp_path / "server.log", workers=2).start()
    base = server.url
    acked = {"signups": set(), "unlocks": set(), "subscriptions": set(), "unsubscribed": set()}
    stop = threading.Event()
    threads = [threading.Thread(target=_reader_traffic, args=(base, n, slugs, acked, stop)) for n in range(150)]
    killer = threading.Thread(target=_kill_once_under_way, args=(server, acked))
    killer.start()  # master and workers, mid-flight
    for thread in threads:
        thread.start()
        time.sleep(0.025)
    killer.join()
    assert not server.running
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert acked["unlocks"] and acked["signups"], "the load never got going"
    print({key: len(value) for key, value in acked.items()})
    server.start()  # restart on the same database and port: recovery from the WAL
    try:
        assert urllib.request.urlopen(f"{base}/api/health", timeout=5).status == 200
    finally:
        server.stop()
    db = open_database(crash_target)
    if not is_url(crash_target):
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)

    def found(sql: str) -> set:
        return {tuple(row.values()) if len(row) > 1 else next(iter(row.values())) for row in db.rows(sql)}

    assert acked["signups"] <= found("select email from readers")
    assert acked["unlocks"] <= found(
        "select r.email, u.slug from unlocks u join readers r on 'reader:' || r.id = u.meter_key")
    assert acked["subscriptions"] <= found(
        "select r.email from subscriptions s join readers r on r.id = s.reader_id where s.status = 'active'")
    assert acked["unsubscribed"] <= found(
        "select r.email from enrollments e join readers r on r.id = e.reader_id"
        " where e.list_id = 'daily-review' and e.status = 'unsubscribed'")
    from gate import audit
    from gate.conf.settings import Config

    violations = audit.run(db, Config())
    db.close()
    assert violations == [], [v.message for v in violations]
