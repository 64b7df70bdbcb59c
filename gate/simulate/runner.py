"""Run a reader population through paywall presets, day by day, on the site's own engine.

Every access decision comes from :func:`gate.paywall.decide` and every spend
from :func:`gate.quota.unlock` on a memory quota store, exactly as the site
serves a GET of an article (decide, then spend when an auto meter asks) and
a press of *Unlock*. What the simulator adds is only the readers: who comes
on which day, what they read, and what they do when they meet a gate.

The population's draws (see :class:`gate.simulate.population.Crowd`) do
not depend on the rules, so every preset meets the same readers reading the
same articles with the same dice; with one seed, results are identical run
after run, in one process or one process per preset.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

import gate
from gate import periods, quota
from gate.billing import add_months
from gate.content import synthetic_articles
from gate.paywall import TIERS, ArticleLike, Decision, Rules, Viewer, decide
from gate.quota import MemoryQuotaStore
from gate.simulate.population import Crowd, Day, Population, Segment, file_digest

UTC = timezone.utc
ANONYMOUS, REGISTERED, SUBSCRIBER = 0, 1, 2
#: Prune spends no more often than this: keeping a few expired ones never changes a decision.
PRUNE_EVERY = timedelta(days=7)


class Step(NamedTuple):
    """One thing a reader did, for a trace: a view or unlock (with its decision) or a change.

    ``kind`` is ``view`` (a GET of the article), ``unlock`` (a press of
    *Unlock*), ``register``, ``subscribe``, ``churn`` or ``new_visitor``
    (an anonymous visitor who lost their cookies). ``tier`` and ``key`` are
    the reader's before the step.
    """

    day: int
    reader: int
    slug: str | None
    access: str | None
    reason: str | None
    offer: str | None
    kind: str
    tier: str
    key: str


Trace = Callable[[Step], None]


@dataclass(frozen=True)
class ArticleRef:
    """What the engine needs of an article: its slug, section and access class."""

    slug: str
    section: str
    access_class: str


def catalogue(count: int, sections: Sequence[str]) -> list[ArticleRef]:
    """The article list readers choose from: the same one `gate db seed --synthetic N` adds.

    About 10% free, 10% premium and the rest metered, spread over the
    site's sections, most popular first.
    """
    start = datetime(2026, 1, 1, tzinfo=UTC)  # publication dates play no part in decide
    return [ArticleRef(row["slug"], row["section"], row["access_class"])
            for row in synthetic_articles(count, list(sections), start)]


@dataclass(frozen=True)
class Billing:
    """What a subscription costs and how often it renews (from a plan in site.toml)."""

    plan: str
    price_cents: int
    currency: str
    months: int
    trial_days: int = 0

    @classmethod
    def from_plans(cls, plans) -> "Billing":
        """The monthly plan, or the first plan when the site has no monthly one."""
        plan = next((p for p in plans if p.interval == "month"), plans[0])
        return cls(plan.id, plan.price_cents, plan.currency,
                   12 if plan.interval == "year" else 1, plan.trial_days)

    def as_dict(self) -> dict:
        """The plan as a result records it."""
        return {"id": self.plan, "price_cents": self.price_cents, "currency": self.currency,
                "months": self.months, "trial_days": self.trial_days}


class PruningStore(MemoryQuotaStore):
    """The memory store, able to forget spends that no window can ever count again.

    Without this, a long run keeps every spend of every reader and memory grows
    with the days simulated. Everything else is :class:`MemoryQuotaStore`.
    """

    def forget_before(self, cutoff: datetime) -> int:
        """Drop every spend made before ``cutoff``; returns how many were dropped."""
        dropped = 0
        with self._lock:
            for key in list(self._rows):
                rows = self._rows[key]
                kept = [row for row in rows if row[2] >= cutoff]
                dropped += len(rows) - len(kept)
                if kept:
                    self._rows[key] = kept
                else:
                    del self._rows[key]
        return dropped


def spend_horizon(rules: Rules, now: datetime) -> datetime | None:
    """The earliest moment any meter window now reaches back to, or None if spends never expire.

    Windows only move forward, so a spend older than every limited tier's
    current window is never counted, nor re-read for free, again.
    """
    starts = []
    for tier in TIERS:
        rule = rules.tier(tier)
        if rule.unlimited or rule.limit == 0:
            continue
        if rule.unlock_lasts == "forever" or rule.period == "lifetime":
            return None
        starts.append(periods.period_window(rule.period, now, rules.tz).start)
    return min(starts) if starts else None


class Tally:
    """Running totals of one preset's run (per-day rows are differences of these)."""

    __slots__ = ("visits", "views", "impressions", "registrations", "unlocks", "subscriptions",
                 "subscriptions_registered", "churned", "renewals", "revenue_cents",
                 "readers", "visitors", "readers_gated", "subscribers")
    DAILY = ("visits", "views", "impressions", "registrations", "unlocks", "subscriptions",
             "churned", "revenue_cents")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def snapshot(self) -> tuple[int, ...]:
        """The totals that daily rows report, in DAILY order."""
        return tuple(getattr(self, name) for name in self.DAILY)


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


class PresetRun:
    """One preset's run: the readers' tiers and meters, driven one day at a time."""

    def __init__(self, name: str, rules: Rules, crowd: Crowd, articles: Sequence[ArticleLike],
                 billing: Billing, start: datetime, trace: Trace | None = None) -> None:
        self.name = name
        # The base preset for everyone: experiments' variants would split the readers.
        self.experiments_ignored = [experiment.id for experiment in rules.experiments]
        self.rules = rules.model_copy(update={"experiments": []})
        self.articles = list(articles)
        self.billing = billing
        self.start = start.astimezone(self.rules.tz)
        self.trace = trace
        self.store = PruningStore()
        self.spends: dict[str, tuple] = {}
        self.segments: list[Segment] = crowd.segments
        self.segment = crowd.segment.tolist()
        self.lift = crowd.population.registered_lift
        size = crowd.size
        self.tier = [ANONYMOUS] * size
        self.generation = [0] * size
        self.cookie_seen = [False] * size
        self.visited = [False] * size
        self.gated = [False] * size
        self.cycle = {}  # reader -> (first charge day, charges made)
        self.next_bill = np.full(size, -1, dtype=np.int64)
        self.churn_by_segment = np.array([1.0 - (1.0 - s.churn) ** billing.months
                                          for s in self.segments])
        self.segment_array = crowd.segment
        self.tally = Tally()
        self.daily: list[dict] = []
        self.pruned_to: datetime | None = None

    # --- time -----------------------------------------------------------------

    def moment(self, day: int) -> datetime:
        """The instant of a simulated day's visits: the start's wall-clock time, ``day`` days on.

        In UTC, like the times the engine computes its windows in: comparing
        datetimes that share a tzinfo skips a UTC-offset lookup per comparison,
        which makes decide() almost twice as fast.
        """
        return (self.start + timedelta(days=day)).astimezone(UTC)

    def day_of(self, moment: datetime) -> int:
        """The simulated day a local moment falls on."""
        return (moment.astimezone(self.rules.tz).date() - self.start.date()).days

    # --- one day --------------------------------------------------------------

    def play(self, day: Day) -> None:
        """Renewals first, then every visit of the day, then the day's row."""
        now = self.moment(day.index)
        before = self.tally.snapshot()
        self._renewals(day, now)
        self._prune(now)
        self._visits(day, now)
        after = self.tally.snapshot()
        row = {"day": (self.start.date() + timedelta(days=day.index)).isoformat(),
               "readers": day.readers_visiting}
        row.update({name: a - b for name, a, b in zip(Tally.DAILY, after, before)})
        row["gate_impressions"] = row.pop("impressions")
        row["subscribers"] = self.tally.subscribers
        self.daily.append(row)

    def _visits(self, day: Day, now: datetime) -> None:
        """Each visit reads its articles in turn; only here does Python loop per reader."""
        tally, tier, seen, visited = self.tally, self.tier, self.cookie_seen, self.visited
        articles, position = self.articles, 0
        for reader, views, lost in zip(day.reader, day.views, day.lost):
            tally.visits += 1
            if lost and tier[reader] == ANONYMOUS and seen[reader]:
                self._new_visitor(day.index, reader)
            if not seen[reader]:
                seen[reader] = True
                tally.visitors += 1
            if not visited[reader]:
                visited[reader] = True
                tally.readers += 1
            for index in range(position, position + views):
                self._view(day.index, reader, articles[day.article[index]], day.dice[index], now)
            position += views

    # --- identities -----------------------------------------------------------

    def key(self, reader: int) -> str:
        """The reader's meter key: their visitor id while anonymous, their account after."""
        if self.tier[reader] == ANONYMOUS:
            return f"visitor:{reader}.{self.generation[reader]}"
        return f"reader:{reader}"

    def _step(self, day, reader, kind, slug=None, decision: Decision | None = None) -> None:
        if self.trace is None:
            return
        access, reason, offer = ((decision.access, decision.reason, decision.offer)
                                 if decision else (None, None, None))
        self.trace(Step(day, reader, slug, access, reason, offer, kind,
                        TIERS[self.tier[reader]], self.key(reader)))

    def _new_visitor(self, day: int, reader: int) -> None:
        """Cookies cleared or a new device: the same person comes back as a stranger."""
        self._step(day, reader, "new_visitor")
        self.generation[reader] += 1
        self.cookie_seen[reader] = False

    def _refresh(self, key: str) -> None:
        """Re-read one meter's spends from the store after it changed."""
        spends = self.store.spends(key)
        if spends:
            self.spends[key] = spends
        else:
            self.spends.pop(key, None)

    def _sign_in(self, reader: int, tier: int) -> None:
        """An account is made (or upgraded): an anonymous meter merges into it, as at login."""
        old = self.key(reader)
        self.tier[reader] = tier
        new = self.key(reader)
        if old != new:
            self.store.merge(old, new)
            self.spends.pop(old, None)
            self._refresh(new)

    # --- reading --------------------------------------------------------------

    def _view(self, day: int, reader: int, article: ArticleLike, dice: float, now: datetime) -> None:
        """A GET of the article: decide, spend when an auto meter asks, and react to any gate."""
        key = self.key(reader)
        viewer = Viewer(TIERS[self.tier[reader]], key, self.spends.get(key, ()))
        decision = decide(self.rules, viewer, article, now)
        if decision.spend:
            decision, spent = quota.unlock(self.store, self.rules, viewer, article, now)
            if spent:
                self.tally.unlocks += 1
                self._refresh(key)
        self.tally.views += 1
        if self.trace is not None:
            self._step(day, reader, "view", article.slug, decision)
        if decision.access == "teaser":
            self.tally.impressions += 1
            if not self.gated[reader]:
                self.gated[reader] = True
                self.tally.readers_gated += 1
            self._offer(day, reader, article, dice, now, decision)

    def _offer(self, day, reader, article, dice, now, decision: Decision) -> None:
        """At a gate, the reader takes the offer with their segment's propensity.

        One die per article read decides; after a yes, ``dice / p`` is again
        uniform, and decides what they do next on the same page.
        """
        segment = self.segments[self.segment[reader]]
        if decision.offer == "register":
            chance = segment.registers
            if dice < chance:
                self._step(day, reader, "register", article.slug)
                self._sign_in(reader, REGISTERED)
                self.tally.registrations += 1
                self._view(day, reader, article, dice / chance, now)  # signup returns to the article
        elif decision.offer == "unlock":
            if dice < segment.unlocks:
                self._unlock(day, reader, article, now)
        elif decision.offer == "subscribe":
            exhausted = decision.reason == "meter_exhausted"
            chance = segment.subscribes_when_exhausted if exhausted else segment.subscribes_otherwise
            if self.tier[reader] == REGISTERED:
                chance = min(1.0, chance * self.lift)
            if dice < chance:
                self._subscribe(day, reader, article.slug, now)
                self._view(day, reader, article, dice / chance, now)  # back to the article

    def _unlock(self, day: int, reader: int, article: ArticleLike, now: datetime) -> None:
        """A press of *Unlock*: one spend through quota.unlock, as the site's POST makes."""
        key = self.key(reader)
        viewer = Viewer(TIERS[self.tier[reader]], key, self.spends.get(key, ()))
        decision, spent = quota.unlock(self.store, self.rules, viewer, article, now)
        if self.trace is not None:
            self._step(day, reader, "unlock", article.slug, decision)
        if spent:
            self.tally.unlocks += 1
            self._refresh(key)

    # --- money ----------------------------------------------------------------

    def _subscribe(self, day: int, reader: int, slug: str | None, now: datetime) -> None:
        """Checkout: an account if they had none, full access, and the first charge (after any trial)."""
        self._step(day, reader, "subscribe", slug)
        if self.tier[reader] == REGISTERED:
            self.tally.subscriptions_registered += 1
        self._sign_in(reader, SUBSCRIBER)
        self.tally.subscriptions += 1
        self.tally.subscribers += 1
        first = day + self.billing.trial_days
        self.cycle[reader] = (first, 0)
        if first == day:
            self._charge(reader)
        else:
            self.next_bill[reader] = first

    def _charge(self, reader: int) -> None:
        """Take one payment and set the next billing day on the plan's cycle."""
        first, charges = self.cycle[reader]
        self.tally.revenue_cents += self.billing.price_cents
        charges += 1
        self.cycle[reader] = (first, charges)
        anchor = self.moment(first)
        self.next_bill[reader] = self.day_of(add_months(anchor, charges * self.billing.months))

    def _renewals(self, day: Day, now: datetime) -> None:
        """Subscribers whose billing day it is renew, or churn with their segment's chance."""
        due = np.flatnonzero(self.next_bill == day.index)
        if due.size == 0:
            return
        leaving = day.renewal_dice[due] < self.churn_by_segment[self.segment_array[due]]
        for reader, leaves in zip(due.tolist(), leaving.tolist()):
            if leaves:
                self._step(day.index, reader, "churn")
                self.tier[reader] = REGISTERED  # lapsed: an account without a subscription
                self.next_bill[reader] = -1
                self.cycle.pop(reader, None)
                self.tally.churned += 1
                self.tally.subscribers -= 1
            else:
                self.tally.renewals += 1
                self._charge(reader)

    def _prune(self, now: datetime) -> None:
        """Forget spends no window can count again, so memory stays flat as days go by."""
        cutoff = spend_horizon(self.rules, now)
        if cutoff is None or (self.pruned_to is not None and cutoff - self.pruned_to < PRUNE_EVERY):
            return
        if self.store.forget_before(cutoff):
            for key in list(self.spends):
                self._refresh(key)
        self.pruned_to = cutoff

    # --- results --------------------------------------------------------------

    def summary(self) -> dict:
        """Totals and the rates between them."""
        t = self.tally
        anonymous = t.subscriptions - t.subscriptions_registered
        return {
            "readers": t.readers, "visitors": t.visitors, "visits": t.visits,
            "article_views": t.views, "gate_impressions": t.impressions,
            "readers_gated": t.readers_gated, "registrations": t.registrations,
            "unlocks": t.unlocks, "subscriptions": t.subscriptions,
            "subscriptions_anonymous": anonymous,
            "subscriptions_registered": t.subscriptions_registered,
            "churned": t.churned, "renewals": t.renewals, "subscribers_end": t.subscribers,
            "revenue_cents": t.revenue_cents,
            "mrr_cents_end": round(t.subscribers * self.billing.price_cents / self.billing.months),
            "impression_rate": _rate(t.impressions, t.views),
            "wall_reach": _rate(t.readers_gated, t.readers),
            "registration_rate": _rate(t.registrations, t.readers),
            "conversion_rate": _rate(t.subscriptions, t.readers),
            "churn_rate": _rate(t.churned, t.churned + t.renewals),
            "revenue_per_reader_cents": round(t.revenue_cents / t.readers, 2) if t.readers else 0.0,
        }

    def outcome(self) -> "Outcome":
        """This run's result."""
        return Outcome(self.name, self.summary(), list(self.daily), self.experiments_ignored)


@dataclass
class Outcome:
    """One preset's result: totals and rates, and one row per day."""

    preset: str
    summary: dict
    daily: list[dict]
    experiments_ignored: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The outcome as JSON shows it."""
        return {"preset": self.preset, "experiments_ignored": self.experiments_ignored,
                "summary": self.summary, "daily": self.daily}


@dataclass
class Result:
    """A whole run: what produced it (to reproduce it) and each preset's outcome."""

    meta: dict
    outcomes: list[Outcome]
    elapsed_s: float = 0.0

    @property
    def visits(self) -> int:
        """Visits simulated over all presets."""
        return sum(outcome.summary["visits"] for outcome in self.outcomes)

    @property
    def views(self) -> int:
        """Article views simulated over all presets."""
        return sum(outcome.summary["article_views"] for outcome in self.outcomes)

    def as_dict(self) -> dict:
        """Everything but the timing, so one seed always gives the same JSON."""
        return {**self.meta, "results": [outcome.as_dict() for outcome in self.outcomes]}


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, picklable so a worker process can run one preset of it."""

    population: Population
    presets: dict[str, Rules]
    readers: int
    days: int
    seed: int
    start: datetime
    articles: tuple
    billing: Billing

    def crowd(self) -> Crowd:
        """The seeded readers (the same in every process)."""
        return Crowd(self.population, self.readers, len(self.articles), self.seed)

    def run(self, name: str, crowd: Crowd, trace: Trace | None = None) -> PresetRun:
        """A fresh run of one preset over these readers."""
        return PresetRun(name, self.presets[name], crowd, self.articles, self.billing, self.start, trace)


def _in_process(plan: Plan, trace: Trace | None, progress: Callable[[int], None] | None) -> list[Outcome]:
    """Every preset in this process, each day's draws shared between them."""
    crowd = plan.crowd()
    runs = [plan.run(name, crowd, trace) for name in plan.presets]
    for index in range(plan.days):
        day = crowd.day(index)
        for run in runs:
            run.play(day)
            if progress:
                progress(1)
    return [run.outcome() for run in runs]


def _worker(plan: Plan, name: str, messages) -> None:
    """One preset in a process of its own; reports each day, then the outcome (or the error)."""
    try:
        crowd = plan.crowd()
        run = plan.run(name, crowd)
        for index in range(plan.days):
            run.play(crowd.day(index))
            messages.put(("day", name, None))
        messages.put(("done", name, run.outcome()))
    except BaseException:  # the parent must hear of any failure, or it would wait for ever
        messages.put(("error", name, traceback.format_exc()))


def _in_workers(plan: Plan, workers: int, progress) -> list[Outcome]:
    """One process per preset (at most ``workers`` at a time), the same draws in each."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    pending, running, done = list(plan.presets), {}, {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                name = pending.pop(0)
                running[name] = context.Process(target=_worker, args=(plan, name, messages), daemon=True)
                running[name].start()
            try:
                kind, name, payload = messages.get(timeout=1.0)
            except queue_module.Empty:
                dead = [n for n, p in running.items() if not p.is_alive() and p.exitcode != 0]
                if dead:
                    raise RuntimeError(f"the worker for preset {dead[0]} died") from None
                continue
            if kind == "day" and progress:
                progress(1)
            elif kind == "error":
                raise RuntimeError(f"preset {name} failed in its worker:\n{payload}")
            elif kind == "done":
                done[name] = payload
                running.pop(name).join()
    finally:
        for process in running.values():
            process.kill()
    return [done[name] for name in plan.presets]


def simulate(population: Population, presets: Mapping[str, Rules], *, readers: int, days: int,
             seed: int, start: datetime, articles: Sequence[ArticleLike], billing: Billing,
             population_path: Path | None = None, trace: Trace | None = None,
             progress: Callable[[int], None] | None = None, workers: int = 1) -> Result:
    """Run ``readers`` readers for ``days`` days through each preset; same seed, same result.

    ``trace`` receives every :class:`Step` (it forces one process);
    ``progress`` is called with 1 after each preset finishes each day.
    """
    if readers < 1 or days < 1:
        raise ValueError("a simulation needs at least one reader and one day")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    plan = Plan(population, dict(presets), readers, days, seed, start, tuple(articles), billing)
    began = time.perf_counter()
    if trace is not None or workers <= 1 or len(presets) == 1:
        outcomes = _in_process(plan, trace, progress)
    else:
        outcomes = _in_workers(plan, workers, progress)
    elapsed = time.perf_counter() - began
    return Result(_meta(plan, population_path), outcomes, elapsed)


def _meta(plan: Plan, population_path: Path | None) -> dict:
    """What a run needs to be reproduced: version, seed, sizes, start, files and plan."""
    tz = next(iter(plan.presets.values())).tz
    return {
        "version": gate.__version__,
        "seed": plan.seed,
        "presets": list(plan.presets),
        "readers": plan.readers,
        "days": plan.days,
        "start": plan.start.isoformat(),
        "first_day": plan.start.astimezone(tz).date().isoformat(),
        "population": str(population_path) if population_path else None,
        "population_sha256": file_digest(population_path) if population_path else None,
        "articles": len(plan.articles),
        "plan": plan.billing.as_dict(),
    }
