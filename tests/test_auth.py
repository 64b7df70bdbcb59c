"""Signing up, logging in by password and by magic link, logging out."""

from __future__ import annotations

import re

import pytest
import time_machine

from gate.services import accounts
from gate.storage import events
from gate.storage.quota import SqlQuotaStore
from gate.web.auth import safe_next
from tests.helpers import BOTH_ENGINES, METERED, START, Reader, magic_link, metered_slugs

pytestmark = BOTH_ENGINES

LINK = re.compile(r"http://meridian\.test(/login/magic/[A-Za-z0-9._-]+)")


@pytest.fixture
def member(runner):
    """An account with a password."""
    result = runner.invoke(args=["readers", "add", "member@example.com", "--password", "member-pass-1"])
    assert result.exit_code == 0, result.output
    return "member@example.com", "member-pass-1"


def test_password_login_returns_to_next(reader, member):
    response = reader.login(*member, next=f"/articles/{METERED}")
    assert response.status_code == 303 and response.headers["Location"] == f"/articles/{METERED}"
    assert reader.meter()["tier"] == "registered"


def test_wrong_password_is_refused_the_same_way_as_an_unknown_email(reader, member):
    wrong = reader.login(member[0], "not-the-password")
    unknown = reader.login("nobody@example.com", "not-the-password")
    for response in (wrong, unknown):
        assert response.status_code == 400
        assert "don&#39;t match an account" in response.get_data(as_text=True)
    assert reader.meter()["tier"] == "anonymous"


@pytest.mark.parametrize("target", [
    "//evil.example", "////evil.example", "\\\\evil.example", "/\\evil.example",
    "https://evil.example", "http:/evil.example", "javascript:alert(1)", "/\tevil", "",
])
def test_next_only_accepts_local_paths(target):
    assert safe_next(target) == "/"


def test_next_keeps_local_paths():
    assert safe_next("/articles/x?page=2") == "/articles/x?page=2"


def test_login_redirect_ignores_an_external_next(reader, member):
    response = reader.login(*member, next="//evil.example/")
    assert response.headers["Location"] == "/"


def test_magic_link_get_consumes_nothing_and_post_signs_in_once(reader, client, member):
    path = magic_link(reader, client, member[0])
    for _ in range(2):  # a mail scanner prefetching the link
        page = client.get(path)
        assert page.status_code == 200
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert client.head(path).status_code == 200
    assert reader.meter()["tier"] == "anonymous"
    response = reader.post(path)
    assert response.status_code == 303
    assert reader.meter()["tier"] == "registered"
    reader.logout()
    again = reader.post(path)
    assert again.status_code == 400 and "link can't be used" in again.get_data(as_text=True)
    assert reader.meter()["tier"] == "anonymous"


def test_magic_link_request_answers_the_same_for_unknown_emails(reader, db, member):
    known = reader.post("/login/magic", {"email": member[0]}).get_data(as_text=True)
    unknown = reader.post("/login/magic", {"email": "ghost@example.com"}).get_data(as_text=True)
    strip = lambda page: re.sub(r"\S+@example\.com|content=\"[^\"]+\"|value=\"[^\"]+\"", "", page)  # noqa: E731
    assert strip(known) == strip(unknown)
    assert db.scalar("select count(*) from outbox") == 1


def test_forged_magic_link_is_refused(reader, client, member):
    path = magic_link(reader, client, member[0])
    forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert client.get(forged).status_code == 400
    assert reader.post(forged).status_code == 400
    assert reader.meter()["tier"] == "anonymous"


def test_magic_link_expires_after_fifteen_minutes(reader, client, member):
    with time_machine.travel("2026-11-28 17:00:00+00:00", tick=False):
        path = magic_link(reader, client, member[0])
    with time_machine.travel("2026-11-28 17:16:00+00:00", tick=False):
        assert reader.post(path).status_code == 400
    assert reader.meter()["tier"] == "anonymous"


def test_outbox_command_prints_the_link(reader, client, runner, member):
    path = magic_link(reader, client, member[0])
    output = runner.invoke(args=["outbox"]).output
    assert path in output and "Subject: Your sign-in link" in output


def test_logout_ends_the_session_even_if_the_old_cookie_is_replayed(app, reader, client, member):
    reader.login(*member)
    cookie = client.get_cookie("session", domain="meridian.test").value
    reader.logout()
    assert reader.meter()["tier"] == "anonymous"
    replay = app.test_client()
    replay.set_cookie("session", cookie, domain="meridian.test")
    assert replay.get("/api/meter").get_json()["tier"] == "anonymous"


def test_remember_cookie_dies_with_logout(app, reader, client, member):
    reader.post("/login", {"email": member[0], "password": member[1], "remember": "y"})
    remember = client.get_cookie("remember_token", domain="meridian.test").value
    reader.logout()
    replay = app.test_client()
    replay.set_cookie("remember_token", remember, domain="meridian.test")
    assert replay.get("/api/meter").get_json()["tier"] == "anonymous"


def test_a_remember_cookie_alone_signs_the_reader_in(app, reader, client, member):
    reader.post("/login", {"email": member[0], "password": member[1], "remember": "y"})
    remember = client.get_cookie("remember_token", domain="meridian.test").value
    reopened = app.test_client()  # the browser closed: its session cookie is gone, its remember cookie is not
    reopened.set_cookie("remember_token", remember, domain="meridian.test")
    assert reopened.get("/api/meter").get_json()["tier"] == "registered"


def test_a_remembered_reader_gets_the_cookie_again_on_each_page_when_configured(app, reader, client, member):
    reader.post("/login", {"email": member[0], "password": member[1], "remember": "y"})

    def set_cookies() -> str:
        return " ".join(client.get("/api/meter").headers.getlist("Set-Cookie"))

    assert "remember_token=" not in set_cookies()
    app.config["REMEMBER_COOKIE_REFRESH_EACH_REQUEST"] = True
    assert "remember_token=" in set_cookies()


def test_session_cookie_flags(reader, client):
    response = reader.signup("flags@example.com")
    cookie = response.headers.get("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_signup_with_an_existing_email_changes_nothing_and_reveals_nothing(app, reader, db, member):
    newcomer = Reader(app.test_client())
    fresh = newcomer.signup("brand-new@example.com", next="/sections/Economy")
    existing = reader.signup(member[0], password="another-pass-9", next="/sections/Economy")
    for response in (fresh, existing):  # the same answer either way: no account enumeration
        assert (response.status_code, response.headers["Location"]) == (303, "/sections/Economy")
    assert reader.meter()["tier"] == "anonymous"  # not signed in as the owner
    assert accounts.authenticate(db, *member)  # the owner's password is unchanged
    mail = db.execute("select to_addr, subject from outbox order by id desc limit 1").fetchone()
    assert mail == (member[0], "Your sign-in link for The Meridian")


def test_short_password_is_explained(reader, db):
    response = reader.signup("short@example.com", password="abc")
    assert response.status_code == 400
    assert "at least 8 characters" in response.get_data(as_text=True)
    assert accounts.by_email(db, "short@example.com") is None


def test_extra_form_fields_are_ignored(reader, db):
    reader.post("/signup", {"email": "sneaky@example.com", "is_admin": "1", "subscriber": "1",
                            "is_subscriber": "1", "plan": "annual"})
    account = accounts.by_email(db, "sneaky@example.com")
    assert account and not account.is_admin and not account.is_subscriber


def test_anonymous_meter_moves_to_the_account_without_double_counting(reader, runner, db):
    runner.invoke(args=["preset", "use", "metered"])
    slugs = metered_slugs(db, 3)
    for slug in slugs[:2]:
        first = reader.article(slug)
        assert (first["access"], first["reason"]) == ("full", "meter_available")  # this view counted
    assert reader.meter()["used"] == 2
    reader.signup("mover@example.com")
    meter = reader.meter()
    assert (meter["tier"], meter["used"], meter["limit"]) == ("registered", 2, 10)
    assert reader.article(slugs[0])["reason"] == "already_unlocked"
    reader.article(slugs[2])
    assert reader.meter()["used"] == 3
    assert db.execute("select count(*) from unlocks where meter_key like 'visitor:%'").fetchone()[0] == 0


def test_clearing_cookies_never_refills_an_account(app, reader, runner, db):
    reader.signup("spender@example.com", password="spender-pass-1")
    for slug in metered_slugs(db, 3):
        reader.unlock(slug)
    fresh = app.test_client()
    other = Reader(fresh)
    assert other.meter()["tier"] == "anonymous"
    other.login("spender@example.com", "spender-pass-1")
    assert other.meter()["remaining"] == 0


def _visitor_with_a_spend(db) -> None:
    """Visitor v1 has spent one article; it becomes an account when it signs in."""
    db.execute("insert into visitors (id, created_at) values (?, ?)", ["v1", START.isoformat()])
    db.insert("unlocks", {"meter_key": "visitor:v1", "slug": "some-article", "window_key": "2026-11",
                          "unlocked_at": START.isoformat()})


def _fail_on(monkeypatch, target, name):
    """Make ``target.name`` raise: a crash part-way through a sign-in."""
    def crash(*args, **kwargs):
        raise RuntimeError("crash")
    monkeypatch.setattr(target, name, crash)


def _fail_on_event(monkeypatch, kind):
    """Make recording one event type raise, after the writes before it."""
    record = events.record

    def crash(db, type, *args, **kwargs):
        if type == kind:
            raise RuntimeError("crash")
        return record(db, type, *args, **kwargs)
    monkeypatch.setattr(events, "record", crash)


@pytest.mark.parametrize("crash", ["merge", "visitor_row", "login_event"])
def test_a_sign_in_that_fails_part_way_leaves_nothing(db, monkeypatch, crash):
    reader = accounts.create(db, "crash@example.com", None, START)
    _visitor_with_a_spend(db)
    if crash == "merge":  # after the first write (the experiment unit)
        _fail_on(monkeypatch, SqlQuotaStore, "merge")
    elif crash == "visitor_row":  # after the unit and the moved meter, before the merge event
        _fail_on_event(monkeypatch, "meter_merged")
    else:
        _fail_on_event(monkeypatch, "login")
    with pytest.raises(RuntimeError):
        accounts.sign_in(db, reader, "v1", "password", START)
    assert not db.in_transaction
    assert accounts.by_id(db, reader.id).experiment_unit is None
    assert db.execute("select reader_id from visitors where id = 'v1'").fetchone() == (None,)
    assert db.execute("select meter_key from unlocks").fetchall() == [("visitor:v1",)]
    assert db.execute("select count(*) from events").fetchone() == (0,)


def test_a_sign_in_moves_the_visitor_to_the_account_in_one_go(db):
    reader = accounts.create(db, "whole@example.com", None, START)
    _visitor_with_a_spend(db)
    accounts.sign_in(db, reader, "v1", "password", START)
    assert accounts.by_id(db, reader.id).experiment_unit == "visitor:v1"
    assert db.execute("select reader_id from visitors where id = 'v1'").fetchone() == (reader.id,)
    assert db.execute("select meter_key from unlocks").fetchall() == [(reader.meter_key,)]
    assert [row[0] for row in db.execute("select type from events order by id")] == ["meter_merged", "login"]


def test_a_signup_whose_event_fails_makes_no_account(db, monkeypatch):
    _fail_on_event(monkeypatch, "signup")
    with pytest.raises(RuntimeError):
        accounts.sign_up(db, "half@example.com", None, START, source="/")
    assert accounts.by_email(db, "half@example.com") is None


def test_signup_records_one_signup_event_and_a_known_address_none(app, reader, db, member):
    reader.signup("counted@example.com", next="/sections/Economy")
    Reader(app.test_client()).signup(member[0], next="/")
    rows = db.execute(f"select reader_id, {db.json_text('data', 'source')} from events where type = 'signup'"
                      " and reader_id != ?", [accounts.by_email(db, member[0]).id]).fetchall()
    assert rows == [(accounts.by_email(db, "counted@example.com").id, "/sections/Economy")]
