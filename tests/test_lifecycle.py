"""Lifecycle mail and the past-due banner: what a subscriber is told as their subscription changes."""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import escape

from gate.conf.settings import Config, ConfigError
from gate.rules import billing
from gate.rules.timeutil import from_iso, to_iso
from gate.services import desk, mail, newsletter, seed, subscriptions
from gate.storage.engine import integrity_errors
from gate.web import devmail
from gate.web.forms import list_field, signup_form
from tests.helpers import BOTH_ENGINES, METERED, START, Reader, pay, publish

pytestmark = BOTH_ENGINES

FAILS_RENEWAL = "4000 0000 0000 0341"


def kinds(db, to: str) -> list[str]:
    """The kinds of lifecycle mail one address has had, in the order they were dated."""
    return [row[0] for row in db.execute(
        "select kind from outbox where to_addr = ? and kind not like 'newsletter%'"
        " order by created_at, id", [to])]


def test_checkout_then_renewal_mail_a_receipt_each_once(reader, db, runner):
    reader.signup("renewer@example.com")
    pay(reader)
    assert kinds(db, "renewer@example.com") == ["receipt"]
    runner.invoke(args=["clock", "advance", "62d"])
    runner.invoke(args=["billing", "tick"])  # settling again sends nothing new
    reader.client.get("/account")
    assert kinds(db, "renewer@example.com") == ["receipt"] * 3
    text = db.execute("select body_text from outbox where kind = 'receipt' order by created_at desc"
                      " limit 1").fetchone()[0]
    assert "has renewed" in text and "USD 12.00" in text and "ending 4242" in text


def test_failing_card_mails_failure_then_cancellation_once_each(reader, db, runner):
    reader.signup("failing@example.com")
    pay(reader, card_number=FAILS_RENEWAL)
    runner.invoke(args=["clock", "advance", "31d"])
    reader.client.get("/account")  # the reader's own visit settles too: no second mail
    assert kinds(db, "failing@example.com") == ["receipt", "payment_failed"]
    text = db.execute("select body_text from outbox where kind = 'payment_failed'").fetchone()[0]
    assert "You keep full access until" in text and "/account/card" in text
    runner.invoke(args=["clock", "advance", "10d"])
    assert kinds(db, "failing@example.com") == ["receipt", "payment_failed", "canceled"]
    text = db.execute("select body_text from outbox where kind = 'canceled'").fetchone()[0]
    assert "couldn't take the payment" in text


def test_a_replayed_outcome_mails_nothing_twice(app, reader, db):
    reader.signup("replay@example.com")
    pay(reader, card_number=FAILS_RENEWAL)
    cfg = app.extensions["gate.config"]
    sub = subscriptions.current(db, 1)
    canceling = billing.cancel(sub, START + timedelta(days=1))
    for _ in range(2):  # a second worker applying the same outcome
        subscriptions.apply_outcome(db, canceling, by="reader", notify=cfg)
    outcome = billing.settle(sub, subscriptions.plan_terms(cfg, sub.plan_id), subscriptions.policy(cfg),
                             START + timedelta(days=31))
    subscriptions.apply_outcome(db, outcome, by="clock", notify=cfg)
    with pytest.raises(integrity_errors()), db.transaction():  # the same renewal again: refused, nothing mailed
        subscriptions.apply_outcome(db, outcome, by="clock", notify=cfg)
    assert kinds(db, "replay@example.com") == ["receipt", "cancel_scheduled", "payment_failed"]
    assert db.scalar("select count(*) from payments where kind = 'renewal'") == 1


def test_trial_reminder_is_dated_three_days_before_the_trial_ends(reader, db, runner):
    reader.signup("trial@example.com")
    pay(reader, "annual")
    runner.invoke(args=["clock", "advance", "20d"])
    assert kinds(db, "trial@example.com") == ["receipt", "trial_ending", "receipt"]
    sent = db.execute("select created_at, subject from outbox where kind = 'trial_ending'").fetchone()
    assert from_iso(sent[0]) == START + timedelta(days=11)
    assert sent[1] == "Your free trial of The Meridian ends on December 12, 2026"


def test_trial_canceled_at_period_end_gets_no_reminder(reader, db, runner):
    reader.signup("notrial@example.com")
    pay(reader, "annual")
    reader.post("/account/subscription/cancel")
    runner.invoke(args=["clock", "advance", "20d"])
    assert kinds(db, "notrial@example.com") == ["receipt", "cancel_scheduled", "canceled"]


@pytest.mark.parametrize("when, expected", [
    ({}, ["receipt", "cancel_scheduled"]),
    ({"when": "now", "confirm": "yes"}, ["receipt", "canceled"]),
])
def test_cancelling_mails_a_confirmation(reader, db, when, expected):
    reader.signup("leaving@example.com")
    pay(reader)
    reader.post("/account/subscription/cancel", when)
    assert kinds(db, "leaving@example.com") == expected


def test_past_due_banner_on_every_page_with_the_grace_end(reader, db, runner):
    reader.signup("banner@example.com")
    pay(reader, card_number=FAILS_RENEWAL)
    assert "Your last payment failed" not in reader.client.get("/").get_data(as_text=True)
    runner.invoke(args=["clock", "advance", "31d"])
    for path in ("/", "/search", "/subscribe"):
        page = reader.client.get(path).get_data(as_text=True)
        assert "Your last payment failed" in page and "You keep full access until" in page
        assert "January 4, 2027" in page and 'href="/account/card"' in page
    runner.invoke(args=["clock", "advance", "10d"])
    assert "Your last payment failed" not in reader.client.get("/").get_data(as_text=True)


# --- the local inbox -------------------------------------------------------------


def queue(db, to: str, at, subject: str, text: str = "Hello", headers: dict | None = None) -> int:
    return mail.queue(db, to=to, subject=subject, text=text, html=None, kind="test",
                      sender="The Meridian <desk@meridian.example>", now=at, tz=START.tzinfo, headers=headers)


def subjects(page: str) -> list[str]:
    return re.findall(r'<td class="mailtable__subject"><a [^>]*>([^<]*)</a>', page)


def test_inbox_shows_the_readers_own_mail_newest_first(app, reader, db):
    app.config["DEMO"] = True
    reader.signup("me@example.com")
    queue(db, "me@example.com", START - timedelta(days=1), "Older")
    queue(db, "other@example.com", START, "Another reader")
    queue(db, "me@example.com", START + timedelta(hours=1), "Newest")  # queued before, dated later
    queue(db, "me@example.com", START - timedelta(days=2), "Oldest")  # queued last, dated earliest
    page = reader.client.get("/dev/mail/").get_data(as_text=True)
    assert subjects(page) == ["Newest", "Older", "Oldest"]
    assert "Your mail" in page and "Show everyone's mail" in page
    everyone = subjects(reader.client.get("/dev/mail/?all=1").get_data(as_text=True))
    assert everyone == ["Newest", "Another reader", "Older", "Oldest"]


def test_text_mail_links_to_the_site_are_clickable_and_nothing_else_is_markup(app, db):
    app.config["DEMO"] = True
    body = ('Read <b>this</b>: http://meridian.test/account/card?a=1&b=2.\n'
            'Not ours: https://evil.example/account and http://meridian.test:50001/x\n'
            'Quote trick: http://meridian.test/x"onmouseover="alert(1)')
    message_id = queue(db, "links@example.com", START, "Links", text=body)
    page = app.test_client().get(f"/dev/mail/{message_id}?view=text").get_data(as_text=True)
    assert ('<a href="http://meridian.test/account/card?a=1&amp;b=2" rel="noopener">'
            'http://meridian.test/account/card?a=1&amp;b=2</a>.') in page
    assert "&lt;b&gt;this&lt;/b&gt;" in page and "<b>this</b>" not in page
    assert 'href="https://evil.example' not in page and 'href="http://meridian.test:50001' not in page
    assert '<a href="http://meridian.test/x" rel="noopener">' in page and 'onmouseover="' not in page


@given(st.lists(st.sampled_from(list('ab <>&"\'/.:?=') + ["http://meridian.test/", "https://x.example/"]),
                max_size=30).map("".join))
def test_linkify_only_adds_anchors_to_the_escaped_text(text):
    html = str(devmail.linkify(text, "http://127.0.0.1:5000"))
    assert re.sub(r'<a href="[^"<>]*" rel="noopener">|</a>', "", html) == str(escape(text))


def test_one_click_button_posts_what_a_mail_provider_posts(app, reader, db, runner, clock):
    app.config["DEMO"] = True
    reader.post("/signup", {"email": "oneclick@example.com", "list_meridian_weekly": "y"})
    db.execute("update enrollments set status = 'active', confirmed_at = ?", [to_iso(START)])
    publish(db, "one-click-news", START + timedelta(minutes=5))
    clock.advance(timedelta(hours=1))
    runner.invoke(args=["newsletter", "send", "meridian-weekly"])
    message_id = db.execute("select id from outbox where kind = 'newsletter:meridian-weekly'").fetchone()[0]
    page = reader.client.get(f"/dev/mail/{message_id}").get_data(as_text=True)
    form = re.search(r'<form method="post" action="([^"]+)" class="one-click">(.*?)</form>', page, re.S)
    assert form and form.group(1).startswith("/newsletter/unsubscribe/")
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', form.group(2)))
    assert fields == {"List-Unsubscribe": "One-Click"}  # RFC 8058's body, and nothing else
    provider = app.test_client()  # no cookies, no CSRF token: as Gmail would post it
    done = provider.post(form.group(1), data=fields)
    assert done.status_code == 200 and "unsubscribed" in done.get_data(as_text=True).lower()
    row = db.execute("select e.status, c.method from enrollments e join consents c"
                     " on c.reader_id = e.reader_id and c.action = 'withdrawn'").fetchone()
    assert row == ("unsubscribed", "one_click")


# --- the publishing desk ---------------------------------------------------------


def test_six_months_of_time_travel_keep_the_newsletters_full(app, runner, db):
    seed.seed_schedule(db, START, START.tzinfo)
    newsletter.start_schedule(db, app.extensions["gate.config"], START)
    runner.invoke(args=["readers", "add", "daily@example.com", "--subscriber"])
    runner.invoke(args=["clock", "advance", "182d"])
    issues = db.execute("select scheduled_for, slugs from newsletter_issues where list_id = 'daily-review'"
                        " order by number").fetchall()
    late = [json.loads(slugs) for when, slugs in issues if from_iso(when) > START + timedelta(days=120)]
    assert len(late) >= 40 and all(late)  # every weekday of the last two months, each with articles
    assert all(slug.startswith(desk.PREFIX) for slugs in late for slug in slugs)
    weekly = db.execute("select count(*) from newsletter_issues where list_id = 'meridian-weekly'").fetchone()[0]
    assert weekly >= 25


def test_desk_pieces_are_dated_attributed_repeatable_and_gated(app, db, client, clock):
    seed.seed_schedule(db, START, START.tzinfo)
    cfg = app.extensions["gate.config"]
    later = START + timedelta(days=90)
    assert desk.publish_through(db, cfg, START) == 0  # the schedule has not run out yet
    added = desk.publish_through(db, cfg, later)
    assert added > 0 and desk.publish_through(db, cfg, later) == 0
    row = next(db.query("select * from articles where slug like 'desk-%' and access_class = 'metered'"
                        " order by published_at desc limit 1"))
    day = from_iso(row["published_at"]).astimezone(START.tzinfo).date()
    assert row["author"] == "The Meridian desk" and row["slug"] == f"desk-{day.isoformat()}"
    assert row["dek"].startswith(f"Generated by the demo desk for {day.strftime('%A, %B %-d, %Y')}.")
    again = desk.piece(day, from_iso(row["published_at"]), cfg.publication.sections)
    assert (again["title"], again["body_md"]) == (row["title"], row["body_md"])
    clock.advance(timedelta(days=90))
    answer = client.get(f"/api/articles/{row['slug']}").get_json()
    assert answer["access"] == "teaser" and "body_html" not in answer
    last_paragraph = row["body_md"].strip().split("\n\n")[-1]
    assert last_paragraph[:60] not in json.dumps(answer)


# --- the console's newsletters page ----------------------------------------------


def test_admin_sends_the_next_issue_now(app, reader, db, runner, clock):
    runner.invoke(args=["readers", "add", "teacher@example.com", "--password", "teacher-pass-1", "--admin"])
    runner.invoke(args=["readers", "add", "weekly@example.com", "--subscriber"])
    reader.login("teacher@example.com", "teacher-pass-1")
    page = reader.client.get("/admin/newsletters").get_data(as_text=True)
    assert "Send the next issue<span class=\"visually-hidden\"> of Weekly Review</span> now" in page
    publish(db, "console-news", START + timedelta(minutes=5))
    clock.advance(timedelta(hours=1))
    sent = reader.post("/admin/newsletters", {"list": "weekly-review"}, follow_redirects=True)
    assert re.search(r"Sent issue No\. 1 \(\d+ article\(s\)\) to 1 reader\(s\)", sent.get_data(as_text=True))
    assert db.execute("select count(*) from outbox where kind = 'newsletter:weekly-review'"
                      " and to_addr = 'weekly@example.com'").fetchone()[0] == 1
    event = json.loads(db.execute("select data from events where type = 'admin_action'"
                                  " order by id desc limit 1").fetchone()[0])
    assert (event["admin"], event["action"], event["target"]) == ("teacher@example.com", "newsletter_sent",
                                                                  "weekly-review")
    again = reader.post("/admin/newsletters", {"list": "weekly-review"}, follow_redirects=True)
    assert "Nothing new to send" in again.get_data(as_text=True)
    bogus = reader.post("/admin/newsletters", {"list": "no-such-list"}, follow_redirects=True)
    assert bogus.status_code == 200 and "Nothing was sent: no newsletter called" in bogus.get_data(as_text=True)
    assert reader.client.post("/admin/newsletters", data={"list": "weekly-review"}).status_code == 400  # no CSRF


# --- consent: opt-in by default, the pre-ticked version only as a lesson -------------


BOX = re.compile(r'<input[^>]*name="list_meridian_weekly"[^>]*>')


def test_signup_and_gate_boxes_start_unticked(client):
    for path in ("/signup", f"/articles/{METERED}"):
        boxes = BOX.findall(client.get(path).get_data(as_text=True))
        assert boxes and not any("checked" in box for box in boxes), path


@pytest.mark.parametrize("ticked", [False, True])
def test_consent_is_recorded_only_when_ticked(reader, db, ticked):
    data = {"email": "optin@example.com", **({"list_meridian_weekly": "y"} if ticked else {})}
    reader.post("/signup", data)
    rows = db.execute("select list_id, wording, method from consents").fetchall()
    wording = Config().newsletters[0].consent_wording
    assert rows == ([("meridian-weekly", wording, "signup")] if ticked else [])
    assert db.scalar("select count(*) from enrollments") == int(ticked)


def test_a_list_may_start_ticked_only_by_its_setting(app):
    item = Config().newsletters[0]
    with app.test_request_context():
        assert signup_form([item])()[list_field(item.id)].data is False
        preticked = item.model_copy(update={"consent_default": "ticked"})
        assert signup_form([preticked])()[list_field(item.id)].data is True


def test_a_bad_consent_default_is_refused(tmp_path):
    target = tmp_path / "config"
    shutil.copytree(Config().dir, target)
    site_toml = target / "site.toml"
    site_toml.write_text(site_toml.read_text().replace('consent_default = "unticked"', 'consent_default = "yes"'))
    with pytest.raises(ConfigError, match=r"newsletters\.0\.consent_default: .*'unticked' or 'ticked'"):
        Config(target)


def test_the_pre_ticked_lesson_shows_the_dark_pattern_and_records_it(app, client, db):
    app.config["DEMO"] = True
    learner = Reader(client)
    learner.post("/learn/try/pre-ticked-consent")
    page = client.get(f"/articles/{METERED}").get_data(as_text=True)
    assert "Dark pattern on, for a lesson" in page and "checked" in BOX.search(page).group(0)
    classmate = app.test_client().get("/signup").get_data(as_text=True)  # a preview is the learner's alone
    assert "Dark pattern on" not in classmate and "checked" not in BOX.search(classmate).group(0)
    learner.post("/signup", {"email": "lured@example.com", "list_meridian_weekly": "y"})
    assert db.execute("select method from consents").fetchall() == [("signup_preticked",)]
    history = client.get("/account/newsletters").get_data(as_text=True)
    assert "signup preticked" in history
    learner.post("/learn/consent-lesson/end")
    page = client.get("/signup").get_data(as_text=True)
    assert "Dark pattern on" not in page and "checked" not in BOX.search(page).group(0)
    changes = [json.loads(row[0]) for row in db.execute(
        "select data from events where type = 'consent_lesson_changed' order by id")]
    assert changes == []  # the site's own setting never moved


def test_a_consent_preview_left_in_a_session_ends_with_demo_mode(app, client):
    app.config["DEMO"] = True
    Reader(client).post("/learn/try/pre-ticked-consent")
    assert "checked" in BOX.search(client.get("/signup").get_data(as_text=True)).group(0)
    app.config["DEMO"] = False  # the same browser, once the site is served for real
    page = client.get("/signup").get_data(as_text=True)
    assert "Dark pattern on" not in page and "checked" not in BOX.search(page).group(0)


def test_an_admin_applies_the_pre_ticked_lesson_to_the_site_and_takes_it_back(app, client, db, runner):
    app.config["DEMO"] = True
    runner.invoke(args=["readers", "add", "boss@example.com", "--password", "boss-pass-123", "--admin"])
    admin = Reader(client)
    admin.login("boss@example.com", "boss-pass-123")
    admin.post("/learn/try/pre-ticked-consent", {"scope": "site"})
    classmate = app.test_client().get("/signup").get_data(as_text=True)
    assert "Dark pattern on, for a lesson" in classmate and "checked" in BOX.search(classmate).group(0)
    admin.post("/learn/consent-lesson/end")
    assert "Dark pattern on" not in app.test_client().get("/signup").get_data(as_text=True)
    changes = [json.loads(row[0]) for row in db.execute(
        "select data from events where type = 'consent_lesson_changed' order by id")]
    assert [(c["from"], c["to"]) for c in changes] == [(False, True), (True, False)]


def test_checkout_enrolls_subscriber_lists_only_with_the_exact_wording(reader, db):
    pay(reader, email="payer@example.com")
    rows = db.execute("select list_id, wording, method from consents order by list_id").fetchall()
    cfg = Config()
    expected = sorted((item.id, item.consent_wording, "subscription") for item in cfg.newsletters
                      if item.audience == "subscriber")
    assert rows == expected  # a marketing list is never joined without its own box
