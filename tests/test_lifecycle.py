"""Lifecycle mail and the past-due banner: what a subscriber is told as their subscription changes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gate import billing, subscriptions
from gate.timeutil import from_iso
from tests.conftest import START
from tests.test_subscribe import pay

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
    outcome = billing.settle(sub, subscriptions.plan_terms(cfg, sub.plan_id), subscriptions.policy(cfg),
                             START + timedelta(days=31))
    for _ in range(2):  # a second worker applying the same outcome
        subscriptions.apply_outcome(db, outcome, by="clock", notify=cfg)
    assert kinds(db, "replay@example.com") == ["receipt", "payment_failed"]


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
