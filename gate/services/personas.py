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

from gate.rules import billing, paywall, periods
from gate.rules.timeutil import to_iso
from gate.services import accounts, devices, engagement, gifts, newsletter, orgs, passes, subscriptions, winback
from gate.storage.quota import SqlQuotaStore


@dataclass(frozen=True)
class Persona:
    """One switchable reader: what the presenter sees on the button, and who it is."""

    id: str
    label: str
    description: str
    email: str | None
    #: Where switching to it takes the presenter (None: back to the same page).
    lands_on: str | None = None
    #: Where its next article request comes from (gate.rules.referral.PERSONA_REFERERS), else None.
    arrives_from: str | None = None


#: The code the "holding a code" persona arrives with, as from a newsletter or an ad.
HELD_CODE = "WELCOME50"
#: How many devices the "shared account" persona is signed in on when the preset has no device limit.
SHARED_DEVICES = 4
#: The devices it is signed in on elsewhere, and how long ago each was last seen.
SHARED_SEEN = (("Safari on iPhone", timedelta(hours=2)), ("Chrome on Windows", timedelta(days=1)),
               ("Firefox on Linux", timedelta(days=3)), ("Safari on iPad", timedelta(days=6)))
#: How many days before its intro price ends the "intro ending" persona is built.
INTRO_DAYS_LEFT = 3

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
    Persona("past-due", "Past due", "A subscriber whose renewal failed yesterday (grace period).",
            "persona.past-due@meridian.example"),
    Persona("lapsed", "Lapsed", "A former subscriber whose subscription ended last month.",
            "persona.lapsed@meridian.example"),
    Persona("gift-giver", "Subscriber who gifts", "A subscriber who gifted one article this month: the link "
            "is on their gifts page, ready to open in a private window.", "persona.gifts@meridian.example"),
    Persona("day-pass", "Day-pass holder", "Bought a day pass 20 hours ago: every article is open for "
            "4 more hours. Move the clock to see it end.", "persona.day-pass@meridian.example"),
    Persona("paused", "Paused", "A subscriber who paused for a month; it resumes in a few days.",
            "persona.paused@meridian.example"),
    Persona("winback", "Lapsed, with a win-back code", "A former subscriber whose subscription ended two "
            "weeks ago: the win-back mail with a personal code is in the outbox.", "persona.winback@meridian.example"),
    # Offers (issue 16): a reader arriving with a promo code, and the intro-price cliff.
    Persona("holding-code", "Has a code", f"A registered reader who followed a link with the code {HELD_CODE}.",
            "persona.code@meridian.example", f"/subscribe?code={HELD_CODE}"),
    Persona("intro-ending", "Intro ending", f"On an introductory price that ends in {INTRO_DAYS_LEFT} days: "
            "move the clock a week and the renewal is charged at the list price.",
            "persona.intro@meridian.example", "/account"),
    Persona("licensed", "Licensed reader", "A student of Riverside University, whose 25-seat group licence "
            "opens every article to anyone on riverside.example.", "persona.licensed@riverside.example"),
    # Device limits (issue 17): an account shared until it hit the cap.
    Persona("shared-account", "Shared account", "A registered reader already signed in on as many devices as "
            f"the device limit allows ({SHARED_DEVICES} where the preset sets none): signing in as them signs "
            "out the least recently seen.", "persona.shared@meridian.example", "/account"),
    # Referral rules (issue 17): the next article is opened from a search result.
    Persona("from-search", "Arrives from search", "An anonymous visitor whose next article comes from a Google "
            "result: a preset with side doors (side-doors, bypass-lab) lets it read outside the meter.", None,
            arrives_from="search"),
)
#: How long ago the day-pass persona bought its pass.
PASS_BOUGHT_AGO = timedelta(hours=20)
BY_ID = {persona.id: persona for persona in PERSONAS}
#: Which persona each account is, by email (every page asks, to mark the demo bar's current persona).
_BY_EMAIL = {persona.email: persona.id for persona in PERSONAS if persona.email}


def current(email: str | None) -> str | None:
    """Which persona an account is (the anonymous one when nobody is signed in)."""
    if email is None:
        return "anonymous"
    return _BY_EMAIL.get(email)


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
    db.execute("delete from redemptions where reader_id = ?", [reader_id])  # before the subscriptions they name
    db.execute("delete from passes where reader_id = ?", [reader_id])
    db.execute("delete from checkouts where reader_id = ?", [reader_id])
    db.execute("delete from subscriptions where reader_id = ?", [reader_id])
    db.execute("delete from enrollments where reader_id = ?", [reader_id])
    db.execute("update readers set comp_until = null, comp_by = null, pass_until = null where id = ?", [reader_id])
    db.execute("update readers set email_verified_at = null where id = ?", [reader_id])


def _spend(db, rules, reader_id: int, count: int, now: datetime) -> None:
    """Unlock ``count`` published metered articles in the current window."""
    rule = rules.tiers.registered
    if count <= 0 or not rules.meters("registered"):
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
               now: datetime, cancel_at: datetime | None = None, pause_at: datetime | None = None) -> None:
    """A subscription started at ``start`` on a test card, lived through to ``now``.

    ``cancel_at`` is when the reader asked to cancel at the period end, as
    most do: the period they paid for runs out and nothing more is charged.
    ``pause_at`` is when they paused it for a month instead.
    """
    terms = subscriptions.plan_terms(cfg, plan_id)
    card = billing.Card(last4, 12, now.year + 3)
    outcome = billing.start(reader_id, terms, card, None, start)
    policy = subscriptions.policy(cfg)
    for moment, step in ((cancel_at, lambda sub: billing.cancel(sub, cancel_at)),
                         (pause_at, lambda sub: billing.pause(sub, 1, pause_at))):
        if moment is not None:
            outcome = outcome.then(billing.settle(outcome.subscription, terms, policy, moment))
            outcome = outcome.then(step(outcome.subscription))
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
    limit = _allowance(db, rules, reader_id, now)
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
    elif persona_id == "day-pass" and cfg.passes:
        kind = min(cfg.passes, key=lambda item: item.hours).id
        passes.grant(db, cfg, reader_id, kind, billing.Card("4242", 12, now.year + 3), now - PASS_BOUGHT_AGO)
    elif persona_id == "licensed":
        orgs.demo_member(db, reader_id, now)
    elif persona_id == "lapsed":  # paid two months, canceled in the second; ended a month ago
        start = billing.add_months(now, -3)
        _subscribe(db, cfg, reader_id, monthly, "4242", start, now,
                   cancel_at=billing.add_months(now, -2) + timedelta(days=10))
    elif persona_id == "paused":  # paused a month ago, back in four days
        paused = billing.add_months(now, -1) + timedelta(days=4)
        _subscribe(db, cfg, reader_id, monthly, "4242", paused - timedelta(days=40), now, pause_at=paused)
    elif persona_id == "winback":
        _lapsed_with_winback(db, cfg, reader_id, monthly, now)
    elif persona_id == "intro-ending":
        _intro_ending(db, cfg, reader_id, now)
    elif persona_id == "shared-account":
        count = rules.devices.limit or SHARED_DEVICES
        devices.plant(db, reader_id, now, tuple(SHARED_SEEN[i % len(SHARED_SEEN)] for i in range(count)),
                      rules.devices.limit)


def _allowance(db, rules, reader_id: int, now: datetime):
    """The persona's registered allowance now: the tier's limit, or the band its own reading history scores."""
    if rules.dynamic_for("registered") is None:
        return rules.tiers.registered.limit
    key = f"reader:{reader_id}"
    signals = engagement.read(db, rules, "registered", key, "direct", now)
    return paywall.meter_for(rules, paywall.Viewer("registered", key, signals=signals), now).allowance


def _lapsed_with_winback(db, cfg, reader_id: int, plan_id: str, now: datetime) -> None:
    """A subscription that ended just over ``days_after`` days ago, its win-back mail sent since."""
    after = cfg.retention.winback.days_after if cfg.retention.winback else 14
    ended = now - timedelta(days=after + 1)
    start = billing.add_months(ended, -1)
    _subscribe(db, cfg, reader_id, plan_id, "4242", start, now, cancel_at=start + timedelta(days=10))
    if cfg.retention.winback is not None:
        winback.send(db, cfg, subscriptions.current(db, reader_id), now)


def _intro_ending(db, cfg, reader_id: int, now: datetime) -> None:
    """A subscriber on the plan with an intro price, in its last intro period, ending in a few days."""
    plan = next((p for p in cfg.plans if p.intro_price_cents is not None and p.intro_periods), None)
    if plan is None:
        raise PersonaError("no plan in config/site.toml has an intro price (intro_price_cents)")
    months = plan.intro_periods * (12 if plan.interval == "year" else 1)
    start = billing.add_months(now + timedelta(days=INTRO_DAYS_LEFT), -months)
    _subscribe(db, cfg, reader_id, plan.id, "4242", start, now)
