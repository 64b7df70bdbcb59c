"""The article page's fast path: few statements, each signature checked once, limits only where they apply.

Speed is measured by `make bench`, never here; these tests pin what makes a page
cheap (how many statements it sends, what it skips) and that none of it
changes an answer: a preset switch or a clock move is seen by the very next
request, a forged or expired session cookie is refused as before.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
import urllib.parse
from datetime import timedelta

import pytest
from flask import request
from flask_login import login_user, user_accessed
from flask_login import utils as login_utils
from itsdangerous import TimestampSigner
from werkzeug.local import LocalProxy

from gate.app import ratelimit, sessions
from gate.app.context import current
from gate.app.db import get_db
from gate.app.sessions import VerifiedCookies
from gate.rules.timeutil import to_iso
from gate.services import accounts, devices, sitestate, subscriptions
from gate.storage.quota import SqlQuotaStore
from gate.web import login_manager
from tests.helpers import BOTH_ENGINES, CARD, METERED, START, Reader, open_checkout, publish


def reads_of(client, statements, path: str, **kwargs) -> int:
    """How many reads one request makes (its events' writes aside)."""
    client.get(path, **kwargs)  # a first visit may keep a visitor id, a session may settle
    statements.clear()
    assert client.get(path, **kwargs).status_code == 200
    return statements["select"]


@BOTH_ENGINES
def test_an_anonymous_teaser_is_one_read(client, statements):
    """The site's state and the article come in one statement; under wpr an anonymous visitor has no meter."""
    assert reads_of(client, statements, f"/articles/{METERED}") == 1


@BOTH_ENGINES
def test_a_registered_page_is_one_read(reader, client, statements):
    """The site's state, the article, the reader, their subscription and their meter come in one statement."""
    reader.signup("fast@example.com")
    assert reads_of(client, statements, f"/articles/{METERED}") == 1


@BOTH_ENGINES
def test_the_meter_read_with_the_site_is_the_readers(reader, client):
    reader.signup("counted@example.com")
    reader.unlock(METERED)
    meter = client.get(f"/api/articles/{METERED}").get_json()["meter"]
    assert (meter["used"], meter["remaining"]) == (1, 2)


@BOTH_ENGINES
def test_a_readers_page_is_one_row_however_many_spends_they_have(app, db):
    """A year of spends comes as one column of the one row, not as a row each repeating the reader's columns."""
    reader = accounts.create(db, "tenured@example.com", None, START)
    token = devices._start(db, reader.id, "test", START, None)
    for number in range(36):
        db.insert("unlocks", {"meter_key": reader.meter_key, "slug": f"spent-{number}", "window_key": f"w{number}",
                              "unlocked_at": to_iso(START - timedelta(days=10 * number))})
    cfg = app.extensions["gate.config"]
    state = sitestate.read(db, cfg, START, METERED, token)
    assert len(state.reader_rows) == 1
    signed_in, meter = subscriptions.settled(db, cfg, token, state.reader_rows, START)
    assert signed_in.id == reader.id and len(meter) == 36
    assert meter == SqlQuotaStore(db).spends(reader.meter_key)
    nobody = accounts.create(db, "unspent@example.com", None, START)
    fresh = devices._start(db, nobody.id, "test", START, None)
    assert subscriptions.settled(db, cfg, fresh, sitestate.read(db, cfg, START, METERED, fresh).reader_rows,
                                 START)[1] == ()


def _signed_in_device(db, email: str) -> tuple[accounts.Reader, str]:
    reader = accounts.create(db, email, None, START)
    return reader, devices._start(db, reader.id, "test", START, None)


def _version(db, reader) -> int:
    return db.scalar("select version from readers where id = ?", [reader.id])


@BOTH_ENGINES
def test_a_reader_this_process_read_is_only_version_checked(app, db):
    """The second read of a device's reader asks for no reader, subscription or spends: the kept ones are used."""
    cfg = app.extensions["gate.config"]
    reader, token = _signed_in_device(db, "kept@example.com")
    db.insert("unlocks", {"meter_key": reader.meter_key, "slug": METERED, "window_key": "w", "unlocked_at": to_iso(START)})
    first = sitestate.read(db, cfg, START, METERED, token).reader_rows
    assert first[0]["reader"] is not None and first[0]["spends"] != "[]"
    read = subscriptions.settled(db, cfg, token, first, START)
    again = sitestate.read(db, cfg, START, METERED, token).reader_rows
    assert set(again[0]) & {"reader", "sub", "spends", "reader_session_token", "reader_seen_at"} == set()
    assert subscriptions.settled(db, cfg, token, again, START) == read
    assert [spend.slug for spend in read[1]] == [METERED]


#: Writes that change what a signed-in page reads of a reader (``{id}``, ``{key}``: their meter key), each
#: made as another node would, straight to the database: every one must change the reader's version.
CHANGES = {
    "their row": ["update readers set email_verified_at = '2026-01-02T00:00:00+00:00' where id = {id}"],
    "a subscription added": [],  # subscriptions.grant, below
    "their subscription changed": ["update subscriptions set cancel_at_period_end = 1 where reader_id = {id}"],
    "their subscription removed": ["delete from payments where reader_id = {id}",
                                   "delete from subscriptions where reader_id = {id}"],
    "a spend": ["insert into unlocks (meter_key, slug, window_key, unlocked_at)"
                " values ('{key}', 'spent', 'w', '2026-01-01T00:00:00+00:00')"],
    "a visitor's spends moved to them": ["update unlocks set meter_key = '{key}' where meter_key = 'visitor:v'"],
    "a spend changed": ["update unlocks set window_key = 'moved' where meter_key = '{key}'"],
    "a spend removed": ["delete from unlocks where meter_key = '{key}'"],
    "a session ended": ["update reader_sessions set ended_at = '2026-01-02T00:00:00+00:00' where reader_id = {id}"],
    "a session deleted": ["delete from reader_sessions where reader_id = {id}"],
    "a session's token changed": ["update reader_sessions set token = 'another' where reader_id = {id}"],
}


@BOTH_ENGINES
@pytest.mark.parametrize("change", list(CHANGES))
def test_every_write_a_page_reads_gives_the_reader_a_new_version(app, db, change):
    cfg = app.extensions["gate.config"]
    reader, _ = _signed_in_device(db, "versioned@example.com")
    if change != "a subscription added":
        subscriptions.grant(db, cfg, reader.id, cfg.plans[0].id, START, by="test")
    for key in ("visitor:v", reader.meter_key):  # a visitor's spend, to move to them, and one of theirs
        db.insert("unlocks", {"meter_key": key, "slug": f"from-{key}", "window_key": "w", "unlocked_at": to_iso(START)})
    before = _version(db, reader)
    if change == "a subscription added":
        subscriptions.grant(db, cfg, reader.id, cfg.plans[0].id, START, by="test")
    for statement in CHANGES[change]:
        db.execute(statement.format(id=reader.id, key=reader.meter_key))
    assert _version(db, reader) != before


@BOTH_ENGINES
def test_writes_about_others_leave_the_version(app, db):
    """Another reader's or a visitor's spends, and the device's own last-seen time (read on every page), do not."""
    reader, token = _signed_in_device(db, "steady@example.com")
    other = accounts.create(db, "other@example.com", None, START)
    before = _version(db, reader)
    for key in (other.meter_key, "visitor:v", f"giftlink:{reader.id}"):
        db.insert("unlocks", {"meter_key": key, "slug": "x", "window_key": "w", "unlocked_at": to_iso(START)})
    db.execute("update reader_sessions set last_seen_at = ? where token = ?", [to_iso(START), token])
    assert _version(db, reader) == before


@BOTH_ENGINES
def test_a_session_moved_to_another_reader_gives_both_a_new_version(db):
    one, token = _signed_in_device(db, "first@example.com")
    two = accounts.create(db, "second@example.com", None, START)
    before = (_version(db, one), _version(db, two))
    db.execute("update reader_sessions set reader_id = ? where token = ?", [two.id, token])
    assert _version(db, one) != before[0] and _version(db, two) != before[1]


LATER = to_iso(START + timedelta(days=2))
#: Writes that change the site's state a page reads, made straight to the database as another node would.
SITE_CHANGES = {
    "the preset set": ["delete from settings where key = 'preset'",
                       "insert into settings (key, value) values ('preset', 'metered')"],
    "the preset changed": ["update settings set value = 'metered' where key = 'preset'"],
    "the consent lesson": ["insert into settings (key, value) values ('consent_lesson', 'on')"],
    "a setting removed": ["delete from settings where key = 'preset'"],
    "the clock set": ["delete from clock", f"insert into clock (id, mode, frozen_at) values (1, 'frozen', '{LATER}')"],
    "the clock moved": [f"update clock set frozen_at = '{LATER}' where id = 1"],
    "the clock reset": ["delete from clock"],
}


def _site_version(db) -> int:
    return db.scalar("select version from site_version where id = 1")


@BOTH_ENGINES
@pytest.mark.parametrize("change", list(SITE_CHANGES))
def test_every_write_to_the_sites_state_gives_it_a_new_version(db, change):
    db.execute("insert into settings (key, value) values ('preset', 'wpr') on conflict (key) do nothing")
    *setup, last = SITE_CHANGES[change]
    for statement in setup:
        db.execute(statement)
    before = _site_version(db)
    db.execute(last)
    assert _site_version(db) != before


@BOTH_ENGINES
def test_a_state_this_process_read_is_only_version_checked(app, db, statements):
    """The second read asks for no clock and no settings, and reads them again only once they change."""
    cfg = app.extensions["gate.config"]
    first = sitestate.read(db, cfg, START, METERED)
    statements.clear()
    again = sitestate.read(db, cfg, START, METERED)
    assert again == first and statements["select"] == 1
    kept = db.rows(*sitestate._asked(db.dialect, METERED, None, None, True))[0]
    assert set(kept) & {"mode", "offset_seconds", "frozen_at", "preset", "lesson"} == set()
    db.execute(f"update clock set frozen_at = '{LATER}' where id = 1")
    db.execute("insert into settings (key, value) values ('preset', 'metered')"
               " on conflict (key) do update set value = excluded.value")
    statements.clear()
    moved = sitestate.read(db, cfg, START, METERED)
    assert statements["select"] == 2  # the version, then the state whole
    assert moved.clock.now(START) == START + timedelta(days=2) and moved.preset == "metered"
    assert moved.article == first.article
    statements.clear()
    assert sitestate.read(db, cfg, START, METERED) == moved and statements["select"] == 1


@BOTH_ENGINES
def test_a_site_change_made_straight_to_the_database_is_seen_by_the_next_page(client, db):
    """As another node would make it (or someone in a SQL shell): no code path of this process is told."""
    publish(db, "tomorrows-piece", START + timedelta(days=1))
    assert client.get(f"/api/articles/{METERED}").get_json()["offer"] == "register"
    assert client.get("/articles/tomorrows-piece").status_code == 404
    db.execute("insert into settings (key, value) values ('preset', 'metered')"
               " on conflict (key) do update set value = excluded.value")
    assert client.get(f"/api/articles/{METERED}").get_json()["reason"] == "meter_available"
    db.execute(f"update clock set frozen_at = '{LATER}' where id = 1")
    assert client.get("/articles/tomorrows-piece").status_code == 200


@BOTH_ENGINES
def test_without_its_version_row_the_state_is_read_whole_every_time(app, db):
    cfg = app.extensions["gate.config"]
    db.execute("delete from site_version")
    sitestate.read(db, cfg, START)
    db.execute("insert into settings (key, value) values ('preset', 'metered')"
               " on conflict (key) do update set value = excluded.value")
    assert sitestate.read(db, cfg, START).preset == "metered"


def test_the_kept_states_are_bounded(app, db, monkeypatch):
    monkeypatch.setattr(sitestate, "KEEP_STATES", 2)
    monkeypatch.setattr(sitestate, "_kept", {})
    cfg = app.extensions["gate.config"]
    for _ in range(3):
        sitestate.read(db, cfg, START)
        db.execute("insert into settings (key, value) values ('consent_lesson', 'on')"
                   " on conflict (key) do update set value = excluded.value")
    assert 1 <= len(sitestate._kept) <= 2


@BOTH_ENGINES
def test_a_write_on_another_node_is_seen_by_the_next_page(app, reader, client, db):
    """A page of a reader this process keeps, after each kind of write made straight to the database."""
    reader.signup("elsewhere@example.com")
    account = accounts.by_email(db, "elsewhere@example.com")
    assert reader.meter()["used"] == 0 and reader.meter()["tier"] == "registered"  # read, then kept
    db.insert("unlocks", {"meter_key": account.meter_key, "slug": METERED, "window_key": "w",
                          "unlocked_at": to_iso(START)})
    assert reader.meter()["used"] == 1
    cfg = app.extensions["gate.config"]
    subscriptions.grant(db, cfg, account.id, cfg.plans[0].id, START, by="another node")
    assert reader.meter()["tier"] == "subscriber"
    db.execute("delete from payments where reader_id = ?", [account.id])
    db.execute("delete from subscriptions where reader_id = ?", [account.id])
    db.execute("update readers set comp_until = ? where id = ?", [to_iso(START + timedelta(days=9)), account.id])
    assert reader.meter()["tier"] == "subscriber"  # complimentary access, on the row
    db.execute("update readers set comp_until = null where id = ?", [account.id])
    assert reader.meter()["tier"] == "registered"
    db.execute("update reader_sessions set ended_at = ? where reader_id = ?", [to_iso(START), account.id])
    assert reader.meter()["tier"] == "anonymous"


@BOTH_ENGINES
def test_a_device_whose_session_row_is_deleted_elsewhere_is_signed_out(reader, db):
    reader.signup("deleted@example.com")
    assert reader.meter()["tier"] == "registered"  # read, then kept
    db.execute("delete from reader_sessions where reader_id = ?", [accounts.by_email(db, "deleted@example.com").id])
    assert reader.meter()["tier"] == "anonymous"


@BOTH_ENGINES
def test_a_reader_changed_since_is_read_again_once(reader, client, statements, db):
    reader.signup("changed@example.com")
    assert reads_of(client, statements, "/api/meter") == 1
    db.execute("update readers set email_verified_at = ? where email = ?", [to_iso(START), "changed@example.com"])
    statements.clear()
    client.get("/api/meter")
    assert statements["select"] == 2  # the version, then the reader whole
    statements.clear()
    client.get("/api/meter")
    assert statements["select"] == 1


@BOTH_ENGINES
def test_a_kept_read_replaced_meanwhile_is_read_whole(app, db, monkeypatch):
    """A kept read whose version is not the row's (another thread kept another read meanwhile): read again."""
    cfg = app.extensions["gate.config"]
    reader, token = _signed_in_device(db, "raced@example.com")
    subscriptions.signed_in(db, cfg, token, START)  # kept
    row = sitestate.read(db, cfg, START, METERED, token).reader_rows  # only the version came
    assert "reader" not in row[0]
    kept = subscriptions._kept[token]
    monkeypatch.setitem(subscriptions._kept, token, dataclasses.replace(kept, version=kept.version + 1,
                                                                        spends=("not", "these")))
    signed_in, spends = subscriptions.settled(db, cfg, token, row, START)
    assert signed_in.id == reader.id and spends == ()
    assert subscriptions._kept[token].version == _version(db, reader)


def test_the_kept_readers_are_bounded(app, db, monkeypatch):
    monkeypatch.setattr(subscriptions, "KEEP_READERS", 2)
    monkeypatch.setattr(subscriptions, "_kept", {})
    cfg = app.extensions["gate.config"]
    for number in range(3):
        _, token = _signed_in_device(db, f"bounded{number}@example.com")
        subscriptions.signed_in(db, cfg, token, START)
    assert 1 <= len(subscriptions._kept) <= 2 and token in subscriptions._kept


@BOTH_ENGINES
def test_the_spends_read_with_the_site_are_oldest_first(app, db):
    """The read has no ORDER BY (a sort cost PostgreSQL more than the rest of the reader's part of it):
    its spends come out as the meter's own read orders them, by time and then by insertion, ties included."""
    reader = accounts.create(db, "ordered@example.com", None, START)
    token = devices._start(db, reader.id, "test", START, None)
    at = [START - timedelta(days=2), START - timedelta(days=9), START - timedelta(days=2), START - timedelta(days=5)]
    for number, moment in enumerate(at):  # inserted out of time order, two at the same instant
        db.insert("unlocks", {"meter_key": reader.meter_key, "slug": f"spent-{number}", "window_key": f"w{number}",
                              "unlocked_at": to_iso(moment)})
    # A rewritten row moves on PostgreSQL (a new tuple, after its tie in the unlocked_at index): only the sort holds.
    db.execute("update unlocks set window_key = 'moved' where slug = 'spent-0'")
    cfg = app.extensions["gate.config"]
    state = sitestate.read(db, cfg, START, METERED, token)
    _, meter = subscriptions.settled(db, cfg, token, state.reader_rows, START)
    assert [spend.slug for spend in meter] == ["spent-1", "spent-3", "spent-0", "spent-2"]
    assert meter == SqlQuotaStore(db).spends(reader.meter_key)
    assert subscriptions.signed_in(db, cfg, token, START)[1] == meter


@BOTH_ENGINES
def test_a_page_that_is_not_an_article_reads_the_reader_with_the_site(reader, client, statements):
    reader.signup("front@example.com")
    assert reads_of(client, statements, "/api/meter") == 1
    assert client.get("/api/meter").get_json()["tier"] == "registered"


@BOTH_ENGINES
def test_a_signed_out_session_reads_no_reader(reader, client, statements):
    reader.signup("gone@example.com")
    stale = client.get_cookie("session", domain="meridian.test").value
    assert reader.post("/logout").status_code in (302, 303)  # the token rotates: the old cookie names no one
    client.set_cookie("session", stale, domain="meridian.test")
    assert client.get("/api/meter").get_json()["tier"] == "anonymous"


@BOTH_ENGINES
def test_the_meter_read_with_the_reader_is_read_again_after_a_spend(app, reader):
    reader.signup("spender@example.com")
    with app.test_request_context(f"/articles/{METERED}"):
        account = accounts.by_email(get_db(), "spender@example.com")
        current().read_with_reader[account.meter_key] = ()  # as the sign-in read found it
        login_user(account)
        assert current().viewer.spends == ()
        current().quota.spend(account.meter_key, METERED, "window", current().now, lambda spends: True)
        current().after_spend(True)
        assert [spend.slug for spend in current().viewer.spends] == [METERED]


@BOTH_ENGINES
def test_a_subscriber_page_is_one_read(reader, client, statements, db):
    reader.signup("paid@example.com")
    key = open_checkout(reader)
    reader.post("/subscribe/monthly", {**CARD, "idempotency_key": key})
    assert reads_of(client, statements, f"/articles/{METERED}") == 1
    assert client.get(f"/api/articles/{METERED}").get_json()["reason"] == "subscriber"


@BOTH_ENGINES
def test_re_unlocking_takes_no_write_transaction(reader, client, statements):
    reader.signup("again@example.com")
    reader.unlock(METERED)
    token = reader.token()
    statements.clear()
    answer = client.post(f"/api/articles/{METERED}/unlock", headers={"X-CSRFToken": token})
    assert answer.get_json()["reason"] == "already_unlocked"
    assert set(statements) == {"select"}, statements  # no transaction, no insert


@BOTH_ENGINES
def test_an_unlock_reads_its_article_with_the_reader_its_rate_limit_asks_for(app, reader, client, statements):
    """The limit's key asks for the reader before the view asks for the article: both come in one read."""
    assert app.config["RATELIMIT_ENABLED"]
    reader.signup("limited@example.com")
    reader.unlock(METERED)
    token = reader.token()
    statements.clear()
    for path in (f"/api/articles/{METERED}/unlock", f"/articles/{METERED}/unlock"):
        answer = client.post(path, headers={"X-CSRFToken": token})
        assert answer.status_code in (200, 303)
    assert statements["select"] == 2, statements  # one read each
    assert client.get(f"/api/articles/{METERED}").get_json()["reason"] == "already_unlocked"


@BOTH_ENGINES
def test_an_article_read_with_the_site_is_not_served_for_another_slug(app, db, statements):
    publish(db, "another-piece", START - timedelta(days=1))
    with app.test_request_context(f"/api/articles/{METERED}"):
        state = current()
        assert state.site.slug == METERED  # asked for first without a slug: the route's article came with it
        statements.clear()
        assert state.published(METERED).slug == METERED and not statements
        assert state.published("another-piece").slug == "another-piece"
        assert state.published("no-such-piece") is None
    with app.test_request_context("/api/meter"):
        assert current().site.slug is None and current().site.article is None  # not an article's route


@BOTH_ENGINES
def test_a_preset_switch_is_seen_by_the_next_request(client, runner):
    assert client.get(f"/api/articles/{METERED}").get_json()["offer"] == "register"
    runner.invoke(args=["preset", "use", "metered"])  # another process, as on another node
    assert client.get(f"/api/articles/{METERED}").get_json()["reason"] == "meter_available"


@BOTH_ENGINES
def test_a_clock_move_is_seen_by_the_next_request(client, runner, db):
    publish(db, "tomorrows-piece", START + timedelta(days=1))
    assert client.get("/articles/tomorrows-piece").status_code == 404
    runner.invoke(args=["clock", "advance", "2d"])
    assert client.get("/articles/tomorrows-piece").status_code == 200


@BOTH_ENGINES
def test_a_sessions_csrf_token_is_signed_once_and_still_checked(app, reader, client, monkeypatch):
    first = reader.token()  # a new session's first page (its form signs the token)
    later = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later(self) + 100)
    second = reader.token()  # a signature made now would carry another time stamp
    assert first == second  # the same signature, not a new one a page
    assert reader.post("/logout").status_code in (302, 303)
    forged = first[:-2] + ("AA" if not first.endswith("AA") else "BB")
    refused = client.post(f"/api/articles/{METERED}/unlock", headers={"X-CSRFToken": forged})
    assert refused.status_code == 400
    other = Reader(app.test_client())
    assert other.token() != first


@BOTH_ENGINES
def test_every_form_on_a_page_carries_the_sessions_kept_token(reader, client):
    reader.signup("forms@example.com")
    first = reader.token()
    page = client.get(f"/articles/{METERED}").get_data(as_text=True)
    carried = set(re.findall(r'name="csrf_token"[^>]*value="([^"]+)"', page))
    assert carried == {first} and page.count('name="csrf_token"') >= 2  # the unlock form and sign-out
    assert reader.post(f"/articles/{METERED}/unlock", {"csrf_token": first}).status_code == 303


def test_with_a_time_limit_each_page_gets_a_freshly_signed_token(tmp_path, monkeypatch):
    """A configured WTF_CSRF_TIME_LIMIT puts every token back through Flask-WTF: none is reused."""
    from gate import create_app
    from gate.app import csrf

    app = create_app({"DATABASE": str(tmp_path / "timed.sqlite"), "SECRET_KEY": "timed-key",
                      "SERVER_NAME": "meridian.test", "WTF_CSRF_TIME_LIMIT": 3600})
    reader = Reader(app.test_client())
    reader.token()  # the session gets its raw token
    monkeypatch.setattr(csrf, "_signed", {})
    reader.token()  # a page of that session
    assert reader.signup("timed@example.com").status_code in (302, 303)  # and its token is still accepted
    assert csrf._signed == {}  # nothing kept, so nothing a later post could be matched against


@BOTH_ENGINES
def test_a_token_handed_to_another_session_is_refused(app, reader, client):
    reader.signup("mine@example.com")
    theirs = Reader(app.test_client())
    theirs.signup("theirs@example.com")
    stolen = client.post(f"/api/articles/{METERED}/unlock", headers={"X-CSRFToken": theirs.token()})
    assert stolen.status_code == 400 and stolen.get_json()["error"] == "csrf_failed"


@BOTH_ENGINES
def test_over_https_a_known_token_still_needs_a_matching_referrer(reader, client):
    reader.signup("secure-post@example.com")
    token = reader.token()
    headers = {"X-CSRFToken": token}
    refused = client.post(f"/api/articles/{METERED}/unlock", headers=headers, base_url="https://meridian.test")
    assert refused.status_code == 400
    allowed = client.post(f"/api/articles/{METERED}/unlock", base_url="https://meridian.test",
                          headers={**headers, "Referer": "https://meridian.test/articles/x"})
    assert allowed.status_code in (200, 403)


@BOTH_ENGINES
def test_a_token_another_process_signed_is_verified_once_then_recognised(app, reader, client, monkeypatch):
    """Another worker signed the session's token: its first post here is verified in full, the next ones are not."""
    from flask_wtf import csrf as wtf_csrf
    from itsdangerous import URLSafeTimedSerializer

    from gate.app import csrf

    reader.signup("two-workers@example.com")
    reader.token()  # the session has its raw token
    with client.session_transaction() as kept:
        raw = kept["csrf_token"]
    later = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later(self) + 100)
    theirs = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="wtf-csrf-token").dumps(raw)
    assert theirs != reader.token()  # as the other worker signed it, not as this process did
    checked, real = [], wtf_csrf.validate_csrf
    monkeypatch.setattr(wtf_csrf, "validate_csrf", lambda *a, **k: checked.append(a[0]) or real(*a, **k))
    forged = theirs[:-2] + ("AA" if not theirs.endswith("AA") else "BB")
    assert client.post(f"/api/articles/{METERED}/unlock", headers={"X-CSRFToken": forged}).status_code == 400
    assert checked == [forged] and csrf._signed[(app.config["SECRET_KEY"], raw)] != forged  # refused, not kept
    path = f"/api/articles/{METERED}/unlock"
    assert client.post(path, headers={"X-CSRFToken": theirs}).status_code == 200
    assert client.post(path, headers={"X-CSRFToken": theirs}).status_code == 200
    assert checked == [forged, theirs]  # verified the first time only
    assert reader.token() == theirs  # and this process's pages hand it out from now on
    assert reader.post(f"/articles/{METERED}/unlock", {"csrf_token": theirs}).status_code == 303
    assert len(checked) == 2


@BOTH_ENGINES
def test_a_token_verified_over_https_is_not_kept(app, reader, client, monkeypatch):
    from gate.app import csrf

    reader.signup("secure-kept@example.com")
    token = reader.token()
    with client.session_transaction() as kept:
        key = (app.config["SECRET_KEY"], kept["csrf_token"])
    monkeypatch.setattr(csrf, "_signed", {})  # as if another process had signed it
    later = TimestampSigner.get_timestamp  # a signature this process makes now differs from it
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later(self) + 100)
    allowed = client.post(f"/api/articles/{METERED}/unlock", base_url="https://meridian.test",
                          headers={"X-CSRFToken": token, "Referer": "https://meridian.test/articles/x"})
    assert allowed.status_code in (200, 403)
    assert csrf._signed[key] != token  # over HTTPS every post is checked, referrer and all: nothing kept


@BOTH_ENGINES
def test_article_pages_skip_the_rate_limiter_and_limited_routes_keep_it(app, reader, client):
    assert not ratelimit.limited(app.view_functions["reading.article"])
    assert ratelimit.limited(app.view_functions["api.unlock"])
    reader.signup("limits@example.com")
    page = client.get(f"/articles/{METERED}")
    assert "X-RateLimit-Limit" not in page.headers
    unlock = client.post(f"/api/articles/{METERED}/unlock", headers={"X-CSRFToken": reader.token()})
    assert unlock.headers["X-RateLimit-Limit"] == "60"


def test_the_session_identifier_is_flask_logins_hashed_once_per_browser(app, monkeypatch):
    real, hashed = login_utils._create_identifier, []
    monkeypatch.setattr(login_utils, "_create_identifier", lambda: hashed.append(1) or real())
    monkeypatch.setattr(sessions, "_identifiers", {})
    for agent in ("browser A", "browser A", "browser B"):
        with app.test_request_context("/", headers={"User-Agent": agent}):
            assert sessions.session_identifier() == real()
    assert len(hashed) == 2


@BOTH_ENGINES
def test_a_session_replayed_from_another_browser_is_no_longer_fresh(reader, client):
    reader.signup("moved@example.com")
    client.get(f"/articles/{METERED}")
    with client.session_transaction() as kept:
        assert kept["_fresh"] is True
    client.get(f"/articles/{METERED}", headers={"User-Agent": "another browser"})
    with client.session_transaction() as kept:
        assert kept["_fresh"] is False  # flask-login's session protection, as before


def _protection_checks(monkeypatch) -> list:
    """Each time Flask-Login's own path checks session protection (SiteLogin's fallback)."""
    checks, real = [], login_manager._session_protection_failed
    monkeypatch.setattr(login_manager, "_session_protection_failed", lambda: checks.append(1) or real())
    return checks


@BOTH_ENGINES
def test_a_signed_out_or_signed_in_page_loads_its_user_without_flask_logins_checks(reader, client, monkeypatch):
    checks = _protection_checks(monkeypatch)
    client.get(f"/articles/{METERED}")  # a visitor id: the session is no longer empty
    assert reader.meter()["tier"] == "anonymous"
    with client.session_transaction() as kept:
        assert "_fresh" not in kept  # nothing reads freshness without a user
    reader.signup("direct@example.com")
    assert reader.meter()["tier"] == "registered"
    assert checks == []
    client.get("/api/meter", headers={"User-Agent": "another browser"})
    assert checks == [1]  # a session from another browser: Flask-Login's protection, as before


def test_user_accessed_is_sent_once_a_request_to_whoever_listens(app, reader, client):
    heard = []
    with user_accessed.connected_to(lambda sender: heard.append(sender), app):
        client.get("/api/meter")
        reader.signup("heard@example.com")
        heard.clear()
        client.get("/api/meter")
    assert heard == [app]


def test_a_request_loader_is_asked_on_flask_logins_path(reader, client, monkeypatch):
    asked = []
    monkeypatch.setattr(login_manager, "_request_callback", lambda request: asked.append(request.path))
    assert reader.meter()["tier"] == "anonymous"
    assert asked == ["/api/meter"]


def test_strong_protection_signs_out_a_session_from_another_browser(app, reader, client):
    app.config["SESSION_PROTECTION"] = "strong"
    reader.signup("strong@example.com")
    assert reader.meter()["tier"] == "registered"
    moved = client.get("/api/meter", headers={"User-Agent": "another browser"})
    assert moved.get_json()["tier"] == "anonymous"


def test_a_kept_read_builds_its_reader_once_for_each_access_it_is_asked_with():
    fields = {"id": 7, "email": "kept@example.com", "password_hash": "x", "is_admin": 0,
              "created_at": to_iso(START)}
    read = subscriptions.KeptReader(3, fields, None, None, ())
    plain = {"is_subscriber": False, "grace_ends": None}
    first = read.reader("token-a", plain)
    assert read.reader("token-a", dict(plain)) is first and first.session_token == "token-a"
    paying = read.reader("token-a", {"is_subscriber": True, "grace_ends": None})
    assert paying.is_subscriber and not first.is_subscriber and paying is not first
    assert read.reader("token-b", plain).session_token == "token-b"
    for grace in range(subscriptions.BUILT_PER_READ + 1):  # bounded however many it meets
        read.reader("token-a", {"is_subscriber": True, "grace_ends": START + timedelta(days=grace)})
    assert len(read.built) <= subscriptions.BUILT_PER_READ
    seen = dataclasses.replace(read, seen_at=to_iso(START))
    assert seen.built == {} and seen.reader("token-a", plain).seen_at == START


# --- the verified-cookie memory, without a site ---------------------------------------------


def test_a_verified_cookie_is_recalled_as_a_copy():
    cookies = VerifiedCookies()
    parsed = {"session": "signed", "other": "1"}
    cookies.remember("k", {"visitor": "v1"}, time.time(), parsed)
    held, also = cookies.recall("k", 3600)
    held["visitor"] = "changed"
    assert cookies.recall("k", 3600) == ({"visitor": "v1"}, parsed) and also is parsed


def test_an_expired_or_unknown_cookie_is_not_recalled():
    cookies = VerifiedCookies()
    cookies.remember("old", {"visitor": "v1"}, time.time() - 7200)
    assert cookies.recall("old", 3600) is None and cookies.recall("never", 3600) is None


def test_a_session_holding_more_than_plain_values_is_not_kept():
    cookies = VerifiedCookies()
    cookies.remember("k", {"_flashes": [("info", "Saved")]}, time.time())
    assert cookies.recall("k", 3600) is None


def test_the_memory_is_bounded():
    cookies = VerifiedCookies(keep=2)
    for name in ("a", "b", "c"):
        cookies.remember(name, {}, time.time())
    assert cookies.recall("a", 3600) is None and cookies.recall("c", 3600) == ({}, None)


@BOTH_ENGINES
def test_a_cookie_header_seen_before_is_neither_parsed_nor_verified_again(app, reader, client, monkeypatch):
    import werkzeug.sansio.request

    @app.get("/cookies-seen")
    def cookies_seen():
        return dict(request.cookies)

    reader.signup("header@example.com")
    client.get("/")  # shows the welcome (a session holding a message is never kept)
    assert reader.meter()["tier"] == "registered"
    parsed, loaded = [], []
    parse = werkzeug.sansio.request.parse_cookie
    monkeypatch.setattr(werkzeug.sansio.request, "parse_cookie", lambda *a, **k: parsed.append(1) or parse(*a, **k))
    serializer = app.session_interface.get_signing_serializer(app)
    loads = serializer.loads
    monkeypatch.setattr(serializer, "loads", lambda *a, **k: loaded.append(1) or loads(*a, **k))
    assert reader.meter()["tier"] == "registered" and (parsed, loaded) == ([], [])
    client.set_cookie("another", "1", domain=app.config["SERVER_NAME"])  # the same session in another header
    assert reader.meter()["tier"] == "registered" and (len(parsed), len(loaded)) == (1, 1)
    assert reader.meter()["tier"] == "registered" and (len(parsed), len(loaded)) == (1, 1)
    assert client.get("/cookies-seen").get_json()["another"] == "1"  # the request's cookies, as parsed before
    assert len(parsed) == 1


@BOTH_ENGINES
def test_a_forged_session_cookie_is_still_refused(app, reader, client):
    reader.signup("cookie@example.com")
    assert reader.meter()["tier"] == "registered"
    domain = app.config["SERVER_NAME"]
    cookie = client.get_cookie("session", domain=domain)
    client.set_cookie("session", cookie.value[:-3] + "AAA", domain=domain)
    assert reader.meter()["tier"] == "anonymous"


@BOTH_ENGINES
def test_a_subscription_read_as_one_column_is_the_subscription_read_by_itself(app, db):
    """Every field, times, flags and discounts included, survives the JSON column of the signed-in read."""
    cfg = app.extensions["gate.config"]
    reader = accounts.create(db, "paying@example.com", None, START)
    token = devices._start(db, reader.id, "test", START, None)
    subscriptions.grant(db, cfg, reader.id, cfg.plans[0].id, START, by="test")
    db.execute("update subscriptions set cancel_at_period_end = 1, offer_code = 'SPRING', discount_kind = 'percent',"
               " discount_value = 25, discount_periods = 3, card_last4 = '4242', cancel_reason = 'price \"too\" high'"
               " where reader_id = ?", [reader.id])
    by_itself = subscriptions.current(db, reader.id)
    assert by_itself.cancel_at_period_end is True and by_itself.discount_value == 25
    for row in (sitestate.read(db, cfg, START, METERED, token).reader_rows[0],
                db.rows(subscriptions._signed_in(db.dialect, False), [token])[0]):
        assert subscriptions._from_row(json.loads(row["sub"])) == by_itself
    assert subscriptions.signed_in(db, cfg, token, START)[0].is_subscriber
    nobody = devices._start(db, accounts.create(db, "free@example.com", None, START).id, "test", START, None)
    assert db.rows(subscriptions._signed_in(db.dialect, False), [nobody])[0]["sub"] is None


def test_the_signed_in_join_reads_every_column_a_reader_is_built_from(db):
    """A readers column Reader.from_row reads but the join leaves out would be None on every signed-in page."""
    columns = {row["name"] for row in db.rows("select name from pragma_table_info('readers')")}
    assert set(accounts.READER_COLUMNS) == columns - {"synthetic", "comp_by", "version"}  # the console's; the check's


# --- Flask's plumbing, done once (gate.app.plumbing) -----------------------------------------


def test_each_hook_is_checked_for_async_once(app, client, monkeypatch):
    import flask

    asked = []
    real = flask.Flask.ensure_sync
    monkeypatch.setattr(flask.Flask, "ensure_sync", lambda self, func: asked.append(func) or real(self, func))
    app._sync.clear()
    for _ in range(3):
        assert client.get(f"/articles/{METERED}").status_code == 200
    assert asked and len(asked) == len(set(asked))  # each function once, however many requests
    assert app.view_functions["reading.article"] in asked and current_context_processors(app) <= set(asked)


def current_context_processors(app) -> set:
    """The template context processors an article page runs."""
    return set(app.template_context_processors[None]) | set(app.template_context_processors["reading"])


def test_an_unhashable_hook_is_still_run(app, client):
    class Hook(dict):  # a dict subclass: callable, and unhashable
        def __call__(self):
            self["ran"] = self.get("ran", 0) + 1

    hook = Hook()
    app.before_request_funcs.setdefault(None, []).append(hook)
    client.get(f"/articles/{METERED}")
    client.get(f"/articles/{METERED}")
    assert hook["ran"] == 2


def test_a_blueprint_page_runs_the_default_context_processor_once(app, client):
    from flask.templating import _default_template_ctx_processor

    assert all(_default_template_ctx_processor not in funcs
               for name, funcs in app.template_context_processors.items() if name is not None)
    assert app.template_context_processors[None].count(_default_template_ctx_processor) == 1
    with app.test_request_context(f"/articles/{METERED}"):
        context: dict = {}
        app.update_template_context(context)
        assert {"g", "request", "current_user", "csrf_token"} <= set(context)


@BOTH_ENGINES
def test_headers_added_as_the_answer_leaves_are_sent_once_each(reader, client):
    from gate.web import _PAGE_HEADERS

    reader.signup("headers@example.com")
    answers = [client.get(f"/articles/{METERED}"), client.head(f"/articles/{METERED}"),
               client.get("/api/meter"), client.get("/articles/no-such-article"),
               client.post(f"/api/articles/{METERED}/unlock", headers={"X-CSRFToken": reader.token()}),
               client.post(f"/articles/{METERED}/unlock", data={"csrf_token": reader.token()})]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 404, 200, 303]
    for answer in answers:
        for name, value in _PAGE_HEADERS:
            assert answer.headers.getlist(name) == [value], (answer.request.path, name)


def test_a_leaving_header_gives_way_to_one_set_before_the_answer_left(app, client):
    from gate.app.plumbing import leaving_headers

    @app.get("/leaving-test")
    def leaving_test():
        response = app.response_class("x")
        response.leave_with(leaving_headers([("X-Example", "ours"), ("Vary", "Cookie")]))
        response.headers["x-example"] = "the view's"
        return response

    answer = client.get("/leaving-test")
    assert answer.headers.getlist("X-Example") == ["the view's"] and answer.headers.getlist("Vary") == ["Cookie"]


def test_a_leaving_header_is_checked_for_newlines_once_when_built():
    import pytest

    from gate.app.plumbing import leaving_headers

    with pytest.raises(ValueError, match="X-Bad"):
        leaving_headers([("X-Bad", "one\r\nSet-Cookie: injected=1")])


@BOTH_ENGINES
def test_the_requests_account_is_flask_logins_current_user(app, reader, client):
    from flask_login import current_user, logout_user

    from gate.app.context import account

    reader.signup("account@example.com")
    cookie = client.get_cookie("session", domain="meridian.test").value
    with app.test_request_context(f"/articles/{METERED}", headers={"Cookie": f"session={cookie}"}):
        app.preprocess_request()
        first = account()  # before anything loaded the user: loads it as current_user does
        assert first.is_authenticated and first.email == "account@example.com"
        assert first is current_user._get_current_object() and account() is first
        logout_user()
        assert not account().is_authenticated and account() is current_user._get_current_object()
    with app.app_context():
        assert account() is None  # no request: no user, as current_user gives


@BOTH_ENGINES
def test_with_limits_off_a_limited_view_runs_without_the_limiters_wrapper(tmp_path, app, engine):
    from gate import create_app

    assert ratelimit.limited(app.view_functions["api.unlock"])  # limits on: wrapped
    off = create_app({**{key: app.config[key] for key in ("DATABASE", "SECRET_KEY", "SERVER_NAME")},
                      "TESTING": True, "RATELIMIT_ENABLED": False})
    unlock = off.view_functions["api.unlock"]
    assert not ratelimit.limited(unlock) and unlock.__name__ == "unlock" and unlock.__module__ == "gate.web.api"
    assert not any(ratelimit.limited(view) for view in off.view_functions.values())
    reader = Reader(off.test_client())
    reader.signup("unlimited@example.com")
    answer = reader.client.post(f"/api/articles/{METERED}/unlock", headers={"X-CSRFToken": reader.token()})
    assert answer.get_json()["spent"] is True and "X-RateLimit-Limit" not in answer.headers


def test_every_article_route_named_exists_and_serves_a_slug(app):
    from gate.app.site import ARTICLE_ROUTES

    rules = {rule.endpoint: rule for rule in app.url_map.iter_rules()}
    assert ARTICLE_ROUTES <= set(rules)
    assert all("slug" in rules[endpoint].arguments for endpoint in ARTICLE_ROUTES)


def test_a_function_made_for_each_request_is_not_kept_for_ever(app, client, monkeypatch):
    from flask import after_this_request

    from gate.app import plumbing

    monkeypatch.setattr(plumbing, "KEEP_SYNCED", len(app._sync) + 5)

    @app.get("/per-request-hook")
    def per_request_hook():
        after_this_request(lambda response: response)  # a new function every request
        return "x"

    for _ in range(20):
        assert client.get("/per-request-hook").status_code == 200
    assert len(app._sync) <= plumbing.KEEP_SYNCED


def _recording_site(cls):
    """A bare site of class ``cls`` with app and blueprint hooks and context processors that record their order."""
    from flask import Blueprint, after_this_request, render_template_string

    app, ran = cls(__name__), []
    app.secret_key = "test"
    part = Blueprint("part", __name__)

    def hook(name, answer=None):
        def run(response=None):
            ran.append(name)
            return response if response is not None else answer
        run.__name__ = name
        return run

    @part.get("/page")
    def page():
        after_this_request(hook("this request's"))
        ran.append("view")
        return render_template_string("{{ mine }} {{ shared }}", mine="passed to the render")

    @part.get("/refused")
    def refused():
        ran.append("view")
        return "never"

    part.before_request(hook("part before 1"))
    part.before_request(hook("part before 2"))
    part.after_request(hook("part after 1"))
    part.after_request(hook("part after 2"))
    part.context_processor(lambda: ran.append("part context") or {"mine": "the blueprint's", "shared": "part"})
    part.teardown_request(hook("part teardown 1"))
    part.teardown_request(hook("part teardown 2"))
    app.teardown_request(hook("app teardown 1"))
    app.teardown_request(hook("app teardown 2"))
    app.before_request(hook("app before 1"))
    app.before_request(lambda: "refused by a hook" if request.path == "/refused" else None)
    app.after_request(hook("app after 1"))
    app.after_request(hook("app after 2"))
    app.context_processor(lambda: ran.append("app context") or {"shared": "app"})
    app.register_blueprint(part)
    return app, ran


def test_hooks_and_context_processors_run_in_flasks_order_and_a_hooks_answer_ends_the_request():
    import flask

    from gate.app.plumbing import Site

    seen = {}
    for cls in (flask.Flask, Site):
        app, ran = _recording_site(cls)
        client = app.test_client()
        answers = [client.get("/page").get_data(as_text=True) for _ in range(2)]  # the second from the kept lists
        refused = client.get("/refused").get_data(as_text=True)
        seen[cls.__name__] = (answers, refused, ran)
    assert seen["Site"] == seen["Flask"]
    answers, refused, ran = seen["Site"]
    assert answers == ["passed to the render part"] * 2 and refused == "refused by a hook"
    assert ran[:ran.index("view")] == ["app before 1", "part before 1", "part before 2"]
    last = len(ran) - 1 - ran[::-1].index("app before 1")  # the refused request's hooks
    assert ran[last:] == ["app before 1", "part after 2", "part after 1", "app after 2", "app after 1",
                          "part teardown 2", "part teardown 1", "app teardown 2", "app teardown 1"]


def test_a_failing_views_error_reaches_the_teardown_hooks_and_signal_as_under_flask():
    import flask
    from flask.signals import request_tearing_down

    from gate.app.plumbing import Site

    seen = {}
    for cls in (flask.Flask, Site):
        app, ran = cls(__name__), []
        part = flask.Blueprint("part", __name__)

        @part.get("/fails")
        def fails():
            raise RuntimeError("broken view")

        part.teardown_request(lambda error, ran=ran: ran.append(("part", repr(error))))
        app.teardown_request(lambda error, ran=ran: ran.append(("app", repr(error))))
        app.register_blueprint(part)

        def heard(sender, exc=None, ran=ran, **_):
            ran.append(("signal", repr(exc)))

        request_tearing_down.connect(heard, app)
        try:
            for _ in range(2):  # the second from the kept lists
                assert app.test_client().get("/fails").status_code == 500
        finally:
            request_tearing_down.disconnect(heard, app)
        seen[cls.__name__] = ran
    error = repr(RuntimeError("broken view"))
    assert seen["Site"] == seen["Flask"] == [("part", error), ("app", error), ("signal", error)] * 2


def test_an_unchanged_session_only_varies_the_answer_and_a_changed_one_is_written(app, client):
    from flask import session

    @app.get("/own-vary")
    def own_vary():
        session.get("anything")  # read, not changed
        return "x", 200, {"Vary": "Accept"}

    @app.get("/changes-session")
    def changes_session():
        session["note"] = "kept"
        return "x"

    answer = client.get("/own-vary")
    assert answer.headers.getlist("Vary") == ["Accept, Cookie"] and "Set-Cookie" not in answer.headers
    answer = client.get("/changes-session")
    assert "Set-Cookie" in answer.headers and answer.headers.getlist("Vary") == ["Cookie"]
    answer = client.get(f"/articles/{METERED}")
    assert answer.headers.getlist("Vary") == ["Cookie"]


def test_an_article_pages_canonical_url_is_the_one_the_url_map_builds(app):
    from gate.app import site

    for slug in (METERED, "caf\u00e9 au lait", "a/b", "x%2Fy", "tilde~dot.under_score"):
        with app.test_request_context(f"/articles/{urllib.parse.quote(slug, safe='~')}"):
            app.preprocess_request()
            assert site.canonical_url("reading.article", "slug", slug) == \
                site.absolute_url("reading.article", slug=slug), slug
    with app.test_request_context(f"/articles/{METERED}"):  # asked for another page: built, not copied
        assert site.canonical_url("reading.article", "slug", "another") == \
            site.absolute_url("reading.article", slug="another")


def _proxy_reads(monkeypatch) -> list[tuple[str, str]]:
    """(module, attribute) of each attribute read through one of Flask's proxies from now on."""
    reads = []

    def counted(proxy, name):
        reads.append((sys._getframe(1).f_globals.get("__name__", ""), name))
        return getattr(proxy._get_current_object(), name)

    monkeypatch.setattr(LocalProxy, "__getattr__", counted)
    return reads


def test_the_pages_and_the_unlock_read_no_attribute_through_flasks_proxies(reader, client, monkeypatch):
    """Gate's own code takes the request, session, ``g`` and app once, never each attribute through a proxy.

    On Python 3.11 every such read first fails as an ordinary attribute (see
    gate.app.plumbing): about a microsecond each, some twenty an unlock and thirty a page before.
    Flask's and Flask-Login's own reads are theirs.
    """
    reads = _proxy_reads(monkeypatch)
    assert client.get(f"/articles/{METERED}").status_code == 200  # anonymous: the teaser
    reader.signup("proxies@example.com")
    assert client.get(f"/articles/{METERED}").status_code == 200  # registered, quota left
    reader.unlock(METERED)
    token = reader.token()
    reads.clear()
    for _ in range(2):  # the article unlocked, then the unlock API on it
        assert client.get(f"/articles/{METERED}").status_code == 200
        answer = client.post(f"/api/articles/{METERED}/unlock", headers={"X-CSRFToken": token})
        assert answer.get_json()["reason"] == "already_unlocked"
    assert reads, "the counting proxy saw nothing: Flask's own reads should show"
    gates = [read for read in reads if read[0].startswith("gate.")]
    assert gates == [], gates
