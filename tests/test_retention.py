"""Keeping subscribers: pause in the billing state machine (pure), cancel reasons and save offers
(one a year, a meter on the quota store), and the win-back mail, on both engines."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate.rules import billing
from gate.rules.billing import BillingError, Card, PlanTerms, Policy

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
