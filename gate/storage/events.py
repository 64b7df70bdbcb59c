"""Everything that happens is an event, appended to the ``events`` table.

Dashboards, funnels and the audit read from here; nothing important is
only a log line. Each type is declared once, with what it means.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from datetime import datetime
from types import MappingProxyType

from gate.rules.timeutil import to_iso

#: Every event type, with the question it answers.
TYPES = {
    "article_view": "A viewer opened an article; data has the decision.",
    "gate_impression": "A viewer was shown a gate instead of the full text.",
    "signup": "A reader created an account.",
    "login": "A reader signed in (data: method).",
    "logout": "A reader signed out.",
    "device_signed_in": "A reader signed in on a device (data: device, method, limit, from, to: live sessions).",
    "device_signed_out": "Devices of a reader were signed out (data: reason: user, limit or everywhere; sessions; "
                         "from, to: live sessions).",
    "unlock": "A meter spent one article (data: used, limit, mode).",
    "unlock_refused": "An unlock was asked for and not granted (data: reason).",
    "meter_merged": "A visitor's spends moved to the account they signed in to.",
    "magic_link_sent": "A sign-in link was written to the outbox.",
    "preset_changed": "The active preset changed (data: from, to).",
    "preset_saved": "A preset was saved in the instance folder (data: by, name, created, from, to: its rules "
                    "before, null when new, and after).",
    "preset_deleted": "A saved preset was deleted (data: by, name, from: its rules, to: null).",
    "clock_changed": "The site clock moved (data: from, to, how).",
    "reader_changed": "An account's flags changed (data: field, from, to).",
    "subscription_changed": "A subscription moved between states (data: from, to, reason, by).",
    "newsletter_changed": "An enrollment changed status (data: list, from, to, reason).",
    "newsletter_sent": "An issue of a list went out (data: list, issue, sent, skipped).",
    "confirmation_sent": "A double opt-in confirmation email was written to the outbox.",
    "persona_switched": "Demo mode: the presenter became a persona (data: persona, from, to, instructor; "
                        "tried: the preset a Try from the studio previews).",
    "persona_returned": "Demo mode: an admin viewing as a persona returned to their own account (data: from, to; "
                        "tried: the preset of the Try it ended).",
    "admin_action": "An admin changed something (data: admin, action, target, details).",
    "consent_lesson_changed": "The /learn pre-ticked consent lesson was turned on or off (data: from, to, by).",
    "comp_changed": "Complimentary access was granted or removed (data: from, to, by).",
    "gift_made": "A subscriber made a gift link (data: link_id, expires_at, devices, from, to: gifts used).",
    "gift_opened": "A gift link counted one more device (data: link_id, device, from, to: devices).",
    "checkout_declined": "An anonymous checkout was declined; no account was made (data: plan, decline).",
    "pass_purchased": "A reader bought a day or week pass (data: pass_id, kind, amount_cents, starts_at, "
                      "ends_at, from, to).",
    "pass_expired": "A pass reached its end, recorded at that moment (data: pass_id, kind, from, to).",
    "pass_declined": "A pass's card was declined; nothing was written or charged (data: kind, decline).",
    "offer_viewed": "A promo code was shown on the plans page (data: code, plan, plans it prices).",
    "offer_applied": "A usable promo code was priced at checkout (data: code, plan).",
    "offer_refused": "A promo code could not be used (data: code, plan, reason: a gate.rules.offers.Refusal).",
    "offer_redeemed": "A checkout paid with a promo code (data: code, plan, subscription_id or pass_id, amount_cents).",
    # retention (issue 16, part C)
    "cancel_reason": "A cancelling subscriber said why (data: subscription_id, reason).",
    "save_offer_shown": "A save offer answered a cancel reason (data: subscription_id, reason, offer).",
    "save_offer_accepted": "A save offer was accepted and applied (data: subscription_id, reason, offer, months, code).",
    "save_offer_declined": "A save offer was turned down; the subscription ends at the period end (data: reason, offer).",
    "referral_read": "A search arrival read an article outside the meter, on its daily search allowance "
                     "(data: referral, used, allowance, window, via).",
    "winback_sent": "A lapsed subscriber was mailed a personal win-back code (data: subscription_id, code).",
    "winback_redeemed": "A win-back code was redeemed at checkout (data: code, subscription_id).",
    "org_created": "An organisation's group licence was made (data: org, seats, domain, ip_ranges, until).",
    "org_joined": "A reader took a seat of a group licence (data: org, via, seat, from, to).",
    "org_left": "A reader left a group licence, freeing their seat (data: org, from, to).",
    "org_join_refused": "A join of a group licence was refused (data: org, via, reason: full, expired, "
                        "not_on_domain ...).",
    "org_link_sent": "A single-use join link of a group licence was mailed (data: org, via: domain or invite).",
}


#: Tags added to every event recorded in the current context, so funnels can be
#: split by experiment variant: a dict, or (in a web request) a function that
#: works them out when the first event needs them. The default is read-only: one shared dict.
TAGS: ContextVar[Mapping | Callable[[], dict]] = ContextVar("gate_event_tags", default=MappingProxyType({}))


class UnknownEvent(ValueError):
    """An event type that was never declared in TYPES."""


#: One encoder for every event's data: ``json.dumps(data, default=str)`` builds a new one per call.
_DATA_JSON = json.JSONEncoder(default=str)

#: The columns of a row built by :func:`row`, in its order.
COLUMNS = ("at", "type", "reader_id", "visitor_id", "slug", "data")
INSERT = f"insert into events ({', '.join(COLUMNS)}) values ({', '.join('?' for _ in COLUMNS)})"


def row(
    type: str,
    at: datetime,
    *,
    reader_id: int | None = None,
    visitor_id: str | None = None,
    slug: str | None = None,
    **data,
) -> tuple:
    """One event as the values of INSERT, tagged with the context's tags."""
    return as_rows(pending(at, [(type, data)], reader_id=reader_id, visitor_id=visitor_id, slug=slug))[0]


def pending(
    at: datetime,
    typed: Iterable[tuple[str, dict]],
    *,
    reader_id: int | None = None,
    visitor_id: str | None = None,
    slug: str | None = None,
) -> list[tuple]:
    """Events of one moment about one viewer and article (a view and its gate impression), not yet as text.

    ``typed`` holds each event's type and data. Each comes back as a row of INSERT with the time still
    a datetime and the data still a dict: the context's tags, worked out now once for all of them,
    merged into a new dict of the event's own data, which nothing else holds. :func:`as_rows` makes
    the text; the background writer (:mod:`gate.storage.eventlog`) makes it for a whole batch at once,
    outside the request, so a value must not change once queued (a view's are strings).
    """
    if at.tzinfo is None:  # here, in the request that made it, not later in the writer's thread
        raise ValueError("stored times must be timezone-aware")
    tags = TAGS.get()
    tags = tags() if callable(tags) else tags
    built = []
    for type, data in typed:
        if type not in TYPES:
            raise UnknownEvent(type)
        built.append((at, type, reader_id, visitor_id, slug, {**tags, **data}))
    return built


def as_rows(events: Iterable[tuple]) -> list[tuple]:
    """Pending events as the values of INSERT: the time as stored, the data as JSON."""
    encode = _DATA_JSON.encode
    return [(to_iso(at), type, reader_id, visitor_id, slug, encode(data))
            for at, type, reader_id, visitor_id, slug, data in events]


def record(db, type: str, at: datetime, **fields) -> None:
    """Append one event."""
    db.execute(INSERT, row(type, at, **fields))


def record_rows(db, rows: list[tuple]) -> None:
    """Append events built by :func:`row`: multi-row inserts, or on PostgreSQL a COPY for a writer's batch."""
    db.insert_rows("events", COLUMNS, rows)


def recent(db, limit: int = 50, type: str | None = None) -> list[dict]:
    """The newest events, optionally of one type."""
    where, params = ("where type = ?", [type]) if type else ("", [])
    rows = db.rows(f"select * from events {where} order by id desc limit ?", [*params, limit])
    return [{**row, "data": json.loads(row["data"] or "{}")} for row in rows]
