"""Dashboard numbers: everything is counted from the events table.

A range is [start, end) in simulated time. Visitors are distinct viewers
(a visitor id, or a reader id once signed in).

The funnel is a cohort: the people who viewed an article in the range, then
of those, who saw a gate, then registered, unlocked and subscribed. A person
is an account, with every visitor id that became it (``visitors.reader_id``,
and the visitor named by its signup or login events), or else a visitor id.
Order matters: a step counts a person only if they reached it at or after
the moment they first reached the step before, within the range, so each
step is a subset of the one before.

An audience says whose events count: real readers only (the default for
business numbers), real readers and generated traffic, or everyone.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gate.rules.billing import LIVE, PlanTerms
from gate.rules.offers import Discount
from gate.rules.timeutil import to_iso
from gate.services import personas, seed
from gate.storage.db import rows

#: Whose events the numbers count, and how the console names each choice.
AUDIENCES = {
    "people": "Real readers only",
    "synthetic": "Real readers and generated traffic",
    "all": "Everyone (also presenters, personas, admins, demo accounts)",
}
#: Accounts that are the presenter's, not readers: demo personas and the seeded demo accounts.
STAFF_EMAILS = tuple(sorted({p.email for p in personas.PERSONAS if p.email} | {a[0] for a in seed.DEMO_ACCOUNTS}))

FUNNEL = ("visit", "gate_impression", "registration", "unlock", "subscription")
FUNNEL_LABELS = {"visit": "Visited", "gate_impression": "Saw a gate", "registration": "Registered",
                 "unlock": "Unlocked", "subscription": "Subscribed"}
SERIES = ("views", "gate_impressions", "signups", "unlocks", "new_subscriptions", "cancellations")


def _new_subscription(db) -> str:
    """Events that started a subscription (trial or paid), on either engine's JSON."""
    to, was = db.json_text("data", "to"), db.json_text("data", "from")
    return (f"type = 'subscription_changed' and {to} in ('trialing', 'active')"
            f" and ({was} is null or {was} = 'incomplete')")


def _canceled(db) -> str:
    """Events that ended a subscription."""
    return f"type = 'subscription_changed' and {db.json_text('data', 'to')} in ('canceled', 'unpaid')"


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


def parse_audience(text: str | None, default: str = "people") -> str:
    """An audience from a query parameter; anything unknown is a clear error."""
    audience = text or default
    if audience not in AUDIENCES:
        raise ValueError(f"include must be one of {', '.join(AUDIENCES)}, not {audience!r}")
    return audience


def _left_out(audience: str) -> str:
    """SQL selecting the ids of the accounts an audience leaves out."""
    emails = ", ".join("'" + email.replace("'", "''") + "'" for email in STAFF_EMAILS)
    staff = f"is_admin = 1 or email in ({emails})"
    return f"select id from readers where {staff}{' or synthetic = 1' if audience == 'people' else ''}"


def audience_sql(db, audience: str) -> str:
    """A condition on events (reader_id, visitor_id, data) keeping only the audience's."""
    if audience == "all":
        return "1 = 1"
    out = _left_out(audience)
    sql = (f"(reader_id is null or reader_id not in ({out})) and (visitor_id is null or visitor_id"
           f" not in (select id from visitors where reader_id in ({out})))")
    # Generated traffic is tagged on every event, visitors' included.
    return sql + (f" and {db.json_text('data', 'synthetic')} is null" if audience == "people" else "")


def _count(db, where: str, span: Range, distinct: str | None = None, audience: str = "all") -> int:
    what = f"count(distinct {distinct})" if distinct else "count(*)"
    sql = f"select {what} from events where at >= ? and at < ? and {where} and {audience_sql(db, audience)}"
    return db.scalar(sql, span.params)


def _keep_readers(audience: str, column: str = "reader_id") -> str:
    """A condition on a table's reader column keeping only the audience's accounts."""
    return "1 = 1" if audience == "all" else f"{column} not in ({_left_out(audience)})"


def _live(db, audience: str) -> list[dict]:
    """Every live subscription of the audience's accounts: plan, status, discount and current period."""
    statuses = ", ".join(f"'{status}'" for status in LIVE)
    return db.rows("select plan_id, status, offer_code, discount_kind, discount_value, discount_periods,"
                   f" period_index from subscriptions where status in ({statuses}) and {_keep_readers(audience)}")


def _terms(plan) -> PlanTerms:
    """A configured plan, priced the way billing prices it."""
    return PlanTerms(plan.id, plan.price_cents, plan.currency, plan.interval, plan.trial_days,
                     plan.intro_price_cents, plan.intro_periods)


def _discount(row: dict) -> Discount | None:
    """The discount a subscription row was sold with, if any."""
    if row["offer_code"] is None:
        return None
    return Discount(row["offer_code"], row["discount_kind"], row["discount_value"], row["discount_periods"])


def monthly_cents(plan: PlanTerms, discount: Discount | None, period_index: int) -> float:
    """What a subscription's current period is charged, per month (a yearly price / 12)."""
    price, _ = plan.price(discount, max(period_index, 0))
    return price / 12 if plan.interval == "year" else float(price)


def discounted_now(plan: PlanTerms, discount: Discount | None, period_index: int) -> bool:
    """Whether a subscription's current paid period is priced below the list price by an offer or an intro price."""
    intro = plan.intro_price_cents is not None and 0 <= period_index < plan.intro_periods
    return intro or (discount is not None and discount.covers(period_index))


def _money(db, span: Range, audience: str) -> tuple[int, int]:
    """Succeeded charges in the range: what was charged, and what the same periods list at.

    A zero card check for a trial is no sale, so it is left out of the list total.
    """
    charged, listed = db.execute(
        "select coalesce(sum(amount_cents), 0), coalesce(sum(case when kind = 'trial_verification' then 0"
        " else coalesce(list_cents, amount_cents) end), 0) from payments where outcome = 'succeeded'"
        f" and at >= ? and at < ? and {_keep_readers(audience)}", span.params).fetchone()
    return int(charged), int(listed)


def metrics(db, span: Range, plans: dict, audience: str = "people") -> dict:
    """The headline numbers for a range, plus live subscribers, MRR and the share still discounted now.

    MRR is what each paying subscription's current period is charged (its intro or
    discounted price), a yearly plan's over 12; revenue is what succeeded charges took in the range.
    """
    live = [(row, _terms(plans[row["plan_id"]]) if row["plan_id"] in plans else None)
            for row in _live(db, audience)]
    priced = [(row, plan) for row, plan in live if plan is not None]
    mrr = sum(monthly_cents(plan, _discount(row), row["period_index"])
              for row, plan in priced if row["status"] != "trialing")
    discounted = sum(discounted_now(plan, _discount(row), row["period_index"]) for row, plan in priced)
    revenue, listed = _money(db, span, audience)
    return {
        "visitors": len({person for person, *_ in _moments(db, span, audience, ["visit"], None)}),
        "gate_impressions": _count(db, "type = 'gate_impression'", span, audience=audience),
        "signups": _count(db, "type = 'signup'", span, audience=audience),
        "unlocks": _count(db, "type = 'unlock'", span, audience=audience),
        "checkouts": _count(db, f"type = 'subscription_changed' and {db.json_text('data', 'by')} = 'checkout'"
                                f" and ({db.json_text('data', 'from')} is null)", span, audience=audience),
        "new_subscriptions": _count(db, _new_subscription(db), span, audience=audience),
        "cancellations": _count(db, _canceled(db), span, audience=audience),
        "active_subscribers": len(live),
        "mrr_cents": round(mrr),
        "revenue_cents": revenue,
        "discounts_cents": max(0, listed - revenue),
        "discounted": discounted,
        "discounted_share": discounted / len(live) if live else 0.0,
    }


def redemptions(db, span: Range, audience: str = "people") -> list[tuple[str, int]]:
    """Redemptions per offer code in the range, most first."""
    return [(code, count) for code, count in db.execute(
        "select code, count(*) from redemptions where at >= ? and at < ?"
        f" and {_keep_readers(audience)} group by code order by count(*) desc, code", span.params).fetchall()]


#: The steps of an offer's funnel: the events that put a person at each (offers-common.md).
OFFER_STEPS = {"viewed": "offer_viewed", "applied": "offer_applied", "redeemed": "offer_redeemed"}
OFFER_STEP_LABELS = {"viewed": "Viewed", "applied": "Applied", "redeemed": "Redeemed"}


def offer_funnel(db, span: Range, audience: str = "people") -> dict[str, dict]:
    """Per code: the people who viewed it, had it applied to a price, redeemed it, and were refused (by reason).

    A person is an account, or else a visitor id. Each step counts people who reached it in
    the range, so a code typed straight into a checkout is applied without having been viewed.
    """
    code, reason = db.json_text("data", "code"), db.json_text("data", "reason")
    person = "coalesce('reader:' || cast(reader_id as text), 'visitor:' || visitor_id)"
    types = ", ".join(f"'{name}'" for name in (*OFFER_STEPS.values(), "offer_refused"))
    found: dict[str, dict] = {}
    step_of = {name: step for step, name in OFFER_STEPS.items()}
    for kind, offer, why, people in db.execute(
            f"select type, upper({code}), {reason}, count(distinct {person}) from events where at >= ? and at < ?"
            f" and type in ({types}) and {code} is not null and {audience_sql(db, audience)}"
            f" group by type, upper({code}), {reason}", span.params).fetchall():
        row = found.setdefault(offer, {**dict.fromkeys(OFFER_STEPS, 0), "refused": {}})
        if kind == "offer_refused":
            row["refused"][why or "unknown"] = row["refused"].get(why or "unknown", 0) + people
        else:
            row[step_of[kind]] += people
    return found


def offers_csv(funnel: dict[str, dict], known: dict[str, str], reasons) -> str:
    """The offer funnel as CSV: one row per code, steps, then refusals by reason (``known``: code → status)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["code", "status", *OFFER_STEPS, *(f"refused_{reason}" for reason in reasons)])
    for code in sorted(set(funnel) | set(known)):
        row = funnel.get(code) or {**dict.fromkeys(OFFER_STEPS, 0), "refused": {}}
        writer.writerow([code, known.get(code, "not an offer"), *(row[step] for step in OFFER_STEPS),
                         *(row["refused"].get(reason, 0) for reason in reasons)])
    return out.getvalue()


def redemptions_csv(found: list[dict]) -> str:
    """One code's redemptions as CSV."""
    out = io.StringIO()
    fields = ["code", "at", "reader_id", "email", "subscription_id", "plan_id", "pass_id"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(found)
    return out.getvalue()


def _steps(db) -> dict[str, str]:
    """The events that put a person at each funnel step."""
    return {"visit": "type = 'article_view'",
            "gate_impression": "type = 'gate_impression'",
            "registration": "type = 'signup'",
            "unlock": "type = 'unlock'",
            "subscription": _new_subscription(db)}


#: What each step means, printed under the funnel.
DEFINITIONS = {
    "visit": "people who opened an article in the range (the cohort)",
    "gate_impression": "of those, people shown a gate instead of the full text, at or after their first view",
    "registration": "of those, people who created an account after seeing the gate",
    "unlock": "of those, people whose meter then spent an article (a press of Unlock, or a counted view)",
    "subscription": "of those, people who then started a subscription (trial or paid)",
}


def _accounts_of_visitors(db) -> dict[str, int]:
    """Each visitor id that became an account, and the account (one person, before and after)."""
    links = dict(db.execute("select id, reader_id from visitors where reader_id is not null").fetchall())
    links.update(db.execute("select visitor_id, reader_id from events where type in ('signup', 'login',"
                            " 'meter_merged') and visitor_id is not null and reader_id is not null").fetchall())
    return links


def _moments(db, span: Range, audience: str, steps, tag: tuple[str, ...] | None) -> list[tuple]:
    """(person, step, at, tag value) for each event of the steps in the range, of the audience.

    ``tag`` is the path of JSON keys in the event's data whose text tags each moment.
    """
    links, found, where = _accounts_of_visitors(db), [], _steps(db)
    label = db.json_text("data", *tag) if tag else "null"
    for step in steps:
        sql = (f"select reader_id, visitor_id, at, {label} from events where at >= ? and at < ?"
               f" and {where[step]} and {audience_sql(db, audience)}")
        for reader_id, visitor_id, at, value in db.execute(sql, span.params).fetchall():
            account = reader_id if reader_id is not None else links.get(visitor_id)
            person = f"reader:{account}" if account is not None else f"visitor:{visitor_id}"
            found.append((person, step, at, value))
    return found


def cohort(moments: list[tuple], steps) -> dict[str, tuple[int, str | None]]:
    """Each person who reached the first step: how many steps they reached in order, and their tag."""
    # The tag is the one on their first view (the variant they were assigned when they came).
    times: dict[str, dict[str, list[str]]] = {}
    tags: dict[str, tuple[str, str]] = {}
    for person, step, at, value in moments:
        times.setdefault(person, {}).setdefault(step, []).append(at)
        if step == steps[0] and value is not None and (person not in tags or at < tags[person][0]):
            tags[person] = (at, value)
    reached = {}
    for person, by_step in times.items():
        depth, since = 0, ""
        for step in steps:
            later = [at for at in by_step.get(step, ()) if at >= since]
            if not later:
                break
            depth, since = depth + 1, min(later)
        if depth:
            reached[person] = (depth, tags.get(person, (None, None))[1])
    return reached


def funnel(db, span: Range, audience: str = "people") -> list[dict]:
    """The cohort at each step, with the share of the first step and of the step before."""
    reached = cohort(_moments(db, span, audience, FUNNEL, None), FUNNEL)
    counts = [sum(1 for depth, _ in reached.values() if depth > index) for index in range(len(FUNNEL))]
    rows, first, previous = [], counts[0], None
    for step, value in zip(FUNNEL, counts):
        rows.append({"step": step, "label": FUNNEL_LABELS[step], "count": value,
                     "definition": DEFINITIONS[step],
                     "of_first": value / first if first else 0.0,
                     "of_previous": value / previous if previous else (1.0 if value else 0.0)})
        previous = value
    return rows


def daily(db, span: Range, tz: ZoneInfo, audience: str = "people") -> list[dict]:
    """One row per local day: views, gate impressions, signups, unlocks, new subs, cancellations."""
    days = {}
    day = span.first_day
    while day <= span.last_day:
        days[day] = dict.fromkeys(SERIES, 0)
        day += timedelta(days=1)
    kinds = {"views": "type = 'article_view'", "gate_impressions": "type = 'gate_impression'",
             "signups": "type = 'signup'", "unlocks": "type = 'unlock'",
             "new_subscriptions": _new_subscription(db), "cancellations": _canceled(db)}
    for name, where in kinds.items():
        sql = f"select at from events where at >= ? and at < ? and {where} and {audience_sql(db, audience)}"
        for (at,) in db.execute(sql, span.params).fetchall():
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


def _variant_path(experiment) -> tuple[str, str]:
    """Where an event's data names this experiment's arm (its id is letters, digits and dashes)."""
    return ("variants", experiment.id)


def experiment_counts(db, experiment, span: Range, audience: str = "synthetic") -> dict[str, dict[str, int]]:
    """The cohort funnel per variant: people by the variant tagged on their first view in the range."""
    moments = _moments(db, span, audience, EXPERIMENT_STEPS, _variant_path(experiment))
    counts = {variant.id: dict.fromkeys(EXPERIMENT_STEPS, 0) for variant in experiment.variants}
    for depth, variant in cohort(moments, EXPERIMENT_STEPS).values():
        for step in EXPERIMENT_STEPS[:depth] if variant in counts else ():
            counts[variant][step] += 1
    return counts


def experiment_start(db, experiment) -> datetime | None:
    """When an experiment started: the first event tagged with one of its variants (first assignment)."""
    first = db.scalar(f"select min(at) from events where {db.json_text('data', *_variant_path(experiment))}"
                      " is not null")
    return datetime.fromisoformat(first) if first else None


def experiments_csv(reports: list[dict]) -> str:
    """Every variant of every experiment shown: counts, rates with intervals, and the test on the metric."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["preset", "experiment", "metric", "variant", "is_control", "visitors",
                     *(f"{step}_{what}" for step in EXPERIMENT_STEPS[1:] for what in ("count", "rate", "ci_low", "ci_high")),
                     "difference", "ci_low", "ci_high", "z", "p_value", "significant"])
    for report in reports:
        for row in report["rows"]:
            cells = [value for cell in row["steps"][1:] for value in
                     (cell["count"], cell["rate"], cell["ci_low"], cell["ci_high"])]
            test = row["test"] or {}
            writer.writerow([report["preset"], report["experiment"].id, report["experiment"].metric,
                             row["variant"], int(row["is_control"]), row["steps"][0]["count"], *cells,
                             *(test.get(name, "") for name in ("difference", "ci_low", "ci_high", "z", "p_value")),
                             "" if not test else int(test["significant"])])
    return out.getvalue()


def _decoded(found: list[dict]) -> list[dict]:
    """Event rows with their JSON data as a dict."""
    return [{**row, "data": json.loads(row["data"] or "{}")} for row in found]


def event_stream(db, after_id: int = 0, *, type: str | None = None, email: str | None = None,
                 slug: str | None = None, limit: int = 100) -> list[dict]:
    """The console's event stream: events newer than ``after_id``, newest first, with the reader's email."""
    where, params = ["e.id > ?"], [after_id]
    for column, value in (("e.type", type), ("r.email", email), ("e.slug", slug)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    return _decoded(rows(db, "select e.*, r.email from events e left join readers r on r.id = e.reader_id"
                             " where " + " and ".join(where) + " order by e.id desc limit ?", [*params, limit]))


def timeline(db, reader_id: int, limit: int = 200) -> list[dict]:
    """One reader's events, newest first (the console's reader page)."""
    return _decoded(rows(db, "select * from events where reader_id = ? order by id desc limit ?",
                         [reader_id, limit]))
