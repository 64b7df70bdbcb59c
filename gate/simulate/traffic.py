"""*Generate traffic*: a simulated population run through the site's engine into its database.

A class needs an experiment with a result in seconds, and a handful of
presenters' clicks never gets there. This module reuses the population
simulator (:mod:`gate.simulate`): its seeded readers meet the active preset,
each in the experiment arm the site's own :func:`gate.rules.experiments.assign`
gives their visitor id, with :func:`gate.rules.paywall.decide` and
:func:`gate.storage.quota.unlock` deciding every view and unlock. What they did is
then written as the site would have written it: visitor rows, meter spends
in the ``unlocks`` table, accounts, subscriptions by the billing state
machine, and events (views, gate impressions, unlocks, signups, merges,
subscription changes), over the past ``days`` days of simulated time.

Everything written is tagged: accounts have ``synthetic = 1``, every event
has ``"synthetic": true`` in its data (and the reader's variants), visitor
ids start with ``synthetic-``. Business numbers leave them out unless asked.

How generated history maps to the site's: visits happen from noon (site
time) on each past day, in the simulator's order, a moment apart, and end
before today; one generated person keeps one arm even if they lose their
cookies (the classroom population never does); subscriptions use the
monthly plan and the test card that always succeeds; generated readers get
no newsletters. ``gate audit`` stays clean on a database with generated
traffic (tests/test_traffic.py checks it).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path

from gate.rules import billing, experiments, periods
from gate.rules.paywall import Reason, Rules
from gate.rules.timeutil import to_iso
from gate.services import subscriptions
from gate.services.visitors import keep as keep_visitor
from gate.simulate.population import Population, load_population
from gate.simulate.runner import ArticleRef, SimulatedBilling, Step, simulate
from gate.storage import events
from gate.storage.db import immediate
from gate.storage.quota import SqlQuotaStore

MAX_VISITORS = 2000
MAX_DAYS = 60
#: The population tuned for class-sized runs (engaged readers, large effects).
CLASSROOM_POPULATION = "population-classroom.toml"
#: Generated visits of one day are spread over these hours from noon, so they end before midnight.
SPREAD = timedelta(hours=10)
TEST_CARD = billing.Card("4242", 12, 2099)
#: What a run counts as it writes.
COUNTED = ("visitors", "views", "gate_impressions", "signups", "unlocks", "subscriptions", "cancellations")


class TrafficError(ValueError):
    """A request for traffic the generator refuses (too many visitors, no articles, ...)."""


@dataclass
class Generated:
    """What a run wrote, for the flash message and the CLI."""

    batch: str
    first_day: str
    last_day: str
    counts: dict = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))

    def summary(self) -> str:
        """One line a presenter can read aloud."""
        c = self.counts
        return (f"{c['visitors']:,} generated visitors made {c['views']:,} views, {c['gate_impressions']:,} gate "
                f"impressions, {c['signups']:,} signups, {c['unlocks']:,} unlocks and {c['subscriptions']:,} "
                f"subscriptions from {self.first_day} to {self.last_day}")


def check_request(visitors: int, days: int) -> None:
    """Refuse sizes a class does not need and a server should not run in a request."""
    if not 1 <= visitors <= MAX_VISITORS:
        raise TrafficError(f"choose between 1 and {MAX_VISITORS:,} visitors (got {visitors})")
    if not 1 <= days <= MAX_DAYS:
        raise TrafficError(f"choose between 1 and {MAX_DAYS} days (got {days})")


def population(config_dir: Path) -> Population:
    """The classroom population from the config folder."""
    return load_population(Path(config_dir) / CLASSROOM_POPULATION)


def _articles(db, moment: datetime) -> list[ArticleRef]:
    """The site's articles published by the first generated day, newest (most read) first."""
    rows = db.execute("select slug, section, access_class from articles where published_at <= ?"
                      " order by published_at desc, id desc", [to_iso(moment)]).fetchall()
    if not rows:
        raise TrafficError("there are no published articles to read yet: seed some first")
    return [ArticleRef(*row) for row in rows]


def _arms(rules: Rules, unit: str) -> dict[str, str]:
    """The variant of each active experiment this unit gets, as the site assigns it."""
    return {exp.id: experiments.assign(exp, unit).id for exp in rules.experiments if exp.active}


def _with_arms(rules: Rules, arms: dict[str, str]) -> Rules:
    """The rules of one combination of arms."""
    for exp in rules.experiments:
        if exp.id in arms:
            rules = experiments.apply(rules, exp.variant(arms[exp.id]))
    return rules


def _play(rules: Rules, people: Population, readers: int, days: int, seed: int, start: datetime,
          articles: list[ArticleRef], plan: SimulatedBilling, batch: str) -> tuple[list[Step], dict[int, dict]]:
    """Run every reader through the rules of their own arms; their steps in the order they happened."""
    arms = {reader: _arms(rules, f"visitor:{_visitor(batch, reader, 0)}") for reader in range(readers)}
    steps: list[tuple[int, int, int, Step]] = []
    for combo in {tuple(sorted(chosen.items())) for chosen in arms.values()}:
        mine = {reader for reader, chosen in arms.items() if tuple(sorted(chosen.items())) == combo}

        def keep(step: Step, mine=mine) -> None:
            if step.reader in mine:
                steps.append((step.day, step.reader, len(steps), step))

        # Every run meets the same seeded readers on the same days; each reader keeps their arm's run.
        simulate(people, {rules.name: _with_arms(rules, dict(combo))}, readers=readers, days=days,
                 seed=seed, start=start, articles=articles, billing=plan, trace=keep)
    return [step for *_, step in sorted(steps, key=lambda item: item[:3])], arms


def _visitor(batch: str, reader: int, generation: int) -> str:
    """The visitor id of one simulated reader's cookie (a new one each time they lose it)."""
    return f"synthetic-{batch}-{reader}-{generation}"


def generate(db, cfg, rules: Rules, now: datetime, *, visitors: int, days: int, seed: int,
             people: Population) -> Generated:
    """Write ``visitors`` simulated readers' last ``days`` days into the site's database."""
    check_request(visitors, days)
    tz = rules.tz
    today = now.astimezone(tz).date()
    start = datetime.combine(today - timedelta(days=days), time(12, 0), tzinfo=tz)
    articles = _articles(db, start)
    plan = SimulatedBilling.from_plans(cfg.plans)
    batch = secrets.token_hex(3)
    steps, arms = _play(rules, people, visitors, days, seed, start, articles, plan, batch)
    writer = _Writer(db, cfg, rules, plan.plan, batch, arms)
    by_day: dict[int, list[Step]] = {}
    for step in steps:
        by_day.setdefault(step.day, []).append(step)
    for day, todays in sorted(by_day.items()):
        gap = min(timedelta(seconds=1), SPREAD / len(todays))
        moment = start + timedelta(days=day)
        with immediate(db):
            for number, step in enumerate(todays):
                writer.write(step, moment + gap * number)
    writer.settle(now)
    return Generated(batch, start.date().isoformat(), (today - timedelta(days=1)).isoformat(), writer.counts)


class _Writer:
    """Turns simulated steps into the rows and events the site writes for the same actions."""

    def __init__(self, db, cfg, rules: Rules, plan_id: str, batch: str, arms: dict[int, dict]) -> None:
        self.db, self.cfg, self.rules, self.batch, self.arms = db, cfg, rules, batch, arms
        self.store = SqlQuotaStore(db)
        self.terms = subscriptions.plan_terms(cfg, plan_id)
        self.policy = subscriptions.policy(cfg)
        self.accounts: dict[int, int] = {}
        self.subs: dict[int, billing.Subscription] = {}
        self.seen: set[str] = set()
        self.counts = dict.fromkeys(COUNTED, 0)

    # --- identities ---------------------------------------------------------------

    def _who(self, step: Step) -> dict:
        """The reader or visitor an event is about, from the simulator's meter key."""
        if step.key.startswith("reader:"):
            return {"reader_id": self.accounts[step.reader]}
        return {"visitor_id": self._visitor_of(step.key)}

    def _visitor_of(self, key: str) -> str:
        """The visitor id behind a simulator's anonymous meter key ``visitor:READER.GENERATION``."""
        reader, _, generation = key.removeprefix("visitor:").partition(".")
        return _visitor(self.batch, int(reader), int(generation))

    def _meter(self, who: dict) -> str:
        """The meter key the site spends from for this reader or visitor."""
        return f"reader:{who['reader_id']}" if "reader_id" in who else f"visitor:{who['visitor_id']}"

    def _arrive(self, who: dict, at: datetime) -> None:
        """A visitor row the first time something is recorded about a generated visitor."""
        visitor = who.get("visitor_id")
        if visitor and visitor not in self.seen:
            self.seen.add(visitor)
            self.counts["visitors"] += 1
            keep_visitor(self.db, visitor, at)

    # --- steps --------------------------------------------------------------------

    def _tag(self, reader: int):
        """Tag the events that follow as this reader's: synthetic, and their arms (reset the token after)."""
        arms = self.arms[reader]
        return events.TAGS.set({"variants": arms, "synthetic": True} if arms else {"synthetic": True})

    def write(self, step: Step, at: datetime) -> None:
        """One simulated step, as the site records the same action."""
        token = self._tag(step.reader)
        try:
            if step.kind in ("view", "unlock"):
                self._read(step, at)
            elif step.kind == "register":
                self._sign_up(step, at)
            elif step.kind == "subscribe":
                self._subscribe(step, at)
            elif step.kind == "churn":
                self._cancel(step.reader, at)
        finally:
            events.TAGS.reset(token)

    def _read(self, step: Step, at: datetime) -> None:
        """A view (with the spend an auto meter makes) or a press of Unlock."""
        who = self._who(step)
        self._arrive(who, at)
        if step.access == "full" and step.reason == Reason.METER_AVAILABLE:  # this step spent one
            self._spend(step, who, at)
        if step.kind == "unlock":
            return
        rules = self._rules(step.reader)
        self.counts["views"] += 1
        events.record(self.db, "article_view", at, slug=step.slug, **who, access=step.access,
                      reason=step.reason, preset=rules.name)
        if step.access == "teaser":
            self.counts["gate_impressions"] += 1
            events.record(self.db, "gate_impression", at, slug=step.slug, **who, offer=step.offer,
                          reason=step.reason, style=rules.gate.style)

    def _rules(self, reader: int) -> Rules:
        """The rules this simulated reader's arms give them."""
        return _with_arms(self.rules, self.arms[reader])

    def _spend(self, step: Step, who: dict, at: datetime) -> None:
        """The spend quota.unlock made, in the site's unlocks table, and its event."""
        rules = self._rules(step.reader)
        rule = rules.tier(step.tier)
        window = periods.period_window(rule.period, at, rules.tz)
        spent, after = self.store.spend(self._meter(who), step.slug, window.key, at, lambda current: True,
                                        score=step.score, allowance=step.allowance)
        if spent:
            self.counts["unlocks"] += 1
            limit = rule.limit if step.allowance is None else step.allowance  # a dynamic meter's, as decided
            events.record(self.db, "unlock", at, slug=step.slug, **who, used=len(after), limit=limit,
                          mode=rule.mode, via="view" if step.kind == "view" else "unlock")

    def _sign_up(self, step: Step, at: datetime) -> int:
        """An account for a generated visitor: the signup, the meter merged, the sign-in."""
        visitor = self._visitor_of(step.key)
        self._arrive({"visitor_id": visitor}, at)
        first = _visitor(self.batch, step.reader, 0)
        email = f"{visitor}@synthetic.invalid"  # .invalid can never be a real address (RFC 2606)
        reader_id = self.db.insert("readers", {
            "email": email, "is_admin": 0, "session_token": secrets.token_urlsafe(24), "created_at": to_iso(at),
            "synthetic": 1, "experiment_unit": f"visitor:{first}"})
        self.accounts[step.reader] = reader_id
        self.counts["signups"] += 1
        events.record(self.db, "signup", at, reader_id=reader_id, visitor_id=visitor, source="generated",
                      newsletters=[], preset=self.rules.name)
        moved = self.store.merge(f"visitor:{visitor}", f"reader:{reader_id}")
        self.db.execute("update visitors set reader_id = ? where id = ?", [reader_id, visitor])
        if moved:
            events.record(self.db, "meter_merged", at, reader_id=reader_id, visitor_id=visitor, moved=moved)
        events.record(self.db, "login", at, reader_id=reader_id, visitor_id=visitor, method="signup")
        return reader_id

    def _subscribe(self, step: Step, at: datetime) -> None:
        """Checkout on the monthly plan with the card that always succeeds (signing up first if need be)."""
        reader_id = self.accounts.get(step.reader) or self._sign_up(step, at)
        outcome = billing.start(reader_id, self.terms, TEST_CARD, None, at)
        self.subs[step.reader] = subscriptions.apply_outcome(self.db, outcome, by="checkout")
        self.counts["subscriptions"] += 1

    def _cancel(self, reader: int, at: datetime) -> None:
        """A subscriber who does not renew: settled to the day, then canceled at once."""
        sub = self.subs.pop(reader)
        outcome = billing.settle(sub, self.terms, self.policy, at)
        outcome = outcome.then(billing.cancel(outcome.subscription, at, immediately=True))
        subscriptions.apply_outcome(self.db, outcome, by="generated")
        self.counts["cancellations"] += 1

    def settle(self, now: datetime) -> None:
        """Bring the generated subscriptions still running up to now (renewals on the way)."""
        with immediate(self.db):
            for reader, sub in self.subs.items():
                token = self._tag(reader)
                try:
                    subscriptions.apply_outcome(self.db, billing.settle(sub, self.terms, self.policy, now),
                                                by="clock")
                finally:
                    events.TAGS.reset(token)
