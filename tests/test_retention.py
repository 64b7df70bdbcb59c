"""Keeping subscribers: pause in the billing state machine (pure), cancel reasons and save offers
(one a year, a meter on the quota store), and the win-back mail, on both engines."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.rules import billing
from gate.rules.billing import BillingError, Card, PlanTerms, Policy
from gate.rules.timeutil import from_iso
from gate.services import offers, retention, subscriptions
from tests.helpers import BOTH_ENGINES, START, Reader, at_once, pay

UTC = timezone.utc
T0 = datetime(2026, 1, 31, 15, 0, tzinfo=UTC)
MONTHLY = PlanTerms("monthly", 1200, "USD", "month", 0)
POLICY = Policy((1, 3, 5), 7, "canceled")


def started(last4: str = "4242", at: datetime = T0) -> billing.Subscription:
    """A monthly subscription paid at checkout on a test card."""
    return billing.start(1, MONTHLY, Card(last4, 12, 2030), None, at).subscription


# --- pause, pure ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(paid=st.integers(0, 5), into=st.integers(0, 27 * 24), months=st.integers(1, 3),
       after=st.integers(0, 400))
def test_no_charge_inside_a_pause_and_one_exactly_when_it_ends(paid, into, months, after):
    """Paused after some renewals: nothing is charged while paused, a resume charge at resumes_at,
    and access is off inside the pause and on after it."""
    sub = billing.settle(started(), MONTHLY, POLICY, billing.add_months(T0, paid)).subscription
    paused_at = sub.current_period_start + timedelta(hours=into)
    paused = billing.pause(sub, months, paused_at)
    resumes = billing.add_months(paused_at, months)
    now = resumes + timedelta(days=after)
    outcome = paused.then(billing.settle(paused.subscription, MONTHLY, POLICY, now))
    charges = outcome.charges
    assert not any(paused_at <= c.at < resumes for c in charges)
    assert charges[0].at == resumes and charges[0].kind == "resume" and charges[0].amount_cents == 1200
    assert outcome.subscription.anchor == resumes and outcome.subscription.status == "active"
    assert outcome.subscription.period_index == sub.period_index + len(charges)
    assert not billing.has_access(paused.subscription, POLICY, paused_at)
    assert not billing.has_access(paused.subscription, POLICY, resumes - timedelta(seconds=1))
    assert billing.has_access(outcome.subscription, POLICY, now)


def test_pause_changes_name_from_and_to():
    paused = billing.pause(started(), 2, T0 + timedelta(days=3))
    assert paused.subscription.resumes_at == datetime(2026, 4, 3, 15, tzinfo=UTC)
    resumed = billing.settle(paused.subscription, MONTHLY, POLICY, datetime(2026, 4, 3, 15, tzinfo=UTC))
    assert [(c.from_status, c.to_status, c.reason) for c in paused.changes + resumed.changes] == [
        ("active", "paused", "paused for 2 months"), ("paused", "active", "resume")]
    sub = resumed.subscription
    assert (sub.paused_at, sub.resumes_at, sub.current_period_end) == (
        None, None, datetime(2026, 5, 3, 15, tzinfo=UTC))


def test_a_declined_card_at_the_end_of_a_pause_goes_past_due():
    paused = billing.pause(started("0341"), 1, T0 + timedelta(days=1)).subscription
    outcome = billing.settle(paused, MONTHLY, POLICY, paused.resumes_at + timedelta(hours=1))
    assert outcome.subscription.status == "past_due"
    assert [(c.from_status, c.to_status) for c in outcome.changes] == [("paused", "past_due")]
    assert outcome.charges[0].kind == "resume" and outcome.charges[0].outcome == "failed"


def test_unpause_early_starts_a_new_period_now():
    paused = billing.pause(started(), 3, T0 + timedelta(days=1)).subscription
    early = T0 + timedelta(days=20)
    outcome = billing.unpause(paused, MONTHLY, POLICY, early)
    assert outcome.subscription.status == "active" and outcome.subscription.anchor == early
    assert [c.at for c in outcome.charges] == [early]
    assert billing.settle(outcome.subscription, MONTHLY, POLICY, early + timedelta(days=27)).charges == ()


@pytest.mark.parametrize("sub, months, message", [
    (started(), 0, "1 to 3 months"),
    (started(), 4, "1 to 3 months"),
    (billing.cancel(started(), T0).subscription, 1, "set to end at the period end"),
    (billing.pause(started(), 1, T0).subscription, 1, "only an active subscription"),
    (billing.cancel(started(), T0, immediately=True).subscription, 1, "only an active subscription"),
])
def test_what_cannot_be_paused(sub, months, message):
    with pytest.raises(BillingError, match=message):
        billing.pause(sub, months, T0 + timedelta(days=1))


def test_a_paused_subscription_cancels_only_now():
    paused = billing.pause(started(), 1, T0).subscription
    with pytest.raises(BillingError, match="canceled now, or resumed"):
        billing.cancel(paused, T0)
    assert billing.cancel(paused, T0, immediately=True).subscription.status == "canceled"
    with pytest.raises(BillingError, match="only a paused"):
        billing.unpause(started(), MONTHLY, POLICY, T0)


def test_a_save_discount_covers_exactly_the_next_periods():
    sub = billing.settle(started(), MONTHLY, POLICY, billing.add_months(T0, 2)).subscription  # period 2
    save = billing.Discount("SAVE-1-20260401", "percent", 50, sub.period_index + 1 + 3)
    after = billing.settle(sub.with_discount(save), MONTHLY, POLICY, billing.add_months(T0, 7))
    assert [(c.amount_cents, c.offer_code) for c in after.charges] == [
        (600, "SAVE-1-20260401")] * 3 + [(1200, None)] * 2


# --- the cancel flow on the site, both engines ----------------------------------------------


def subscribed(reader, email: str) -> None:
    """A new reader on the monthly plan, paid on the 4242 card."""
    reader.signup(email)
    assert pay(reader).status_code in (302, 303)


def changes(db) -> list[dict]:
    return [json.loads(row[0]) for row in db.execute(
        "select data from events where type = 'subscription_changed' order by id")]


def event_types(db, prefix: str = "") -> list[str]:
    return [row[0] for row in db.execute("select type from events where type like ? order by id", [f"{prefix}%"])]


def charges(db) -> list[tuple]:
    return [(row[0], row[1], row[2]) for row in db.execute(
        "select kind, amount_cents, offer_code from payments where outcome = 'succeeded' order by at, id")]


@BOTH_ENGINES
def test_too_expensive_gets_half_price_for_three_months_once_a_year(reader, db, runner):
    subscribed(reader, "saver@example.com")
    page = reader.post("/account/subscription/reason", {"reason": "too_expensive"}).get_data(as_text=True)
    assert "50% off your next 3 months ($6 a month instead of $12)" in page
    assert reader.post("/account/subscription/save").status_code == 303
    sub = subscriptions.current(db, 1)
    assert (sub.status, sub.cancel_at_period_end, sub.cancel_reason) == ("active", False, "too_expensive")
    assert sub.offer_code == "SAVE-1-20261128" and sub.discount_periods == 4
    assert "SAVE-1-20261128: 50% off your next 3 payments" in reader.client.get("/account").get_data(as_text=True)
    offer = db.first("select * from offers where code = 'SAVE-1-20261128'")
    assert (offer["source"], offer["reader_id"], offer["cap"]) == ("save", 1, 1)
    runner.invoke(args=["clock", "advance", "125d"])
    assert charges(db) == [("checkout", 1200, None)] + [("renewal", 600, "SAVE-1-20261128")] * 3 + [
        ("renewal", 1200, None)]
    # Within the year a second reason shows no offer: it cancels at the period end.
    reader.post("/account/subscription/reason", {"reason": "too_expensive"})
    assert subscriptions.current(db, 1).cancel_at_period_end
    assert event_types(db, "save_offer") == ["save_offer_shown", "save_offer_accepted"]
    assert event_types(db, "cancel_reason") == ["cancel_reason"] * 2


@BOTH_ENGINES
def test_not_reading_pauses_and_resumes_on_the_clock(reader, db, runner):
    subscribed(reader, "pauser@example.com")
    page = reader.post("/account/subscription/reason", {"reason": "not_reading"}).get_data(as_text=True)
    assert "1 month, back on December 28, 2026" in page and "3 months, back on February 28, 2027" in page
    reader.post("/account/subscription/save", {"months": "1"})
    sub = subscriptions.current(db, 1)
    assert sub.status == "paused" and sub.resumes_at == billing.add_months(START, 1)
    assert reader.meter()["tier"] != "subscriber"
    assert "paused until December 28, 2026" in reader.client.get("/account").get_data(as_text=True)
    assert db.scalar("select status from enrollments where list_id = 'daily-review'") == "paused"
    runner.invoke(args=["clock", "advance", "31d"])
    assert subscriptions.current(db, 1).status == "active"
    assert db.scalar("select status from enrollments where list_id = 'daily-review'") == "active"
    resumed = db.first("select at, kind from payments order by id desc limit 1")
    assert resumed["kind"] == "resume" and from_iso(resumed["at"]) == billing.add_months(START, 1)
    assert [(e["from"], e["to"]) for e in changes(db)][-2:] == [("active", "paused"), ("paused", "active")]


def test_resume_now_ends_a_pause_early(reader, db, clock):
    subscribed(reader, "early@example.com")
    reader.post("/account/subscription/reason", {"reason": "not_reading"})
    reader.post("/account/subscription/save", {"months": "3"})
    clock.advance(timedelta(days=5))
    assert reader.post("/account/subscription/unpause").status_code == 303
    sub = subscriptions.current(db, 1)
    assert sub.status == "active" and sub.anchor == START + timedelta(days=5)
    assert charges(db)[-1] == ("resume", 1200, None)


@pytest.mark.parametrize("url, data, error", [
    ("/account/subscription/reason", {}, "Choose a reason to go on."),
    ("/account/subscription/reason", {"reason": "bored"}, "Choose one of the reasons listed."),
    ("/account/subscription/save", {"months": "7"}, "Choose one of the lengths listed."),
    ("/account/subscription/save", {"months": ""}, "Choose how long to pause."),
])
def test_bad_answers_are_refused_beside_the_field_and_change_nothing(reader, db, url, data, error):
    subscribed(reader, "typo@example.com")
    if url.endswith("/save"):
        reader.post("/account/subscription/reason", {"reason": "not_reading"})
    before = (event_types(db), subscriptions.current(db, 1))
    response = reader.post(url, data)
    assert response.status_code == 400 and error in response.get_data(as_text=True)
    assert (event_types(db), subscriptions.current(db, 1)) == before


def test_declining_cancels_at_period_end(reader, db):
    subscribed(reader, "decliner@example.com")
    reader.post("/account/subscription/reason", {"reason": "too_expensive"})
    reader.post("/account/subscription/save/decline")
    sub = subscriptions.current(db, 1)
    assert sub.cancel_at_period_end and sub.offer_code is None
    assert event_types(db, "save_offer") == ["save_offer_shown", "save_offer_declined"]
    assert reader.post("/account/subscription/save").status_code == 303  # too late to accept
    assert subscriptions.current(db, 1).offer_code is None


def test_a_reason_without_an_offer_cancels_at_once(reader, db):
    subscribed(reader, "content@example.com")
    reader.post("/account/subscription/reason", {"reason": "content"})
    assert subscriptions.current(db, 1).cancel_at_period_end
    assert event_types(db, "save_offer") == []


@BOTH_ENGINES
def test_two_accepts_at_once_spend_the_meter_once(app, reader, db):
    subscribed(reader, "racer@example.com")
    reader.post("/account/subscription/reason", {"reason": "too_expensive"})
    cfg = app.extensions["gate.config"]
    results, errors = at_once(app.config["DATABASE"], 6, lambda conn: retention.accept(conn, cfg, 1, START))
    assert len(results) == 1 and len(errors) == 5 and all("already had a save offer" in str(e) for e in errors)
    assert db.scalar("select count(*) from unlocks where meter_key = 'save:1'") == 1
    assert event_types(db, "save_offer_accepted") == ["save_offer_accepted"]


# --- win-back ----------------------------------------------------------------------------------


def winbacks(db) -> list[dict]:
    return db.rows("select * from outbox where kind = 'winback' order by id")


@BOTH_ENGINES
def test_a_lapsed_reader_gets_one_winback_code_days_after_access_ends(app, reader, db, runner):
    subscribed(reader, "lapsed@example.com")
    reader.post("/account/subscription/cancel", {"when": "now", "confirm": "yes"})
    runner.invoke(args=["clock", "advance", "13d"])
    assert winbacks(db) == []
    runner.invoke(args=["clock", "advance", "2d"])
    runner.invoke(args=["billing", "tick"])  # a second tick sends nothing more
    [mail] = winbacks(db)
    offer = db.first("select * from offers where source = 'winback'")
    code = offer["code"]
    assert mail["to_addr"] == "lapsed@example.com" and from_iso(mail["created_at"]) == START + timedelta(days=14)
    assert f"http://meridian.test/subscribe?code={code}" in mail["body_text"] and "50% off" in mail["body_text"]
    assert (offer["reader_id"], offer["cap"], offer["kind"], offer["value"], offer["periods"]) == (
        1, 1, "percent", 50, 3)
    assert from_iso(offer["ends_at"]) == START + timedelta(days=44)
    assert event_types(db, "winback") == ["winback_sent"]
    cfg = app.extensions["gate.config"]
    with db.transaction():
        offers.redeem(db, cfg, code.lower(), "monthly", 1, START + timedelta(days=20))
    assert event_types(db, "winback") == ["winback_sent", "winback_redeemed"]


def test_no_winback_for_a_reader_who_subscribed_again(reader, db, runner):
    subscribed(reader, "back@example.com")
    reader.post("/account/subscription/cancel", {"when": "now", "confirm": "yes"})
    runner.invoke(args=["clock", "advance", "3d"])
    assert pay(reader).status_code in (302, 303)
    runner.invoke(args=["clock", "advance", "20d"])
    assert winbacks(db) == [] and event_types(db, "winback") == []


# --- personas ----------------------------------------------------------------------------------


def test_the_paused_persona_resumes_in_a_few_days(app, db):
    app.config["DEMO"] = True
    demo = Reader(app.test_client())
    demo.post("/demo/persona", {"persona": "paused", "next": "/"})
    assert demo.meter()["tier"] == "registered"
    sub = subscriptions.current(db, db.scalar("select id from readers where email = 'persona.paused@meridian.example'"))
    assert sub.status == "paused" and START < sub.resumes_at < START + timedelta(days=7)
    assert "paused until December 1, 2026" in demo.client.get("/account").get_data(as_text=True)


def test_the_winback_persona_has_its_code_in_the_outbox(app, db):
    app.config["DEMO"] = True
    demo = Reader(app.test_client())
    for _ in range(2):  # switching again rebuilds it: a fresh code, mailed once per subscription
        demo.post("/demo/persona", {"persona": "winback", "next": "/"})
    reader = db.scalar("select id from readers where email = 'persona.winback@meridian.example'")
    assert subscriptions.current(db, reader).status == "canceled"
    sent = db.rows("select body_text from outbox where kind = 'winback' and to_addr = ?",
                   ["persona.winback@meridian.example"])
    codes = [row["code"] for row in db.rows("select code from offers where source = 'winback' and reader_id = ?",
                                            [reader])]
    assert len(sent) == 2 and len(codes) == 2 and codes[-1] in sent[-1]["body_text"]


def test_the_console_shows_a_readers_pause_and_discount(admin, app, db):
    saver = Reader(app.test_client())
    subscribed(saver, "console@example.com")
    saver.post("/account/subscription/reason", {"reason": "too_expensive"})
    saver.post("/account/subscription/save")
    reader = db.scalar("select id from readers where email = 'console@example.com'")
    page = admin.client.get(f"/admin/readers/{reader}").get_data(as_text=True)
    assert f"SAVE-{reader}-20261128 · 50% off · 3 more payment(s)" in page and "too_expensive" in page
