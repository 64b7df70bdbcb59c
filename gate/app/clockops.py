"""Moving the site clock, and running everything that falls due as time passes.

Shared by `gate clock …` and the admin console: record the move, then settle
subscriptions (renewals, retries, expiries) and send scheduled newsletters.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app

from gate.app import site
from gate.app.db import get_db
from gate.rules import periods
from gate.services import newsletter, newsletter_mail, passes, presets, subscriptions
from gate.storage import events
from gate.storage.clock import Clock, Step


def run_due(now: datetime) -> dict:
    """Settle what billing owes, expire passes that ended and send the newsletters due by ``now``."""
    db, cfg = get_db(), site.config()
    billed = subscriptions.settle_all(db, cfg, now)
    expired = passes.expire_due(db, now)
    issues = newsletter_mail.run_due(db, cfg, current_app.secret_key, now)
    return {"subscriptions": billed["subscriptions"], "charges": billed["charges"], "passes_expired": expired,
            "issues": len(issues), "messages": sum(issue["sent"] for issue in issues)}


def moved(before: datetime, how: str, by: str) -> dict:
    """Record a clock move that already happened, then run what fell due."""
    db, cfg = get_db(), site.config()
    newsletter.start_schedule(db, cfg, before)  # a first move must not skip the issues it crosses
    now = Clock(db).now()
    events.record(db, "clock_changed", now, how=how, by=by,
                  **{"from": before.isoformat(), "to": now.isoformat()})
    return run_due(now)


def advance(step: Step, tz: ZoneInfo, who: str) -> dict:
    """Move the clock forward by a duration (months on the site's calendar in ``tz``)."""
    clock = Clock(get_db())
    before = clock.now()
    clock.advance(step.after(before, tz) - before)
    return moved(before, f"advance {step}", who)


def reset_demo(who: str) -> dict:
    """Start a class afresh: real time, the site's default preset, no lesson left on.

    Readers, subscriptions and history are kept (the audit needs them); persona
    accounts are rebuilt whenever someone switches to one.
    """
    db, cfg = get_db(), site.config()
    clock = Clock(db)
    before = clock.now()
    clock.reset()
    done = moved(before, "reset", who)
    now = clock.now()
    presets.use(db, cfg, cfg.publication.default_preset, now, by=who)
    newsletter.set_preticked_lesson(db, False, now, by=who)
    return done


def next_boundary(rules, now: datetime) -> datetime | None:
    """When the registered meter next resets (the end of its current window)."""
    tier = "registered" if rules.meters("registered") else "anonymous"
    if not rules.meters(tier):
        return None
    return periods.period_window(rules.tier(tier).period, now, rules.tz).end  # None: rolling or lifetime


def jump_to_boundary(rules, who: str) -> dict | None:
    """Jump to the next meter reset (a minute past it, so the new window has begun)."""
    clock = Clock(get_db())
    before = clock.now()
    target = next_boundary(rules, before)
    if target is None:
        return None
    clock.set(target + timedelta(minutes=1), freeze=clock.state().mode == "frozen")
    return moved(before, "next period boundary", who)
