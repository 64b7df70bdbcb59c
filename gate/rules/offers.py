"""Offers, pure: what a promo code or an introductory price takes off which period's charge.

An offer is a code (case-insensitive: kept upper-case), a discount and a duration, the
way a payment provider's coupons work:

- ``kind`` ``percent`` (``value`` percent off), ``amount`` (``value`` cents off) or
  ``free`` (``value`` whole periods at no charge);
- ``duration`` ``once`` (the first paid period), ``repeating`` (the first ``periods``
  paid periods) or ``forever``; a ``free`` offer always covers its ``value`` periods.

A subscription keeps the :class:`Discount` it was sold with, so an offer edited or
disabled later never changes a running price. Periods are numbered from 0, the first
paid one (a free trial is period -1). A plan's introductory price replaces the list
price for its first periods; an offer's discount applies to whichever price the period
has. Nothing here touches the database or the clock: ``now`` and the redemption count
are passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

Kind = Literal["percent", "amount", "free"]
Duration = Literal["once", "repeating", "forever"]
CODE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9_-]{2,31}$")


class Refusal(StrEnum):
    """Why a code cannot be used for this checkout: the code events and the API carry."""

    UNKNOWN = "unknown"
    DISABLED = "disabled"
    NOT_STARTED = "not_started"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"
    WRONG_PLAN = "wrong_plan"
    NEW_ONLY = "new_subscribers_only"
    NOT_YOURS = "not_yours"


#: Each refusal in the reader's words.
REFUSAL_MESSAGES = {
    Refusal.UNKNOWN: "We don't recognise that code. Check the spelling and try again.",
    Refusal.DISABLED: "That code is no longer available.",
    Refusal.NOT_STARTED: "That code isn't valid yet.",
    Refusal.EXPIRED: "That code has expired.",
    Refusal.EXHAUSTED: "That code has been fully redeemed.",
    Refusal.WRONG_PLAN: "That code doesn't apply to this plan.",
    Refusal.NEW_ONLY: "That code is for new subscribers only.",
    Refusal.NOT_YOURS: "That code is personal: sign in to the account it was sent to.",
}


def normalize_code(code: str) -> str:
    """A code as stored and compared: trimmed, upper-case (codes are case-insensitive)."""
    return (code or "").strip().upper()


def valid_code(code: str) -> bool:
    """Whether a normalised code has the shape of a code (3–32 letters, digits, - and _)."""
    return bool(CODE_PATTERN.match(code))


@dataclass(frozen=True)
class Discount:
    """What a subscription was sold with: the code, the kind and value, and how many periods (None: forever)."""

    code: str
    kind: Kind
    value: int
    periods: int | None

    def covers(self, period_index: int) -> bool:
        """Whether the discount applies to this paid period (0 = the first)."""
        return period_index >= 0 and (self.periods is None or period_index < self.periods)

    def apply(self, price_cents: int) -> int:
        """The price after the discount (never below zero)."""
        if self.kind == "free":
            return 0
        if self.kind == "percent":
            return max(0, price_cents - price_cents * self.value // 100)
        return max(0, price_cents - self.value)


@dataclass(frozen=True)
class OfferTerms:
    """One offer as configured or stored: a code and everything that limits its use."""

    code: str
    name: str
    kind: Kind
    value: int
    duration: Duration = "once"
    periods: int | None = None
    plans: tuple[str, ...] = ()
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    cap: int | None = None
    new_only: bool = False
    enabled: bool = True
    reader_id: int | None = None
    source: str = "config"

    @property
    def discount(self) -> Discount:
        """The discount a subscription sold with this offer keeps."""
        return Discount(self.code, self.kind, self.value, covered_periods(self))

    def applies_to(self, plan_id: str) -> bool:
        """Whether the offer may be used on this plan (no list: every plan)."""
        return not self.plans or plan_id in self.plans


def covered_periods(offer: OfferTerms) -> int | None:
    """How many paid periods the offer discounts (None: every one)."""
    if offer.kind == "free":
        return offer.value
    if offer.duration == "once":
        return 1
    if offer.duration == "repeating":
        return offer.periods
    return None


def refusal(offer: OfferTerms | None, plan_id: str, now: datetime, redeemed: int,
            has_subscribed: bool, reader_id: int | None) -> Refusal | None:
    """Why ``offer`` cannot be used now on ``plan_id`` (None: it can).

    ``redeemed`` is how many times it has been redeemed, ``has_subscribed`` whether the
    reader ever had a paid subscription, ``reader_id`` who asks (None: not signed in).
    """
    if offer is None:
        return Refusal.UNKNOWN
    if not offer.enabled:
        return Refusal.DISABLED
    if offer.starts_at is not None and now < offer.starts_at:
        return Refusal.NOT_STARTED
    if offer.ends_at is not None and now >= offer.ends_at:
        return Refusal.EXPIRED
    if offer.cap is not None and redeemed >= offer.cap:
        return Refusal.EXHAUSTED
    if not offer.applies_to(plan_id):
        return Refusal.WRONG_PLAN
    if offer.reader_id is not None and offer.reader_id != reader_id:  # a personal code: its reader, signed in
        return Refusal.NOT_YOURS
    if offer.new_only and has_subscribed:
        return Refusal.NEW_ONLY
    return None


def list_price(price_cents: int, intro_price_cents: int | None, intro_periods: int,
               period_index: int) -> int:
    """A plan's price for one paid period before any offer: the intro price for its first periods."""
    if intro_price_cents is not None and 0 <= period_index < intro_periods:
        return intro_price_cents
    return price_cents


def period_price(base_cents: int, discount: Discount | None, period_index: int) -> int:
    """What one paid period is charged: its price, less the discount when it covers the period."""
    if discount is not None and discount.covers(period_index):
        return discount.apply(base_cents)
    return base_cents


def money(cents: int, currency: str = "USD") -> str:
    """An amount as readers read it: $12, $1.50, €9 (other currencies by code)."""
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency)
    amount = f"{cents // 100}" if cents % 100 == 0 else f"{cents / 100:.2f}"
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


def _step(price: int, currency: str, interval: str, run: int, first: bool) -> str:
    """One stretch of equal prices: '$1 for your first month', '$6 a month for the next 2 months'."""
    which = "your first" if first else "the next"
    span = f"{which} {interval}" if run == 1 else f"{which} {run} {interval}s"
    if price == 0:
        return f"free for {span}"
    return f"{money(price, currency)} for {span}" if run == 1 else f"{money(price, currency)} a {interval} for {span}"


def describe(discount: Discount | None, price_cents: int, currency: str, interval: str,
             intro_price_cents: int | None = None, intro_periods: int = 0) -> str:
    """The price in words before any card is asked: '$6 a month for 3 months, then $12 a month'."""
    regular = f"{money(price_cents, currency)} a {interval}"
    steps = []
    horizon = max(intro_periods if intro_price_cents is not None else 0,
                  (discount.periods or 0) if discount else 0)
    index = 0
    while index < horizon:
        price = period_price(list_price(price_cents, intro_price_cents, intro_periods, index), discount, index)
        run = 1
        while index + run < horizon and period_price(
                list_price(price_cents, intro_price_cents, intro_periods, index + run),
                discount, index + run) == price:
            run += 1
        steps.append(_step(price, currency, interval, run, first=index == 0))
        index += run
    if discount is not None and discount.periods is None:
        forever = period_price(price_cents, discount, horizon)
        steps.append(f"{money(forever, currency)} a {interval} for as long as you subscribe")
        return ", then ".join(steps) + f" (regularly {regular})"
    if not steps:
        return regular
    return ", then ".join(steps) + f", then {regular}"
