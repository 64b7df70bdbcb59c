"""The invariant audit: from the database alone, check that no quota, access, billing or newsletter rule was broken.

Each check is a function of a database (the engine seam, SQLite or PostgreSQL) and the validated
:class:`gate.conf.settings.Config` that returns :class:`Violation` records; :func:`run`
applies them all over one :class:`gate.audit.history.History`.

Deliberate exceptions, each for a reason the site documents:
the bypass-lab preset (``porous``) keeps anonymous meters in a cookie, so
anonymous views under it are not auditable server-side; demo personas are
rebuilt without unlock or signup events; the seeded demo accounts are created
without a signup event.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gate.audit.history import Event, History, Timeline, Unlock, parse_json, parse_time
from gate.rules import billing, periods
from gate.rules.paywall import Reason, Rules
from gate.rules.timeutil import from_iso

#: Every kind of violation, with what it means.
KINDS = {
    "quota_exceeded": "A meter spent more distinct articles in one window than the rules then allowed.",
    "quota_spent_by_subscriber": "A reader's meter was spent while they had subscriber access.",
    "access_unjustified": "A full-access view whose reason is missing, unknown or impossible for its "
                          "article, viewer and preset.",
    "access_without_unlock": "A full-access view justified by the meter, with no unlock of that article.",
    "access_without_subscription": "A full-access view justified by a subscription or comp the reader "
                                   "did not have then.",
    "subscription_impossible_state": "A subscription in a state the lifecycle cannot reach.",
    "subscriptions_overlap": "Two subscriptions of one reader were live at the same time.",
    "payment_without_subscription": "A payment with no subscription, or another reader's subscription.",
    "negative_charge": "A successful charge of a negative amount.",
    "subscription_event_mismatch": "A subscription's status differs from its last subscription_changed event.",
    "newsletter_not_enrolled": "A newsletter went to an address not actively enrolled in (or consenting "
                               "to) that list when it was sent.",
    "delivery_mismatch": "A newsletter delivery and the outbox disagree.",
    "enrollment_event_mismatch": "An enrollment's status differs from its last newsletter_changed event.",
    "unlock_without_event": "An unlock row with no unlock event for that meter, article and moment.",
    "signup_mismatch": "A reader without exactly one signup event, or a signup event naming no reader.",
    "gift_allowance_over": "A subscriber made more gift links in one period than the [gifts] allowance.",
    "gift_opens_over": "A gift link counted more devices than its cap.",
}
#: Reasons that justify full access (see gate.rules.paywall.decide).
FULL_REASONS = (Reason.SUBSCRIBER, Reason.FREE_ARTICLE, Reason.TIER_UNLIMITED, Reason.ALREADY_UNLOCKED,
                Reason.METER_AVAILABLE, Reason.GIFT)
METER_REASONS = (Reason.ALREADY_UNLOCKED, Reason.METER_AVAILABLE)
#: A view may be served from another request's spend whose clock read a moment later (concurrency).
RACE_SLACK = timedelta(minutes=5)
#: Demo personas' synthetic spends are dated up to this long before the switch that made them.
PERSONA_SPAN = timedelta(days=7)
_STATUSES = ("incomplete", *billing.LIVE, *billing.ENDED)


@dataclass(frozen=True)
class Violation:
    """One broken rule: its kind (a key of KINDS), what happened, and the rows involved."""

    kind: str
    message: str
    ids: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The violation as the JSON report shows it."""
        return {"kind": self.kind, "message": self.message, "ids": self.ids}


def _reader_of(meter_key: str) -> int | None:
    """The account a meter key belongs to (None for a visitor's meter)."""
    kind, _, ident = meter_key.partition(":")
    return int(ident) if kind == "reader" and ident.isdigit() else None


# --- 1. quota -------------------------------------------------------------------------


def _origin(history: History, row: Unlock) -> tuple[str, Event | None]:
    """The meter a row was spent from (a visitor's, for rows merged at login) and its unlock event."""
    event = history.unlock_event_at.get((row.meter_key, row.slug, row.raw_at))
    if event is not None:
        return row.meter_key, event
    reader_id = _reader_of(row.meter_key)
    for visitor in sorted(history.visitors_of.get(reader_id, ())) if reader_id is not None else ():
        event = history.unlock_event_at.get((f"visitor:{visitor}", row.slug, row.raw_at))
        if event is not None:
            return f"visitor:{visitor}", event
    return row.meter_key, None


def _candidate_presets(history: History, row: Unlock, event: Event | None) -> list[str]:
    """The presets that may have governed a spend: exact by append order when its event is known.

    An event recorded under a demo preview names its preset (the site's
    history does not know the preview), and that preset governed it.
    """
    if event is not None:
        return [event.data.get("preset") or history.presets.as_of(event.id)[0]]
    names = list(history.presets.at(row.at))
    reader_id = _reader_of(row.meter_key)
    switches = history.persona_switches.get(reader_id, ()) if reader_id is not None else ()
    if switches:  # a persona's spends are written by its last switch, under the rules then
        last = switches[-1]
        names.append(last.data.get("preset") or history.presets.as_of(last.id + 1)[0])
    return names


def _allowed(history: History, names: list[str], tier: str, moment: datetime,
             prior: list[Unlock]) -> tuple[bool, str]:
    """Whether any candidate preset (and any of its variants) allowed this many spends."""
    seen = []
    for name in names:
        variants = history.rules_variants(name)
        if not variants:
            return True, f"unknown preset {name!r}"  # a preset file since removed: nothing to check
        limits = [variant.tier(tier).limit for variant in variants]
        if "unlimited" in limits:
            return True, f"{tier} readers are unlimited under {name}"
        base = variants[0]
        window = periods.period_window(base.tier(tier).period, moment, base.tz)
        used = len({row.slug for row in prior if window.contains(row.at)})
        if used <= max(limits):
            return True, ""
        seen.append(f"{used} distinct articles in window {window.key} with a {tier} limit of "
                    f"{max(limits)} under {name}")
    return False, "; ".join(seen)


def _anonymous_prior(row: Unlock, group: list[Unlock]) -> list[Unlock]:
    """A visitor's spends up to one of theirs: insertion order where kept, else time."""
    if row.meter_key.startswith("visitor:"):
        return [other for other in group if (other.id <= row.id if other.meter_key == row.meter_key
                                              else other.at <= row.at)]
    return [other for other in group if other.at <= row.at]


def check_quota(db, cfg, history: History | None = None) -> list[Violation]:
    """No meter spent more distinct articles in a window than the rules allowed at the time."""
    history = history or History(db, cfg)
    found: list[Violation] = []
    anonymous: dict[str, list[tuple[Unlock, Event | None]]] = defaultdict(list)
    by_meter: dict[str, list[Unlock]] = defaultdict(list)
    for row in history.unlocks:
        by_meter[row.meter_key].append(row)
    for meter, rows in by_meter.items():
        reader_id = _reader_of(meter)
        for row in rows:
            origin, event = _origin(history, row)
            if reader_id is None or origin != meter:
                anonymous[origin].append((row, event))
                continue
            if event is not None and history.subscriber_as_of(reader_id, event.id, row.at):
                found.append(Violation("quota_spent_by_subscriber",
                                       f"{meter} spent {row.slug} at {row.raw_at} while a subscriber",
                                       {"unlock_id": row.id, "meter_key": meter, "event_id": event.id}))
                continue
            prior = [other for other in rows if other.id <= row.id]  # as the meter held it then
            ok, why = _allowed(history, _candidate_presets(history, row, event), "registered", row.at, prior)
            if not ok:
                found.append(Violation("quota_exceeded", f"{meter} spent {row.slug} at {row.raw_at}: {why}",
                                       {"unlock_id": row.id, "meter_key": meter, "window_key": row.window_key}))
    for origin, pairs in anonymous.items():
        group = [row for row, _ in pairs]
        for row, event in pairs:
            prior = _anonymous_prior(row, group)
            ok, why = _allowed(history, _candidate_presets(history, row, event), "anonymous", row.at, prior)
            if not ok:
                found.append(Violation("quota_exceeded", f"{origin} spent {row.slug} at {row.raw_at}: {why}",
                                       {"unlock_id": row.id, "meter_key": origin, "window_key": row.window_key}))
    return found


# --- 2. access ------------------------------------------------------------------------


def _view_meters(history: History, view: Event) -> list[str]:
    """Every meter a viewer's unlocks may be found under (merged visitors and accounts)."""
    if view.reader_id is not None:
        return [f"reader:{view.reader_id}",
                *(f"visitor:{v}" for v in sorted(history.visitors_of.get(view.reader_id, ())))]
    meters = [f"visitor:{view.visitor_id}"]
    if view.visitor_id in history.merged_into:
        meters.append(f"reader:{history.merged_into[view.visitor_id]}")
    return meters


def _has_unlock(history: History, view: Event) -> bool:
    """An unlock of the viewed article, recorded before the view (or in a concurrent request)."""
    latest = view.at + RACE_SLACK
    for meter in _view_meters(history, view):
        if any(e.id < view.id or e.at <= latest for e in history.unlock_events.get((meter, view.slug), ())):
            return True
        if any(row.at <= latest for row in history.rows_by_slug.get((meter, view.slug), ())):
            return True
    return view.reader_id is not None and view.reader_id in history.persona_readers and \
        history.persona_switch_before(view.reader_id, view.id)


def _impossible_reason(history: History, view: Event, variants: list[Rules]) -> str | None:
    """Why a view's recorded reason cannot be right for its article and preset, or None."""
    reason = view.data.get("reason")
    if reason not in FULL_REASONS:
        return f"full access with reason {reason!r}"
    tier = "registered" if view.reader_id is not None else "anonymous"
    if reason == Reason.SUBSCRIBER:
        return "an anonymous viewer given subscriber access" if view.reader_id is None else None
    if reason == Reason.GIFT:
        opened = history.gift_open(_view_meters(history, view), view.slug, view.at)
        return None if opened else "a gift with no live gift link of this article opened on this device"
    article = history.articles.get(view.slug)
    if article is None:
        return f"no article {view.slug!r}"
    classes = {rules.sections.get(article["section"], article["access_class"]) for rules in variants}
    if reason == Reason.FREE_ARTICLE:
        return None if "free" in classes else f"{reason} for a {'/'.join(sorted(classes))} article"
    if "metered" not in classes:
        return f"{reason} for a {'/'.join(sorted(classes))} article"
    limits = [rules.tier(tier).limit for rules in variants]
    if reason == Reason.TIER_UNLIMITED:
        return None if "unlimited" in limits else f"{reason} but {tier} readers have limits {limits}"
    if not any(limit != "unlimited" and limit > 0 for limit in limits):
        return f"{reason} but {tier} readers have no meter (limits {limits})"
    return None


def check_access(db, cfg, history: History | None = None) -> list[Violation]:
    """Every full-access view has a justification the records bear out."""
    history = history or History(db, cfg)
    found = []
    for view in history.by_type["article_view"]:  # only full-access views are loaded
        name = view.data.get("preset")
        variants = history.rules_variants(name) if name else [
            rules for n in history.presets.at(view.at) for rules in history.rules_variants(n)]
        if view.reader_id is None and any(rules.porous for rules in variants):
            continue  # the bypass lab's anonymous meter is a cookie: nothing server-side to audit
        ids = {"event_id": view.id, "slug": view.slug, "reader_id": view.reader_id,
               "visitor_id": view.visitor_id}
        who = f"reader {view.reader_id}" if view.reader_id is not None else f"visitor {view.visitor_id}"
        if not variants:
            continue  # a preset since removed: its rules are unknown
        problem = _impossible_reason(history, view, variants)
        reason = view.data.get("reason")
        if problem:
            found.append(Violation("access_unjustified", f"{who} read {view.slug} at {view.at.isoformat()}: "
                                   f"{problem}", ids))
        elif reason in METER_REASONS and not _has_unlock(history, view):
            found.append(Violation("access_without_unlock", f"{who} read {view.slug} in full at "
                                   f"{view.at.isoformat()} ({reason}) with no unlock of it", ids))
        elif reason == Reason.SUBSCRIBER and not history.subscriber_maybe(view.reader_id, view.id, view.at):
            found.append(Violation("access_without_subscription", f"{who} read {view.slug} in full at "
                                   f"{view.at.isoformat()} as a subscriber with no subscription or comp", ids))
    return found


# --- 3. billing -----------------------------------------------------------------------


def _incarnation(history: History, sub: dict) -> list[tuple[int, datetime, tuple]]:
    """This subscription's events: its reader's, since its last fresh start (ids are reused)."""
    timeline = history.sub_events.get(sub["reader_id"], {}).get(sub["id"])
    if not timeline:
        return []
    entries = list(zip(timeline.ids, timeline.times, timeline.values))
    starts = [index for index, (_, _, (_, before)) in enumerate(entries) if before is None]
    return entries[starts[-1]:] if starts else entries


def _impossible_state(sub: dict) -> str | None:
    """What is impossible about a subscription row, or None."""
    status = sub["status"]
    if status not in _STATUSES:
        return f"unknown status {status!r}"
    start, end = parse_time(sub["current_period_start"]), parse_time(sub["current_period_end"])
    if status in billing.PAID_UP and (start is None or end is None or end <= start):
        return f"{status} with period {sub['current_period_start']} to {sub['current_period_end']}"
    if status == "past_due" and not sub["past_due_since"]:
        return "past_due without past_due_since"
    if status in billing.ENDED and not sub["ended_at"]:
        return f"{status} without ended_at"
    if status in billing.ENDED and sub["cancel_at_period_end"]:
        return f"{status} but still set to cancel at the period end"
    return None


def _live_span(history: History, sub: dict) -> tuple | None:
    """When a subscription gave access: (start, end) in time and (first, last) in append order.

    An end of None means still live. Without events the append order is unknown (None).
    """
    entries = _incarnation(history, sub)
    live = [(event_id, at) for event_id, at, (to, _) in entries if to in billing.LIVE]
    ended = [event_id for event_id, _, (to, _) in entries if to in billing.ENDED]
    start = live[0][1] if live else None
    if start is None and sub["status"] != "incomplete":
        start = parse_time(sub["created_at"])
    if start is None:
        return None
    end = parse_time(sub["ended_at"]) if sub["status"] in billing.ENDED else None
    order = (live[0][0], ended[-1] if ended and end else None) if live else None
    return start, end, order


def check_billing(db, cfg, history: History | None = None) -> list[Violation]:
    """Subscriptions in reachable states, never two at once, payments that belong, events that agree."""
    history = history or History(db, cfg)
    found = []
    spans: dict[int, list[tuple[int, datetime, datetime | None]]] = defaultdict(list)
    for sub in history.subscriptions.values():
        ids = {"subscription_id": sub["id"], "reader_id": sub["reader_id"]}
        problem = _impossible_state(sub)
        if problem:
            found.append(Violation("subscription_impossible_state", f"subscription {sub['id']}: {problem}", ids))
        entries = _incarnation(history, sub)
        last = entries[-1][2][0] if entries else None
        if last != sub["status"]:
            said = f"its last subscription_changed event says {last!r}" if entries else "it has no events"
            found.append(Violation("subscription_event_mismatch",
                                   f"subscription {sub['id']} is {sub['status']!r} but {said}", ids))
        span = _live_span(history, sub)
        if span:
            spans[sub["reader_id"]].append((sub["id"], *span))
    found += _overlaps(spans)
    found += _payments(history)
    return found


def _overlaps(spans: dict) -> list[Violation]:
    """Pairs of one reader's subscriptions live at once, in time and in the order things happened.

    Both must overlap: after `clock reset` moves time backwards, a subscription
    taken out after another ended can carry earlier times.
    """
    found = []
    for reader_id, items in spans.items():
        items.sort(key=lambda item: item[1])
        for index, (first, start_a, end_a, order_a) in enumerate(items):
            for second, start_b, end_b, order_b in items[index + 1:]:
                if not (_before(start_b, end_a) and _before(start_a, end_b)):
                    continue
                if order_a and order_b and not (_before(order_b[0], order_a[1])
                                                and _before(order_a[0], order_b[1])):
                    continue
                found.append(Violation(
                    "subscriptions_overlap",
                    f"reader {reader_id}: subscriptions {first} and {second} were both live from "
                    f"{max(start_a, start_b).isoformat()}",
                    {"reader_id": reader_id, "subscription_ids": [first, second]}))
    return found


def _before(point, end) -> bool:
    """Whether ``point`` comes before ``end`` (None: an end not reached yet)."""
    return end is None or point < end


def _payments(history: History) -> list[Violation]:
    """Every payment belongs to a subscription of its reader; no successful negative charge."""
    found = []
    for pay in history.payments:
        ids = {"payment_id": pay["id"], "subscription_id": pay["subscription_id"], "reader_id": pay["reader_id"]}
        sub = history.subscriptions.get(pay["subscription_id"])
        if sub is None:
            found.append(Violation("payment_without_subscription",
                                   f"payment {pay['id']} names subscription {pay['subscription_id']}, "
                                   "which does not exist", ids))
        elif sub["reader_id"] != pay["reader_id"]:
            found.append(Violation("payment_without_subscription",
                                   f"payment {pay['id']} of reader {pay['reader_id']} is for subscription "
                                   f"{sub['id']} of reader {sub['reader_id']}", ids))
        if pay["outcome"] == "succeeded" and pay["amount_cents"] < 0:
            found.append(Violation("negative_charge", f"payment {pay['id']} succeeded for "
                                   f"{pay['amount_cents']} cents", ids))
    return found


# --- 4. newsletters -------------------------------------------------------------------


def _enrollment_timelines(history: History) -> dict[tuple[int, str], Timeline]:
    """Each enrollment's status over time, from newsletter_changed events."""
    found: dict[tuple[int, str], Timeline] = defaultdict(Timeline)
    for event in history.by_type["newsletter_changed"]:
        found[(event.reader_id, event.data.get("list"))].add(event.id, event.at, event.data.get("to"))
    return found


def _consent_timelines(history: History) -> dict[tuple[int, str], Timeline]:
    """Each reader's consent to each list over time: granted, confirmed or withdrawn."""
    found: dict[tuple[int, str], Timeline] = defaultdict(Timeline)
    for row in history.consents:
        found[(row["reader_id"], row["list_id"])].add(row["id"], from_iso(row["at"]), row["action"])
    return found


def _enrolled_at(status: Timeline | None, row: dict | None, moment: datetime) -> bool:
    """Whether an enrollment was active at a moment (from its events, else from its row)."""
    if status:
        return "active" in status.at(moment)
    if row is None:
        return False
    confirmed, left = parse_time(row["confirmed_at"]), parse_time(row["unsubscribed_at"])
    return bool(confirmed and confirmed <= moment and (left is None or left > moment or left < confirmed))


def check_newsletters(db, cfg, history: History | None = None) -> list[Violation]:
    """Newsletters only to active, consenting readers; deliveries and the outbox agree."""
    history = history or History(db, cfg)
    statuses, consents = _enrollment_timelines(history), _consent_timelines(history)
    rows = history.enrollments
    found = []
    messages = history.newsletters
    for message in messages:
        list_id = parse_json(message["headers"]).get("X-Gate-List") or message["kind"].split(":", 1)[1]
        reader_id = history.reader_by_email.get(message["to_addr"])
        moment = from_iso(message["created_at"])
        ids = {"outbox_id": message["id"], "reader_id": reader_id, "list_id": list_id}
        key = (reader_id, list_id)
        if reader_id is None:
            problem = "an address with no account"
        elif not _enrolled_at(statuses.get(key), rows.get(key), moment):
            problem = "an address whose enrollment was not active then"
        elif not any(action in ("granted", "confirmed") for action in consents.get(key, Timeline()).at(moment)):
            problem = "an address with no consent in force then"
        else:
            continue
        found.append(Violation("newsletter_not_enrolled", f"outbox {message['id']}: {list_id} sent at "
                               f"{message['created_at']} to {problem} ({message['to_addr']})", ids))
    found += _deliveries(history, messages)
    found += _enrollment_events(rows, statuses)
    return found


def _deliveries(history: History, messages: list[dict]) -> list[Violation]:
    """Every delivery names an outbox message of its list to its reader, and every message has one."""
    found, delivered = [], set()
    outbox = {message["id"]: message for message in messages}
    for row in history.deliveries:
        ids = {"issue_id": row["issue_id"], "reader_id": row["reader_id"], "outbox_id": row["outbox_id"]}
        message = outbox.get(row["outbox_id"])
        reader = history.readers.get(row["reader_id"])
        delivered.add(row["outbox_id"])
        if message is None:
            problem = f"outbox message {row['outbox_id']} does not exist as a newsletter"
        elif reader is None or message["to_addr"] != reader["email"]:
            problem = f"outbox message {row['outbox_id']} went to {message['to_addr']}, not the reader"
        elif message["kind"] != f"newsletter:{row['list_id']}":
            problem = f"outbox message {row['outbox_id']} is {message['kind']}, not of list {row['list_id']}"
        else:
            continue
        found.append(Violation("delivery_mismatch", f"delivery of issue {row['issue_id']} to reader "
                               f"{row['reader_id']}: {problem}", ids))
    for message_id in sorted(set(outbox) - delivered):
        found.append(Violation("delivery_mismatch", f"outbox message {message_id} "
                               f"({outbox[message_id]['kind']}) has no delivery row", {"outbox_id": message_id}))
    return found


def _enrollment_events(rows: dict, statuses: dict) -> list[Violation]:
    """Every enrollment's status is the one its last newsletter_changed event set."""
    found = []
    for (reader_id, list_id), row in rows.items():
        timeline = statuses.get((reader_id, list_id))
        last = timeline.last if timeline else None
        if last != row["status"]:
            said = f"its last newsletter_changed event says {last!r}" if timeline else "it has no events"
            found.append(Violation("enrollment_event_mismatch",
                                   f"reader {reader_id} is {row['status']!r} on {list_id} but {said}",
                                   {"enrollment_id": row["id"], "reader_id": reader_id, "list_id": list_id}))
    return found


# --- 5. events and tables agree ---------------------------------------------------------


def _persona_spend(history: History, row: Unlock) -> bool:
    """A spend a persona switch wrote (personas are rebuilt without unlock events)."""
    reader_id = _reader_of(row.meter_key)
    return any(timedelta() <= switch.at - row.at <= PERSONA_SPAN
               for switch in history.persona_switches.get(reader_id, ()))


def check_events(db, cfg, history: History | None = None) -> list[Violation]:
    """Unlock rows and accounts each have the events that should have recorded them."""
    history = history or History(db, cfg)
    found = []
    for row in history.unlocks:
        _, event = _origin(history, row)
        if event is None and not _persona_spend(history, row):
            found.append(Violation("unlock_without_event", f"unlock {row.id}: {row.meter_key} spent {row.slug}"
                                   f" at {row.raw_at} with no unlock event",
                                   {"unlock_id": row.id, "meter_key": row.meter_key, "slug": row.slug}))
    signups: dict[int, list[Event]] = defaultdict(list)
    for event in history.by_type["signup"]:
        signups[event.reader_id].append(event)
    for reader_id, row in history.readers.items():
        count = len(signups.get(reader_id, ()))
        exempt = reader_id in history.persona_readers or reader_id in history.demo_readers
        if count > 1 or (count == 0 and not exempt):
            found.append(Violation("signup_mismatch", f"reader {reader_id} ({row['email']}) has {count} "
                                   "signup events", {"reader_id": reader_id}))
    for reader_id, items in signups.items():
        if reader_id not in history.readers:
            found.append(Violation("signup_mismatch", f"signup event {items[0].id} names reader {reader_id}, "
                                   "who does not exist", {"event_id": items[0].id, "reader_id": reader_id}))
    return found


# --- 6. gift links ----------------------------------------------------------------------


def check_gifts(db, cfg, history: History | None = None) -> list[Violation]:
    """No giver made more links in a period than allowed; no link counted more devices than its cap."""
    history = history or History(db, cfg)
    found, made = [], defaultdict(list)
    for link in history.gift_links.values():
        made[(link["giver_id"], link["window_key"])].append(link["id"])
        devices = len(history.gift_devices.get(link["id"], ()))
        if devices > link["devices"]:
            found.append(Violation("gift_opens_over", f"gift link {link['id']} opened on {devices} devices "
                                   f"with a cap of {link['devices']}", {"link_id": link["id"]}))
    limit = cfg.gifts.per_period
    for (giver, window), links in made.items():
        if len(links) > limit:
            found.append(Violation("gift_allowance_over", f"reader {giver} made {len(links)} gift links in "
                                   f"{window} with an allowance of {limit}", {"reader_id": giver, "link_ids": links}))
    return found


# --- all of it --------------------------------------------------------------------------

CHECKS = (check_quota, check_access, check_billing, check_newsletters, check_events, check_gifts)


def run(db, cfg) -> list[Violation]:
    """Every check over one database; an empty list means no rule was broken."""
    history = History(db, cfg)
    return [violation for check in CHECKS for violation in check(db, cfg, history)]


def by_kind(violations: list[Violation]) -> dict[str, int]:
    """How many violations of each kind, in KINDS order."""
    counts = {kind: 0 for kind in KINDS}
    for violation in violations:
        counts[violation.kind] = counts.get(violation.kind, 0) + 1
    return {kind: count for kind, count in counts.items() if count}
