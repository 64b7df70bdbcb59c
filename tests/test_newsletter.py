"""Newsletters: consent, double opt-in, preferences, one-click unsubscribe, sends, SMTP, inbox."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from email.utils import format_datetime

import pytest
from markupsafe import escape

from gate.conf.settings import Config
from gate.loadtest.server import free_port
from gate.rules.timeutil import from_iso
from gate.services import newsletter
from tests.helpers import (
    BOTH_ENGINES,
    METERED,
    START,
    WEEKLY,
    Reader,
    confirm_path,
    gated_sentences,
    last_mail,
    magic_link,
    pay,
    publish,
    signup_with_list,
)

pytestmark = BOTH_ENGINES  # every test here runs its site on SQLite and on PostgreSQL


def status(db, email, list_id=WEEKLY):
    row = db.execute("select e.status from enrollments e join readers r on r.id = e.reader_id"
                     " where r.email = ? and e.list_id = ?", [email, list_id]).fetchone()
    return row[0] if row else None


def test_signup_records_consent_and_waits_for_confirmation(reader, db):
    signup_with_list(reader, "consent@example.com", next=f"/articles/{METERED}")
    assert status(db, "consent@example.com") == "pending"
    consent = next(db.query("select * from consents"))
    wording = Config().newsletters[0].consent_wording
    assert (consent["action"], consent["wording"], consent["ip"], consent["method"]) == (
        "granted", wording, "203.0.113.9", "signup")
    assert consent["source"] == f"/articles/{METERED}" and consent["at"].startswith("2026-11-28T17:00")
    page = reader.client.get("/signup").get_data(as_text=True)
    assert str(escape(wording)) in page


def test_unticked_box_enrolls_nothing(reader, db):
    signup_with_list(reader, "nothanks@example.com", tick=False)
    assert status(db, "nothanks@example.com") is None and db.scalar("select count(*) from consents") == 0
    assert last_mail(db, "nothanks@example.com") is None


def test_gate_form_carries_the_consent_checkbox(client):
    page = client.get(f"/articles/{METERED}").get_data(as_text=True)
    assert 'form="gate-signup"' in page and 'name="list_meridian_weekly"' in page


def test_double_opt_in_survives_a_prefetching_scanner(reader, client, db, app):
    signup_with_list(reader, "scanned@example.com")
    path = confirm_path(db, "scanned@example.com")
    scanner = app.test_client()
    for _ in range(3):
        response = scanner.get(path)
        assert response.status_code == 200 and response.headers["Referrer-Policy"] == "no-referrer"
        assert scanner.head(path).status_code == 200
    assert status(db, "scanned@example.com") == "pending"
    stranger = Reader(app.test_client())  # the link works from any browser, without a login
    assert stranger.post(path).status_code == 200
    assert status(db, "scanned@example.com") == "active"
    assert [r[0] for r in db.execute("select action from consents order by id")] == ["granted", "confirmed"]
    assert db.execute("select email_verified_at from readers where email = 'scanned@example.com'").fetchone()[0]


def test_confirmation_link_lasts_the_configured_days(reader, db, app, monkeypatch):
    import time_machine

    cfg = app.extensions["gate.config"]
    monkeypatch.setattr(cfg, "mail", cfg.mail.model_copy(update={"confirm_days": 2}))
    with time_machine.travel("2026-11-28 17:00:00+00:00", tick=False):
        signup_with_list(reader, "late@example.com")
        signup_with_list(Reader(app.test_client()), "prompt@example.com")
    with time_machine.travel("2026-11-30 16:59:00+00:00", tick=False):  # inside the two days
        assert reader.post(confirm_path(db, "prompt@example.com")).status_code == 200
    with time_machine.travel("2026-11-30 17:01:00+00:00", tick=False):  # two days and a minute later
        assert reader.post(confirm_path(db, "late@example.com")).status_code == 400
    assert status(db, "prompt@example.com") == "active" and status(db, "late@example.com") == "pending"


def test_tampered_confirmation_link_is_refused(reader, db):
    signup_with_list(reader, "tamper@example.com")
    path = confirm_path(db, "tamper@example.com")
    assert reader.client.get(path[:-4] + "abcd").status_code == 400
    assert reader.post(path[:-4] + "abcd").status_code == 400
    assert status(db, "tamper@example.com") == "pending"


def test_double_opt_in_off_enrolls_at_once(app, reader, db, monkeypatch):
    cfg = app.extensions["gate.config"]
    monkeypatch.setattr(cfg, "mail", cfg.mail.model_copy(update={"double_opt_in": False}))
    signup_with_list(reader, "direct@example.com")
    assert status(db, "direct@example.com") == "active"
    assert last_mail(db, "direct@example.com", "newsletter_confirmation") is None


def test_preference_center_switches_and_locks(reader, client, db):
    signup_with_list(reader, "prefs@example.com", tick=False)
    page = client.get("/account/newsletters").get_data(as_text=True)
    assert "The Meridian Weekly" in page and "Daily Review" in page
    assert page.count("Subscribe to get it") == 2  # both subscriber lists are locked
    reader.post("/account/newsletters", {"list": WEEKLY, "action": "on"})
    assert status(db, "prefs@example.com") == "pending"
    reader.post(confirm_path(db, "prefs@example.com"))
    assert status(db, "prefs@example.com") == "active"
    reader.post("/account/newsletters", {"list": WEEKLY, "action": "off"})
    assert status(db, "prefs@example.com") == "unsubscribed"
    locked = reader.post("/account/newsletters", {"list": "daily-review", "action": "on"})
    assert locked.status_code == 303 and status(db, "prefs@example.com", "daily-review") is None
    assert reader.post("/account/newsletters", {"list": "nope", "action": "on"}).status_code == 303
    actions = [r[0] for r in db.execute("select action from consents order by id")]
    assert actions == ["granted", "confirmed", "withdrawn"]


def test_a_magic_link_sign_in_proves_the_address(reader, db, runner):
    runner.invoke(args=["readers", "add", "linked@example.com", "--password", "linked-pass-1"])
    assert reader.post(magic_link(reader, reader.client, "linked@example.com")).status_code == 303
    assert db.execute("select email_verified_at from readers where email = 'linked@example.com'").fetchone()[0]
    reader.post("/account/newsletters", {"list": WEEKLY, "action": "on"})
    assert status(db, "linked@example.com") == "active"  # no confirmation link needed
    assert last_mail(db, "linked@example.com", "newsletter_confirmation") is None


def test_verified_readers_skip_the_confirmation(reader, db, runner):
    runner.invoke(args=["readers", "add", "verified@example.com", "--password", "verified-pass-1"])
    db.execute("update readers set email_verified_at = '2026-11-01T00:00:00.000000+00:00'"
               " where email = 'verified@example.com'")
    reader.login("verified@example.com", "verified-pass-1")
    reader.post("/account/newsletters", {"list": WEEKLY, "action": "on"})
    assert status(db, "verified@example.com") == "active"


@pytest.fixture
def weekly_readers(app, db):
    """Three confirmed readers of the free weekly list."""
    emails = [f"weekly{i}@example.com" for i in range(3)]
    for email in emails:
        person = Reader(app.test_client())
        signup_with_list(person, email)
        person.post(confirm_path(db, email))
    return emails


def test_send_is_idempotent_and_carries_rfc8058_headers(runner, db, clock, weekly_readers):
    publish(db, "weekly-fresh", START + timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    dry = runner.invoke(args=["newsletter", "send", WEEKLY, "--dry-run"])
    assert "Would send meridian-weekly No. 1 to 3 reader(s)" in dry.output
    assert db.scalar("select count(*) from outbox") == 3  # only the confirmation emails so far
    sent = runner.invoke(args=["newsletter", "send", WEEKLY])
    assert "Sent meridian-weekly No. 1" in sent.output and "to 3 reader(s)" in sent.output
    again = runner.invoke(args=["newsletter", "send", WEEKLY])
    assert "Nothing new to send" in again.output
    issues = db.execute("select count(*) from outbox where kind = 'newsletter:meridian-weekly'").fetchone()[0]
    assert issues == 3
    message = last_mail(db, weekly_readers[0], "newsletter:meridian-weekly")
    headers = message["headers"]
    assert headers["List-Id"] == "The Meridian Weekly <meridian-weekly.lists.meridian.example>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.fullmatch(r"<http://meridian\.test/newsletter/unsubscribe/[^>]+>, <mailto:unsubscribe@meridian\.example\?subject=[^>]+>",
                        headers["List-Unsubscribe"])


def test_resending_an_interrupted_issue_mails_only_the_rest(app, db, clock, weekly_readers):
    publish(db, "interrupted", START + timedelta(hours=1))
    now = START + timedelta(hours=2)
    cfg = app.extensions["gate.config"]
    item = newsletter.get_list(cfg, WEEKLY)
    issue = newsletter.plan_issue(db, item, now)
    calls = []

    def flaky(list_item, this_issue, reader):
        calls.append(reader["email"])
        if len(calls) == 2:
            raise RuntimeError("mail server went away")
        return newsletter.Message("s", "t", "h", {})

    with pytest.raises(RuntimeError):
        newsletter.send_issue(db, cfg, issue, flaky, lambda rid: True, now)
    result = newsletter.send_issue(db, cfg, issue, flaky, lambda rid: True, now)
    assert result["sent"] == 2
    assert db.execute("select count(*) from outbox where kind like 'newsletter:%'").fetchone()[0] == 3


def test_one_click_post_unsubscribes_without_login_or_csrf(app, runner, db, clock, weekly_readers):
    publish(db, "oneclick", START + timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    runner.invoke(args=["newsletter", "send", WEEKLY])
    header = last_mail(db, weekly_readers[0], "newsletter:meridian-weekly")["headers"]["List-Unsubscribe"]
    path = re.search(r"<http://meridian\.test(/newsletter/unsubscribe/[^>]+)>", header).group(1)
    client = app.test_client()
    page = client.get(path)
    assert page.status_code == 200 and "Unsubscribe from The Meridian Weekly?" in page.get_data(as_text=True)
    assert "/account/newsletters" in page.get_data(as_text=True)
    assert status(db, weekly_readers[0]) == "active"  # GET changes nothing
    response = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert status(db, weekly_readers[0]) == "unsubscribed"
    assert status(db, weekly_readers[1]) == "active"
    consent = db.execute("select action, method from consents order by id desc limit 1").fetchone()
    assert consent == ("withdrawn", "one_click")
    assert db.execute("select count(*) from consents where action = 'granted'").fetchone()[0] == 3  # kept


def test_unsubscribe_tokens_cannot_be_altered(app, db, weekly_readers):
    from gate.rules import tokens

    good = tokens.sign("test-secret-key", "newsletter-unsubscribe", {"r": 1, "l": WEEKLY})
    payload, signature = good.rsplit(".", 1)
    forged = tokens.sign("another-key", "newsletter-unsubscribe", {"r": 2, "l": WEEKLY})
    client = app.test_client()
    for token in (forged, good[:-2] + "xx", payload + ".AAAA", "x" + good):
        assert client.post(f"/newsletter/unsubscribe/{token}").status_code == 400
    wrong_purpose = tokens.sign("test-secret-key", "newsletter-confirm", {"r": 1, "l": WEEKLY})
    assert client.post(f"/newsletter/unsubscribe/{wrong_purpose}").status_code == 400
    assert [status(db, email) for email in weekly_readers] == ["active"] * 3


def test_free_issues_carry_no_gated_text_and_subscriber_issues_carry_the_opening(app, runner, db, clock):
    runner.invoke(args=["readers", "add", "paid@example.com", "--subscriber"])
    person = Reader(app.test_client())
    signup_with_list(person, "free@example.com")
    person.post(confirm_path(db, "free@example.com"))
    db.execute("update enrollments set status = 'active'")
    runner.invoke(args=["newsletter", "send", "daily-review"])  # nothing new yet
    publish(db, "digest-piece", START + timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    runner.invoke(args=["newsletter", "send", WEEKLY])
    runner.invoke(args=["newsletter", "send", "daily-review"])
    free = last_mail(db, "free@example.com", "newsletter:meridian-weekly")
    daily = last_mail(db, "paid@example.com", "newsletter:daily-review")
    first_paragraph = next(db.query("select body_md from articles where slug = 'digest-piece'"))["body_md"].split("\n\n")[0]
    probe = first_paragraph.split(". ")[1][:50]
    assert probe in daily["body_text"]
    for part in (free["body_text"], free["body_html"]):
        assert probe not in part
        assert all(sentence not in part for sentence in gated_sentences(METERED, paragraphs=1))


def test_subscriber_lists_pause_when_the_subscription_ends_and_resume(reader, runner, db):
    reader.signup("cycle@example.com")
    pay(reader)
    assert status(db, "cycle@example.com", "daily-review") == "active"
    reader.post("/account/newsletters", {"list": "weekly-review", "action": "off"})
    reader.post("/account/subscription/cancel", {"when": "now", "confirm": "yes"})
    assert status(db, "cycle@example.com", "daily-review") == "paused"
    assert status(db, "cycle@example.com", "weekly-review") == "unsubscribed"
    pay(reader)
    assert status(db, "cycle@example.com", "daily-review") == "active"
    assert status(db, "cycle@example.com", "weekly-review") == "unsubscribed"  # never by itself


def test_a_month_of_time_travel_sends_a_month_of_issues(runner, db, app):
    from gate.services import seed
    from gate.storage.clock import Clock

    seed.seed_schedule(db, START, START.tzinfo)
    newsletter.start_schedule(db, app.extensions["gate.config"], START)
    runner.invoke(args=["readers", "add", "daily@example.com", "--subscriber"])
    result = runner.invoke(args=["clock", "advance", "30d"])
    assert "Newsletters:" in result.output
    daily = db.execute("select number, scheduled_for from newsletter_issues where list_id = 'daily-review'"
                       " order by number").fetchall()
    weekly = db.execute("select count(*) from newsletter_issues where list_id = 'weekly-review'").fetchone()[0]
    assert len(daily) == 21 and weekly == 4  # every weekday from Nov 30 to Dec 28
    assert [n for n, _ in daily] == list(range(1, len(daily) + 1))
    mails = db.execute("select created_at from outbox where to_addr = 'daily@example.com' and kind = 'newsletter:daily-review'"
                       " order by id").fetchall()
    assert len(mails) == len(daily) and mails[0][0] < mails[-1][0]
    assert Clock(db).now() > START


def test_smtp_delivery(app, runner, db, clock, weekly_readers, monkeypatch):
    from aiosmtpd.controller import Controller

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        cfg = app.extensions["gate.config"]
        monkeypatch.setattr(cfg, "mail", cfg.mail.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port}))
        publish(db, "smtp-piece", START + timedelta(hours=1))
        clock.advance(timedelta(hours=2))
        result = runner.invoke(args=["newsletter", "send", WEEKLY])
        assert result.exit_code == 0, result.output
    finally:
        controller.stop()
    assert sorted(env.rcpt_tos[0] for env in received) == sorted(weekly_readers)
    raw = received[0].content.decode()
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw
    assert db.execute("select count(*) from outbox where delivered_at is not null").fetchone()[0] == 3


def test_inbox_is_for_demo_mode_or_admins(app, reader, client, runner, db):
    signup_with_list(reader, "inbox@example.com")
    assert client.get("/dev/mail/").status_code == 404
    runner.invoke(args=["readers", "add", "boss@example.com", "--password", "boss-pass-123", "--admin"])
    reader.logout()
    reader.login("boss@example.com", "boss-pass-123")
    page = client.get("/dev/mail/").get_data(as_text=True)
    assert "Please confirm your newsletter subscription" in page and "inbox@example.com" in page
    message_id = db.execute("select id from outbox order by id desc limit 1").fetchone()[0]
    for view, needle in (("html", "Confirm my subscription"), ("text", "Please confirm"),
                         ("headers", "Message-ID"), ("raw", "Content-Type: multipart/alternative")):
        body = client.get(f"/dev/mail/{message_id}?view={view}").get_data(as_text=True)
        assert needle in body, view
    assert client.get(f"/dev/mail/{message_id}?view=bogus").status_code == 400
    filtered = client.get("/dev/mail/?to=nobody@example.com").get_data(as_text=True)
    assert "No messages to nobody@example.com" in filtered


def test_inbox_in_demo_mode(app, client):
    app.config["DEMO"] = True
    assert client.get("/dev/mail/").status_code == 200


def test_outbox_json(reader, runner, db):
    signup_with_list(reader, "json@example.com")
    rows = json.loads(runner.invoke(args=["outbox", "--json", "--to", "JSON@example.com"]).output)
    assert rows[0]["to_addr"] == "json@example.com" and rows[0]["headers"]["Subject"].startswith("Please confirm")


def test_newsletter_commands_explain_bad_lists(runner):
    result = runner.invoke(args=["newsletter", "send", "gossip"])
    assert result.exit_code == 1 and "no newsletter called 'gossip'" in result.output
    listing = runner.invoke(args=["newsletter", "list"]).output
    assert "meridian-weekly" in listing and "daily-review" in listing and "weekdays 09:30" in listing


def test_links_use_the_configured_https_origin(app, runner, db, clock, weekly_readers, monkeypatch):
    monkeypatch.setitem(app.config, "BASE_URL", "https://news.meridian.example")
    # create_app pins the config's origin from BASE_URL; mail is built from the config, as lifecycle mail is
    monkeypatch.setattr(app.extensions["gate.config"], "origin", "https://news.meridian.example")
    publish(db, "https-piece", START + timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    runner.invoke(args=["newsletter", "send", WEEKLY])
    message = last_mail(db, weekly_readers[0], "newsletter:meridian-weekly")
    assert message["headers"]["List-Unsubscribe"].startswith("<https://news.meridian.example/newsletter/unsubscribe/")
    assert "https://news.meridian.example/articles/https-piece" in message["body_text"]


def test_a_backlog_issue_never_goes_to_a_reader_who_joined_after_it(app, runner, db, clock):
    from gate.services import seed

    seed.seed_schedule(db, START, START.tzinfo)
    newsletter.start_schedule(db, app.extensions["gate.config"], START)
    clock.advance(timedelta(days=7))  # the schedule has not run: a week of issues is due
    late = Reader(app.test_client())
    signup_with_list(late, "late@example.com")
    late.post(confirm_path(db, "late@example.com"))
    result = runner.invoke(args=["newsletter", "schedule"])
    assert result.exit_code == 0 and re.search(r"[1-9]\d* issue\(s\) sent", result.output), result.output
    assert last_mail(db, "late@example.com", "newsletter:meridian-weekly") is None


def test_mail_is_dated_by_the_site_clock_in_the_site_time_zone(runner, db, clock, weekly_readers):
    """A mail catcher shows the Date header: it reads as the site's local time, not UTC."""
    publish(db, "dated", START + timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    runner.invoke(args=["newsletter", "send", WEEKLY])
    rows = list(db.query("select created_at, kind, headers from outbox"))
    assert {row["kind"] for row in rows} == {"newsletter_confirmation", "newsletter:meridian-weekly"}
    for row in rows:
        local = from_iso(row["created_at"]).astimezone(START.tzinfo)
        assert json.loads(row["headers"])["Date"] == format_datetime(local)
        assert format_datetime(local).endswith("-0500")  # New York in November, not +0000
