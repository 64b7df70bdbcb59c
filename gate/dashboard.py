"""Dashboard numbers: everything is counted from the events table.

A range is [start, end) in simulated time. Visitors are distinct viewers
(a visitor id, or a reader id once signed in); the funnel counts distinct
viewers at each step, so a reader who saw ten gates counts once.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gate.timeutil import to_iso

FUNNEL = ("visit", "gate_impression", "registration", "unlock", "subscription")
FUNNEL_LABELS = {"visit": "Visited", "gate_impression": "Saw a gate", "registration": "Registered",
                 "unlock": "Unlocked", "subscription": "Subscribed"}
SERIES = ("views", "gate_impressions", "signups", "unlocks", "new_subscriptions", "cancellations")
_VIEWER = "coalesce(visitor_id, 'reader:' || reader_id)"
_NEW_SUB_ANY = ("type = 'subscription_changed' and json_extract(data, '$.to') in ('trialing', 'active')"
                " and (json_extract(data, '$.from') is null or json_extract(data, '$.from') = 'incomplete')")
_CANCELED = ("type = 'subscription_changed' and json_extract(data, '$.to') in ('canceled', 'unpaid')")


@dataclass(frozen=True)
class Range:
    """A span of simulated time, with the local dates it was chosen by."""

    start: datetime
    end: datetime
    first_day: date
    last_day: date

    @classmethod
    def days(cls, first: date, last: date, tz: ZoneInfo) -> "Range":
        """Whole local days from ``first`` to ``last`` inclusive."""
        if last < first:
            raise ValueError("the range ends before it starts")
        if (last - first).days > 3660:
            raise ValueError("choose a range of at most ten years")
        start = datetime.combine(first, datetime.min.time()).replace(tzinfo=tz)
        end = datetime.combine(last + timedelta(days=1), datetime.min.time()).replace(tzinfo=tz)
        return cls(start, end, first, last)

    @property
    def params(self) -> list[str]:
        return [to_iso(self.start), to_iso(self.end)]


def _count(db, where: str, span: Range, distinct: str | None = None, extra: list | None = None) -> int:
    what = f"count(distinct {distinct})" if distinct else "count(*)"
    sql = f"select {what} from events where at >= ? and at < ? and {where}"
    return db.execute(sql, span.params + (extra or [])).fetchone()[0]


def metrics(db, span: Range, plans: dict) -> dict:
    """The headline numbers for a range, plus live subscribers and MRR now."""
    live = db.execute("select plan_id, count(*) from subscriptions where status in "
                      "('trialing', 'active', 'past_due') group by plan_id").fetchall()
    paying = db.execute("select plan_id, count(*) from subscriptions where status in "
                        "('active', 'past_due') group by plan_id").fetchall()
    mrr = sum(_monthly(plans.get(plan)) * count for plan, count in paying)
    return {
        "visitors": _count(db, "type = 'article_view'", span, _VIEWER),
        "gate_impressions": _count(db, "type = 'gate_impression'", span),
        "signups": _count(db, "type = 'signup'", span),
        "unlocks": _count(db, "type = 'unlock'", span),
        "checkouts": _count(db, "type = 'subscription_changed' and json_extract(data, '$.by') = 'checkout'"
                                " and (json_extract(data, '$.from') is null)", span),
        "new_subscriptions": _count(db, _NEW_SUB_ANY, span),
        "cancellations": _count(db, _CANCELED, span),
        "active_subscribers": sum(count for _, count in live),
        "mrr_cents": round(mrr),
    }


def _monthly(plan) -> float:
    """A plan's price per month, in cents."""
    if plan is None:
        return 0.0
    return plan.price_cents / 12 if plan.interval == "year" else float(plan.price_cents)


#: Each funnel step: which events reach it, and who is counted once (a viewer or a reader).
STEPS = {"visit": ("type = 'article_view'", _VIEWER),
         "gate_impression": ("type = 'gate_impression'", _VIEWER),
         "registration": ("type = 'signup'", "reader_id"),
         "unlock": ("type = 'unlock'", _VIEWER),
         "subscription": (_NEW_SUB_ANY, "reader_id")}


def funnel(db, span: Range) -> list[dict]:
    """Distinct viewers at each step, with the share of the first step and of the step before."""
    counts = {step: _count(db, where, span, who) for step, (where, who) in STEPS.items()}
    rows, first, previous = [], counts["visit"], None
    for step in FUNNEL:
        value = counts[step]
        rows.append({"step": step, "label": FUNNEL_LABELS[step], "count": value,
                     "of_first": value / first if first else 0.0,
                     "of_previous": value / previous if previous else (1.0 if value else 0.0)})
        previous = value
    return rows


def daily(db, span: Range, tz: ZoneInfo) -> list[dict]:
    """One row per local day: views, gate impressions, signups, unlocks, new subs, cancellations."""
    days = {}
    day = span.first_day
    while day <= span.last_day:
        days[day] = dict.fromkeys(SERIES, 0)
        day += timedelta(days=1)
    kinds = {"views": "type = 'article_view'", "gate_impressions": "type = 'gate_impression'",
             "signups": "type = 'signup'", "unlocks": "type = 'unlock'",
             "new_subscriptions": _NEW_SUB_ANY, "cancellations": _CANCELED}
    for name, where in kinds.items():
        for (at,) in db.execute(f"select at from events where at >= ? and at < ? and {where}", span.params):
            local = datetime.fromisoformat(at).astimezone(tz).date()
            if local in days:
                days[local][name] += 1
    return [{"day": day.isoformat(), **values} for day, values in days.items()]


def to_csv(rows: list[dict]) -> str:
    """Daily rows as CSV, header first."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["day", *SERIES], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


EXPERIMENT_STEPS = ("visit", "gate_impression", "registration", "subscription")


def experiment_counts(db, experiment, span: Range) -> dict[str, dict[str, int]]:
    """Distinct viewers reaching each funnel step, per variant (from the variant tag on events)."""
    path = f'$.variants."{experiment.id}"'
    counts = {variant.id: dict.fromkeys(EXPERIMENT_STEPS, 0) for variant in experiment.variants}
    for step in EXPERIMENT_STEPS:
        where, who = STEPS[step]
        rows = db.execute(
            f"select json_extract(data, ?) as variant, count(distinct {who}) from events"
            f" where at >= ? and at < ? and {where} and variant is not null group by variant",
            [path, *span.params]).fetchall()
        for variant, count in rows:
            if variant in counts:
                counts[variant][step] = count
    return counts
