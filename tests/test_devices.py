"""Device limits: one session per signed-in device, a cap per account, the account page's device list."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from gate.audit.checks import check_devices
from gate.conf.settings import Config
from gate.services import accounts, devices, subscriptions
from gate.storage import migrations
from tests.helpers import BOTH_ENGINES, METERED, START, Reader, at_once

pytestmark = BOTH_ENGINES
PASSWORD = "shared-pass-1"
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Safari/604.1"
LAPTOP = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"


@pytest.fixture
def account(runner):
    """An account with a password, made from the CLI (so no device is signed in yet)."""
    result = runner.invoke(args=["readers", "add", "shared@example.com", "--password", PASSWORD])
    assert result.exit_code == 0, result.output
    return "shared@example.com"


@pytest.fixture
def device(app):
    """A new browser with its own User-Agent, signed in to ``email`` (password ``PASSWORD``)."""
    def sign_in(user_agent: str, email: str = "shared@example.com") -> Reader:
        client = app.test_client()
        client.environ_base["HTTP_USER_AGENT"] = user_agent
        browser = Reader(client)
        assert browser.login(email, PASSWORD).status_code == 303
        return browser
    return sign_in


def tier(browser: Reader) -> str:
    """Who the site takes this browser for now."""
    return browser.meter()["tier"]


def live(db, email="shared@example.com") -> list[dict]:
    """The account's live sessions, least recently seen first."""
    return accounts.live_sessions(db, accounts.by_email(db, email).id)


def flashes(browser: Reader) -> str:
    """The text of the next page (its flashed notices)."""
    return browser.client.get("/account", follow_redirects=True).get_data(as_text=True)


def device_events(db):
    """The device events, oldest first, as (type, data)."""
    return [(row["type"], json.loads(row["data"])) for row in
            db.rows("select type, data from events where type like 'device_%' order by id")]


@pytest.mark.parametrize("agent, name", [(PHONE, "Safari on iPhone"), (LAPTOP, "Firefox on Linux"),
                                         (DESKTOP, "Chrome on Windows"), ("", "Unknown device"),
                                         ("curl/8.5.0", "curl"), ("\x00evil\x1f agent", "evil")])
def test_a_user_agent_is_summarised_readably(agent, name, engine):
    if engine == "sqlite":  # pure: once is enough
        assert devices.summary(agent) == name


def test_each_device_has_its_own_session_and_logout_ends_only_its_own(account, device, db):
    phone, laptop = device(PHONE), device(LAPTOP)
    assert [row["user_agent"] for row in live(db)] == ["Safari on iPhone", "Firefox on Linux"]
    assert tier(phone) == tier(laptop) == "registered"
    phone.logout()
    assert tier(phone) == "anonymous" and tier(laptop) == "registered"
    assert [row["user_agent"] for row in live(db)] == ["Firefox on Linux"]
    assert device_events(db)[-1][1] | {"sessions": None} == {"reason": "user", "from": 2, "to": 1, "sessions": None}


def test_one_device_over_the_limit_signs_out_the_least_recently_seen_with_a_notice_on_both(
        account, device, db, runner, clock):
    runner.invoke(args=["preset", "use", "metered-verified"])  # [devices] limit = 2
    phone, laptop = device(PHONE), device(LAPTOP)
    clock.advance(timedelta(minutes=5))
    assert tier(phone) == "registered"  # the phone is seen again: the laptop is now the least recent
    desktop = device(DESKTOP)
    assert "we signed you out of Firefox on Linux last seen" in flashes(desktop)
    assert [row["user_agent"] for row in live(db)] == ["Safari on iPhone", "Chrome on Windows"]
    notice = flashes(laptop)
    assert "you were signed out because your account signed in on another device" in notice.lower()
    assert tier(laptop) == "anonymous" and "signed in on another device" not in flashes(laptop)  # said once
    assert tier(phone) == tier(desktop) == "registered"
    signed_in, signed_out = device_events(db)[-1], device_events(db)[-2]
    assert signed_in[0] == "device_signed_in" and signed_in[1] | {"device": None} == {
        "method": "password", "limit": 2, "from": 1, "to": 2, "device": None}
    assert signed_out[0] == "device_signed_out" and signed_out[1]["reason"] == "limit"
    assert (signed_out[1]["from"], signed_out[1]["to"]) == (2, 1)
    assert check_devices(db, Config()) == []


def test_the_last_seen_time_is_written_at_most_once_a_minute(account, device, db, clock):
    phone = device(PHONE)
    seen = live(db)[0]["last_seen_at"]
    clock.advance(timedelta(seconds=30))
    tier(phone)
    assert live(db)[0]["last_seen_at"] == seen
    clock.advance(timedelta(minutes=1))
    tier(phone)
    assert live(db)[0]["last_seen_at"] > seen


def test_a_signed_in_page_stays_one_read_and_writes_last_seen_once_a_minute(
        account, device, clock, statements):  # noqa: F811 - the fixture imported above
    phone = device(PHONE)
    phone.client.get(f"/articles/{METERED}")
    clock.advance(timedelta(minutes=2))
    statements.clear()
    assert phone.client.get(f"/articles/{METERED}").status_code == 200
    stale = +statements
    statements.clear()
    assert phone.client.get(f"/articles/{METERED}").status_code == 200
    assert (stale["select"], statements["select"]) == (2, 1)  # the clock moved: its version, then the state, once
    assert stale["update"] == statements["update"] + 1  # the device's last-seen time, once


def test_a_subscribers_plan_sets_their_limit_and_the_preset_everyone_elses(app, db):
    with app.app_context():
        cfg = Config()
        cfg.plans = [plan.model_copy(update={"device_limit": 3}) if plan.id == "monthly" else plan
                     for plan in cfg.plans]
        rules = cfg.preset("metered-verified")
        reader = accounts.create(db, "limits@example.com", None, START)
        assert devices.limit_for(db, cfg, rules, reader, START) == 2
        assert devices.limit_for(db, cfg, cfg.preset("wpr"), reader, START) is None
        subscriptions.grant(db, cfg, reader.id, "monthly", START, by="test")
        assert devices.limit_for(db, cfg, rules, reader, START) == 3
        subscriptions.grant(db, cfg, accounts.create(db, "annual@example.com", None, START).id,
                            "annual", START, by="test")
        assert devices.limit_for(db, cfg, rules, accounts.by_email(db, "annual@example.com"), START) == 2


def test_twenty_concurrent_sign_ins_under_a_limit_of_four_leave_four(app, db):
    reader = accounts.create(db, "racer@example.com", None, START)
    agents = iter(range(20))

    def one(conn):
        return devices.sign_in(conn, reader, None, "password", START, user_agent=f"agent {next(agents)}", limit=4)

    won, lost = at_once(app.config["DATABASE"], 20, one)
    assert lost == [] and len(won) == 20
    sessions = accounts.live_sessions(db, reader.id)
    assert len(sessions) == 4 and sorted(row["slot"] for row in sessions) == [0, 1, 2, 3]
    assert db.scalar("select count(*) from reader_sessions where reader_id = ?", [reader.id]) == 20
    assert sum(len(signed.ended) for signed in won) == 16
    assert [data["to"] for kind, data in device_events(db) if kind == "device_signed_in"] == [1, 2, 3, 4] + [4] * 16
    assert check_devices(db, Config()) == []


def test_a_live_slot_is_unique_whatever_the_code_does(db):
    """The backstop behind the lock: two live sessions of one account can't hold one slot."""
    reader = accounts.create(db, "slot@example.com", None, START)
    row = {"reader_id": reader.id, "created_at": "2026-01-01", "last_seen_at": "2026-01-01", "slot": 0}
    db.insert("reader_sessions", {**row, "token": "one"})
    with pytest.raises(Exception, match="(?i)unique"):
        db.insert("reader_sessions", {**row, "token": "two"})


def test_the_account_page_lists_devices_and_signs_another_out(account, device, db):
    phone, laptop = device(PHONE), device(LAPTOP)
    page = laptop.client.get("/account").get_data(as_text=True)
    assert "Safari on iPhone" in page and "Firefox on Linux" in page and "This device" in page
    phone_id = live(db)[0]["id"]
    refused = laptop.client.post(f"/account/devices/{phone_id}/sign-out")  # no CSRF token
    assert refused.status_code == 400 and len(live(db)) == 2
    done = laptop.post(f"/account/devices/{phone_id}/sign-out")
    assert done.status_code == 303 and [row["user_agent"] for row in live(db)] == ["Firefox on Linux"]
    assert "signed out of this device from another one" in flashes(phone) and tier(phone) == "anonymous"
    own = live(db)[0]["id"]
    assert laptop.post(f"/account/devices/{own}/sign-out").status_code == 303
    assert len(live(db)) == 1 and tier(laptop) == "registered"  # this device signs out through /logout


def test_another_readers_device_cannot_be_signed_out(account, device, db, runner):
    runner.invoke(args=["readers", "add", "other@example.com", "--password", PASSWORD])
    mine, theirs = device(PHONE), device(LAPTOP, "other@example.com")
    their_id = live(db, "other@example.com")[0]["id"]
    mine.post(f"/account/devices/{their_id}/sign-out")
    assert tier(theirs) == "registered" and len(live(db, "other@example.com")) == 1


def test_sign_out_everywhere_ends_every_device(account, device, db):
    phone, laptop = device(PHONE), device(LAPTOP)
    assert laptop.post("/account/devices/sign-out-everywhere").status_code == 303
    assert live(db) == [] and tier(phone) == tier(laptop) == "anonymous"
    assert device_events(db)[-1][1]["reason"] == "everywhere"


def test_a_new_password_signs_every_device_out(account, device, db, runner):
    phone = device(PHONE)
    runner.invoke(args=["readers", "add", "shared@example.com", "--password", "another-pass-2"])
    assert live(db) == [] and tier(phone) == "anonymous"


def test_the_migration_keeps_everyone_signed_in(db):
    """Each account's session token from before becomes one live session."""
    db.execute("drop table reader_sessions")
    reader = accounts.create(db, "before@example.com", None, START)
    token = db.scalar("select session_token from readers where id = ?", [reader.id])
    migrations.m020_devices(db)
    assert accounts.by_session_token(db, token).id == reader.id


@pytest.mark.parametrize("preset, planted, left", [("metered-verified", 2, 2), ("wpr", 4, 5)])
def test_the_shared_account_persona_is_at_the_limit_and_becoming_it_signs_one_out(app, db, runner,
                                                                                   preset, planted, left):
    runner.invoke(args=["preset", "use", preset])
    app.config["DEMO"] = True
    presenter = Reader(app.test_client())
    answer = presenter.post("/demo/persona", {"persona": "shared-account", "next": "/account"})
    assert answer.status_code in (302, 303)
    page = flashes(presenter)
    assert len(live(db, "persona.shared@meridian.example")) == left
    if preset == "metered-verified":  # two planted, both older than this sign-in: the oldest goes
        assert "we signed you out of Chrome on Windows last seen" in page
        assert [row["user_agent"] for row in live(db, "persona.shared@meridian.example")][0] == "Safari on iPhone"
    else:  # no cap: four planted, and this one beside them
        assert "we signed you out" not in page and page.count('<tr class="device') == planted + 1


def test_a_device_signed_out_elsewhere_loses_its_remember_cookie_too(app, account, device, db):
    laptop = Reader(app.test_client())
    laptop.post("/login", {"email": "shared@example.com", "password": PASSWORD, "remember": "y"})
    remember = laptop.client.get_cookie("remember_token", domain="meridian.test").value
    phone = device(PHONE)
    phone.post(f"/account/devices/{live(db)[0]['id']}/sign-out")
    closed = Reader(app.test_client())  # the laptop's browser, reopened: only the remember cookie is left
    closed.client.set_cookie("remember_token", remember, domain="meridian.test")
    answer = closed.client.get("/api/meter")
    assert answer.get_json()["tier"] == "anonymous"
    assert "remember_token=;" in " ".join(answer.headers.getlist("Set-Cookie"))  # dropped, not kept
    assert tier(phone) == "registered"
