"""Keeping subscribers: why they cancel, and the save offer that may answer the reason.

Cancelling asks for a reason first (``[retention.reasons]``), kept on the subscription
and as a ``cancel_reason`` event. If ``[[retention.save_offers]]`` answers that reason and
the reader has not accepted one in the last 365 days, the offer is shown instead of
cancelling: a discount on the next periods, or a pause of 1–3 months. Accepting applies it
at once, with no new checkout; declining cancels at the period end, as before.

"At most one save offer a year" is a meter on the quota store, like an article unlock:
one spend on ``save:<reader_id>``, admitted only if the meter has no spend in the last 365
days, under the meter's lock and inside the same transaction as the change it pays for, so
two accepts at once (two tabs, two nodes) spend once and apply once, on either engine.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from gate.rules import billing
from gate.rules.billing import Change, Outcome, Subscription
from gate.rules.offers import Discount, OfferTerms, money
from gate.services import offers, subscriptions
from gate.storage import events
from gate.storage.quota import SqlQuotaStore

#: Save offers spend from this meter (one per reader), never from a reading meter.
METER_PREFIX = "save:"
#: How long one accepted save offer keeps the next one away (a rolling window).
WINDOW = timedelta(days=365)


class RetentionError(billing.BillingError):
    """A cancel-flow step the reader's state does not allow, with the reader-facing reason."""


def meter_key(reader_id: int) -> str:
    """The quota-store meter that counts a reader's accepted save offers."""
    return f"{METER_PREFIX}{reader_id}"


def parse_reason(cfg, value) -> str:
    """A reason id from a form or request: one of the configured reasons, or RetentionError."""
    if not isinstance(value, str) or value not in cfg.retention.reasons:
        raise RetentionError("choose one of the reasons listed")
    return value


def configured(cfg, reason: str | None):
    """The save offer config/site.toml gives for a reason, if any."""
    return next((offer for offer in cfg.retention.save_offers if offer.reason == reason), None)


def _fresh(spends, now: datetime) -> bool:
    """Whether a save-offer meter admits one more now: no spend inside the rolling year."""
    return all(now - spend.at >= WINDOW for spend in spends)


def _applies(offer, sub: Subscription) -> bool:
    """Whether a save offer can be applied to this subscription as it is now."""
    if sub.cancel_at_period_end:
        return False
    return sub.status == "active" if offer.kind == "pause" else sub.status in billing.PAID_UP


def offer_for(db, cfg, sub: Subscription | None, reason: str | None, now: datetime):
    """The save offer to show a reader cancelling for ``reason`` now, or None."""
    offer = configured(cfg, reason)
    if offer is None or sub is None or not _applies(offer, sub):
        return None
    return offer if _fresh(SqlQuotaStore(db).spends(meter_key(sub.reader_id)), now) else None


def words(offer, cfg, sub: Subscription) -> str:
    """The offer in the reader's words: '50% off your next 3 months', 'pause for 1, 2 or 3 months'."""
    if offer.kind == "pause":
        months = [str(m) for m in offer.pause_months]
        listed = months[0] if len(months) == 1 else f"{', '.join(months[:-1])} or {months[-1]}"
        return f"Pause your subscription for {listed} month{'s' * (offer.pause_months != [1])}"
    plan = subscriptions.plan_terms(cfg, sub.plan_id)
    span = plan.interval if offer.periods == 1 else f"{offer.periods} {plan.interval}s"
    base = plan.price(None, sub.period_index + 1)[0]
    cut = Discount("SAVE", "percent", offer.percent_off, None).apply(base)
    return (f"{offer.percent_off}% off your next {span} ({money(cut, plan.currency)} a {plan.interval} "
            f"instead of {money(base, plan.currency)})")


def _cancellable(sub: Subscription) -> None:
    """Only a subscription in good standing, not already ending, is cancelled through the reasons."""
    if sub.status not in billing.PAID_UP or sub.cancel_at_period_end:
        raise RetentionError("only a subscription that renews can be set to end at the period end")


def ask(db, cfg, reader_id: int, reason: str, now: datetime):
    """Record why the reader cancels; the save offer to show (nothing cancelled yet), or None once cancelled.

    Without an offer to show, this cancels at the period end in the same transaction.
    """
    reason = parse_reason(cfg, reason)
    shown = []

    def operation(sub: Subscription) -> Outcome:
        _cancellable(sub)
        sub = replace(sub, cancel_reason=reason)
        events.record(db, "cancel_reason", now, reader_id=reader_id, subscription_id=sub.id, reason=reason)
        offer = offer_for(db, cfg, sub, reason, now)
        if offer is None:
            return billing.cancel(sub, now)
        events.record(db, "save_offer_shown", now, reader_id=reader_id, subscription_id=sub.id,
                      reason=reason, offer=offer.kind)
        shown.append(offer)
        return Outcome(sub)

    subscriptions.change(db, cfg, reader_id, now, operation, by="reader")
    return shown[0] if shown else None


def _spend(db, reader_id: int, now: datetime) -> None:
    """Spend the reader's one save offer of the year, or refuse (inside the caller's transaction)."""
    spent, _ = SqlQuotaStore(db).spend(meter_key(reader_id), "save-offer", now.date().isoformat(), now,
                                       lambda spends: _fresh(spends, now))
    if not spent:
        raise RetentionError("you have already had a save offer this year")


def _discount(db, cfg, offer, sub: Subscription, now: datetime) -> Outcome:
    """Put a personal save code on the subscription: percent off exactly the next ``periods`` periods."""
    code = f"SAVE-{sub.reader_id}-{now.strftime('%Y%m%d')}"
    terms = OfferTerms(code, f"Save offer: {offer.percent_off}% off {offer.periods} periods", "percent",
                       offer.percent_off, "repeating", offer.periods, (sub.plan_id,), now, None, cap=1,
                       reader_id=sub.reader_id, source="save")
    offers.add(db, terms, now)
    offers.redeem(db, cfg, code, sub.plan_id, sub.reader_id, now)  # its one use (a subscription keeps one row)
    # Discount.covers counts from period 0 and the periods so far are charged: this covers the next N.
    discount = Discount(code, "percent", offer.percent_off, sub.period_index + 1 + offer.periods)
    return Outcome(sub.with_discount(discount), (Change(now, sub.status, sub.status, f"save offer {code}"),))


def accept(db, cfg, reader_id: int, now: datetime, months: int | None = None) -> Subscription:
    """Apply the save offer answering the reader's reason now (a pause takes ``months``); no new checkout."""

    def operation(sub: Subscription) -> Outcome:
        offer = configured(cfg, sub.cancel_reason)
        if offer is None or not _applies(offer, sub):
            raise RetentionError("there is no save offer to accept")
        if offer.kind == "pause" and months not in offer.pause_months:
            raise RetentionError(f"choose how long to pause: {', '.join(map(str, offer.pause_months))} months")
        _spend(db, reader_id, now)
        outcome = billing.pause(sub, months, now) if offer.kind == "pause" else _discount(db, cfg, offer, sub, now)
        events.record(db, "save_offer_accepted", now, reader_id=reader_id, subscription_id=sub.id,
                      reason=sub.cancel_reason, offer=offer.kind, months=months,
                      code=outcome.subscription.offer_code if offer.kind == "discount" else None)
        return outcome

    return subscriptions.change(db, cfg, reader_id, now, operation, by="reader")


def decline(db, cfg, reader_id: int, now: datetime) -> Subscription:
    """Turn the save offer down: cancel at the period end, as without one."""

    def operation(sub: Subscription) -> Outcome:
        _cancellable(sub)
        offer = configured(cfg, sub.cancel_reason)
        events.record(db, "save_offer_declined", now, reader_id=reader_id, subscription_id=sub.id,
                      reason=sub.cancel_reason, offer=offer.kind if offer else None)
        return billing.cancel(sub, now)

    return subscriptions.change(db, cfg, reader_id, now, operation, by="reader")
