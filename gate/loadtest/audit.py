"""The invariant audit: from the database alone, check that no quota, access, billing or newsletter rule was broken.

Each check is a function of a sqlite-utils ``Database`` and the validated
:class:`gate.settings.Config` that returns :class:`Violation` records; :func:`run`
applies them all. The audit reads what the site wrote (tables and the events
history) and never the clock, the session or a cookie.

Histories are read in the order they were appended (event ids), not only by
their times: on a frozen clock many things happen at one instant, concurrent
requests record their events after committing, and demo personas are rebuilt
with backdated histories. Where only a time is known, an instant at which
several states held is given the benefit of the doubt.

Deliberate exceptions, each for a reason the site documents:
the bypass-lab preset (``porous``) keeps anonymous meters in a cookie, so
anonymous views under it are not auditable server-side; demo personas are
rebuilt without unlock or signup events; the seeded demo accounts are created
without a signup event.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gate import billing, experiments, periods, personas, seed, subscriptions
from gate.paywall import Rules
from gate.timeutil import from_iso

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
}
#: Reasons that justify full access (see gate.paywall.decide).
FULL_REASONS = ("subscriber", "free_article", "tier_unlimited", "already_unlocked", "meter_available")
METER_REASONS = ("already_unlocked", "meter_available")
#: A view may be served from another request's spend whose clock read a moment later (concurrency).
RACE_SLACK = timedelta(minutes=5)
#: Demo personas' synthetic spends are dated up to this long before the switch that made them.
PERSONA_SPAN = timedelta(days=7)
_LIVE_ACCESS = ("trialing", "active")
_STATUSES = ("incomplete", *billing.LIVE, *billing.ENDED)
_EVENT_TYPES = ("article_view", "unlock", "meter_merged", "preset_changed", "subscription_changed",
                "newsletter_changed", "comp_changed", "admin_action", "persona_switched", "signup")


@dataclass(frozen=True)
class Violation:
    """One broken rule: its kind (a key of KINDS), what happened, and the rows involved."""

    kind: str
    message: str
    ids: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The violation as the JSON report shows it."""
        return {"kind": self.kind, "message": self.message, "ids": self.ids}


@dataclass(frozen=True)
class Event:
    """One row of the events table, its data parsed."""

    id: int
    at: datetime
    type: str
    reader_id: int | None
    visitor_id: str | None
    slug: str | None
    data: dict
    raw_at: str = ""

    @property
    def meter_key(self) -> str:
        """The meter this event's viewer spends from."""
        return f"reader:{self.reader_id}" if self.reader_id is not None else f"visitor:{self.visitor_id}"


@dataclass(frozen=True)
class Unlock:
    """One row of the unlocks table."""

    id: int
    meter_key: str
    slug: str
    window_key: str
    at: datetime
    raw_at: str


class Timeline:
    """Values set over time, kept in the order they were recorded.

    A value recorded with a time earlier than the one before it (a persona's
    backdated history, a clock reset) takes effect no earlier than that one.
    """

    def __init__(self, initial=None) -> None:
        self.initial = initial
        self.ids: list[int] = []
        self.times: list[datetime] = []
        self.values: list = []

    def add(self, event_id: int, at: datetime, value) -> None:
        """Record a value set by one event."""
        if self.times and at < self.times[-1]:
            at = self.times[-1]
        self.ids.append(event_id)
        self.times.append(at)
        self.values.append(value)

    def __bool__(self) -> bool:
        return bool(self.values)

    @property
    def last(self):
        """The value in force now."""
        return self.values[-1] if self.values else self.initial

    def as_of(self, event_id: int) -> tuple[object, datetime | None]:
        """The value in force just before an event (by append order), and since when."""
        index = bisect_left(self.ids, event_id) - 1
        return (self.values[index], self.times[index]) if index >= 0 else (self.initial, None)

    def at(self, moment: datetime) -> list:
        """Every value in force at some point of the instant ``moment``."""
        before = bisect_left(self.times, moment) - 1
        through = bisect_right(self.times, moment)
        return [self.values[before] if before >= 0 else self.initial, *self.values[before + 1:through]]


# --- loading ----------------------------------------------------------------------


def _json(text: str | None) -> dict:
    """A stored JSON object, or {} for anything else."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _moment(text) -> datetime | None:
    """A stored or ISO time, or None when absent or unreadable."""
    if not text:
        return None
    try:
        return from_iso(str(text))
    except ValueError:
        return None


class History:
    """Everything the checks read, loaded once from the database."""

    def __init__(self, db, cfg) -> None:
        self.db, self.cfg = db, cfg
        self.policy = subscriptions.policy(cfg)
        self.events = self._load_events()
        self.by_type: dict[str, list[Event]] = defaultdict(list)
        for event in self.events:
            self.by_type[event.type].append(event)
        self.readers = {row["id"]: row for row in db.query("select * from readers")}
        self.reader_by_email = {row["email"]: row["id"] for row in self.readers.values()}
        self.articles = {row["slug"]: row for row in
                         db.query("select slug, section, access_class from articles")}
        self.unlocks = [Unlock(row[0], row[1], row[2], row[3], from_iso(row[4]), row[4]) for row in
                        db.execute("select id, meter_key, slug, window_key, unlocked_at from unlocks order by id")]
        self._index_meters()
        self._index_people()
        self.presets = self._preset_timeline()
        self.subscriptions = {row["id"]: row for row in db.query("select * from subscriptions")}
        self.subscriptions_of: dict[int, list[dict]] = defaultdict(list)
        for row in self.subscriptions.values():
            self.subscriptions_of[row["reader_id"]].append(row)
        self.sub_events = self._subscription_timelines()
        self.comps = self._comp_timelines()

    def _load_events(self) -> list[Event]:
        """The events the audit reads; of views, only those that granted full access."""
        marks = ", ".join("?" * len(_EVENT_TYPES))
        rows = self.db.execute(
            f"select id, at, type, reader_id, visitor_id, slug, data from events where type in ({marks})"
            " and (type != 'article_view' or json_extract(data, '$.access') = 'full') order by id",
            list(_EVENT_TYPES))
        return [Event(row[0], from_iso(row[1]), row[2], row[3], row[4], row[5], _json(row[6]), row[1])
                for row in rows]

    def _index_meters(self) -> None:
        """Unlock events and rows by meter and article; visitors merged into accounts."""
        self.unlock_events: dict[tuple[str, str], list[Event]] = defaultdict(list)
        self.unlock_event_at: dict[tuple[str, str, str], Event] = {}
        for event in self.by_type["unlock"]:
            self.unlock_events[(event.meter_key, event.slug)].append(event)
            # The spend and its event share the request's clock reading, to the microsecond.
            self.unlock_event_at.setdefault((event.meter_key, event.slug, event.raw_at), event)
        self.rows_by_slug: dict[tuple[str, str], list[Unlock]] = defaultdict(list)
        for row in self.unlocks:
            self.rows_by_slug[(row.meter_key, row.slug)].append(row)
        self.merged_into: dict[str, int] = {}
        for visitor, reader_id in self.db.execute("select id, reader_id from visitors where reader_id is not null"):
            self.merged_into[visitor] = reader_id
        for event in self.by_type["meter_merged"]:
            self.merged_into.setdefault(event.visitor_id, event.reader_id)
        self.visitors_of: dict[int, set[str]] = defaultdict(set)
        for visitor, reader_id in self.merged_into.items():
            self.visitors_of[reader_id].add(visitor)

    def _index_people(self) -> None:
        """Demo personas and demo accounts: built by the demo, not by signing up."""
        self.persona_switches: dict[int, list[Event]] = defaultdict(list)
        for event in self.by_type["persona_switched"]:
            if event.reader_id is not None:
                self.persona_switches[event.reader_id].append(event)
        persona_emails = {persona.email for persona in personas.PERSONAS if persona.email}
        self.persona_readers = set(self.persona_switches) | {
            reader_id for email, reader_id in self.reader_by_email.items() if email in persona_emails}
        demo_emails = {email for email, *_ in seed.DEMO_ACCOUNTS}
        self.demo_readers = {reader_id for email, reader_id in self.reader_by_email.items()
                             if email in demo_emails}

    def _preset_timeline(self) -> Timeline:
        """The active preset over time, from preset_changed events."""
        changes = self.by_type["preset_changed"]
        if changes:
            initial = changes[0].data.get("from")
        else:
            row = self.db.execute("select value from settings where key = 'preset'").fetchone()
            initial = row[0] if row and row[0] in self.cfg.presets else self.cfg.site.site.default_preset
        timeline = Timeline(initial)
        for event in changes:
            timeline.add(event.id, event.at, event.data.get("to"))
        return timeline

    def _subscription_timelines(self) -> dict[int, dict[int, Timeline]]:
        """Each reader's subscriptions' statuses over time (reader id → subscription id → timeline)."""
        found: dict[int, dict[int, Timeline]] = defaultdict(dict)
        for event in self.by_type["subscription_changed"]:
            sub_id = event.data.get("subscription_id")
            if event.reader_id is None or sub_id is None:
                continue
            timeline = found[event.reader_id].setdefault(sub_id, Timeline())
            timeline.add(event.id, event.at, (event.data.get("to"), event.data.get("from")))
        return found

    def _comp_timelines(self) -> dict[int, Timeline]:
        """Complimentary access over time: the moment it ends, or None."""
        found: dict[int, Timeline] = {}
        for reader_id, row in self.readers.items():
            legacy = row.get("comp_by") == "legacy flag"
            found[reader_id] = Timeline(_moment(row.get("comp_until")) if legacy else None)
        for event in self.events:
            if event.reader_id not in found:
                continue
            if event.type == "comp_changed":
                found[event.reader_id].add(event.id, event.at, _moment(event.data.get("to")))
            elif event.type == "admin_action" and event.data.get("action") == "comp_granted":
                found[event.reader_id].add(event.id, event.at, _moment(event.data.get("until")))
            elif event.type == "persona_switched":  # a persona is rebuilt without a comp
                found[event.reader_id].add(event.id, event.at, None)
        return found

    # --- questions the checks ask ---------------------------------------------------

    def rules_variants(self, name: str | None) -> list[Rules]:
        """A preset and each of its active experiments' variants applied to it."""
        base = self.cfg.presets.get(name or "")
        if base is None:
            return []
        found = [base]
        for exp in base.experiments:
            if exp.active:
                found += [experiments.apply(base, variant) for variant in exp.variants]
        return found

    def subscriber_as_of(self, reader_id: int, event_id: int, moment: datetime) -> bool:
        """Whether the reader had subscriber access when an event was recorded (append order)."""
        for timeline in self.sub_events.get(reader_id, {}).values():
            value, since = timeline.as_of(event_id)
            status = value[0] if value else None
            if status in _LIVE_ACCESS:
                return True
            if status == "past_due" and since is not None and moment < since + timedelta(
                    days=self.policy.grace_days):
                return True
        comp, _ = self.comps.get(reader_id, Timeline()).as_of(event_id)
        return bool(comp and comp > moment)

    def subscriber_maybe(self, reader_id: int, event_id: int, moment: datetime) -> bool:
        """Whether any record suggests subscriber access at a moment (lenient where history is thin)."""
        if self.subscriber_as_of(reader_id, event_id, moment):
            return True
        for timeline in self.sub_events.get(reader_id, {}).values():
            if any(value and value[0] in billing.LIVE for value in timeline.at(moment)):
                return True
        comp_until = _moment(self.readers.get(reader_id, {}).get("comp_until"))
        if comp_until and comp_until > moment:
            return True
        if any(comp and comp > moment for comp in self.comps.get(reader_id, Timeline()).at(moment)):
            return True
        for sub in self.subscriptions_of.get(reader_id, ()):
            if sub["status"] != "incomplete":
                start, end = _moment(sub["created_at"]), _moment(sub["ended_at"])
                if start and start <= moment and (end is None or moment < end):
                    return True
        return False

    def persona_switch_before(self, reader_id: int, event_id: int) -> bool:
        """Whether a demo persona had been rebuilt before an event."""
        return any(switch.id < event_id for switch in self.persona_switches.get(reader_id, ()))


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
    if reason == "subscriber":
        return "an anonymous viewer given subscriber access" if view.reader_id is None else None
    article = history.articles.get(view.slug)
    if article is None:
        return f"no article {view.slug!r}"
    classes = {rules.sections.get(article["section"], article["access_class"]) for rules in variants}
    if reason == "free_article":
        return None if "free" in classes else f"{reason} for a {'/'.join(sorted(classes))} article"
    if "metered" not in classes:
        return f"{reason} for a {'/'.join(sorted(classes))} article"
    limits = [rules.tier(tier).limit for rules in variants]
    if reason == "tier_unlimited":
        return None if "unlimited" in limits else f"tier_unlimited but {tier} readers have limits {limits}"
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
        elif reason == "subscriber" and not history.subscriber_maybe(view.reader_id, view.id, view.at):
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
    start, end = _moment(sub["current_period_start"]), _moment(sub["current_period_end"])
    if status in _LIVE_ACCESS and (start is None or end is None or end <= start):
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
        start = _moment(sub["created_at"])
    if start is None:
        return None
    end = _moment(sub["ended_at"]) if sub["status"] in billing.ENDED else None
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
    found += _payments(db, history)
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


def _payments(db, history: History) -> list[Violation]:
    """Every payment belongs to a subscription of its reader; no successful negative charge."""
    found = []
    for pay in db.query("select * from payments order by id"):
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


def _consent_timelines(db) -> dict[tuple[int, str], Timeline]:
    """Each reader's consent to each list over time: granted, confirmed or withdrawn."""
    found: dict[tuple[int, str], Timeline] = defaultdict(Timeline)
    for row in db.query("select id, reader_id, list_id, action, at from consents order by id"):
        found[(row["reader_id"], row["list_id"])].add(row["id"], from_iso(row["at"]), row["action"])
    return found


def _enrolled_at(status: Timeline | None, row: dict | None, moment: datetime) -> bool:
    """Whether an enrollment was active at a moment (from its events, else from its row)."""
    if status:
        return "active" in status.at(moment)
    if row is None:
        return False
    confirmed, left = _moment(row["confirmed_at"]), _moment(row["unsubscribed_at"])
    return bool(confirmed and confirmed <= moment and (left is None or left > moment or left < confirmed))


def check_newsletters(db, cfg, history: History | None = None) -> list[Violation]:
    """Newsletters only to active, consenting readers; deliveries and the outbox agree."""
    history = history or History(db, cfg)
    statuses, consents = _enrollment_timelines(history), _consent_timelines(db)
    rows = {(row["reader_id"], row["list_id"]): row for row in db.query("select * from enrollments")}
    found = []
    messages = list(db.query("select id, created_at, kind, to_addr, headers from outbox"
                             " where kind like 'newsletter:%' order by id"))
    for message in messages:
        list_id = _json(message["headers"]).get("X-Gate-List") or message["kind"].split(":", 1)[1]
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
    found += _deliveries(db, history, messages)
    found += _enrollment_events(rows, statuses)
    return found


def _deliveries(db, history: History, messages: list[dict]) -> list[Violation]:
    """Every delivery names an outbox message of its list to its reader, and every message has one."""
    found, delivered = [], set()
    outbox = {message["id"]: message for message in messages}
    rows = db.query("select d.issue_id, d.reader_id, d.outbox_id, i.list_id from deliveries d"
                    " left join newsletter_issues i on i.id = d.issue_id")
    for row in rows:
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


# --- all of it --------------------------------------------------------------------------

CHECKS = (check_quota, check_access, check_billing, check_newsletters, check_events)


def run(db, cfg) -> list[Violation]:
    """Every check over one database; an empty list means no rule was broken."""
    history = History(db, cfg)
    return [violation for check in CHECKS for violation in check(db, cfg, history)]


def scope(db) -> dict[str, int]:
    """How much the audit read, so that a clean report says what it covered."""
    counts = {table: db.execute(f"select count(*) from {table}").fetchone()[0]
              for table in ("readers", "unlocks", "subscriptions", "payments", "deliveries")}
    counts["views"] = db.execute("select count(*) from events where type = 'article_view'").fetchone()[0]
    counts["newsletters"] = db.execute("select count(*) from outbox where kind like 'newsletter:%'").fetchone()[0]
    return counts


def by_kind(violations: list[Violation]) -> dict[str, int]:
    """How many violations of each kind, in KINDS order."""
    counts = {kind: 0 for kind in KINDS}
    for violation in violations:
        counts[violation.kind] = counts.get(violation.kind, 0) + 1
    return {kind: count for kind, count in counts.items() if count}
