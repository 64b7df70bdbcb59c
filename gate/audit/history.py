"""The audit's history: everything a site database recorded, loaded once and indexed for the checks.

:class:`History` reads what the site wrote (tables and the events history) and
never the clock, the session or a cookie; :mod:`gate.audit.checks` asks it
questions.

Histories are read in the order they were appended (event ids), not only by
their times: on a frozen clock many things happen at one instant, concurrent
requests record their events after committing, and demo personas are rebuilt
with backdated histories. Where only a time is known, an instant at which
several states held is given the benefit of the doubt.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from gate.rules import billing, experiments, referral
from gate.rules.paywall import Rules
from gate.rules.timeutil import from_iso
from gate.services import personas, retention, seed, subscriptions

_EVENT_TYPES = ("article_view", "unlock", "meter_merged", "preset_changed", "subscription_changed",
                "newsletter_changed", "comp_changed", "admin_action", "persona_switched", "signup",
                "save_offer_accepted", "device_signed_in", "referral_read", "preset_saved")


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
    """One row of the unlocks table (a dynamic meter's spend keeps its score and allowance; else None)."""

    id: int
    meter_key: str
    slug: str
    window_key: str
    at: datetime
    raw_at: str
    score: int | None = None
    allowance: int | None = None


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


def parse_json(text: str | None) -> dict:
    """A stored JSON object, or {} for anything else."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_time(text) -> datetime | None:
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
        self.readers = {row["id"]: row for row in db.rows("select * from readers")}
        self.reader_by_email = {row["email"]: row["id"] for row in self.readers.values()}
        self.articles = {row["slug"]: row for row in
                         db.rows("select slug, section, access_class from articles")}
        rows = [Unlock(row[0], row[1], row[2], row[3], from_iso(row[4]), row[4], row[5], row[6]) for row in
                db.execute("select id, meter_key, slug, window_key, unlocked_at, score, allowance from unlocks"
                           " where meter_key not like ? and meter_key not like 'gift%' order by id",
                           [retention.METER_PREFIX + "%"]).fetchall()]
        #: Search arrivals' daily reads outside the meter (gate.rules.referral), apart from the meters.
        self.search_reads = [row for row in rows if row.meter_key.startswith(referral.SEARCH_METER_PREFIX)]
        self.unlocks = [row for row in rows if not row.meter_key.startswith(referral.SEARCH_METER_PREFIX)]
        self._load_gifts()
        self._index_meters()
        self._index_people()
        self.presets = self._preset_timeline()
        self.subscriptions = {row["id"]: row for row in db.rows("select * from subscriptions")}
        self.subscriptions_of: dict[int, list[dict]] = defaultdict(list)
        for row in self.subscriptions.values():
            self.subscriptions_of[row["reader_id"]].append(row)
        self.sub_events = self._subscription_timelines()
        self.comps = self._comp_timelines()
        self.payments = db.rows("select * from payments order by id")
        self.passes = {row["id"]: row for row in db.rows("select * from passes")}
        self._load_newsletters()
        self._load_offers()

    def _load_offers(self) -> None:
        """Promo codes by code, and their redemptions by code and by (code, subscription) or (code, pass)."""
        self.offers = {row["code"]: row for row in self.db.rows("select * from offers")}
        self.redemptions: dict[str, list[dict]] = defaultdict(list)
        self.redemption_of: dict[tuple, dict] = {}
        for row in self.db.rows("select * from redemptions order by id"):
            self.redemptions[row["code"]].append(row)
            for key in ("subscription_id", "pass_id"):
                if row[key] is not None:
                    self.redemption_of[(row["code"], key, row[key])] = row

    def _load_events(self) -> list[Event]:
        """The events the audit reads; of views, only those that granted full access."""
        marks = ", ".join("?" * len(_EVENT_TYPES))
        rows = self.db.execute(
            f"select id, at, type, reader_id, visitor_id, slug, data from events where type in ({marks})"
            f" and (type != 'article_view' or {self.db.json_text('data', 'access')} = 'full') order by id",
            list(_EVENT_TYPES)).fetchall()
        return [Event(row[0], from_iso(row[1]), row[2], row[3], row[4], row[5], parse_json(row[6]), row[1])
                for row in rows]

    def _load_gifts(self) -> None:
        """Gift links, and the devices each counted (their meters, kept apart from the reading meters)."""
        self.gift_links = {row["id"]: row for row in self.db.rows("select * from gift_links order by id")}
        self.gift_devices: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
        for key, device, at in self.db.execute("select meter_key, slug, unlocked_at from unlocks"
                                               " where meter_key like 'giftlink:%' order by id").fetchall():
            ident = key.partition(":")[2]
            if ident.isdigit():
                self.gift_devices[int(ident)].append((device, from_iso(at)))

    def gift_open(self, devices: list[str], slug: str, moment: datetime) -> bool:
        """Whether one of these devices held a live gift link of ``slug`` at a moment."""
        for link_id, opened in self.gift_devices.items():
            link = self.gift_links.get(link_id)
            if link is None or link["slug"] != slug or not moment < from_iso(link["expires_at"]):
                continue
            if any(device in devices for device, _ in opened):
                return True
        return False

    def _load_newsletters(self) -> None:
        """Enrollments, consents, newsletter mail and deliveries, as the site stored them."""
        db = self.db
        self.enrollments = {(row["reader_id"], row["list_id"]): row for row in db.rows("select * from enrollments")}
        self.consents = db.rows("select id, reader_id, list_id, action, at from consents order by id")
        self.newsletters = db.rows("select id, created_at, kind, to_addr, headers from outbox"
                                   " where kind like 'newsletter:%' order by id")
        self.deliveries = db.rows("select d.issue_id, d.reader_id, d.outbox_id, i.list_id from deliveries d"
                                  " left join newsletter_issues i on i.id = d.issue_id")

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
        for visitor, reader_id in self.db.execute("select id, reader_id from visitors where reader_id is not null"
                                                  ).fetchall():
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
        """The active preset over time, from preset_changed events.

        A saved preset is named with the save it was running by (``mine@<event id>``,
        from preset_saved), so a spend is checked against the rules of that moment
        even when the preset was edited while it ran.
        """
        changes = self.by_type["preset_changed"]
        if changes:
            initial = changes[0].data.get("from")
        else:
            value = self.db.scalar("select value from settings where key = 'preset'")
            initial = value if value in self.cfg.presets else self.cfg.publication.default_preset
        timeline, versions, running = Timeline(initial), {}, initial
        for event in sorted(changes + self.by_type["preset_saved"], key=lambda event: event.id):
            if event.type == "preset_saved":
                versions[event.data.get("name")] = f"{event.data.get('name')}@{event.id}"
                if event.data.get("name") != running:
                    continue
            else:
                running = event.data.get("to")
            timeline.add(event.id, event.at, versions.get(running, running))
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
            found[reader_id] = Timeline(parse_time(row.get("comp_until")) if legacy else None)
        for event in self.events:
            if event.reader_id not in found:
                continue
            if event.type == "comp_changed":
                found[event.reader_id].add(event.id, event.at, parse_time(event.data.get("to")))
            elif event.type == "admin_action" and event.data.get("action") == "comp_granted":
                found[event.reader_id].add(event.id, event.at, parse_time(event.data.get("until")))
            elif event.type == "persona_switched":  # a persona is rebuilt without a comp
                found[event.reader_id].add(event.id, event.at, None)
        return found

    # --- questions the checks ask ---------------------------------------------------

    def rules_variants(self, name: str | None) -> list[Rules]:
        """A preset (each version of it the site saved) and each of its active experiments' variants applied to it."""
        found = []
        for base in self.preset_versions(name):
            found.append(base)
            for exp in base.experiments:
                if exp.active:
                    found += [experiments.apply(base, variant) for variant in exp.variants]
        return found

    def preset_versions(self, name: str | None) -> list[Rules]:
        """The rules a preset name stood for: one saved version (``mine@<event id>``), else every one.

        ``preset_saved`` keeps the rules, so a saved preset is checked even where its
        file is gone. Without a version (an event that names its preview), every
        version it had may have applied: the benefit of the doubt.
        """
        plain, _, version = (name or "").partition("@")
        saves = [event for event in self.by_type["preset_saved"] if event.data.get("name") == plain]
        exact = [event for event in saves if version and str(event.id) == version]
        found = [] if exact or plain not in self.cfg.presets else [self.cfg.presets[plain]]
        for event in exact or saves:
            try:
                found.append(Rules.model_validate({**event.data.get("to"), "name": plain,
                                                   "timezone": self.cfg.publication.timezone}))
            except (TypeError, ValueError):
                continue  # rules saved by a gate with another model: nothing to check them by
        return found

    def subscriber_as_of(self, reader_id: int, event_id: int, moment: datetime) -> bool:
        """Whether the reader had subscriber access when an event was recorded (append order)."""
        for timeline in self.sub_events.get(reader_id, {}).values():
            value, since = timeline.as_of(event_id)
            status = value[0] if value else None
            if status in billing.PAID_UP:
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
            if any(value and value[0] in billing.LIVE and value[0] != "paused" for value in timeline.at(moment)):
                return True
        comp_until = parse_time(self.readers.get(reader_id, {}).get("comp_until"))
        if comp_until and comp_until > moment:
            return True
        if any(comp and comp > moment for comp in self.comps.get(reader_id, Timeline()).at(moment)):
            return True
        for sub in self.subscriptions_of.get(reader_id, ()):
            if sub["status"] != "incomplete":
                start, end = parse_time(sub["created_at"]), parse_time(sub["ended_at"])
                if start and start <= moment and (end is None or moment < end):
                    return True
        return False

    def persona_switch_before(self, reader_id: int, event_id: int) -> bool:
        """Whether a demo persona had been rebuilt before an event."""
        return any(switch.id < event_id for switch in self.persona_switches.get(reader_id, ()))


def scope(db) -> dict[str, int]:
    """How much the audit read, so that a clean report says what it covered."""
    counts = {table: db.scalar(f"select count(*) from {table}")
              for table in ("readers", "unlocks", "subscriptions", "payments", "deliveries")}
    counts["views"] = db.scalar("select count(*) from events where type = 'article_view'")
    counts["newsletters"] = db.scalar("select count(*) from outbox where kind like 'newsletter:%'")
    return counts
