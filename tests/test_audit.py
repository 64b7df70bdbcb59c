"""The invariant audit: a real site's history is clean, and each kind of tampering is named."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import timedelta

import pytest

from gate import audit, create_app
from gate.cli.audit import audit as audit_command
from gate.conf.settings import Config
from gate.rules.timeutil import from_iso, to_iso
from gate.services import seed
from gate.storage.clock import Clock
from gate.storage.db import connect, open_database
from tests.helpers import (
    CARD,
    FREE,
    KEY,
    METERED,
    PREMIUM,
    START,
    WEEKLY,
    Reader,
    confirm_path,
    last_mail,
    pay,
    publish,
    signup_with_list,
)

PASSWORD = "reader-pass-1"


def cli(runner, *args):
    """Run a `gate` command that must succeed."""
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result.output


def person(app) -> Reader:
    """A new browser."""
    return Reader(app.test_client())


def published_metered(db, count: int = 14) -> list[str]:
    """Slugs of metered articles already published at START (demo and synthetic)."""
    rows = db.execute("select slug from articles where access_class = 'metered' and published_at <= ?"
                      " order by synthetic, slug limit ?", [to_iso(START), count]).fetchall()
    assert len(rows) == count
    return [row[0] for row in rows]


def reader_id(db, email: str) -> int:
    return db.execute("select id from readers where email = ?", [email]).fetchone()[0]


def read(who: Reader, slug: str) -> dict:
    """Open an article page, then report what the JSON API says about it (both record views)."""
    assert who.client.get(f"/articles/{slug}").status_code == 200
    return who.article(slug)


def metered_by_view(app, db, runner, slugs):
    """Classic meter: a visitor reads to the limit, signs up (the meter moves along), reads on."""
    cli(runner, "preset", "use", "metered")
    anna = person(app)
    for slug in slugs[:5]:
        assert read(anna, slug)["access"] == "full"
    assert read(anna, slugs[5])["reason"] == "meter_exhausted"
    assert read(anna, slugs[0])["reason"] == "already_unlocked"
    read(anna, FREE), read(anna, PREMIUM)
    anna.signup("anna@example.com", PASSWORD)
    for slug in slugs[5:11]:
        read(anna, slug)
    assert anna.meter()["used"] == 10 and read(anna, slugs[11])["access"] == "teaser"
    anna.logout()
    for slug in slugs[2:4] + slugs[11:12]:  # logged out: a new visitor's meter
        read(anna, slug)
    anna.login("anna@example.com", PASSWORD)  # merges those spends into the account
    assert read(anna, slugs[11])["reason"] == "already_unlocked"
    return anna


def choice_unlocks(app, db, runner, slugs):
    """Three of your choice: three unlocks, a refused fourth, re-reads."""
    cli(runner, "preset", "use", "wpr")
    ben = person(app)
    ben.signup("ben@example.com", PASSWORD)
    for slug in slugs[:3]:
        ben.unlock(slug)
    ben.unlock(slugs[3])  # refused: meter exhausted
    assert ben.post_json(f"/api/articles/{slugs[4]}/unlock").status_code == 403
    assert read(ben, slugs[0])["reason"] == "already_unlocked"
    assert read(ben, slugs[3])["access"] == "teaser"
    read(ben, FREE)
    return ben


def subscriptions(app, db, runner):
    """A 0341 card that will fail its renewal, a trial, a cancel-and-resume, a CLI subscriber."""
    cara = person(app)
    cara.signup("cara@example.com", PASSWORD)
    assert pay(cara, card_number="4000 0000 0000 0341").status_code == 303
    assert read(cara, METERED)["reason"] == "subscriber" and read(cara, PREMIUM)["access"] == "full"
    gus = person(app)
    gus.signup("gus@example.com", PASSWORD)
    assert pay(gus, "annual").status_code == 303  # 14-day trial, then the card is charged
    hal = person(app)
    hal.signup("hal@example.com", PASSWORD)
    pay(hal, card_number="4000 0000 0000 0002")  # declined: incomplete
    pay(hal)  # completed with a good card
    hal.post("/account/subscription/cancel")
    hal.post("/account/subscription/resume")
    wes = person(app)
    wes.signup("wes@example.com", PASSWORD)
    assert pay(wes, code="WELCOME50").status_code == 303  # half price for three months, then the list price
    kim, lou = person(app), person(app)  # a save discount, and a month's pause the clock ends
    for who, email, reason in ((kim, "kim@example.com", "too_expensive"), (lou, "lou@example.com", "not_reading")):
        who.signup(email, PASSWORD)
        pay(who)
        who.post("/account/subscription/reason", {"reason": reason})
        assert who.post("/account/subscription/save", {"months": "1"}).status_code == 303
    cli(runner, "readers", "add", "erin@example.com", "--subscriber")
    cli(runner, "readers", "add", "ivy@example.com", "--password", PASSWORD)
    cli(runner, "readers", "comp", "ivy@example.com", "--until", "2026-12-10")
    ivy = person(app)
    ivy.login("ivy@example.com", PASSWORD)
    assert read(ivy, PREMIUM)["reason"] == "subscriber"
    pia = person(app)
    pia.signup("pia@example.com", PASSWORD)
    key = KEY.search(pia.client.get("/pass/day").get_data(as_text=True)).group(1)
    assert pia.post("/pass/day", {**CARD, "idempotency_key": key}).status_code == 303
    assert read(pia, PREMIUM)["reason"] == "pass"  # and a month on (time_passes) the pass has expired
    return cara


def gift_links(app, cara):
    """Cara gifts the premium article; a visitor opens the link and reads it, twice."""
    url = cara.post_json(f"/api/articles/{PREMIUM}/gift").get_json()["url"]
    path = url.split("meridian.test", 1)[1]
    guest = person(app)
    guest.client.get(path)
    guest.post(path)
    assert read(guest, PREMIUM)["reason"] == "gift" and read(guest, PREMIUM)["access"] == "full"


def newsletters(app, db, runner):
    """Double opt-in, a send, a one-click unsubscribe, and sends that must skip the leaver."""
    dan, eve = person(app), person(app)
    for who, email in ((dan, "dan@example.com"), (eve, "eve@example.com")):
        signup_with_list(who, email)
        who.post(confirm_path(db, email))
    publish(db, "audit-fresh-1", START - timedelta(hours=1))
    assert "to 2 reader(s)" in cli(runner, "newsletter", "send", WEEKLY)
    link = last_mail(db, "dan@example.com", f"newsletter:{WEEKLY}")["headers"]["List-Unsubscribe"]
    path = re.search(r"<http://meridian\.test(/newsletter/unsubscribe/[^>]+)>", link).group(1)
    assert app.test_client().post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    publish(db, "audit-fresh-2", START + timedelta(hours=1))
    cli(runner, "clock", "advance", "2h")
    assert "to 1 reader(s)" in cli(runner, "newsletter", "send", WEEKLY)


def console(app, db, runner, slugs):
    """An admin resets a meter, grants a comp, cancels a subscription and switches the rules."""
    cli(runner, "readers", "add", "boss@example.com", "--password", PASSWORD, "--admin")
    boss = person(app)
    boss.login("boss@example.com", PASSWORD)
    anna = reader_id(db, "anna@example.com")
    assert boss.post(f"/admin/readers/{anna}/reset-meter").status_code == 303
    assert boss.post(f"/admin/readers/{anna}/comp", {"until": "2026-12-20"}).status_code == 303
    assert boss.post(f"/admin/readers/{reader_id(db, 'erin@example.com')}/cancel").status_code == 303
    assert boss.post("/admin/rules", {"preset": "metered-ab"}).status_code == 303
    for n in range(4):  # visitors land in both arms of the A/B test
        visitor = person(app)
        for slug in slugs[n:n + 6]:
            read(visitor, slug)


def demo_personas(app, runner):
    """Every persona, twice, and a classroom lesson that switches preset and persona at once."""
    app.config["DEMO"] = True
    presenter = person(app)
    for persona in ["anonymous", "new-reader", "one-left", "none-left", "trialing", "active", "past-due",
                    "lapsed", "day-pass", "licensed"] * 2:
        presenter.post("/demo/persona", {"persona": persona, "next": "/"})
        read(presenter, METERED), read(presenter, PREMIUM)
    presenter.post("/learn/try/metered-choice")
    presenter.post("/demo/persona", {"persona": "one-left", "next": "/"})
    spent = presenter.client.get("/account").status_code
    assert spent == 200
    app.config["DEMO"] = False


def time_passes(app, db, runner, cara, slugs):
    """A month on: the 0341 renewal fails (grace), then retries run out; issues go out on schedule."""
    cli(runner, "clock", "advance", "31d")
    assert db.execute("select status from subscriptions where reader_id = ?",
                      [reader_id(db, "cara@example.com")]).fetchone()[0] == "past_due"
    assert read(cara, METERED)["reason"] == "subscriber"  # grace period
    cli(runner, "clock", "advance", "10d")
    assert read(cara, METERED)["access"] == "teaser" or cara.meter()["tier"] == "registered"
    ben = person(app)
    ben.login("ben@example.com", PASSWORD)  # a new month: three more of his choice
    for slug in slugs[6:9]:
        ben.unlock(slug)
    cli(runner, "preset", "use", "wpr")


def dynamic_meter(app, db, runner, slugs):
    """The dynamic meter: a visitor reads until their band's allowance is spent; a new account unlocks two."""
    cli(runner, "preset", "use", "dynamic")
    dee = person(app)
    for slug in slugs[:6]:
        read(dee, slug)
    meter = dee.meter()
    assert meter["score"] is not None and meter["used"] == meter["allowance"] < 5  # reading raised the score
    assert read(dee, slugs[6])["reason"] == "meter_exhausted"
    dia = person(app)
    dia.signup("dia@example.com", PASSWORD)
    for slug in slugs[7:9]:
        assert dia.unlock(slug).status_code == 303
    assert dia.meter()["used"] == 2
    cli(runner, "preset", "use", "wpr")
    cli(runner, "clock", "advance", "1h")  # what later tampering plants falls after the dynamic meter's instant


def build(app, db, runner):
    """Drive a site through signups, unlocks, checkouts, newsletters, personas, the console and time."""
    # Upcoming articles (published as the clock passes them) and generated ones, to read plenty.
    cli(runner, "db", "seed", "--synthetic", "40")
    slugs = published_metered(db)
    metered_by_view(app, db, runner, slugs)
    choice_unlocks(app, db, runner, slugs)
    cara = subscriptions(app, db, runner)
    gift_links(app, cara)
    newsletters(app, db, runner)
    console(app, db, runner, slugs)
    demo_personas(app, runner)
    time_passes(app, db, runner, cara, slugs)
    dynamic_meter(app, db, runner, slugs)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One realistic site for the module (as tests/conftest.py builds one per test), driven once."""
    path = tmp_path_factory.mktemp("audit") / "gate.sqlite"
    app = create_app({"TESTING": True, "DATABASE": str(path), "SECRET_KEY": "test-secret-key",
                      "SERVER_NAME": "meridian.test"})
    db = connect(path)
    seed.seed_articles(db)
    Clock(db, real=lambda: START).set(START, freeze=True)
    build(app, db, app.test_cli_runner())
    db.close()
    return app


#: The site's tables, parents before children (the order the migrations made them).
TABLES = ("readers", "visitors", "articles", "unlocks", "events", "clock", "settings", "outbox", "login_tokens",
          "subscriptions", "payments", "checkouts", "enrollments", "consents", "newsletter_issues",
          "deliveries", "notices", "passes", "offers", "redemptions", "reader_sessions", "gift_links")


def copy_to_postgres(source: str, url: str) -> None:
    """Copy every row of a SQLite site into a migrated PostgreSQL one, ids and all.

    Until a site can run on PostgreSQL (i14-core), this is how the audit gets a
    real history there: the same rows, read through the other engine.
    """
    from gate.storage.engine import to_pyformat

    sqlite, pg = connect(source), open_database(url)
    try:
        with pg.transaction():
            for table in TABLES:
                rows = sqlite.execute(f"select * from {table}").fetchall()
                columns = [column for column in sqlite[table].columns_dict]
                if rows:
                    sql = f"insert into {table} ({', '.join(columns)}) values ({', '.join('?' * len(columns))})"
                    pg.conn.cursor().executemany(to_pyformat(sql), rows)
                if "id" in columns and table not in ("visitors",):
                    pg.execute(f"select setval(pg_get_serial_sequence('{table}', 'id'),"
                               f" (select coalesce(max(id), 0) + 1 from {table}), false)")
    finally:
        sqlite.close(), pg.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def copy(request, site, tmp_path):
    """A private copy of the clean site's database on each engine, to tamper with: (path or URL, seam)."""
    if request.param == "sqlite":
        target = tmp_path / "copy.sqlite"
        source, copied = sqlite3.connect(site.config["DATABASE"]), sqlite3.connect(target)
        source.backup(copied)
        source.close(), copied.close()
    else:
        target = request.getfixturevalue("pg_database")
        copy_to_postgres(site.config["DATABASE"], target)
    db = open_database(target)
    yield target, db
    db.close()


def kinds(found) -> set[str]:
    return {violation.kind for violation in found}


def test_a_real_sites_history_is_clean(copy):
    _, db = copy
    found = audit.run(db, Config())
    covered = audit.scope(db)
    assert found == [], "\n".join(f"{v.kind}: {v.message}" for v in found)
    # The history covers every area the audit checks.
    assert covered["unlocks"] >= 15 and covered["views"] >= 60 and covered["subscriptions"] >= 8
    assert covered["payments"] >= 10 and covered["newsletters"] >= 5 and covered["deliveries"] >= 5
    assert db.scalar("select count(*) from unlocks where score is not null and allowance is not null") >= 3


def test_spends_under_a_students_preview_are_checked_by_the_previewed_preset(app, db):
    """A demo preview is not in the site's preset history: its events name the preset they ran under."""
    app.config["DEMO"] = True
    student = person(app)
    student.post("/learn/try/metered-view")  # the anonymous persona, previewing the classic meter
    for slug in published_metered(db, 5):
        assert read(student, slug)["access"] == "full"
    student.post("/demo/persona", {"persona": "one-left", "next": "/"})  # nine of the preview's ten spent
    assert student.meter()["remaining"] == 1 and student.meter()["limit"] == 10
    assert db.execute("select value from settings where key = 'preset'").fetchone() is None  # still wpr
    found = audit.run(db, Config())
    assert found == [], "\n".join(f"{v.kind}: {v.message}" for v in found)


def test_command_passes_a_clean_site(site):
    result = site.test_cli_runner().invoke(audit_command, [])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Audit clean: no rule broken (")
    report = json.loads(site.test_cli_runner().invoke(audit_command, ["--json"]).output)
    assert report["ok"] is True and report["violations"] == 0 and report["found"] == []


def test_command_reads_the_app_database_by_default(app, runner, reader, clock):
    reader.signup("solo@example.com")
    reader.unlock(METERED)
    clock.advance(timedelta(days=1))
    assert runner.invoke(audit_command, []).exit_code == 0
    db = connect(app.config["DATABASE"])
    db.execute("delete from events where type = 'unlock'")
    db.close()
    result = runner.invoke(audit_command, [])
    assert result.exit_code == 1 and "unlock_without_event:" in result.output


# --- tampering: each kind of broken rule, and only that kind, is named -------------------------


def _one(db, sql, params=()):
    return db.execute(sql, list(params)).fetchone()


def _reader(db, email):
    return reader_id(db, email)


def _insert_event(db, type, at, data, **who):
    db.execute("insert into events (at, type, reader_id, visitor_id, slug, data) values (?, ?, ?, ?, ?, ?)",
               [at, type, who.get("reader_id"), who.get("visitor_id"), who.get("slug"), json.dumps(data)])


def fourth_unlock(db):
    """Ben's refused fourth unlock is made to have been granted (row and event both)."""
    event_id, at, rid, slug = _one(db, "select id, at, reader_id, slug from events where type = 'unlock_refused'"
                                   " and reader_id = ? order by id limit 1", [_reader(db, "ben@example.com")])
    window = _one(db, "select window_key from unlocks where meter_key = ? order by id limit 1", [f"reader:{rid}"])[0]
    db.execute("update events set type = 'unlock', data = ? where id = ?",
               [json.dumps({"used": 4, "limit": 3, "mode": "choice", "via": "unlock"}), event_id])
    db.execute("insert into unlocks (meter_key, slug, window_key, unlocked_at) values (?, ?, ?, ?)",
               [f"reader:{rid}", slug, window, at])
    return event_id


def fourth_unlock_committed_first(db):
    """As above, but the extra spend's clock reading is older than the others: a concurrent request
    that read the clock first and committed last still made four in the window."""
    event_id = fourth_unlock(db)
    first = _one(db, "select min(unlocked_at) from unlocks where meter_key = ?",
                 [f"reader:{_reader(db, 'ben@example.com')}"])[0]
    earlier = to_iso(from_iso(first) - timedelta(seconds=1))
    db.execute("update unlocks set unlocked_at = ? where id = (select max(id) from unlocks)", [earlier])
    db.execute("update events set at = ? where id = ?", [earlier, event_id])


def view_without_unlock(db):
    """A full view 'paid for by the meter' of an article Ben never unlocked."""
    rid = _reader(db, "ben@example.com")
    unlocked = {row[0] for row in db.execute("select slug from events where type = 'unlock' and reader_id = ?", [rid])}
    slug = next(s for s in published_metered(db) if s not in unlocked)
    at = _one(db, "select max(at) from events")[0]
    _insert_event(db, "article_view", at, {"access": "full", "reason": "meter_available", "preset": "wpr"},
                  reader_id=rid, slug=slug)


def view_with_bogus_reason(db):
    _insert_event(db, "article_view", _one(db, "select max(at) from events")[0],
                  {"access": "full", "reason": "looked_honest", "preset": "wpr"}, visitor_id="v-x", slug=METERED)


def view_as_phantom_subscriber(db):
    _insert_event(db, "article_view", _one(db, "select max(at) from events")[0],
                  {"access": "full", "reason": "subscriber", "preset": "wpr"},
                  reader_id=_reader(db, "ben@example.com"), slug=PREMIUM)


def spend_while_subscribed(db):
    """Cara's view as a subscriber becomes a spend of her meter at that moment."""
    event_id, at, rid, slug = _one(db, "select id, at, reader_id, slug from events where type = 'article_view'"
                                   " and reader_id = ? and slug = ? order by id limit 1",
                                   [_reader(db, "cara@example.com"), METERED])
    db.execute("update events set type = 'unlock', data = '{}' where id = ?", [event_id])
    db.execute("insert into unlocks (meter_key, slug, window_key, unlocked_at) values (?, ?, 'month:2026-11', ?)",
               [f"reader:{rid}", slug, at])


def impossible_subscription(db):
    db.execute("update subscriptions set current_period_end = current_period_start"
               " where id = (select min(id) from subscriptions where status = 'active')")


def overlapping_subscription(db):
    """A second subscription for Hal, started while his first is live."""
    rid = _reader(db, "hal@example.com")
    start, end = to_iso(START + timedelta(days=3)), to_iso(START + timedelta(days=33))
    sub = db.insert("subscriptions", {
        "reader_id": rid, "plan_id": "monthly", "status": "active", "card_last4": "4242", "created_at": start,
        "anchor": start, "current_period_start": start, "current_period_end": end})
    _insert_event(db, "subscription_changed", start, {"subscription_id": sub, "plan": "monthly", "from": None,
                                                      "to": "active", "reason": "checkout", "by": "checkout"},
                  reader_id=rid)


def orphan_payment(db):
    db.insert("payments", {"subscription_id": None, "reader_id": _reader(db, "cara@example.com"),
                           "at": to_iso(START), "amount_cents": 1200, "currency": "USD",
                           "outcome": "succeeded", "kind": "checkout", "card_last4": "4242"})


def negative_charge(db):
    sub, rid = _one(db, "select id, reader_id from subscriptions where reader_id = ?",
                    [_reader(db, "cara@example.com")])
    db.insert("payments", {"subscription_id": sub, "reader_id": rid, "at": to_iso(START), "amount_cents": -1200,
                           "currency": "USD", "outcome": "succeeded", "kind": "refund", "card_last4": "4242"})


def status_disagrees(db):
    db.execute("update subscriptions set status = 'unpaid' where reader_id = ?", [_reader(db, "cara@example.com")])


def mail_after_unsubscribe(db):
    """Dan left the weekly list; an issue sent after that is forged to have reached him too."""
    rid = _reader(db, "dan@example.com")
    issue, when = _one(db, "select i.id, i.scheduled_for from newsletter_issues i where i.list_id = ? and not exists"
                       " (select 1 from deliveries d where d.issue_id = i.id and d.reader_id = ?) order by i.id",
                       [WEEKLY, rid])
    headers = {"To": "dan@example.com", "X-Gate-List": WEEKLY, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    message = db.insert("outbox", {"created_at": when, "kind": f"newsletter:{WEEKLY}", "to_addr": "dan@example.com",
                                   "subject": "The Meridian Weekly", "headers": json.dumps(headers)})
    db.execute("insert into deliveries (issue_id, reader_id, at, outbox_id) values (?, ?, ?, ?)",
               [issue, rid, when, message])


def lost_delivery(db):
    db.execute("delete from deliveries where (issue_id, reader_id) ="
               " (select issue_id, reader_id from deliveries order by issue_id, reader_id limit 1)")


def enrollment_disagrees(db):
    db.execute("update enrollments set status = 'active' where reader_id = ?", [_reader(db, "dan@example.com")])


def unlock_without_event(db):
    at = _one(db, "select max(at) from events")[0]
    db.execute("insert into unlocks (meter_key, slug, window_key, unlocked_at) values (?, ?, ?, ?)",
               [f"reader:{_reader(db, 'dan@example.com')}", METERED, "month:2027-01", at])


def view_after_pass(db):
    """Pia's day pass ended a month ago; a full read by it is forged for now."""
    _insert_event(db, "article_view", _one(db, "select max(at) from events")[0],
                  {"access": "full", "reason": "pass", "preset": "wpr"}, reader_id=_reader(db, "pia@example.com"),
                  slug=PREMIUM)


def pass_payment_without_its_pass(db):
    db.insert("payments", {"subscription_id": None, "pass_id": 999, "reader_id": _reader(db, "pia@example.com"),
                           "at": to_iso(START), "amount_cents": 300, "currency": "USD",
                           "outcome": "succeeded", "kind": "pass", "card_last4": "4242"})


def seats_over(db):
    """A one-seat licence is forged with two members at once (seat numbers differ, so the unique key lets it in)."""
    org = db.insert("orgs", {"slug": "tiny", "name": "Tiny", "seats": 1, "active_from": to_iso(START),
                             "created_at": to_iso(START)})
    for seat, email in enumerate(("ben@example.com", "dan@example.com"), start=1):
        db.insert("org_members", {"org_id": org, "reader_id": _reader(db, email), "seat": seat, "via": "invite",
                                  "joined_at": to_iso(START + timedelta(minutes=seat))})
def gift_over_allowance(db):
    """Cara's one gift link becomes eleven in one month (rows only: the allowance is counted on the links)."""
    link = db.first("select * from gift_links order by id limit 1")
    for _ in range(10):
        db.insert("gift_links", {key: value for key, value in link.items() if key != "id"})


def gift_over_devices(db):
    """Cara's link is forged to have opened on eleven devices with a cap of ten."""
    link_id = _one(db, "select min(id) from gift_links")[0]
    at = _one(db, "select max(unlocked_at) from unlocks where meter_key = ?", [f"giftlink:{link_id}"])[0]
    for n in range(10):
        db.execute("insert into unlocks (meter_key, slug, window_key, unlocked_at) values (?, ?, 'link', ?)",
                   [f"giftlink:{link_id}", f"visitor:forged-{n}", at])


def view_as_phantom_gift(db):
    """A visitor who never opened a gift link reads the gifted article 'as a gift'."""
    _insert_event(db, "article_view", _one(db, "select max(at) from events")[0],
                  {"access": "full", "reason": "gift", "preset": "wpr"}, visitor_id="v-no-gift", slug=PREMIUM)


def missing_signup(db):
    db.execute("delete from events where type = 'signup' and reader_id = ?", [_reader(db, "ben@example.com")])


def redeemed_past_the_cap(db):
    """WELCOME50 capped at one, and a second reader's redemption of it."""
    db.execute("update offers set cap = 1 where code = 'WELCOME50'")
    db.insert("redemptions", {"code": "WELCOME50", "reader_id": _reader(db, "cara@example.com"), "at": to_iso(START)})


def charge_naming_an_unredeemed_code(db):
    """A half-price charge on Cara's subscription, which never redeemed the code it names."""
    sub, rid = _one(db, "select id, reader_id from subscriptions where reader_id = ?", [_reader(db, "cara@example.com")])
    db.insert("payments", {"subscription_id": sub, "reader_id": rid, "at": to_iso(START), "amount_cents": 600,
                           "currency": "USD", "outcome": "succeeded", "kind": "card update", "card_last4": "4242",
                           "offer_code": "WELCOME50", "list_cents": 1200})


def redeemed_before_the_window(db):
    db.execute("update offers set starts_at = ? where code = 'WELCOME50'", [to_iso(START + timedelta(days=1))])


def discounted_past_its_periods(db):
    """Wes's discount kept for one period only, so his second half-price month had none."""
    db.execute("update subscriptions set discount_periods = 1 where offer_code = 'WELCOME50'")
def charge_in_pause(db):
    sub, rid = _one(db, "select id, reader_id from subscriptions where reader_id = ?",
                    [_reader(db, "lou@example.com")])
    db.insert("payments", {"subscription_id": sub, "reader_id": rid, "at": to_iso(START + timedelta(days=5)),
                           "amount_cents": 1200, "currency": "USD", "outcome": "succeeded", "kind": "renewal",
                           "card_last4": "4242"})


def second_save_offer(db):
    _insert_event(db, "save_offer_accepted", to_iso(START + timedelta(days=10)),
                  {"reason": "too_expensive", "offer": "discount"}, reader_id=_reader(db, "kim@example.com"))


def third_device_under_a_limit_of_two(db):
    """Dan signs in under a limit of two while two other sessions of his stay live: three at once."""
    rid, at = _reader(db, "dan@example.com"), _one(db, "select max(at) from events")[0]
    for token in ("planted-a", "planted-b"):
        db.insert("reader_sessions", {"token": token, "reader_id": rid, "created_at": at, "last_seen_at": at})
    _insert_event(db, "device_signed_in", at, {"limit": 2, "from": 1, "to": 2}, reader_id=rid)
def search_reads_over(db):
    """Two reads through the search side door in a day, under a preset (wpr) that opens none."""
    at = _one(db, "select max(at) from events")[0]
    for slug in (METERED, PREMIUM):
        db.execute("insert into unlocks (meter_key, slug, window_key, unlocked_at) values (?, ?, ?, ?)",
                   ["search:visitor:planted", slug, "day:2026-11-28", at])


def dynamic_grant_in_the_wrong_band(db):
    """The dynamic meter's first spend is recorded with another band's allowance than its score's."""
    unlock_id, allowance = _one(db, "select id, allowance from unlocks where score is not null order by id limit 1")
    db.execute("update unlocks set allowance = ? where id = ?", [3 if allowance == 5 else 5, unlock_id])


def dynamic_grant_over_its_allowance(db):
    """The visitor's last dynamic spend is made to have been granted under the top band (one article)."""
    meter = _one(db, "select meter_key from unlocks where score is not null and meter_key like 'visitor:%'"
                 " order by id limit 1")[0]
    last = _one(db, "select max(id) from unlocks where meter_key = ?", [meter])[0]
    db.execute("update unlocks set score = 100, allowance = 1 where id = ?", [last])


TAMPERING = [
    ("quota_exceeded", fourth_unlock),
    ("quota_exceeded", fourth_unlock_committed_first),
    ("quota_spent_by_subscriber", spend_while_subscribed),
    ("access_unjustified", view_with_bogus_reason),
    ("access_unjustified", view_as_phantom_gift),
    ("access_without_unlock", view_without_unlock),
    ("access_without_subscription", view_as_phantom_subscriber),
    ("subscription_impossible_state", impossible_subscription),
    ("subscriptions_overlap", overlapping_subscription),
    ("payment_without_subscription", orphan_payment),
    ("negative_charge", negative_charge),
    ("subscription_event_mismatch", status_disagrees),
    ("newsletter_not_enrolled", mail_after_unsubscribe),
    ("delivery_mismatch", lost_delivery),
    ("enrollment_event_mismatch", enrollment_disagrees),
    ("unlock_without_event", unlock_without_event),
    ("signup_mismatch", missing_signup),
    ("access_after_pass", view_after_pass),
    ("access_after_pass", pass_payment_without_its_pass),
    ("redemptions_over_cap", redeemed_past_the_cap),
    ("discount_without_offer", charge_naming_an_unredeemed_code),
    ("discount_without_offer", redeemed_before_the_window),
    ("discount_without_offer", discounted_past_its_periods),
    ("charge_during_pause", charge_in_pause),
    ("save_offers_per_year", second_save_offer),
    ("seats_over", seats_over),
    ("devices_over", third_device_under_a_limit_of_two),
    ("referral_over", search_reads_over),
    ("gift_allowance_over", gift_over_allowance),
    ("gift_opens_over", gift_over_devices),
    ("dynamic_band_mismatch", dynamic_grant_in_the_wrong_band),
    ("dynamic_over_allowance", dynamic_grant_over_its_allowance),
]


def test_every_kind_has_a_tampering_test():
    assert {kind for kind, _ in TAMPERING} == set(audit.KINDS)


@pytest.mark.parametrize("kind, tamper", TAMPERING, ids=[tamper.__name__ for _, tamper in TAMPERING])
def test_tampering_is_named_exactly(kind, tamper, copy, site):
    path, db = copy
    tamper(db)
    found = audit.run(db, Config())
    assert kinds(found) == {kind}, "\n".join(f"{v.kind}: {v.message}" for v in found)
    assert all(v.message and v.ids for v in found)
    result = site.test_cli_runner().invoke(audit_command, ["--database", str(path)])
    assert result.exit_code == 1
    assert f"{kind}: " in result.output and "Audit FAILED" in result.output.splitlines()[-1]
    report = json.loads(site.test_cli_runner().invoke(audit_command, ["--database", str(path), "--json"]).output)
    assert report["ok"] is False and set(report["by_kind"]) == {kind}


def test_missing_database_is_a_usage_error(site, tmp_path):
    result = site.test_cli_runner().invoke(audit_command, ["--database", str(tmp_path / "nope.sqlite")])
    assert result.exit_code == 2 and "does not exist" in result.output
