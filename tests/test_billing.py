"""The subscription lifecycle (pure), test cards and card validation, with a frozen `now`;
then the billing service on both engines, and its "at most once" under concurrency."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.conf.settings import Config
from gate.rules import billing
from gate.rules.billing import BillingError, Card, PlanTerms, Policy
from gate.rules.timeutil import to_iso
from gate.services import subscriptions
from gate.storage.engine import integrity_errors
from tests.helpers import at_once

UTC = timezone.utc
T0 = datetime(2026, 1, 31, 15, 0, tzinfo=UTC)
MONTHLY = PlanTerms("monthly", 1200, "USD", "month", 0)
ANNUAL_TRIAL = PlanTerms("annual", 12000, "USD", "year", 14)
POLICY = Policy((1, 3, 5), 7, "canceled")
GOOD = Card("4242", 12, 2030)
RENEWAL_FAILS = Card("0341", 12, 2030)


def statuses(outcome):
    return [(c.from_status, c.to_status, c.reason) for c in outcome.changes]


@pytest.mark.parametrize("number, checkout, renewal", [
    ("4242 4242 4242 4242", None, None),
    ("4000 0000 0000 0002", "card_declined", "card_declined"),
    ("4000 0000 0000 9995", "insufficient_funds", "insufficient_funds"),
    ("4000-0000-0000-0341", None, "card_declined"),
])
def test_test_cards(number, checkout, renewal):
    card, errors = billing.validate_card(number, "12/30", "123", T0)
    assert errors == {} and card.last4 == number[-4:]
    assert billing.checkout_decline(number) == checkout
    assert billing.renewal_decline(card.last4) == renewal


@pytest.mark.parametrize("number, expiry, cvc, field, message", [
    ("4242 4242 4242 4241", "12/30", "123", "card_number", "not valid"),
    ("5555 5555 5555 4444", "12/30", "123", "card_number", "Unknown test card"),
    ("4242", "12/30", "123", "card_number", "Enter the card number"),
    ("4242 4242 4242 4242", "12/25", "123", "expiry", "expired"),
    ("4242 4242 4242 4242", "13/30", "123", "expiry", "MM/YY"),
    ("4242 4242 4242 4242", "soon", "123", "expiry", "MM/YY"),
    ("4242 4242 4242 4242", "12/30", "12", "cvc", "3 or 4 digit"),
    ("4242 4242 4242 4242", "12/30", "12a", "cvc", "3 or 4 digit"),
])
def test_card_field_errors(number, expiry, cvc, field, message):
    card, errors = billing.validate_card(number, expiry, cvc, T0)
    assert card is None and message in errors[field]


def test_this_month_is_not_expired():
    assert billing.validate_card("4242424242424242", "01/26", "123", T0)[1] == {}
    assert billing.validate_card("4242424242424242", "1/2026", "123", T0)[1] == {}


@given(st.text(alphabet="0123456789", min_size=12, max_size=19))
def test_luhn_matches_a_reference(digits):
    doubled = [int(d) * (2 if i % 2 else 1) for i, d in enumerate(reversed(digits))]
    assert billing.luhn_ok(digits) == (sum(d - 9 if d > 9 else d for d in doubled) % 10 == 0)


def test_checkout_without_trial_charges_and_is_active():
    outcome = billing.start(1, MONTHLY, GOOD, None, T0)
    sub = outcome.subscription
    assert sub.status == "active"
    assert sub.current_period_end == datetime(2026, 2, 28, 15, tzinfo=UTC)
    assert [(c.amount_cents, c.outcome, c.kind) for c in outcome.charges] == [(1200, "succeeded", "checkout")]
    assert statuses(outcome) == [(None, "active", "checkout")]


def test_declined_checkout_is_incomplete_and_can_be_completed():
    first = billing.start(1, MONTHLY, Card("0002", 12, 2030), "card_declined", T0)
    assert first.subscription.status == "incomplete"
    assert first.charges[0].decline_code == "card_declined"
    assert not billing.has_access(first.subscription, POLICY, T0)
    done = billing.complete(replace(first.subscription, id=9), MONTHLY, GOOD, None, T0 + timedelta(minutes=2))
    assert done.subscription.status == "active" and done.subscription.id == 9
    assert statuses(done) == [("incomplete", "active", "checkout completed")]


def test_trial_then_active_then_renewals_in_order():
    outcome = billing.start(1, ANNUAL_TRIAL, GOOD, None, T0)
    assert outcome.subscription.status == "trialing"
    assert outcome.charges[0].amount_cents == 0
    trial_end = T0 + timedelta(days=14)
    later = billing.settle(outcome.subscription, ANNUAL_TRIAL, POLICY, trial_end + timedelta(days=800))
    assert statuses(later) == [("trialing", "active", "trial_conversion"),
                               ("active", "active", "renewal"), ("active", "active", "renewal")]
    assert [c.at for c in later.charges] == [trial_end, trial_end.replace(year=2027),
                                             trial_end.replace(year=2028)]
    assert later.subscription.current_period_end == trial_end.replace(year=2029)


def test_a_trial_whose_card_fails_goes_past_due_then_ends():
    sub = billing.start(1, ANNUAL_TRIAL, RENEWAL_FAILS, None, T0).subscription
    trial_end = T0 + timedelta(days=14)
    converting = billing.settle(sub, ANNUAL_TRIAL, POLICY, trial_end + timedelta(hours=1))
    assert statuses(converting) == [("trialing", "past_due", "trial_conversion failed: card_declined")]
    assert converting.charges[0].kind == "trial_conversion" and converting.charges[0].outcome == "failed"
    assert billing.has_access(converting.subscription, POLICY, trial_end + timedelta(days=6))  # grace
    ended = billing.settle(converting.subscription, ANNUAL_TRIAL, POLICY, trial_end + timedelta(days=30))
    assert statuses(ended) == [("past_due", "canceled", "retries exhausted: card_declined")]
    assert not billing.has_access(ended.subscription, POLICY, trial_end + timedelta(days=8))


def test_a_trial_canceled_at_its_end_never_charges():
    sub = billing.start(1, ANNUAL_TRIAL, GOOD, None, T0).subscription
    asked = billing.cancel(sub, T0 + timedelta(days=3))
    assert statuses(asked) == [("trialing", "trialing", "cancel at period end requested")]
    trial_end = T0 + timedelta(days=14)
    assert billing.has_access(asked.subscription, POLICY, trial_end - timedelta(minutes=1))
    ended = billing.settle(asked.subscription, ANNUAL_TRIAL, POLICY, trial_end + timedelta(days=60))
    assert statuses(ended) == [("trialing", "canceled", "canceled at period end")]
    assert ended.charges == () and ended.subscription.ended_at == trial_end
    assert not billing.has_access(ended.subscription, POLICY, trial_end)
    now = billing.cancel(billing.start(2, ANNUAL_TRIAL, GOOD, None, T0).subscription, T0 + timedelta(days=1),
                         immediately=True)
    assert statuses(now) == [("trialing", "canceled", "canceled by the reader")]


def test_monthly_renewals_keep_the_billing_day():
    sub = billing.start(1, MONTHLY, GOOD, None, T0).subscription
    later = billing.settle(sub, MONTHLY, POLICY, datetime(2026, 6, 1, tzinfo=UTC))
    assert [c.at.date().isoformat() for c in later.charges] == [
        "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]


def test_0341_goes_past_due_retries_then_ends():
    sub = billing.start(1, MONTHLY, RENEWAL_FAILS, None, T0).subscription
    renewal = datetime(2026, 2, 28, 15, tzinfo=UTC)
    past_due = billing.settle(sub, MONTHLY, POLICY, renewal + timedelta(hours=1))
    assert past_due.subscription.status == "past_due"
    assert past_due.subscription.next_retry_at == renewal + timedelta(days=1)
    assert billing.has_access(past_due.subscription, POLICY, renewal + timedelta(days=6))
    ended = billing.settle(past_due.subscription, MONTHLY, POLICY, renewal + timedelta(days=30))
    assert [c.kind for c in ended.charges] == ["retry 1", "retry 2", "retry 3"]
    assert [c.at for c in ended.charges] == [renewal + timedelta(days=d) for d in (1, 3, 5)]
    assert statuses(ended) == [("past_due", "canceled", "retries exhausted: card_declined")]
    assert not billing.has_access(ended.subscription, POLICY, renewal + timedelta(days=6))


def test_grace_period_ends_access_even_while_retrying():
    policy = Policy((1, 3, 10), 4, "unpaid")
    sub = billing.start(1, MONTHLY, RENEWAL_FAILS, None, T0).subscription
    renewal = datetime(2026, 2, 28, 15, tzinfo=UTC)
    state = billing.settle(sub, MONTHLY, policy, renewal + timedelta(days=5)).subscription
    assert state.status == "past_due" and not billing.has_access(state, policy, renewal + timedelta(days=5))
    final = billing.settle(state, MONTHLY, policy, renewal + timedelta(days=11)).subscription
    assert final.status == "unpaid"


def test_updating_the_card_recovers_a_past_due_subscription():
    sub = billing.start(1, MONTHLY, RENEWAL_FAILS, None, T0).subscription
    renewal = datetime(2026, 2, 28, 15, tzinfo=UTC)
    state = billing.settle(sub, MONTHLY, POLICY, renewal + timedelta(hours=2)).subscription
    declined = billing.update_card(state, MONTHLY, Card("0002", 1, 2031), "card_declined", renewal + timedelta(hours=3))
    assert declined.subscription.status == "past_due" and declined.charges[0].outcome == "failed"
    assert declined.subscription.next_retry_at == state.next_retry_at
    fixed = billing.update_card(state, MONTHLY, GOOD, None, renewal + timedelta(hours=3))
    assert fixed.subscription.status == "active" and fixed.subscription.card_last4 == "4242"
    assert statuses(fixed) == [("past_due", "active", "card updated")]
    after = billing.settle(fixed.subscription, MONTHLY, POLICY, datetime(2026, 4, 1, tzinfo=UTC))
    assert statuses(after) == [("active", "active", "renewal")]


def test_cancel_at_period_end_keeps_access_then_ends():
    sub = billing.start(1, MONTHLY, GOOD, None, T0).subscription
    pending = billing.cancel(sub, T0 + timedelta(days=3)).subscription
    assert pending.cancel_at_period_end and billing.has_access(pending, POLICY, T0 + timedelta(days=20))
    ended = billing.settle(pending, MONTHLY, POLICY, datetime(2026, 3, 15, tzinfo=UTC))
    assert statuses(ended) == [("active", "canceled", "canceled at period end")]
    assert ended.charges == ()
    assert ended.subscription.ended_at == sub.current_period_end


def test_resume_before_the_period_ends():
    sub = billing.start(1, MONTHLY, GOOD, None, T0).subscription
    pending = billing.cancel(sub, T0 + timedelta(days=3)).subscription
    resumed = billing.resume(pending, T0 + timedelta(days=4)).subscription
    assert not resumed.cancel_at_period_end
    later = billing.settle(resumed, MONTHLY, POLICY, datetime(2026, 3, 15, tzinfo=UTC))
    assert later.subscription.status == "active" and len(later.charges) == 1


def test_cancel_now_ends_access_at_once():
    sub = billing.start(1, MONTHLY, GOOD, None, T0).subscription
    ended = billing.cancel(sub, T0 + timedelta(days=1), immediately=True).subscription
    assert ended.status == "canceled" and not billing.has_access(ended, POLICY, T0 + timedelta(days=1))


@pytest.mark.parametrize("operation", [
    lambda sub: billing.resume(sub, T0),
    lambda sub: billing.cancel(billing.cancel(sub, T0).subscription, T0),
    lambda sub: billing.cancel(replace(sub, status="canceled"), T0),
    lambda sub: billing.update_card(replace(sub, status="canceled"), MONTHLY, GOOD, None, T0),
])
def test_impossible_operations_are_refused(operation):
    sub = billing.start(1, MONTHLY, GOOD, None, T0).subscription
    with pytest.raises(BillingError):
        operation(sub)


def test_settling_twice_changes_nothing_more():
    sub = billing.start(1, MONTHLY, GOOD, None, T0).subscription
    now = datetime(2026, 9, 1, tzinfo=UTC)
    once = billing.settle(sub, MONTHLY, POLICY, now)
    twice = billing.settle(once.subscription, MONTHLY, POLICY, now)
    assert twice.changes == () and twice.charges == () and twice.subscription == once.subscription


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2080, 1, 1), timezones=st.just(UTC)),
       st.integers(min_value=0, max_value=400))
def test_period_end_is_the_next_billing_date(anchor, days):
    after = anchor + timedelta(days=days)
    end = billing.period_end(anchor, after, "month")
    assert end > after
    previous_months = (end.year - anchor.year) * 12 + end.month - anchor.month - 1
    assert billing.add_months(anchor, previous_months) <= after
    assert end.day == min(anchor.day, end.day) and (end.day == anchor.day or end.day >= 28)


# --- the billing service on the engine seam (SQLite and PostgreSQL) -----------------------


@pytest.fixture
def cfg():
    """The site's config without subscriber-only newsletters (the newsletter service is ported on its own)."""
    config = Config()
    config.newsletters = [item for item in config.newsletters if item.audience != "subscriber"]
    return config


def add_reader(db, email: str) -> int:
    """An account row, as signing up makes one."""
    return db.insert("readers", {"email": email, "session_token": secrets.token_urlsafe(12),
                                 "created_at": to_iso(T0), "is_admin": 0})


def changes(db, reader_id: int) -> list[tuple]:
    """The reader's subscription_changed events as (from, to, reason)."""
    events = [json.loads(row["data"]) for row in db.rows(
        "select data from events where type = 'subscription_changed' and reader_id = ? order by id", [reader_id])]
    return [(event["from"], event["to"], event["reason"]) for event in events]


def test_the_lifecycle_through_the_service(backend, cfg):
    reader = add_reader(backend, "life@example.com")
    declined, decline, _ = subscriptions.checkout(backend, cfg, reader, "monthly", Card("0002", 12, 2030),
                                                  "4000000000000002", "key-1", T0)
    assert declined.status == "incomplete" and decline == "card_declined"
    sub, decline, replay = subscriptions.checkout(backend, cfg, reader, "monthly", Card("0341", 12, 2030),
                                                  "4000000000000341", "key-2", T0)
    assert (sub.id, sub.status, decline, replay) == (declined.id, "active", None, False)
    assert subscriptions.checkout(backend, cfg, reader, "monthly", Card("0341", 12, 2030),
                                  "4000000000000341", "key-2", T0)[2] is True  # a replay
    subscriptions.cancel(backend, cfg, reader, T0 + timedelta(days=1))
    subscriptions.resume(backend, cfg, reader, T0 + timedelta(days=2))
    renewal = sub.current_period_end
    past_due = subscriptions.settle_reader(backend, cfg, reader, renewal + timedelta(hours=1))
    assert past_due.status == "past_due" and past_due.cancel_at_period_end is False
    assert subscriptions.grace_end(cfg, past_due) == renewal + timedelta(days=cfg.billing.grace_days)
    fixed = subscriptions.update_card(backend, cfg, reader, GOOD, "4242424242424242", renewal + timedelta(hours=2))
    assert fixed.status == "active" and fixed.card_last4 == "4242"
    assert [(p["kind"], p["outcome"]) for p in subscriptions.payments(backend, reader)] == [
        ("card update", "succeeded"), ("renewal", "failed"), ("checkout", "succeeded"), ("checkout", "failed")]
    assert changes(backend, reader) == [
        (None, "incomplete", "checkout declined: card_declined"), ("incomplete", "active", "checkout completed"),
        ("active", "active", "cancel at period end requested"), ("active", "active", "resumed"),
        ("active", "past_due", "renewal failed: card_declined"), ("past_due", "active", "card updated")]
    mailed = [row["kind"] for row in backend.rows("select kind from outbox order by id")]
    assert mailed == ["receipt", "cancel_scheduled", "payment_failed", "receipt"]
    assert backend.scalar("select count(*) from notices") == 4
    with pytest.raises(BillingError):
        subscriptions.resume(backend, cfg, reader, renewal + timedelta(hours=3))
    assert backend.scalar("select count(*) from payments") == 4  # a refused change wrote nothing


def test_two_nodes_ticking_at_once_charge_each_renewal_once(backend, backend_target, cfg):
    readers = [add_reader(backend, f"tick{n}@example.com") for n in range(5)]
    for reader in readers:
        subscriptions.grant(backend, cfg, reader, "monthly", T0, by="test")
    now = T0 + timedelta(days=40)  # one renewal due for each
    results, errors = at_once(backend_target, 4, lambda db: subscriptions.settle_all(db, cfg, now))
    assert errors == []
    renewals = backend.rows("select subscription_id, count(*) as n from payments where kind = 'renewal'"
                            " group by subscription_id")
    assert len(renewals) == 5 and {row["n"] for row in renewals} == {1}
    assert sum(result["charges"] for result in results) == 5  # each node counts the charges it made
    assert backend.scalar("select count(*) from outbox where kind = 'receipt'") == 5
    assert all(changes(backend, reader)[-1] == ("active", "active", "renewal") for reader in readers)
    assert subscriptions.settle_all(backend, cfg, now) == {"subscriptions": 0, "charges": 0}


def test_a_renewal_charged_twice_is_refused_by_the_unique_key(backend, cfg):
    reader = add_reader(backend, "twice@example.com")
    sub = subscriptions.grant(backend, cfg, reader, "monthly", T0, by="test")
    outcome = billing.settle(sub, MONTHLY, POLICY, T0 + timedelta(days=40))
    subscriptions.apply_outcome(backend, outcome, by="clock")
    with pytest.raises(integrity_errors()), backend.transaction():
        subscriptions.apply_outcome(backend, outcome, by="clock")  # a stale copy of the same renewal
    assert backend.scalar("select count(*) from payments where kind = 'renewal'") == 1


def test_one_checkout_form_posted_at_once_makes_one_subscription(backend, backend_target, cfg):
    reader = add_reader(backend, "double@example.com")

    def post(db):
        return subscriptions.checkout(db, cfg, reader, "monthly", GOOD, "4242424242424242", "one-form", T0)

    results, errors = at_once(backend_target, 4, post)
    assert errors == []
    assert len({sub.id for sub, _, _ in results}) == 1 and sorted(r[2] for r in results) == [False, True, True, True]
    assert backend.scalar("select count(*) from subscriptions") == 1
    assert backend.scalar("select count(*) from payments") == 1
    assert backend.scalar("select count(*) from checkouts") == 1
    assert backend.scalar("select count(*) from outbox where kind = 'receipt'") == 1


def test_two_checkout_forms_at_once_make_one_subscription(backend, backend_target, cfg):
    reader = add_reader(backend, "tabs@example.com")
    keys = iter(f"tab-{n}" for n in range(4))
    lock = threading.Lock()

    def post(db):
        with lock:
            key = next(keys)
        try:
            return subscriptions.checkout(db, cfg, reader, "monthly", GOOD, "4242424242424242", key, T0)[0].id
        except subscriptions.CheckoutError as error:
            return str(error)

    results, errors = at_once(backend_target, 4, post)
    assert errors == []
    assert sorted(results, key=str)[1:] == ["You already have a subscription: manage it from your account."] * 3
    assert backend.scalar("select count(*) from subscriptions") == 1
    assert backend.scalar("select count(*) from payments") == 1


def test_one_guest_checkout_posted_at_once_makes_one_account_and_one_charge(backend, backend_target, cfg):
    def post(db):
        return subscriptions.guest_checkout(db, cfg, "guest@example.com", "a-long-password", "monthly", GOOD,
                                            "4242424242424242", "guest-form", T0).outcome

    results, errors = at_once(backend_target, 4, post)
    assert errors == []
    assert sorted(results) == ["replayed", "replayed", "replayed", "subscribed"]
    assert backend.scalar("select count(*) from readers where email = 'guest@example.com'") == 1
    assert backend.scalar("select count(*) from subscriptions") == 1
    assert backend.scalar("select count(*) from payments") == 1
