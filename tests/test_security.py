"""Hardening: nothing leaks through any channel, bypass tricks fail, headers, limits, pins."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from importlib.metadata import version

import pytest
from packaging.version import Version

from tests.helpers import (
    BOTH_ENGINES,
    BYPASS_TECHNIQUES,
    CARD,
    KEY,
    LEAK_CHANNELS,
    METERED,
    PREMIUM,
    Reader,
    leaks,
    leaks_from_a_gated_viewer,
    metered_slugs,
    open_checkout,
)

pytestmark = BOTH_ENGINES


def _state(app, runner, db, name):
    """A client in one gated reader state, and the article it is gated from."""
    person = Reader(app.test_client())
    if name == "registered-with-quota":
        person.signup("quota@example.com")
    elif name == "registered-no-quota":
        person.signup("spent@example.com")
        for slug in metered_slugs(db, 4)[1:]:
            person.unlock(slug)
    elif name == "lapsed":
        assert runner.invoke(args=["readers", "add", "lapsed@example.com", "--password", "lapsed-pass-1",
                                   "--subscriber"]).exit_code == 0
        db.execute("update subscriptions set status = 'canceled', ended_at = '2026-11-01T00:00:00.000000+00:00'")
        person.login("lapsed@example.com", "lapsed-pass-1")
        for slug in metered_slugs(db, 4)[1:]:
            person.unlock(slug)
    elif name == "past-grace":
        assert runner.invoke(args=["readers", "add", "grace@example.com", "--password", "grace-pass-1",
                                   "--subscriber"]).exit_code == 0
        db.execute("update subscriptions set status = 'past_due', past_due_since = '2026-11-01T00:00:00.000000+00:00',"
                   " next_retry_at = '2027-01-01T00:00:00.000000+00:00'")
        person.login("grace@example.com", "grace-pass-1")
        for slug in metered_slugs(db, 4)[1:]:
            person.unlock(slug)
    if name != "anonymous":  # signed in, without full access: the state the leak checks need
        assert person.meter()["tier"] == "registered", name
    return person, metered_slugs(db, 4)[0]


STATES = ["anonymous", "registered-with-quota", "registered-no-quota", "lapsed", "past-grace"]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("technique", list(BYPASS_TECHNIQUES))
def test_no_channel_and_no_bypass_leaks_gated_text(app, runner, db, state, technique):
    person, slug = _state(app, runner, db, state)
    assert leaks_from_a_gated_viewer(person, slug, BYPASS_TECHNIQUES[technique]) == [], (state, technique)


def test_the_leak_check_would_catch_a_leak(app, runner, db):
    """Guard: for a viewer with access, the same check finds the body."""
    runner.invoke(args=["readers", "add", "sees@example.com", "--password", "sees-pass-12", "--subscriber"])
    person = Reader(app.test_client())
    person.login("sees@example.com", "sees-pass-12")
    assert leaks(person.client.get(f"/articles/{METERED}").get_data(as_text=True), METERED)


def test_newsletter_emails_never_carry_gated_text(app, runner, db, clock):
    person = Reader(app.test_client())
    person.post("/signup", {"email": "letters@example.com", "list_meridian_weekly": "y"})
    db.execute("update enrollments set status = 'active', confirmed_at = '2026-11-28T17:00:00.000000+00:00'")
    row = db.rows("select * from articles where slug = ?", [METERED])[0]
    for generated in ("id", "search"):  # PostgreSQL's full-text column is generated from the text
        row.pop(generated, None)
    row.update(slug="letter-copy", published_at="2026-11-28T18:00:00.000000+00:00")
    db.insert("articles", row)
    clock.advance(timedelta(hours=2))
    runner.invoke(args=["newsletter", "send", "meridian-weekly"])
    message = next(db.query("select * from outbox where kind = 'newsletter:meridian-weekly'"))
    for part in (message["body_text"], message["body_html"]):
        assert leaks(part, METERED) == []


def test_replayed_session_after_spending_never_refills(app, db):
    person = Reader(app.test_client())
    person.signup("replay@example.com", password="replay-pass-1")
    old_cookie = person.client.get_cookie("session", domain="meridian.test").value
    for slug in metered_slugs(db, 3):
        person.unlock(slug)
    replay = Reader(app.test_client())
    replay.client.set_cookie("session", old_cookie, domain="meridian.test")
    assert replay.meter()["remaining"] == 0


def test_clearing_cookies_makes_a_new_visitor_with_only_the_presets_allowance(app, runner, db):
    runner.invoke(args=["preset", "use", "metered"])
    person = Reader(app.test_client())
    for slug in metered_slugs(db, 5):
        person.article(slug)
    assert person.article(metered_slugs(db, 6)[5])["access"] == "teaser"
    person.client.delete_cookie("session", domain="meridian.test")
    meter = person.meter()
    assert (meter["used"], meter["limit"]) == (0, 5)  # a brand-new visitor, no more than that


def test_forwarded_for_is_ignored_without_a_configured_proxy(app, client):
    seen = []
    app.before_request(lambda: seen.append(__import__("flask").request.remote_addr))
    client.get("/api/health", headers={"X-Forwarded-For": "66.249.66.1"})
    assert seen == ["127.0.0.1"]


def test_the_environment_turns_on_secure_cookies_and_the_proxy_count(tmp_path, monkeypatch):
    from flask import request

    from gate import create_app

    monkeypatch.setenv("GATE_SECURE_COOKIES", "1")
    monkeypatch.setenv("GATE_PROXY_COUNT", "1")
    app = create_app({"DATABASE": str(tmp_path / "env.sqlite"), "SECRET_KEY": "k"})
    assert app.config["SESSION_COOKIE_SECURE"] is True and app.config["REMEMBER_COOKIE_SECURE"] is True
    seen = []
    app.before_request(lambda: seen.append(request.remote_addr))
    app.test_client().get("/api/health", headers={"X-Forwarded-For": "203.0.113.8"})
    assert seen == ["203.0.113.8"]


def test_forwarded_for_is_trusted_through_proxyfix_when_configured(tmp_path):
    from gate import create_app

    app = create_app({"DATABASE": str(tmp_path / "p.sqlite"), "SECRET_KEY": "k", "PROXY_COUNT": 1})
    seen = []
    app.before_request(lambda: seen.append(__import__("flask").request.remote_addr))
    app.test_client().get("/api/health", headers={"X-Forwarded-For": "203.0.113.7"})
    assert seen == ["203.0.113.7"]


def test_security_headers(client):
    response = client.get(f"/articles/{METERED}")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    page = response.get_data(as_text=True)
    scripts = re.findall(r"<script(?![^>]*(?:src=|application/ld\+json))[^>]*>", page)
    assert scripts == []  # no inline scripts for the CSP to have to allow


def test_pages_stay_out_of_shared_caches_and_views_keep_their_own_headers(app):
    from flask import make_response

    def own_headers():
        response = make_response("x")
        response.headers["Vary"] = "Accept-Language"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    app.add_url_rule("/own-headers", "own_headers", own_headers)
    page = app.test_client().get(f"/articles/{METERED}")
    assert page.headers["Cache-Control"] == "private, no-cache" and page.headers["Vary"] == "Cookie"
    own = app.test_client().get("/own-headers")
    assert own.headers["Referrer-Policy"] == "no-referrer"  # the view's own, not overwritten
    assert own.headers.getlist("Referrer-Policy") == ["no-referrer"]  # and not sent twice
    assert {part.strip() for part in own.headers["Vary"].split(",")} == {"Accept-Language", "Cookie"}
    assert own.headers["X-Frame-Options"] == "DENY"
    static = app.test_client().get("/static/site.css")
    static.close()  # a file response: release the file
    assert "private" not in static.headers.get("Cache-Control", "") and static.headers["X-Frame-Options"] == "DENY"


def test_secure_cookies_when_configured(tmp_path):
    from gate import create_app

    app = create_app({"DATABASE": str(tmp_path / "s.sqlite"), "SECRET_KEY": "k",
                      "SESSION_COOKIE_SECURE": True, "SERVER_NAME": "meridian.test"})
    response = Reader(app.test_client()).signup("secure@example.com")
    assert "Secure" in response.headers["Set-Cookie"]


@pytest.mark.parametrize("path, data, limit", [
    ("/login", {"email": "x@example.com", "password": "wrong-pass"}, 20),
    ("/signup", {"email": "bad"}, 20),
    ("/login/magic", {"email": "x@example.com"}, 5),
])
def test_rate_limits_answer_429_with_retry_after(reader, path, data, limit):
    statuses = [reader.post(path, data).status_code for _ in range(limit + 1)]
    assert 429 not in statuses[:limit] and statuses[-1] == 429
    response = reader.post(path, data)
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0


def test_unlock_limit_is_per_viewer_and_shared_by_workers(app, tmp_path):
    """Two app instances on one database (two workers) share the same counters."""
    from gate import create_app

    person = Reader(app.test_client())
    person.signup("racer@example.com")
    token = person.token()
    worker_b = create_app({"DATABASE": app.config["DATABASE"], "SECRET_KEY": app.secret_key,
                           "SERVER_NAME": "meridian.test"}).test_client()
    worker_b.set_cookie("session", person.client.get_cookie("session", domain="meridian.test").value,
                        domain="meridian.test")
    codes = []
    for n in range(61):
        client = person.client if n % 2 else worker_b
        codes.append(client.post(f"/api/articles/{METERED}/unlock", headers={"X-CSRFToken": token}).status_code)
    assert 429 not in codes[:60] and codes[60] == 429


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


PAYLOADS = ['<script>alert("x")</script>', '"><img src=x onerror=alert(1)>', "javascript:alert(1)",
            "<svg onload=alert(1)>", "'-alert(1)-'"]


def _live_payload(page: str) -> bool:
    parser = _Elements()
    parser.feed(page)
    for tag, attrs in parser.found:
        if tag in ("script",) and not attrs.get("src") and attrs.get("type") != "application/ld+json":
            return True
        if any(name.startswith("on") for name in attrs) or tag == "img" or (tag == "svg" and "onload" in attrs):
            return True
        if any((value or "").strip().lower().startswith("javascript:")
               for name, value in attrs.items() if name in ("href", "src", "action", "formaction")):
            return True
    return False


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_in_every_text_field_are_inert(app, runner, db, payload):
    person = Reader(app.test_client())
    pages = [person.post("/signup", {"email": payload, "password": payload, "next": payload}),
             person.client.get("/search", query_string={"q": payload}),
             person.post("/login", {"email": payload, "password": payload, "next": payload}),
             person.post("/login/magic", {"email": payload, "next": payload}),
             person.post("/subscribe/monthly", {"email": payload, "name": payload, "card_number": payload,
                                                 "expiry": payload, "cvc": payload, "idempotency_key": payload})]
    person.signup("fields@example.com")
    pages += [person.post("/account/card", {"name": payload, "card_number": payload, "expiry": payload, "cvc": payload}),
              person.post("/account/newsletters", {"list": payload, "action": payload}),
              person.client.get(f"/sections/{payload}"), person.client.get(f"/articles/{payload}")]
    runner.invoke(args=["readers", "add", "root@example.com", "--password", "root-pass-123", "--admin"])
    admin = Reader(app.test_client())
    admin.login("root@example.com", "root-pass-123")
    pages += [admin.client.get("/admin/readers", query_string={"q": payload}),
              admin.client.get("/admin/events", query_string={"type": payload, "email": payload, "slug": payload}),
              admin.post("/admin/readers/1/comp", {"until": payload}),
              admin.client.get("/admin/readers/1"), admin.client.get("/admin/events")]
    for response in pages:
        assert response.status_code < 500
        if response.status_code in (301, 302, 303):
            assert not response.headers["Location"].lower().startswith(("javascript:", "//", "http"))
            continue
        assert not _live_payload(response.get_data(as_text=True)), payload


def test_checkout_ignores_extra_fields(reader, db):
    reader.signup("greedy@example.com")
    key = open_checkout(reader, "monthly")
    reader.post("/subscribe/monthly", {**CARD, "idempotency_key": key, "plan": "annual", "amount_cents": "1",
                                       "status": "active", "is_admin": "1", "trial_days": "365"})
    row = db.execute("select plan_id, status, trial_end from subscriptions").fetchone()
    assert row == ("monthly", "active", None)
    assert db.execute("select amount_cents from payments").fetchone() == (1200,)
    assert db.execute("select is_admin from readers where email = 'greedy@example.com'").fetchone() == (0,)


@pytest.mark.parametrize("package, minimum", [
    ("flask", "3.1.0"), ("werkzeug", "3.0.6"), ("itsdangerous", "2.2.0"), ("sqlite-utils", "4.0"),
    ("flask-login", "0.6.3"), ("flask-wtf", "1.2.0"), ("jinja2", "3.1.6"), ("nh3", "0.2.17"),
    ("gunicorn", "23.0.0"),
])
def test_minimum_safe_versions(package, minimum):
    assert Version(version(package)) >= Version(minimum), f"{package} must be >= {minimum} (known vulnerabilities)"


def test_start_refuses_a_database_without_wal(tmp_path):
    from gate.storage.db import check_durability, connect

    db = connect(tmp_path / "nowal.sqlite")
    db.conn.execute("pragma journal_mode = delete")
    with pytest.raises(RuntimeError, match="WAL"):
        check_durability(db)
    db.close()


def test_no_deferred_transactions_in_the_code():
    """sqlite-utils' atomic() opens a deferred BEGIN: a read-then-write inside it can fail or race.
    Every transaction in gate takes the write lock first (gate.storage.db.immediate)."""
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "gate"
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if ".atomic(" in path.read_text() and path.name != "migrations.py"]
    assert offenders == []


def test_premium_is_never_in_json_ld_or_meta(client):
    page = client.get(f"/articles/{PREMIUM}").get_data(as_text=True)
    head = page.split("</head>")[0]
    assert leaks(head, PREMIUM) == [] and '"isAccessibleForFree": false' in head



def test_a_pass_holder_reads_in_full_until_the_end_and_then_nothing_leaks(app, db, clock, runner):
    """A day pass opens every channel until its end; a second later, no channel sends the gated text."""
    person = Reader(app.test_client())
    person.signup("daypass@example.com")
    for slug in metered_slugs(db, 4)[1:]:
        person.unlock(slug)  # the meter is spent, so only the pass opens the article
    key = KEY.search(person.client.get("/pass/day").get_data(as_text=True)).group(1)
    assert person.post("/pass/day", {**CARD, "idempotency_key": key}).status_code == 303
    slug = metered_slugs(db, 4)[0]
    for target in (slug, PREMIUM):
        assert leaks(person.client.get(f"/articles/{target}").get_data(as_text=True), target)  # the check can see
    clock.advance(timedelta(hours=24))
    for target in (slug, PREMIUM):
        for channel in LEAK_CHANNELS:
            response = person.client.get(channel.format(slug=target))
            assert response.status_code < 500
            assert leaks(response.get_data(as_text=True), target) == [], (target, channel)
    assert person.article(PREMIUM)["reason"] == "premium_only"
