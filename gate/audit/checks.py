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
from gate.rules import billing, periods, referral
from gate.rules import offers as offer_rules
from gate.rules.paywall import Reason, Rules
from gate.rules.timeutil import from_iso
from gate.services import orgs, retention

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
    "seats_over": "A group licence had more active members than seats at some moment.",
    "access_after_pass": "A full-access view granted by a pass when none of the reader's passes covered that "
                         "moment (at or after its end), or a pass payment that does not match a pass.",
    "redemptions_over_cap": "A promo code redeemed more times than its cap.",
    "discount_without_offer": "A payment discounted without a valid offer then: naming a code with no redemption "
                              "(or accepted save offer) for that subscription, charged in a period the discount "
                              "does not cover, redeemed outside the code's window, or below list price with no code.",
    "charge_during_pause": "A payment dated inside a pause of its subscription (after active → paused, "
                           "before paused → active).",
    "save_offers_per_year": "A reader accepted more than one save offer within 365 days.",
    "devices_over": "An account held more live sessions than its device limit at the moment of one of its sign-ins.",
    "referral_over": "A visitor or reader read more articles through the search side door in one day than the "
                     "preset then allowed (docs/referral.md).",
    "gift_allowance_over": "A subscriber made more gift links in one period than the [gifts] allowance.",
    "gift_opens_over": "A gift link counted more devices than its cap.",
    "dynamic_band_mismatch": "A spend of a dynamic meter whose recorded score falls in a band with another "
                             "allowance than the one recorded (or that recorded none) under the preset then "
                             "(docs/dynamic.md).",
    "dynamic_over_allowance": "A spend of a dynamic meter that made its window hold more distinct articles than "
                              "the allowance recorded with it.",
}
#: Reasons that justify full access (see gate.rules.paywall.decide).
FULL_REASONS = (Reason.SUBSCRIBER, Reason.FREE_ARTICLE, Reason.TIER_UNLIMITED, Reason.ALREADY_UNLOCKED,
                Reason.METER_AVAILABLE, Reason.PASS, Reason.LICENSED, Reason.REFERRAL, Reason.GIFT)
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
        limits = [variant.ceiling(tier) for variant in variants]  # a dynamic tier: its largest band here
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


def _dynamic_problem(history: History, names: list[str], tier: str, row: Unlock,
                     prior: list[Unlock]) -> Violation | None:
    """A dynamic meter's spend checked against its band: the recorded score gives the recorded allowance under a
    candidate preset, and the window held no more than that allowance once it was spent (None: it holds)."""
    scored = [rules for name in names for rules in history.rules_variants(name) if rules.dynamic_for(tier)]
    if not scored or (row.allowance is None and _persona_spend(history, row)):
        return None  # a fixed meter (checked by _allowed), or a persona's planted spends
    ids = {"unlock_id": row.id, "meter_key": row.meter_key, "score": row.score, "allowance": row.allowance}
    where = f"{row.meter_key} spent {row.slug} at {row.raw_at}"
    if row.score is None or row.allowance is None:
        return Violation("dynamic_band_mismatch", f"{where} under a dynamic meter with no score recorded", ids)
    if not any(0 <= row.score <= 100 and rules.dynamic.allowance(row.score) == row.allowance for rules in scored):
        bands = ", ".join(sorted({f"{rules.dynamic.allowance(min(max(row.score, 0), 100))} under {rules.name}"
                                  for rules in scored}))
        return Violation("dynamic_band_mismatch", f"{where} with score {row.score} and allowance {row.allowance}; "
                         f"that score's band allows {bands}", ids)
    window = periods.period_window(scored[0].tier(tier).period, row.at, scored[0].tz)
    used = len({other.slug for other in prior if window.contains(other.at)})
    if used > row.allowance:
        return Violation("dynamic_over_allowance", f"{where}: {used} distinct articles in window {window.key} "
                         f"with an allowance of {row.allowance} (score {row.score})", ids)
    return None


def _check_spend(history: History, origin: str, row: Unlock, event: Event | None, tier: str,
                 prior: list[Unlock]) -> list[Violation]:
    """One spend against the rules of its moment: the limit (or a dynamic tier's largest band), then its band."""
    names = _candidate_presets(history, row, event)
    ok, why = _allowed(history, names, tier, row.at, prior)
    found = [] if ok else [Violation("quota_exceeded", f"{origin} spent {row.slug} at {row.raw_at}: {why}",
                                     {"unlock_id": row.id, "meter_key": origin, "window_key": row.window_key})]
    problem = _dynamic_problem(history, names, tier, row, prior)
    return found + ([problem] if problem else [])


def _anonymous_prior(row: Unlock, group: list[Unlock]) -> list[Unlock]:
    """A visitor's spends up to one of theirs: insertion order where kept, else time."""
    if row.meter_key.startswith("visitor:"):
        return [other for other in group if (other.id <= row.id if other.meter_key == row.meter_key
                                              else other.at <= row.at)]
    return [other for other in group if other.at <= row.at]


def check_quota(db, cfg, history: History | None = None) -> list[Violation]:
    """No meter spent more distinct articles in a window than the rules allowed at the time; every dynamic
    grant matches its band and stayed within its allowance."""
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
            found += _check_spend(history, meter, row, event, "registered", prior)
    for origin, pairs in anonymous.items():
        group = [row for row, _ in pairs]
        for row, event in pairs:
            found += _check_spend(history, origin, row, event, "anonymous", _anonymous_prior(row, group))
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
    if reason in (Reason.SUBSCRIBER, Reason.PASS, Reason.LICENSED):  # whether they held one: other checks
        return f"an anonymous viewer given {reason} access" if view.reader_id is None else None
    if reason == Reason.GIFT:
        opened = history.gift_open(_view_meters(history, view), view.slug, view.at)
        return None if opened else "a gift with no live gift link of this article opened on this device"
    article = history.articles.get(view.slug)
    if article is None:
        return f"no article {view.slug!r}"
    classes = {rules.sections.get(article["section"], article["access_class"]) for rules in variants}
    if reason == Reason.REFERRAL and not any(_has_side_door(rules, tier) for rules in variants):
        return f"{reason} but no side door is open to {tier} readers"
    if reason == Reason.FREE_ARTICLE:
        return None if "free" in classes else f"{reason} for a {'/'.join(sorted(classes))} article"
    if "metered" not in classes:
        return f"{reason} for a {'/'.join(sorted(classes))} article"
    limits = [rules.ceiling(tier) for rules in variants]
    if reason == Reason.TIER_UNLIMITED:
        return None if "unlimited" in limits else f"{reason} but {tier} readers have limits {limits}"
    if not any(limit != "unlimited" and limit > 0 for limit in limits):
        return f"{reason} but {tier} readers have no meter (limits {limits})"
    return None


def _has_side_door(rules: Rules, tier: str) -> bool:
    """Whether a preset opens any referral side door to ``tier`` (search, social or newsletter)."""
    doors = rules.referral
    return bool(doors.search_allowance(tier) or doors.social or doors.newsletter)


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
    if status == "paused" and not (sub["paused_at"] and sub["resumes_at"]):
        return "paused without paused_at and resumes_at"
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
    """Every payment belongs to a subscription of its reader (a pass's, to its pass); no successful negative charge."""
    found = []
    for pay in history.payments:
        ids = {"payment_id": pay["id"], "subscription_id": pay["subscription_id"], "reader_id": pay["reader_id"]}
        sub = history.subscriptions.get(pay["subscription_id"])
        if sub is None and not _for_a_pass(pay):  # a pass payment is checked against its pass (check_passes)
            found.append(Violation("payment_without_subscription",
                                   f"payment {pay['id']} names subscription {pay['subscription_id']}, "
                                   "which does not exist", ids))
        elif sub is not None and sub["reader_id"] != pay["reader_id"]:
            found.append(Violation("payment_without_subscription",
                                   f"payment {pay['id']} of reader {pay['reader_id']} is for subscription "
                                   f"{sub['id']} of reader {sub['reader_id']}", ids))
        if pay["outcome"] == "succeeded" and pay["amount_cents"] < 0:
            found.append(Violation("negative_charge", f"payment {pay['id']} succeeded for "
                                   f"{pay['amount_cents']} cents", ids))
    return found


def _for_a_pass(pay: dict) -> bool:
    """Whether a payment was taken for a pass (it has no subscription)."""
    return pay["kind"] == "pass" or pay.get("pass_id") is not None


def _pass_covers(history: History, view: Event) -> bool:
    """Whether one of the reader's passes ran at the view (its end exclusive), or a persona rebuild removed it."""
    for row in history.passes.values():
        if row["reader_id"] == view.reader_id and \
                parse_time(row["starts_at"]) - RACE_SLACK <= view.at < parse_time(row["ends_at"]):
            return True
    return view.reader_id in history.persona_readers and history.persona_switch_before(view.reader_id, view.id)


def _pass_payment_problem(history: History, pay: dict) -> str | None:
    """Why a pass payment does not match its pass, or None."""
    sold = history.passes.get(pay.get("pass_id"))
    if sold is None:
        return f"names pass {pay.get('pass_id')}, which does not exist"
    if sold["reader_id"] != pay["reader_id"]:
        return f"is for pass {sold['id']} of reader {sold['reader_id']}"
    if pay["outcome"] == "succeeded" and (pay["amount_cents"], pay["currency"]) != (sold["amount_cents"],
                                                                                    sold["currency"]):
        return f"charged {pay['amount_cents']} {pay['currency']} for pass {sold['id']} sold at " \
               f"{sold['amount_cents']} {sold['currency']}"
    return None


def check_passes(db, cfg, history: History | None = None) -> list[Violation]:
    """Every view granted by a pass fell inside one of the reader's passes; every pass payment matches its pass."""
    history = history or History(db, cfg)
    found = []
    for view in history.by_type["article_view"]:
        if view.data.get("reason") == Reason.PASS and view.reader_id is not None and not _pass_covers(history, view):
            found.append(Violation("access_after_pass", f"reader {view.reader_id} read {view.slug} in full at "
                                   f"{view.at.isoformat()} by a pass, with no pass running then",
                                   {"event_id": view.id, "slug": view.slug, "reader_id": view.reader_id}))
    for pay in filter(_for_a_pass, history.payments):
        problem = _pass_payment_problem(history, pay)
        if problem:
            found.append(Violation("access_after_pass", f"payment {pay['id']} of reader {pay['reader_id']} {problem}",
                                   {"payment_id": pay["id"], "pass_id": pay.get("pass_id"),
                                    "reader_id": pay["reader_id"]}))
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


# --- 6. offers --------------------------------------------------------------------------


def check_offers(db, cfg, history: History | None = None) -> list[Violation]:
    """Caps held, and every discounted charge had a valid offer for its subscription and period then."""
    history = history or History(db, cfg)
    found = [Violation("redemptions_over_cap", f"{code} was redeemed {len(rows)} times; its cap is "
                       f"{history.offers[code]['cap']}", {"code": code, "redemption_ids": [row["id"] for row in rows]})
             for code, rows in history.redemptions.items()
             if code in history.offers and history.offers[code]["cap"] is not None
             and len(rows) > history.offers[code]["cap"]]
    for sub_id, payments in _payments_by_subscription(history).items():
        for index, pay in _period_indexes(payments):
            problem = _discount_problem(history, cfg, history.subscriptions.get(sub_id), pay, index)
            if problem:
                found.append(Violation("discount_without_offer", f"payment {pay['id']}: {problem}",
                                       {"payment_id": pay["id"], "subscription_id": sub_id,
                                        "reader_id": pay["reader_id"], "code": pay["offer_code"]}))
    return found


def _payments_by_subscription(history: History) -> dict[int, list[dict]]:
    """Each subscription's successful-or-not charges in order (passes have their own payments)."""
    found: dict[int, list[dict]] = defaultdict(list)
    for pay in history.payments:
        if pay["subscription_id"] is not None and pay.get("pass_id") is None:
            found[pay["subscription_id"]].append(pay)
    return found


def _period_indexes(payments: list[dict]):
    """Each charge with the paid period it was for (see gate.rules.billing: -1 a trial, 0 the first)."""
    index = 0
    for pay in payments:
        if pay["kind"] == "trial_verification":
            index = -1
        elif pay["kind"] == "checkout":
            index = 0
        elif pay["kind"] in ("renewal", "trial_conversion", "resume"):
            index += 1
        yield index, pay


def _discount_problem(history: History, cfg, sub: dict | None, pay: dict, index: int) -> str | None:
    """Why a charge's discount was not valid then (None: it was, or it had none)."""
    code = pay["offer_code"]
    if code is None:
        return _undiscounted_problem(cfg, sub, pay, index)
    offer = history.offers.get(code)
    if offer is None:
        return f"names the offer {code}, which does not exist"
    if offer["source"] == "save":
        if not _save_accepted(history, pay, code):
            return f"names the save offer {code} with no save_offer_accepted event for its reader before it"
    else:
        redemption = history.redemption_of.get((code, "subscription_id", pay["subscription_id"]))
        if redemption is None:
            return f"names {code}, never redeemed for subscription {pay['subscription_id']}"
        window = _outside_window(offer, parse_time(redemption["at"]))
        if window:
            return f"{code} was redeemed {window}"
    periods = _covered(offer, sub, code)
    if index < 0 or (periods is not None and index >= periods):
        return f"{code} covers {periods} paid periods; this charge is for period {index + 1}"
    return None


def _undiscounted_problem(cfg, sub: dict | None, pay: dict, index: int) -> str | None:
    """A charge naming no offer that is below its plan's price for that period (its intro price included)."""
    if sub is None or pay["outcome"] != "succeeded" or pay["list_cents"] is None or index < 0:
        return None
    plan = next((plan for plan in cfg.plans if plan.id == sub["plan_id"]), None)
    if plan is None:
        return None
    due = offer_rules.list_price(pay["list_cents"], plan.intro_price_cents, plan.intro_periods, index)
    if pay["amount_cents"] < due:
        return f"charged {pay['amount_cents']} cents for period {index + 1}, below its price of {due}, naming no offer"
    return None


def _save_accepted(history: History, pay: dict, code: str) -> bool:
    """Whether the reader accepted the save offer before this charge."""
    at = parse_time(pay["at"])
    return any(event.reader_id == pay["reader_id"] and event.at <= at and event.data.get("code") in (None, code)
               for event in history.by_type["save_offer_accepted"])


def _outside_window(offer: dict, at: datetime | None) -> str | None:
    """How a redemption fell outside its offer's window (None: inside it)."""
    starts, ends = parse_time(offer["starts_at"]), parse_time(offer["ends_at"])
    if at is not None and starts is not None and at < starts:
        return f"at {at.isoformat()}, before the offer started ({starts.isoformat()})"
    if at is not None and ends is not None and at >= ends:
        return f"at {at.isoformat()}, after the offer ended ({ends.isoformat()})"
    return None


def _covered(offer: dict, sub: dict | None, code: str) -> int | None:
    """How many paid periods the discount covers: as the subscription keeps it, else as the offer says."""
    if sub is not None and sub["offer_code"] == code:
        return sub["discount_periods"]
    terms = offer_rules.OfferTerms(code, offer["name"], offer["kind"], offer["value"], offer["duration"],
                                   offer["periods"])
    return offer_rules.covered_periods(terms)


# --- 7. retention ---------------------------------------------------------------------------


def _pauses(timeline: Timeline) -> list[tuple[datetime, datetime | None]]:
    """A subscription's pauses from its events: (paused at, resumed at or None while still paused)."""
    spans, since = [], None
    for at, (to, before) in zip(timeline.times, timeline.values):
        if to == "paused" and before != "paused":
            since = at
        elif before == "paused" and since is not None:
            spans.append((since, at))
            since = None
    return spans + ([(since, None)] if since is not None else [])


def check_retention(db, cfg, history: History | None = None) -> list[Violation]:
    """No charge inside a pause; at most one save offer accepted per reader in any 365 days."""
    history = history or History(db, cfg)
    found = []
    pauses = {sub_id: _pauses(timeline) for subs in history.sub_events.values() for sub_id, timeline in subs.items()}
    for pay in history.payments:
        at = parse_time(pay["at"])
        for start, end in pauses.get(pay["subscription_id"], ()):
            if start < at and (end is None or at < end):
                found.append(Violation("charge_during_pause", f"payment {pay['id']} ({pay['kind']}) at "
                                       f"{pay['at']} falls in a pause from {start.isoformat()}",
                                       {"payment_id": pay["id"], "subscription_id": pay["subscription_id"]}))
    accepted: dict[int, list[Event]] = defaultdict(list)
    for event in history.by_type["save_offer_accepted"]:
        accepted[event.reader_id].append(event)
    for reader_id, items in accepted.items():
        items.sort(key=lambda event: event.at)
        for first, second in zip(items, items[1:]):
            if second.at - first.at < retention.WINDOW:
                found.append(Violation("save_offers_per_year", f"reader {reader_id} accepted save offers at "
                                       f"{first.at.isoformat()} and {second.at.isoformat()}",
                                       {"reader_id": reader_id, "event_ids": [first.id, second.id]}))
    return found


# --- 8. devices -----------------------------------------------------------------------------


def _live_at(sessions: list[dict], moment: datetime) -> list[int]:
    """The sessions live at ``moment``: started by then and not ended by then."""
    return [row["id"] for row in sessions if parse_time(row["created_at"]) <= moment
            and (row["ended_at"] is None or parse_time(row["ended_at"]) > moment)]


def check_devices(db, cfg, history: History | None = None) -> list[Violation]:
    """Right after each capped sign-in, the account held no more live sessions than the limit it signed in under."""
    history = history or History(db, cfg)
    sessions: dict[int, list[dict]] = defaultdict(list)
    for row in db.rows("select id, reader_id, created_at, ended_at from reader_sessions order by id"):
        sessions[row["reader_id"]].append(row)
    found = []
    for event in history.by_type["device_signed_in"]:
        limit = event.data.get("limit")
        if not isinstance(limit, int):
            continue  # signed in with no cap
        live = _live_at(sessions[event.reader_id], event.at)
        if len(live) > limit:
            found.append(Violation("devices_over", f"reader {event.reader_id} held {len(live)} live sessions at "
                                   f"{event.at.isoformat()}, over the limit of {limit} they signed in under",
                                   {"reader_id": event.reader_id, "event_id": event.id, "sessions": live}))
    return found


# --- 10. gift links ----------------------------------------------------------------------


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

# --- group licences ---------------------------------------------------------------------


def _most_at_once(spans: list[dict]) -> tuple[int, str | None]:
    """The most memberships of one org active at one moment, and the first moment it was reached.

    A leave at the moment of a join frees the seat first (the join waited for it).
    """
    moves = sorted([(row["joined_at"], 1) for row in spans] +
                   [(row["left_at"], -1) for row in spans if row["left_at"]], key=lambda move: (move[0], move[1]))
    active, most, when = 0, 0, None
    for at, step in moves:
        active += step
        if active > most:
            most, when = active, at
    return most, when


def check_seats(db, cfg, history: History | None = None) -> list[Violation]:
    """No group licence ever had more active members than seats."""
    by_org: dict[int, list[dict]] = defaultdict(list)
    for row in orgs.membership_history(db):
        by_org[row["org_id"]].append(row)
    found = []
    for org_id, spans in by_org.items():
        most, when = _most_at_once(spans)
        if most > spans[0]["seats"]:
            found.append(Violation("seats_over", f"org {spans[0]['slug']} had {most} members at {when} for "
                                   f"{spans[0]['seats']} seats", {"org_id": org_id}))
    return found


# --- 9. referral side doors ---------------------------------------------------------------


def _search_allowed(history: History, meter: str, rows: list[Unlock]) -> int:
    """The most search reads a day any preset in force (or named by its reads' events) allowed this meter."""
    owner = meter.removeprefix(referral.SEARCH_METER_PREFIX)
    tier = "registered" if owner.startswith("reader:") else "anonymous"
    names = {name for row in rows for name in history.presets.at(row.at)}
    names |= {event.data["preset"] for event in history.by_type["referral_read"]
              if event.meter_key == owner and event.data.get("preset")}
    return max((rules.referral.search_allowance(tier) for name in names for rules in history.rules_variants(name)),
               default=0)


def check_referrals(db, cfg, history: History | None = None) -> list[Violation]:
    """No search arrival read more distinct articles through the side door in a day than the preset allowed."""
    history = history or History(db, cfg)
    days: dict[tuple[str, str], list[Unlock]] = defaultdict(list)
    for row in history.search_reads:
        days[(row.meter_key, row.window_key)].append(row)
    found = []
    for (meter, window), rows in days.items():
        used, allowed = len({row.slug for row in rows}), _search_allowed(history, meter, rows)
        if used > allowed:
            found.append(Violation("referral_over", f"{meter} read {used} articles from search in {window}, "
                                   f"with {allowed} allowed", {"meter_key": meter, "window_key": window,
                                                               "unlock_ids": [row.id for row in rows]}))
    return found


CHECKS = (check_quota, check_access, check_billing, check_passes, check_newsletters, check_events,
          check_offers, check_retention, check_seats, check_devices, check_referrals,
          check_gifts)


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
