"""Crash safety: kill -9 gunicorn (master and workers) under load, restart, and find every
acknowledged write in the database, an intact file and a clean audit."""

from __future__ import annotations

import http.client
import http.cookiejar
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from gate.loadtest.server import ServerProcess, gate_command, site_env
from gate.storage.db import connect

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
CARD = {"name": "Crash Test", "card_number": "4242 4242 4242 4242", "expiry": "12/30", "cvc": "123"}


class Session:
    """One browser: cookies, CSRF tokens, and no redirects followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)

    def request(self, path: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def token(self, path: str = "/signup") -> str:
        return CSRF.search(self.request(path)[1]).group(1)


def _reader_traffic(base: str, number: int, slugs: list[str], acked: dict, stop: threading.Event) -> None:
    """Sign up, unlock, subscribe, change newsletters; remember every acknowledged write."""
    person = Session(base)
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
                                                          "csrf_token": CSRF.search(page).group(1)})
        if status == 303:
            acked["subscriptions"].add(email)
        status, _ = person.request("/account/newsletters", {"list": "daily-review", "action": "off",
                                                            "csrf_token": person.token("/account")})
        if status == 303:
            acked["unsubscribed"].add(email)
    except (OSError, AttributeError, http.client.HTTPException):
        return  # the server died mid-request or mid-answer: that request was never acknowledged


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_acknowledged(tmp_path: Path):
    database = tmp_path / "crash.sqlite"
    env = site_env(GATE_DATABASE=str(database), GATE_SECRET_KEY="crash-key", GATE_RATE_LIMITS="off",
                   GATE_BASE_URL="http://127.0.0.1")  # the origin's host; any loopback port is it
    subprocess.run([*gate_command(), "db", "seed", "--no-schedule"], env=env, check=True, capture_output=True)
    db = connect(database)
    slugs = [r[0] for r in db.execute("select slug from articles where access_class = 'metered' order by slug")]
    db.close()
    server = ServerProcess.gate_serve(env, tmp_path / "server.log", workers=2).start()
    base = server.url
    acked = {"signups": set(), "unlocks": set(), "subscriptions": set(), "unsubscribed": set()}
    stop = threading.Event()
    threads = [threading.Thread(target=_reader_traffic, args=(base, n, slugs, acked, stop)) for n in range(150)]
    killer = threading.Timer(2.0, server.kill)
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
    server.start()  # restart on the same file and port: recovery from the WAL
    try:
        assert urllib.request.urlopen(f"{base}/api/health", timeout=5).status == 200
    finally:
        server.stop()
    db = connect(database)
    assert db.execute("pragma integrity_check").fetchone() == ("ok",)
    emails = {r[0] for r in db.execute("select email from readers")}
    assert acked["signups"] <= emails
    unlocked = {(e, s) for e, s in db.execute(
        "select r.email, u.slug from unlocks u join readers r on 'reader:' || r.id = u.meter_key")}
    assert acked["unlocks"] <= unlocked
    subscribed = {r[0] for r in db.execute(
        "select r.email from subscriptions s join readers r on r.id = s.reader_id where s.status = 'active'")}
    assert acked["subscriptions"] <= subscribed
    left = {r[0] for r in db.execute("select r.email from enrollments e join readers r on r.id = e.reader_id"
                                     " where e.list_id = 'daily-review' and e.status = 'unsubscribed'")}
    assert acked["unsubscribed"] <= left
    from gate import audit
    from gate.conf.settings import Config

    violations = audit.run(db, Config())
    db.close()
    assert violations == [], [v.message for v in violations]
