"""The pure offer rules: which period a discount covers, what it costs, and why a code is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gate.rules import billing
from gate.rules.billing import Card, PlanTerms
from gate.rules.offers import Discount, OfferTerms, Refusal, covered_periods, describe, refusal

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)
MONTHLY = PlanTerms("monthly", 1200, "USD", "month")
INTRO = PlanTerms("intro-monthly", 1200, "USD", "month", intro_price_cents=100, intro_periods=1)
CARD = Card("4242", 12, 2030)


@pytest.mark.parametrize("kind, value, duration, periods, covered", [
    ("percent", 50, "once", None, 1),
    ("percent", 50, "repeating", 3, 3),
    ("amount", 500, "forever", None, None),
    ("free", 2, "once", None, 2),
])
def test_an_offer_covers_the_periods_its_duration_says(kind, value, duration, periods, covered):
    assert covered_periods(OfferTerms("CODE", "n", kind, value, duration, periods)) == covered


@pytest.mark.parametrize("discount, prices", [
    (Discount("HALF3", "percent", 50, 3), [600, 600, 600, 1200, 1200]),
    (Discount("FIVEOFF", "amount", 500, None), [700, 700, 700, 700, 700]),
    (Discount("FREE1", "free", 1, 1), [0, 1200, 1200, 1200, 1200]),
    (Discount("HUGE", "amount", 5000, 1), [0, 1200, 1200, 1200, 1200]),
    (None, [1200] * 5),
])
def test_billing_charges_the_discount_for_exactly_the_periods_it_covers(discount, prices):
    outcome = billing.start(7, MONTHLY, CARD, None, NOW, discount)
    sub = outcome.subscription
    for _ in range(4):
        outcome = outcome.then(billing.settle(outcome.subscription, MONTHLY, billing.Policy(),
                                              outcome.subscription.current_period_end))
    assert [charge.amount_cents for charge in outcome.charges] == prices
    assert {charge.list_cents for charge in outcome.charges} == {1200}
    named = [charge.offer_code for charge in outcome.charges]
    assert named == [discount.code if discount and discount.covers(i) else None for i in range(5)]
    assert sub.period_index == 0


def test_an_intro_price_then_the_list_price_and_a_trial_comes_first():
    outcome = billing.start(7, INTRO, CARD, None, NOW)
    outcome = outcome.then(billing.settle(outcome.subscription, INTRO, billing.Policy(), NOW + timedelta(days=70)))
    assert [charge.amount_cents for charge in outcome.charges] == [100, 1200, 1200]
    trial = PlanTerms("t", 1200, "USD", "month", trial_days=14, intro_price_cents=100, intro_periods=1)
    outcome = billing.start(7, trial, CARD, None, NOW, Discount("HALF", "percent", 50, 1))
    outcome = outcome.then(billing.settle(outcome.subscription, trial, billing.Policy(), NOW + timedelta(days=50)))
    assert [(c.kind, c.amount_cents) for c in outcome.charges] == [
        ("trial_verification", 0), ("trial_conversion", 50), ("renewal", 1200)]


def test_a_retried_renewal_is_charged_at_the_same_periods_price():
    sub = billing.start(7, MONTHLY, Card("0341", 12, 2030), None, NOW, Discount("HALF2", "percent", 50, 2))
    outcome = billing.settle(sub.subscription, MONTHLY, billing.Policy(), NOW + timedelta(days=40))
    assert [(c.kind, c.amount_cents, c.outcome) for c in outcome.charges] == [
        ("renewal", 600, "failed"), ("retry 1", 600, "failed"), ("retry 2", 600, "failed"), ("retry 3", 600, "failed")]


OFFER = OfferTerms("SPRING", "Spring", "percent", 30, plans=("monthly",), starts_at=NOW,
                   ends_at=NOW + timedelta(days=30), cap=2, new_only=True)


@pytest.mark.parametrize("offer, plan, now, redeemed, subscribed, reader, expected", [
    (OFFER, "monthly", NOW, 0, False, 1, None),
    (None, "monthly", NOW, 0, False, 1, Refusal.UNKNOWN),
    (OfferTerms("OFF", "n", "percent", 5, enabled=False), "monthly", NOW, 0, False, 1, Refusal.DISABLED),
    (OFFER, "monthly", NOW - timedelta(seconds=1), 0, False, 1, Refusal.NOT_STARTED),
    (OFFER, "monthly", NOW + timedelta(days=30), 0, False, 1, Refusal.EXPIRED),
    (OFFER, "monthly", NOW, 2, False, 1, Refusal.EXHAUSTED),
    (OFFER, "annual", NOW, 0, False, 1, Refusal.WRONG_PLAN),
    (OFFER, "monthly", NOW, 0, True, 1, Refusal.NEW_ONLY),
    (OfferTerms("MINE", "n", "percent", 5, reader_id=3), "monthly", NOW, 0, False, 4, Refusal.NOT_YOURS),
    (OfferTerms("MINE", "n", "percent", 5, reader_id=3), "monthly", NOW, 0, False, None, Refusal.NOT_YOURS),
    (OfferTerms("MINE", "n", "percent", 5, reader_id=3), "monthly", NOW, 0, False, 3, None),
])
def test_a_code_is_refused_for_the_first_reason_that_applies(offer, plan, now, redeemed, subscribed, reader,
                                                               expected):
    assert refusal(offer, plan, now, redeemed, subscribed, reader) == expected


@pytest.mark.parametrize("discount, intro, words", [
    (Discount("H", "percent", 50, 3), None, "$6 a month for your first 3 months, then $12 a month"),
    (None, (100, 1), "$1 for your first month, then $12 a month"),
    (Discount("F", "free", 1, 1), None, "free for your first month, then $12 a month"),
    (Discount("A", "amount", 250, None), None, "$9.50 a month for as long as you subscribe (regularly $12 a month)"),
    (None, None, "$12 a month"),
])
def test_the_price_is_described_in_words_before_any_card_is_asked(discount, intro, words):
    intro_price, intro_periods = intro or (None, 0)
    assert describe(discount, 1200, "USD", "month", intro_price, intro_periods) == words
