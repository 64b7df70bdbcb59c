"""Billing: test cards, and the subscription lifecycle as a pure state machine.

It follows a payment provider's subscription lifecycle, with ``now`` always
passed in:

``incomplete`` (first payment failed) → ``trialing`` → ``active`` → renewal
each period; a failed renewal → ``past_due`` with retries on a schedule and
access during a grace period; retries exhausted → ``canceled`` or ``unpaid``.
``cancel_at_period_end`` keeps access until the period ends. An ``active``
subscription may be ``paused`` for 1–3 months: access and charges stop at once, and
at ``resumes_at`` a new period starts and is charged as a renewal would be.

Nothing here touches the database: :func:`settle` takes a subscription and
returns the new one plus every status change and charge attempt, each at the
moment it happened, so a year of time travel replays every renewal in order.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from gate.rules import offers
from gate.rules.offers import Discount

Status = Literal["incomplete", "trialing", "active", "past_due", "paused", "canceled", "unpaid"]
#: Statuses in good standing: subscriber access until the period ends, no grace period involved.
PAID_UP: tuple[Status, ...] = ("trialing", "active")
#: Statuses of a subscription that has not ended (past due still has its grace period). A paused
#: one is live (it resumes on its own, and no second subscription may start meanwhile) but gives
#: no access; only :func:`has_access` says who reads.
LIVE: tuple[Status, ...] = (*PAID_UP, "past_due", "paused")
ENDED: tuple[Status, ...] = ("canceled", "unpaid")
#: Each status in words, for every page that shows one.
STATUS_LABELS = {"incomplete": "Payment needed", "trialing": "Free trial", "active": "Active",
                 "past_due": "Past due", "paused": "Paused", "canceled": "Canceled", "unpaid": "Unpaid"}
#: Each kind of charge in words ("retry N" is worded by :func:`charge_label`).
CHARGE_LABELS = {"checkout": "First payment", "trial_verification": "Card check for the free trial",
                 "trial_conversion": "First payment after the trial", "renewal": "Renewal",
                 "card update": "Payment with the new card", "resume": "First payment after a pause",
                 "pass": "Day or week pass"}
#: How long a pause may last, in months.
PAUSE_MONTHS = range(1, 4)


def status_label(status: str) -> str:
    """A subscription status in words."""
    return STATUS_LABELS.get(status, status)


def charge_label(kind: str) -> str:
    """A charge's kind in words: 'retry 2' is the second retry of a failed renewal."""
    if kind.startswith("retry "):
        return f"Renewal, retry {kind.removeprefix('retry ')}"
    return CHARGE_LABELS.get(kind, kind)


# --- test cards ---------------------------------------------------------------


@dataclass(frozen=True)
class TestCard:
    """How a test card behaves: the decline code at checkout and at renewal (None = paid)."""

    label: str
    checkout: str | None
    renewal: str | None


#: The test cards, by full number. Anything else is refused as unknown.
TEST_CARDS = {
    "4242424242424242": TestCard("Succeeds", None, None),
    "4000000000000002": TestCard("Declined", "card_declined", "card_declined"),
    "4000000000009995": TestCard("Insufficient funds", "insufficient_funds", "insufficient_funds"),
    "4000000000000341": TestCard("Succeeds at checkout, fails every renewal", None, "card_declined"),
}
#: Renewals only know the last four digits (all we store): they identify the test card.
_BY_LAST4 = {number[-4:]: card for number, card in TEST_CARDS.items()}

DECLINE_MESSAGES = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
}


#: Each decline code in words, for payment histories.
DECLINE_LABELS = {"card_declined": "card declined", "insufficient_funds": "insufficient funds"}


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every real card number satisfies."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


@dataclass(frozen=True)
class Card:
    """A validated card: only the last four digits are ever kept."""

    last4: str
    exp_month: int
    exp_year: int


def validate_card(number: str, expiry: str, cvc: str, now: datetime) -> tuple[Card | None, dict]:
    """Check a card form; returns (card, {}) or (None, {field: message})."""
    errors = {}
    digits = re.sub(r"[\s-]", "", number or "")
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        errors["card_number"] = "Enter the card number (digits only, spaces are fine)."
    elif not luhn_ok(digits):
        errors["card_number"] = "That card number is not valid: check for a typo."
    elif digits not in TEST_CARDS:
        errors["card_number"] = "Unknown test card. Use 4242 4242 4242 4242 (see the list below)."
    match = re.fullmatch(r"\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*", expiry or "")
    month = year = 0
    if not match or not 1 <= int(match.group(1)) <= 12:
        errors["expiry"] = "Enter the expiry date as MM/YY."
    else:
        month, year = int(match.group(1)), int(match.group(2))
        year += 2000 if year < 100 else 0
        if (year, month) < (now.year, now.month):
            errors["expiry"] = "This card has expired."
    if not re.fullmatch(r"\d{3,4}", (cvc or "").strip()):
        errors["cvc"] = "Enter the 3 or 4 digit security code."
    if errors:
        return None, errors
    return Card(digits[-4:], month, year), {}


def checkout_decline(card_number: str) -> str | None:
    """The decline code a test card gets at checkout, or None when it pays."""
    return TEST_CARDS[re.sub(r"[\s-]", "", card_number)].checkout


def renewal_decline(last4: str) -> str | None:
    """The decline code a stored card gets at renewal, or None when it pays."""
    card = _BY_LAST4.get(last4)
    return card.renewal if card else "card_declined"


# --- policy and periods -------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Dunning rules: when to retry a failed renewal and what happens after."""

    retry_days: tuple[int, ...] = (1, 3, 5)
    grace_days: int = 7
    on_exhausted: Literal["canceled", "unpaid"] = "canceled"


@dataclass(frozen=True)
class PlanTerms:
    """What the state machine needs of a plan."""

    id: str
    price_cents: int
    currency: str
    interval: Literal["month", "year"]
    trial_days: int = 0
    intro_price_cents: int | None = None
    intro_periods: int = 0

    def price(self, discount: Discount | None, period_index: int) -> tuple[int, str | None]:
        """What paid period ``period_index`` costs, and the offer code whose discount applies (if any)."""
        base = offers.list_price(self.price_cents, self.intro_price_cents, self.intro_periods, period_index)
        if discount is not None and discount.covers(period_index):
            return offers.period_price(base, discount, period_index), discount.code
        return base, None


def add_months(anchor: datetime, months: int) -> datetime:
    """``anchor`` plus whole months, clamping the day (Jan 31 + 1 month = Feb 28/29)."""
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_end(anchor: datetime, after: datetime, interval: str) -> datetime:
    """The first billing date on the anchor's cycle that is later than ``after``."""
    step = 12 if interval == "year" else 1
    months = max(0, (after.year - anchor.year) * 12 + after.month - anchor.month - step)
    months -= months % step
    candidate = add_months(anchor, months)
    while candidate <= after:
        months += step
        candidate = add_months(anchor, months)
    return candidate


# --- the subscription ---------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    """A reader's subscription to one plan."""

    reader_id: int
    plan_id: str
    status: Status
    card_last4: str
    created_at: datetime
    anchor: datetime
    current_period_start: datetime
    current_period_end: datetime
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False
    past_due_since: datetime | None = None
    retry_count: int = 0
    next_retry_at: datetime | None = None
    ended_at: datetime | None = None
    id: int | None = None
    #: The discount it was sold with (see gate.rules.offers.Discount), kept as sold.
    offer_code: str | None = None
    discount_kind: str | None = None
    discount_value: int | None = None
    discount_periods: int | None = None
    #: Which paid period is current: 0 is the first, -1 a free trial.
    period_index: int = 0
    paused_at: datetime | None = None
    resumes_at: datetime | None = None
    cancel_reason: str | None = None

    @property
    def discount(self) -> Discount | None:
        """The discount this subscription was sold with, if any."""
        if self.offer_code is None:
            return None
        return Discount(self.offer_code, self.discount_kind, self.discount_value, self.discount_periods)

    def with_discount(self, discount: Discount | None) -> "Subscription":
        """This subscription carrying ``discount`` (None: none) from now on."""
        if discount is None:
            return replace(self, offer_code=None, discount_kind=None, discount_value=None, discount_periods=None)
        return replace(self, offer_code=discount.code, discount_kind=discount.kind,
                       discount_value=discount.value, discount_periods=discount.periods)


@dataclass(frozen=True)
class Change:
    """One lifecycle step, for the events table: from, to, why, and when."""

    at: datetime
    from_status: str | None
    to_status: str
    reason: str


@dataclass(frozen=True)
class Charge:
    """One charge attempt, for the payments table."""

    at: datetime
    amount_cents: int
    currency: str
    outcome: Literal["succeeded", "failed"]
    decline_code: str | None
    kind: str
    card_last4: str
    #: The offer whose discount this charge got, and the plan's regular price it was taken off.
    offer_code: str | None = None
    list_cents: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What an operation did: the new subscription, its changes and its charges."""

    subscription: Subscription
    changes: tuple[Change, ...] = field(default=())
    charges: tuple[Charge, ...] = field(default=())

    def then(self, other: "Outcome") -> "Outcome":
        """This outcome followed by another on the resulting subscription."""
        return Outcome(other.subscription, self.changes + other.changes, self.charges + other.charges)


def _charge(plan: PlanTerms, at: datetime, last4: str, decline: str | None, kind: str,
            period_index: int, discount: Discount | None = None) -> Charge:
    """A charge for paid period ``period_index`` at its price (intro price and discount applied)."""
    amount, code = plan.price(discount, period_index)
    return Charge(at, amount, plan.currency, "failed" if decline else "succeeded", decline, kind, last4,
                  code, plan.price_cents)


def _verification(plan: PlanTerms, at: datetime, last4: str, decline: str | None) -> Charge:
    """The zero-amount card check that starts a free trial."""
    return Charge(at, 0, plan.currency, "failed" if decline else "succeeded", decline, "trial_verification",
                  last4, None, plan.price_cents)


def start(reader_id: int, plan: PlanTerms, card: Card, decline: str | None,
          now: datetime, discount: Discount | None = None) -> Outcome:
    """Checkout: charge (or, with a trial, verify) the card and create the subscription.

    ``discount`` is the offer redeemed at checkout, if any; it prices the first paid
    period and the ones it covers after.
    """
    trial_end = now + timedelta(days=plan.trial_days) if plan.trial_days else None
    end = trial_end or period_end(now, now, plan.interval)
    index = -1 if trial_end else 0
    charge = (_verification(plan, now, card.last4, decline) if trial_end
              else _charge(plan, now, card.last4, decline, "checkout", index, discount))
    status = "incomplete" if decline else "trialing" if trial_end else "active"
    sub = Subscription(reader_id, plan.id, status, card.last4, now, now, now, end, trial_end,
                       period_index=index).with_discount(discount)
    reason = f"checkout declined: {decline}" if decline else "checkout"
    return Outcome(sub, (Change(now, None, status, reason),), (charge,))


def complete(sub: Subscription, plan: PlanTerms, card: Card, decline: str | None,
             now: datetime) -> Outcome:
    """Pay an ``incomplete`` subscription with another card (a checkout retried)."""
    if sub.status != "incomplete":
        raise ValueError("only an incomplete subscription can be completed")
    fresh = start(sub.reader_id, plan, card, decline, now, sub.discount)
    new = replace(fresh.subscription, id=sub.id, created_at=sub.created_at)
    changes = () if decline else (Change(now, "incomplete", new.status, "checkout completed"),)
    return Outcome(new, changes, fresh.charges)


def _paid_up(sub: Subscription, **changes) -> Subscription:
    """Active, with no dunning left over (a renewal, retry or new card that went through)."""
    return replace(sub, status="active", past_due_since=None, retry_count=0, next_retry_at=None, **changes)


def _renew(sub: Subscription, plan: PlanTerms, policy: Policy, at: datetime, *,
           kind: str | None = None, anchor: datetime | None = None) -> Outcome:
    """Charge for the next period at ``at`` (a period end, the trial's end, or a pause's end with a new anchor)."""
    decline = renewal_decline(sub.card_last4)
    kind = kind or ("trial_conversion" if sub.status == "trialing" else "renewal")
    index = sub.period_index + 1
    charge = _charge(plan, at, sub.card_last4, decline, kind, index, sub.discount)
    anchor = anchor or (at if sub.status == "trialing" else sub.anchor)
    new_period = dict(anchor=anchor, current_period_start=at, period_index=index, paused_at=None,
                      resumes_at=None, current_period_end=period_end(anchor, at, plan.interval))
    if decline:
        new = replace(sub, status="past_due", past_due_since=at, retry_count=0,
                      next_retry_at=at + timedelta(days=policy.retry_days[0]) if policy.retry_days else at,
                      **new_period)
        return Outcome(new, (Change(at, sub.status, "past_due", f"{kind} failed: {decline}"),), (charge,))
    new = _paid_up(sub, **new_period)
    return Outcome(new, (Change(at, sub.status, "active", kind),), (charge,))


def _retry(sub: Subscription, plan: PlanTerms, policy: Policy, at: datetime) -> Outcome:
    """Try a past-due renewal again; give up when the schedule runs out."""
    decline = renewal_decline(sub.card_last4)
    charge = _charge(plan, at, sub.card_last4, decline, f"retry {sub.retry_count + 1}", sub.period_index,
                     sub.discount)
    if not decline:
        new = _paid_up(sub)
        return Outcome(new, (Change(at, "past_due", "active", "retry succeeded"),), (charge,))
    count = sub.retry_count + 1
    if count < len(policy.retry_days):
        new = replace(sub, retry_count=count,
                      next_retry_at=sub.past_due_since + timedelta(days=policy.retry_days[count]))
        return Outcome(new, (), (charge,))
    end = policy.on_exhausted
    new = replace(sub, status=end, retry_count=count, next_retry_at=None, ended_at=at)
    return Outcome(new, (Change(at, "past_due", end, f"retries exhausted: {decline}"),), (charge,))


def _end_of_term(sub: Subscription, at: datetime) -> Outcome:
    new = replace(sub, status="canceled", ended_at=at, cancel_at_period_end=False)
    return Outcome(new, (Change(at, sub.status, "canceled", "canceled at period end"),))


def _next_step(sub: Subscription, plan: PlanTerms, policy: Policy, now: datetime) -> Outcome | None:
    """The earliest step that is due at ``now``, if any."""
    if sub.status == "paused" and sub.resumes_at is not None and sub.resumes_at <= now:
        return _renew(sub, plan, policy, sub.resumes_at, kind="resume", anchor=sub.resumes_at)
    if sub.status in PAID_UP and sub.current_period_end <= now:
        if sub.cancel_at_period_end:
            return _end_of_term(sub, sub.current_period_end)
        return _renew(sub, plan, policy, sub.current_period_end)
    if sub.status == "past_due" and sub.next_retry_at is not None and sub.next_retry_at <= now:
        return _retry(sub, plan, policy, sub.next_retry_at)
    return None


def settle(sub: Subscription, plan: PlanTerms, policy: Policy, now: datetime) -> Outcome:
    """Apply every renewal, retry and expiry due by ``now``, in the order they fell due."""
    outcome = Outcome(sub)
    for _ in range(10_000):  # a century of monthly renewals; guards a malformed row
        step = _next_step(outcome.subscription, plan, policy, now)
        if step is None:
            return outcome
        outcome = outcome.then(step)
    raise RuntimeError("settle did not converge")


def grace_ends(sub: Subscription | None, policy: Policy) -> datetime | None:
    """When a past-due subscription's access runs out, if it is past due."""
    if sub is None or sub.past_due_since is None:
        return None
    return sub.past_due_since + timedelta(days=policy.grace_days)


def has_access(sub: Subscription | None, policy: Policy, now: datetime) -> bool:
    """Whether a (settled) subscription gives subscriber access now (never while paused)."""
    if sub is None or sub.status == "paused":
        return False
    if sub.status in PAID_UP:
        return now < sub.current_period_end
    if sub.status == "past_due" and sub.past_due_since is not None:
        return now < grace_ends(sub, policy)
    return False


class BillingError(ValueError):
    """An operation that the subscription's state does not allow."""


def cancel(sub: Subscription, now: datetime, *, immediately: bool = False) -> Outcome:
    """Cancel: by default at the period end (access continues); or right now."""
    if sub.status not in LIVE:
        raise BillingError(f"a {sub.status} subscription cannot be canceled")
    if immediately:
        new = replace(sub, status="canceled", ended_at=now, cancel_at_period_end=False,
                      next_retry_at=None)
        return Outcome(new, (Change(now, sub.status, "canceled", "canceled by the reader"),))
    if sub.status == "past_due":
        raise BillingError("a past-due subscription can only be canceled now, or fixed by updating the card")
    if sub.status == "paused":
        raise BillingError("a paused subscription can only be canceled now, or resumed")
    if sub.cancel_at_period_end:
        raise BillingError("this subscription is already set to end at the period end")
    new = replace(sub, cancel_at_period_end=True)
    return Outcome(new, (Change(now, sub.status, sub.status, "cancel at period end requested"),))


def resume(sub: Subscription, now: datetime) -> Outcome:
    """Undo a cancel-at-period-end before the period ends."""
    if not sub.cancel_at_period_end or sub.status not in PAID_UP:
        raise BillingError("only a subscription set to end at the period end can be resumed")
    new = replace(sub, cancel_at_period_end=False)
    return Outcome(new, (Change(now, sub.status, sub.status, "resumed"),))


def pause(sub: Subscription, months: int, now: datetime) -> Outcome:
    """Pause an active subscription for 1–3 months: access and charges stop now, and it resumes on its own.

    The rest of the period already paid is not carried over (the pause starts now, as
    the reader asked); at ``resumes_at`` a new period starts and is charged.
    """
    if sub.status != "active":
        raise BillingError(f"only an active subscription can be paused, not a {status_label(sub.status).lower()} one")
    if sub.cancel_at_period_end:
        raise BillingError("this subscription is set to end at the period end: resume it before pausing")
    if months not in PAUSE_MONTHS:
        raise BillingError(f"a pause lasts {PAUSE_MONTHS.start} to {PAUSE_MONTHS.stop - 1} months, not {months}")
    new = replace(sub, status="paused", paused_at=now, resumes_at=add_months(now, months))
    return Outcome(new, (Change(now, "active", "paused", f"paused for {months} month{'s' * (months > 1)}"),))


def unpause(sub: Subscription, plan: PlanTerms, policy: Policy, now: datetime) -> Outcome:
    """End a pause early, at the reader's request: a new period starts now and is charged."""
    if sub.status != "paused":
        raise BillingError("only a paused subscription can be resumed early")
    return _renew(sub, plan, policy, now, kind="resume", anchor=now)


def update_card(sub: Subscription, plan: PlanTerms, card: Card, decline: str | None,
                now: datetime) -> Outcome:
    """Put a new card on file; a past-due subscription is charged on it at once.

    ``decline`` is what the new card does when charged now (its checkout
    behaviour). A failed charge leaves the retry schedule as it was.
    """
    if sub.status not in LIVE:
        raise BillingError(f"a {sub.status} subscription has no card to update")
    new = replace(sub, card_last4=card.last4)
    if sub.status != "past_due":
        return Outcome(new)
    charge = _charge(plan, now, card.last4, decline, "card update", sub.period_index, sub.discount)
    if decline:
        return Outcome(new, (), (charge,))
    new = _paid_up(new)
    return Outcome(new, (Change(now, "past_due", "active", "card updated"),), (charge,))
