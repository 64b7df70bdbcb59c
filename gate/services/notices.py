"""Lifecycle mail: what a subscriber is told when their subscription changes.

:mod:`gate.rules.billing` stays pure; the service layer hands each status change of
an outcome to :func:`for_change` inside the same transaction that saves it.
A row in ``notices`` (unique on subscription, kind and moment) is written
with each message, so a replayed outcome or a second worker never mails
twice. Mail is dated at the moment the change happened, so a month of time
travel leaves a month of mail in the order a reader would have had it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

import jinja2

from gate.conf.resources import resource_dir
from gate.rules.billing import Change, Charge, Subscription
from gate.rules.timeutil import to_iso
from gate.services import accounts, mail
from gate.storage.db import first

#: Days before a trial ends that the reader is reminded (as a payment provider does).
TRIAL_REMINDER_DAYS = 3
SUBJECTS = {
    "receipt": "Receipt for your subscription to {site}",
    "payment_failed": "Action needed: your payment to {site} failed",
    "trial_ending": "Your free trial of {site} ends on {date}",
    "cancel_scheduled": "Your subscription to {site} ends on {date}",
    "canceled": "Your subscription to {site} has ended",
    "winback": "Come back to {site}: a personal offer",
}


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    """The email templates, rendered as plain text (no HTML escaping in text mail)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(resource_dir("templates")),
                              autoescape=False, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def origin(cfg) -> str:
    """The origin of links in lifecycle mail (the configured public origin)."""
    return cfg.origin.rstrip("/")


def kind_of(change: Change) -> str | None:
    """Which message a status change calls for, if any."""
    if change.to_status == "past_due" and change.from_status != "past_due":
        return "payment_failed"
    if change.to_status in ("canceled", "unpaid") and change.from_status != change.to_status:
        return "canceled"
    if change.reason == "cancel at period end requested":
        return "cancel_scheduled"
    if change.to_status in ("trialing", "active") and change.from_status != change.to_status:
        return "receipt"  # checkout, trial conversion, a retry or new card that paid
    if change.to_status == "active" and change.reason == "renewal":
        return "receipt"
    return None


def _plan(cfg, plan_id: str):
    return next((plan for plan in cfg.plans if plan.id == plan_id), None)


def send(db, cfg, sub: Subscription, kind: str, at: datetime, **context) -> int | None:
    """Queue one message unless this (subscription, kind, moment) was already mailed."""
    fresh = db.insert_ignore("notices", {"subscription_id": sub.id, "kind": kind, "at": to_iso(at)})
    reader = accounts.by_id(db, sub.reader_id)
    if not fresh or reader is None:
        return None
    tz = cfg.publication.tz

    def day(moment: datetime | None) -> str:
        return moment.astimezone(tz).strftime("%B %-d, %Y") if moment else ""

    plan = _plan(cfg, sub.plan_id)
    values = {"site": cfg.publication.name, "plan": plan, "plan_name": plan.name if plan else sub.plan_id,
              "sub": sub, "day": day, "at": at, "links": _links(cfg), **context}
    text = _templates().get_template(f"email/{kind}.txt").render(values)
    subject = SUBJECTS[kind].format(site=values["site"], date=day(context.get("date")))
    message_id = mail.queue(db, to=reader.email, subject=subject, text=text, html=None,
                            kind=kind, sender=cfg.mail.sender, now=at,
                            tz=cfg.publication.tz)
    db.execute("update notices set outbox_id = ? where subscription_id = ? and kind = ? and at = ?",
               [message_id, sub.id, kind, to_iso(at)])
    return message_id


def _links(cfg) -> dict:
    base = origin(cfg)
    return {"account": f"{base}/account", "card": f"{base}/account/card",
            "plans": f"{base}/subscribe"}


def for_change(db, cfg, sub: Subscription, change: Change, charges: tuple[Charge, ...]) -> int | None:
    """Mail the reader about one status change (inside the caller's transaction)."""
    kind = kind_of(change)
    if kind is None:
        return None
    paid = next((c for c in charges if c.at == change.at and c.outcome == "succeeded"), None)
    failed = next((c for c in charges if c.at == change.at and c.outcome == "failed"), None)
    policy = cfg.billing
    context = {"change": change, "charge": paid or failed}
    if kind == "payment_failed":
        context["grace_ends"] = change.at + timedelta(days=policy.grace_days)
        context["next_retry"] = (change.at + timedelta(days=policy.retry_days[0])
                                 if policy.retry_days else None)
    if kind == "cancel_scheduled":
        context["date"] = sub.current_period_end
    return send(db, cfg, sub, kind, change.at, **context)


def trial_reminder_at(sub: Subscription) -> datetime | None:
    """When a trial's end reminder is due (None: not a trial that will be charged)."""
    if sub.status != "trialing" or sub.cancel_at_period_end or sub.trial_end is None:
        return None
    return max(sub.trial_end - timedelta(days=TRIAL_REMINDER_DAYS), sub.created_at)


def trial_reminder_due(db, sub: Subscription | None, now: datetime) -> bool:
    """Whether a trial's reminder has fallen due and not been sent yet."""
    at = trial_reminder_at(sub) if sub else None
    if at is None or at > now:
        return False
    return first(db, "select 1 as sent from notices where subscription_id = ? and kind = 'trial_ending'",
                 [sub.id]) is None


def remind_trial_end(db, cfg, sub: Subscription, now: datetime) -> int | None:
    """Tell a trialing reader when their first payment will be taken (once, dated when due)."""
    if not trial_reminder_due(db, sub, now):
        return None
    return send(db, cfg, sub, "trial_ending", trial_reminder_at(sub), date=sub.trial_end)
