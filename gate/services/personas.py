"""Demo personas: real accounts reset to a defined state in one click.

A presenter switches between them to show what each kind of reader sees.
Each switch rebuilds the persona from scratch: its unlocks, subscription,
payments and newsletter enrollments are replaced (events stay: they are
history). Subscriptions are built by the real billing state machine, started
in the past and settled to now, so their payment history is genuine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gate.rules import billing, periods
from gate.rules.timeutil import to_iso
from gate.services import accounts, gifts, newsletter, subscriptions
from gate.storage.quota import SqlQuotaStore


@dataclass(frozen=True)
class Persona:
    """One switchable reader: what the presenter sees on the button, and who it is."""

    id: str
    label: str
    description: str
    email: str | None


PERSONAS = (
    Persona("anonymous", "Anonymous", "A first-time visitor with no account.", None),
    Persona("new-reader", "New reader", "Just signed up; the whole meter is left.",
            "persona.new@meridian.example"),
    Persona("one-left", "1 unlock left", "A registered reader with one free article left.",
            "persona.one-left@meridian.example"),
    Persona("none-left", "0 unlocks left", "A registered reader who has used every free article.",
            "persona.none-left@meridian.example"),
    Persona("throwaway", "Throwaway", "Signed up a minute ago with a made-up address nobody has "
            "proven: one of a dozen accounts made for a fresh meter each.", "persona.throwaway@meridian.example"),
    Persona("trialing", "Trialing", "Two days into the annual plan's free trial.",
            "persona.trial@meridian.example"),
    Persona("active", "Subscriber", "A paying monthly subscriber.", "persona.active@meridian.example"),
    Persona("gift-giver", "Subscriber who gifts", "A subscriber who gifted one article this month: the link "
            "is on their gifts page, ready to open in a private window.", "persona.gifts@meridian.example"),
    Persona("past-due", "Past due", "A subscriber whose renewal failed yesterday (grace period).",
            "persona.past-due@meridian.example"),
    Persona("lapsed", "Lapsed", "A former subscriber whose subscription ended last month.",
            "persona.lapsed@meridian.example"),
)
BY_ID = {persona.id: persona for persona in PERSONAS}


def current(email: str | None) -> str | None:
    """Which persona an account is (the anonymous one when nobody is signed in)."""
    if email is None:
        return "anonymous"
    return next((persona.id for persona in PERSONAS if persona.email == email), None)


class PersonaError(ValueError):
    """An unknown persona id."""


def get(persona_id: str) -> Persona:
    """A persona by id."""
    try:
        return BY_ID[persona_id]
    except KeyError:
        raise PersonaError(f"no persona called {persona_id!r}") from None


def _clear(db, reader_id: int) -> None:
    """Remove the persona's state (not its events)."""
    db.execute("delete from unlocks where meter_key = ?", [f"reader:{reader_id}"])
    gifts.reset_giver(db, reader_id)
    db.execute("delete from notices where subscription_id in"
               " (select id from subscriptions where reader_id = ?)", [reader_id])
    db.execute("delete from payments where reader_id = ?", [reader_id])
    db.execute("delete from checkouts where reader_id = ?", [reader_id])
    db.execute("delete from subscriptions where reader_id = ?", [reader_id])
    db.execute("delete from enrollments where reader_id = ?", [reader_id])
    db.execute("update readers set comp_until = null, comp_by = null where id = ?", [reader_id])
    db.execute("update readers set email_verified_at = null where id = ?", [reader_id])


def _spend(db, rules, reader_id: int, count: int, now: datetime) -> None:
    """Unlock ``count`` published metered articles in the current window."""
    rule = rules.tiers.registered
    if count <= 0 or rule.unlimited or rule.limit == 0:
        return
    window = periods.period_window(rule.period, now, rules.tz)
    slugs = [row["slug"] for row in db.rows(
        "select slug from articles where access_class = 'metered' and published_at <= ?"
        " and synthetic = 0 order by published_at desc limit ?", [to_iso(now), count])]
    store = SqlQuotaStore(db)
    for offset, slug in enumerate(slugs):
        at = max(window.start, now - timedelta(minutes=30 + offset))
        store.spend(f"reader:{reader_id}", slug, window.key, at, lambda spends: True)


def _gift(db, cfg, reader_id: int, now: datetime) -> None:
    """One gift link of the newest published metered article, made now."""
    slug = db.scalar("select slug from articles where access_class = 'metered' and published_at <= ?"
                     " and synthetic = 0 order by published_at desc limit 1", [to_iso(now)])
    if slug is not None and cfg.gifts.per_period:
        gifts.make(db, cfg, accounts.by_id(db, reader_id), slug, now)


def _subscribe(db, cfg, reader_id: int, plan_id: str, last4: str, start: datetime,
               now: datetime, cancel_at: datetime | None = None) -> None:
    """A subscription started at ``start`` on a test card, lived through to ``now``.

    ``cancel_at`` is when the reader asked to cancel at the period end, as
    most do: the period they paid for runs out and nothing more is charged.
    """
    terms = subscriptions.plan_terms(cfg, plan_id)
    card = billing.Card(last4, 12, now.year + 3)
    outcome = billing.start(reader_id, terms, card, None, start)
    policy = subscriptions.policy(cfg)
    if cancel_at is not None:
        outcome = outcome.then(billing.settle(outcome.subscription, terms, policy, cancel_at))
        outcome = outcome.then(billing.cancel(outcome.subscription, cancel_at))
    outcome = outcome.then(billing.settle(outcome.subscription, terms, policy, now))
    subscriptions.apply_outcome(db, outcome, by="persona")
    newsletter.enroll_subscriber_lists(db, cfg, reader_id, start, source="persona", ip=None)
    newsletter.sync_access(db, cfg, reader_id,
                           billing.has_access(subscriptions.current(db, reader_id), policy, now), now)


def reset(db, cfg, rules_of, persona_id: str, now: datetime) -> accounts.Reader | None:
    """Rebuild a persona's account to its defined state, under the rules ``rules_of(reader)`` gives it.

    Returns None for the anonymous persona. The rebuild is one transaction under the
    account's subscription lock: two presenters switching to one persona at once
    (on two nodes) leave one subscription, not two.
    """
    persona = get(persona_id)
    if persona.email is None:
        return None
    reader = accounts.by_email(db, persona.email) or accounts.create(db, persona.email, None, now)
    rules = rules_of(reader)
    with db.transaction():
        subscriptions.lock_subscription(db, reader.id)
        _rebuild(db, cfg, rules, persona_id, reader.id, now)
    return accounts.by_id(db, reader.id)


def _rebuild(db, cfg, rules, persona_id: str, reader_id: int, now: datetime) -> None:
    """Clear the persona's account and give it its defined meter or subscription."""
    _clear(db, reader_id)
    if persona_id != "throwaway":  # every other persona is a real reader who clicked our link once
        accounts.mark_verified(db, reader_id, now)
    limit = rules.tiers.registered.limit
    monthly = next((p.id for p in cfg.plans if p.interval == "month"), cfg.plans[0].id)
    trial = next((p.id for p in cfg.plans if p.trial_days), monthly)
    if persona_id == "one-left" and isinstance(limit, int):
        _spend(db, rules, reader_id, limit - 1, now)
    elif persona_id == "none-left" and isinstance(limit, int):
        _spend(db, rules, reader_id, limit, now)
    elif persona_id == "trialing":
        _subscribe(db, cfg, reader_id, trial, "4242", now - timedelta(days=2), now)
    elif persona_id == "active":
        _subscribe(db, cfg, reader_id, monthly, "4242", now - timedelta(days=10), now)
    elif persona_id == "gift-giver":
        _subscribe(db, cfg, reader_id, monthly, "4242", now - timedelta(days=10), now)
        _gift(db, cfg, reader_id, now)
    elif persona_id == "past-due":
        start = billing.add_months(now, -1) - timedelta(days=1)
        _subscribe(db, cfg, reader_id, monthly, "0341", start, now)
    elif persona_id == "lapsed":  # paid two months, canceled in the second; ended a month ago
        start = billing.add_months(now, -3)
        _subscribe(db, cfg, reader_id, monthly, "4242", start, now,
                   cancel_at=billing.add_months(now, -2) + timedelta(days=10))
