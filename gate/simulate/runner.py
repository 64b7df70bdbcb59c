"""Run a reader population through paywall presets, day by day, on the site's own engine.

Every access decision comes from :func:`gate.rules.paywall.decide` and every spend
from :func:`gate.storage.quota.unlock` on a memory quota store, exactly as the site
serves a GET of an article (decide, then spend when an auto meter asks) and
a press of *Unlock*. What the simulator adds is only the readers: who comes
on which day, what they read, and what they do when they meet a gate.

The population's draws (see :class:`gate.simulate.population.Crowd`) do
not depend on the rules, so every preset meets the same readers reading the
same articles with the same dice; with one seed, results are identical run
after run, in one process or with the readers' blocks split over several
processes or a Dask cluster.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

from gate.conf.version import __version__
from gate.rules import offers, periods, referral
from gate.rules.billing import PlanTerms, add_months
from gate.rules.offers import Discount, OfferTerms
from gate.rules.paywall import TIERS, Access, ArticleLike, Decision, Offer, Reason, Rules, Viewer, decide
from gate.services.content import synthetic_articles
from gate.simulate import MAX_DAYS
from gate.simulate.population import ARRIVALS, Crowd, Day, Population, Segment, file_digest
from gate.simulate.reading import ReadingHistory
from gate.simulate.shards import Block, Tree, blocks
from gate.storage import quota
from gate.storage.quota import MemoryQuotaStore

UTC = timezone.utc
ANONYMOUS, REGISTERED, SUBSCRIBER = 0, 1, 2
DIRECT, GIFT = 0, ARRIVALS.index("gift")
#: The reason a gift read is recorded with. Gift links are built beside this work (issue 17): until
#: Reason.GIFT exists on this branch, the simulator names it with its own constant.
GIFT_READ = "gift"
#: Prune spends no more often than this: keeping a few expired ones never changes a decision.
PRUNE_EVERY = timedelta(days=7)
#: The first-month cohort: readers who subscribe in the run's first this many days, followed to the end.
COHORT_DAYS = 30
#: The columns of a daily row, in order.
DAILY_FIELDS = ("day", "active_readers", "visits", "views", "gate_impressions", "registrations", "unlocks",
                "subscriptions", "churned", "subscribers", "revenue_cents", "discounted", "step_ups",
                "churned_at_step_up", "first_month_cohort")


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
    access: Access | None
    reason: Reason | None
    offer: Offer | None
    kind: str
    tier: str
    key: str
    #: How the view arrived (gate.simulate.population.ARRIVALS): direct, a side door or a gift link.
    arrival: str = "direct"
    #: A dynamic meter's engagement score and allowance at this step (None for a fixed meter).
    score: int | None = None
    allowance: int | None = None


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
class SimulatedBilling:
    """What a subscription costs and how often it renews (a plan in site.toml), and the code it is sold with.

    Every period is priced by :meth:`gate.rules.billing.PlanTerms.price`, the
    billing state machine's own rule: the plan's intro price for its first
    periods, then the offer's discount for the periods it covers.
    """

    plan: str
    price_cents: int
    currency: str
    months: int
    trial_days: int = 0
    intro_price_cents: int | None = None
    intro_periods: int = 0
    offer: OfferTerms | None = None

    @classmethod
    def from_plans(cls, plans, plan_id: str | None = None, offer: OfferTerms | None = None) -> "SimulatedBilling":
        """The plan named ``plan_id`` (default: the monthly plan, or the first), sold with ``offer``."""
        if plan_id is None:
            plan = next((p for p in plans if p.interval == "month"), plans[0])
        else:
            plan = next((p for p in plans if p.id == plan_id), None)
            if plan is None:
                raise ValueError(f"no plan {plan_id!r} (have: {', '.join(p.id for p in plans)})")
        return cls(plan.id, plan.price_cents, plan.currency, 12 if plan.interval == "year" else 1,
                   plan.trial_days, plan.intro_price_cents, plan.intro_periods, offer)

    @cached_property
    def terms(self) -> PlanTerms:
        """The plan as the billing state machine prices it."""
        return PlanTerms(self.plan, self.price_cents, self.currency, "year" if self.months == 12 else "month",
                         self.trial_days, self.intro_price_cents, self.intro_periods)

    @property
    def discount(self) -> Discount | None:
        """The discount a subscription sold with the offer keeps (None: no offer)."""
        return self.offer.discount if self.offer else None

    @property
    def label(self) -> str:
        """The plan and the code, as a scenario's name shows them: ``monthly+WELCOME50``."""
        return f"{self.plan}+{self.offer.code}" if self.offer else self.plan

    def price(self, discount: Discount | None, period_index: int) -> int:
        """What paid period ``period_index`` is charged, with ``discount`` if the subscription has it."""
        return self.terms.price(discount, period_index)[0]

    def describe(self) -> str:
        """The price in words, as the checkout shows it."""
        return offers.describe(self.discount, self.price_cents, self.currency, self.terms.interval,
                               self.intro_price_cents, self.intro_periods)

    def as_dict(self) -> dict:
        """The plan as a result records it."""
        return {"id": self.plan, "price_cents": self.price_cents, "currency": self.currency,
                "months": self.months, "trial_days": self.trial_days,
                "intro_price_cents": self.intro_price_cents, "intro_periods": self.intro_periods,
                "offer": self.offer.code if self.offer else None, "terms": self.describe()}


class PruningStore(MemoryQuotaStore):
    """The memory store, able to forget spends that no window can ever count again.

    Without this, a long run keeps every spend of every reader and memory grows
    with the days simulated. Everything else is :class:`MemoryQuotaStore`
    (tests/test_simulate.py runs the quota contract of tests/test_quota.py
    against this class, since it reaches into the parent's rows and lock).
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
        if not rules.meters(tier):
            continue
        if rule.unlock_lasts == "forever" or rule.period == "lifetime":
            return None
        starts.append(periods.period_window(rule.period, now, rules.tz).start)
    return min(starts) if starts else None


class Tally:
    """Running totals of one preset's run (per-day rows are differences of these)."""

    __slots__ = ("visits", "views", "impressions", "registrations", "unlocks", "subscriptions",
                 "subscriptions_registered", "churned", "renewals", "revenue_cents",
                 "readers", "visitors", "readers_gated", "readers_exhausted", "subscribers",
                 "redemptions", "discounted", "rate_cents", "discounts_cents", "step_ups", "churned_at_step_up",
                 "cohort_started", "cohort", "referral_reads", "gift_reads", "side_door_readers", "gift_readers",
                 "side_door_registered", "side_door_subscribed", "gift_registered", "gift_subscribed")
    DAILY = ("visits", "views", "impressions", "registrations", "unlocks", "subscriptions",
             "churned", "revenue_cents", "step_ups", "churned_at_step_up")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def snapshot(self) -> tuple[int, ...]:
        """The totals that daily rows report, in DAILY order."""
        return tuple(getattr(self, name) for name in self.DAILY)


class PresetRun:
    """One preset's run: the readers' tiers and meters, driven one day at a time."""

    def __init__(self, name: str, rules: Rules, crowd: Crowd, articles: Sequence[ArticleLike],
                 billing: SimulatedBilling, start: datetime, trace: Trace | None = None,
                 scenario: str | None = None) -> None:
        self.name = name
        self.scenario = scenario or name
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
        self.exhausted = [False] * size
        self.arrived: dict[int, tuple[int, str]] = {}  # reader -> (side door, article), as the session keeps it
        self.came_by = [0] * size  # bit 1: read through a side door; bit 2: read a gift (for the funnel)
        self.cycle = {}  # reader -> (first charge day, charges made, the discount kept)
        self.next_bill = np.full(size, -1, dtype=np.int64)
        self.churn_by_segment = [1.0 - (1.0 - s.churn) ** billing.months for s in self.segments]
        self._init_offers(billing)
        self.tally = Tally()
        self.daily: list[dict] = []
        self.pruned_to: datetime | None = None
        # What a dynamic meter scores, kept only when the preset has one (flat arrays, one slot per reader).
        sections = sorted({article.section for article in self.articles})
        self.history = ReadingHistory(size, sections) if self.rules.dynamic else None

    def _init_offers(self, billing: SimulatedBilling) -> None:
        """Each segment's lift at the first price with and without the code, and who has paid before."""
        first = billing.price(None, 0)
        self.lift_plain = [s.price.lift(first, billing.price_cents) for s in self.segments]
        if billing.offer is not None:
            with_code = billing.price(billing.discount, 0)
            self.lift_offer = [s.price.lift(with_code, billing.price_cents) for s in self.segments]
        self.paid_before: set[int] = set()
        self.redeemed_elsewhere = 0  # the code's redemptions in other blocks (a cap counts every reader)
        self.current: dict[int, int] = {}  # subscriber -> the price of the period they are in
        self.cohort: set[int] = set()  # the first month's subscribers who are still subscribed

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
        self._renewals(day)
        self._prune(now)
        if self.history is not None:
            self.history.new_day(day.index)
        self._visits(day, now)
        change = dict(zip(Tally.DAILY, (a - b for a, b in zip(self.tally.snapshot(), before))))
        self.daily.append({
            "day": (self.start.date() + timedelta(days=day.index)).isoformat(),
            "active_readers": day.readers_visiting, "visits": change["visits"], "views": change["views"],
            "gate_impressions": change["impressions"], "registrations": change["registrations"],
            "unlocks": change["unlocks"], "subscriptions": change["subscriptions"],
            "churned": change["churned"], "subscribers": self.tally.subscribers,
            "revenue_cents": change["revenue_cents"], "discounted": self.tally.discounted,
            "step_ups": change["step_ups"], "churned_at_step_up": change["churned_at_step_up"],
            "first_month_cohort": self.tally.cohort,
        })

    def _visits(self, day: Day, now: datetime) -> None:
        """Each visit reads its articles in turn; only here does Python loop per reader."""
        tally, tier, seen, visited = self.tally, self.tier, self.cookie_seen, self.visited
        articles, position = self.articles, 0
        for visit, (reader, views, lost) in enumerate(zip(day.reader, day.views, day.lost)):
            tally.visits += 1
            if lost and tier[reader] == ANONYMOUS and seen[reader]:
                self._new_visitor(day.index, reader)
            if not seen[reader]:
                seen[reader] = True
                tally.visitors += 1
            if not visited[reader]:
                visited[reader] = True
                tally.readers += 1
            came = day.arrival[visit] if day.arrival else DIRECT  # the visit's first article is the arrival
            for index in range(position, position + views):
                self._view(day.index, reader, articles[day.article[index]], day.dice[index], now,
                           came if index == position else DIRECT)
            position += views

    # --- identities -----------------------------------------------------------

    def key(self, reader: int) -> str:
        """The reader's meter key: their visitor id while anonymous, their account after."""
        if self.tier[reader] == ANONYMOUS:
            return f"visitor:{reader}.{self.generation[reader]}"
        return f"reader:{reader}"

    def _step(self, day, reader, kind, slug=None, decision: Decision | None = None, came: int = DIRECT) -> None:
        """Tell the trace, if there is one, what this reader just did."""
        if self.trace is None:
            return
        access, reason, offer = ((decision.access, decision.reason, decision.offer)
                                 if decision else (None, None, None))
        grant = decision.meter.grant if decision else {}
        self.trace(Step(day, reader, slug, access, reason, offer, kind,
                        TIERS[self.tier[reader]], self.key(reader), ARRIVALS[came], **grant))

    def _new_visitor(self, day: int, reader: int) -> None:
        """Cookies cleared or a new device: the same person comes back as a stranger."""
        self._step(day, reader, "new_visitor")
        self.arrived.pop(reader, None)  # a new session: no arrival to stick to
        self.generation[reader] += 1
        self.cookie_seen[reader] = False
        if self.history is not None:
            self.history.forget(reader)  # a stranger to the site: no reads to score

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
            if self.history is not None:
                self.history.forget(reader)  # the account's history starts here, as on the site

    # --- reading --------------------------------------------------------------

    def _viewer(self, reader: int, came: int, slug: str) -> Viewer:
        """The reader as decide sees them, with the side door they arrived by (and its day's reads)."""
        key, tier = self.key(reader), TIERS[self.tier[reader]]
        signals = self._signals(reader, came)
        if came == DIRECT:
            return Viewer(tier, key, self.spends.get(key, ()), signals=signals)
        return Viewer(tier, key, self.spends.get(key, ()), referral=ARRIVALS[came], arrival=slug,
                      search_spends=self.spends.get(referral.search_meter(key), ()), signals=signals)

    def _signals(self, reader: int, came: int):
        """What a dynamic meter scores for this reader now (None: the preset scores no one of their tier)."""
        tier = TIERS[self.tier[reader]]
        if self.history is None or self.rules.dynamic_for(tier) is None:
            return None
        return self.history.signals(reader, ARRIVALS[came] if came != GIFT else "direct", tier != "anonymous")

    def _read(self, reader: int, article: ArticleLike, came: int) -> None:
        """The view is recorded, as the site's article_view event: the score reads it from the next request on."""
        if self.history is not None:
            self.history.read(reader, article.section, ARRIVALS[came] == "newsletter")

    def _view(self, day: int, reader: int, article: ArticleLike, dice: float, now: datetime,
              came: int = DIRECT) -> None:
        """A GET of the article: decide, spend when an auto meter asks, and react to any gate."""
        if came == GIFT and self.tier[reader] != SUBSCRIBER:
            self._gift_read(day, reader, article)
            return
        came = self._stuck(reader, came, article.slug)
        viewer = self._viewer(reader, came, article.slug)
        decision = decide(self.rules, viewer, article, now)
        if decision.spend:
            decision, spent = quota.unlock(self.store, self.rules, viewer, article, now)
            if spent and decision.reason == Reason.REFERRAL:
                self._refresh(referral.search_meter(viewer.meter_key))
            elif spent:
                self.tally.unlocks += 1
                self._refresh(viewer.meter_key)
        self.tally.views += 1
        self._read(reader, article, came)
        if decision.reason == Reason.REFERRAL:
            self.tally.referral_reads += 1
            self._came_by(reader, 1)
        if self.trace is not None:
            self._step(day, reader, "view", article.slug, decision, came)
        if decision.access == "teaser":
            self.tally.impressions += 1
            if not self.gated[reader]:
                self.gated[reader] = True
                self.tally.readers_gated += 1
            if decision.reason == Reason.METER_EXHAUSTED and not self.exhausted[reader]:
                self.exhausted[reader] = True
                self.tally.readers_exhausted += 1
            self._offer(day, reader, article, dice, now, decision, came)

    def _offer(self, day, reader, article, dice, now, decision: Decision, came: int = DIRECT) -> None:
        """At a gate the reader may subscribe (every gate links to the plans), else take its offer.

        One die per article read decides. Subscribing comes first, with the
        segment's propensity for an exhausted meter or its smaller base one
        (times the registered lift for a registered reader, and times the
        segment's lift at the first price offered). Otherwise the die,
        rescaled, is uniform again and decides a signup or an unlock; after a
        yes, ``die / chance`` is uniform once more for what happens next.
        """
        segment = self.segments[self.segment[reader]]
        exhausted = decision.reason == Reason.METER_EXHAUSTED
        chance = segment.subscribes_when_exhausted if exhausted else segment.subscribes_otherwise
        if self.tier[reader] == REGISTERED:
            chance = min(1.0, chance * self.lift)
        lifts = self.lift_offer if self._code_valid(reader, now) else self.lift_plain
        chance = min(1.0, chance * lifts[self.segment[reader]])
        if dice < chance:
            self._subscribe(day, reader, article.slug, now)
            self._view(day, reader, article, dice / chance, now)  # checkout returns to the article (a subscriber)
            return
        dice = (dice - chance) / (1.0 - chance)
        if decision.offer == Offer.REGISTER and dice < segment.registers:
            self._step(day, reader, "register", article.slug)
            self._sign_in(reader, REGISTERED)
            self.tally.registrations += 1
            self.tally.side_door_registered += self.came_by[reader] & 1
            self.tally.gift_registered += self.came_by[reader] >> 1
            self._view(day, reader, article, dice / segment.registers, now, came)  # signup returns to it
        elif decision.offer == Offer.UNLOCK and dice < segment.unlocks:
            self._unlock(day, reader, article, now, came)

    def _gift_read(self, day: int, reader: int, article: ArticleLike) -> None:
        """A gift link's article: read in full, the meter untouched, no gate (and so no offer to act on)."""
        self.tally.views += 1
        self.tally.gift_reads += 1
        self._read(reader, article, GIFT)
        self._came_by(reader, 2)
        if self.trace is not None:
            self.trace(Step(day, reader, article.slug, "full", GIFT_READ, None, "view", TIERS[self.tier[reader]],
                            self.key(reader), "gift"))

    def _stuck(self, reader: int, came: int, slug: str) -> int:
        """A side-door arrival sticks to its article for the reader's later views of it, as the site's session keeps it."""
        if came not in (DIRECT, GIFT):
            self.arrived[reader] = (came, slug)
            return came
        kept = self.arrived.get(reader)
        return kept[0] if kept is not None and kept[1] == slug else DIRECT

    def _came_by(self, reader: int, door: int) -> None:
        """Remember that a reader read through a side door (1) or a gift (2), counting each reader once."""
        if not self.came_by[reader] & door:
            self.came_by[reader] |= door
            if door == 1:
                self.tally.side_door_readers += 1
            else:
                self.tally.gift_readers += 1

    def _unlock(self, day: int, reader: int, article: ArticleLike, now: datetime, came: int = DIRECT) -> None:
        """A press of *Unlock*: one spend through quota.unlock, as the site's POST makes (scored as its view was)."""
        key = self.key(reader)
        viewer = Viewer(TIERS[self.tier[reader]], key, self.spends.get(key, ()), signals=self._signals(reader, came))
        decision, spent = quota.unlock(self.store, self.rules, viewer, article, now)
        if self.trace is not None:
            self._step(day, reader, "unlock", article.slug, decision)
        if spent:
            self.tally.unlocks += 1
            self._refresh(key)

    # --- money ----------------------------------------------------------------

    def _code_valid(self, reader: int, now: datetime) -> bool:
        """Whether the run's code may be redeemed by this reader now (its window, cap, new-only rule)."""
        offer = self.billing.offer
        return offer is not None and offers.refusal(
            offer, self.billing.plan, now, self.tally.redemptions + self.redeemed_elsewhere,
            reader in self.paid_before, None) is None

    def _subscribe(self, day: int, reader: int, slug: str | None, now: datetime) -> None:
        """Checkout: an account if they had none, the code if valid, full access, and the first charge."""
        self._step(day, reader, "subscribe", slug)
        self.tally.side_door_subscribed += self.came_by[reader] & 1
        self.tally.gift_subscribed += self.came_by[reader] >> 1
        if self.tier[reader] == REGISTERED:
            self.tally.subscriptions_registered += 1
        discount = self.billing.discount if self._code_valid(reader, now) else None
        self.tally.redemptions += discount is not None
        self.paid_before.add(reader)
        if day < COHORT_DAYS:
            self.cohort.add(reader)
            self.tally.cohort_started += 1
            self.tally.cohort += 1
        self._sign_in(reader, SUBSCRIBER)
        self.tally.subscriptions += 1
        self.tally.subscribers += 1
        first = day + self.billing.trial_days
        self.cycle[reader] = (first, 0, discount)
        self._set_price(reader, self.billing.price(discount, 0))
        if first == day:
            self._charge(reader)
        else:
            self.next_bill[reader] = first

    def _set_price(self, reader: int, cents: int | None) -> None:
        """Keep the running MRR and the count still below the list price as a subscriber's price changes."""
        tally, old = self.tally, self.current.pop(reader, None)
        if old is not None:
            tally.rate_cents -= old
            tally.discounted -= old < self.billing.price_cents
        if cents is not None:
            self.current[reader] = cents
            tally.rate_cents += cents
            tally.discounted += cents < self.billing.price_cents

    def _charge(self, reader: int) -> None:
        """Take one payment at the period's price and set the next billing day on the plan's cycle."""
        first, charges, discount = self.cycle[reader]
        amount = self.billing.price(discount, charges)
        self.tally.revenue_cents += amount
        self.tally.discounts_cents += self.billing.price_cents - amount
        self._set_price(reader, amount)
        charges += 1
        self.cycle[reader] = (first, charges, discount)
        anchor = self.moment(first)
        self.next_bill[reader] = self.day_of(add_months(anchor, charges * self.billing.months))

    def _leaving_chance(self, reader: int) -> tuple[float, bool]:
        """The chance a due subscriber does not renew, and whether their price steps up now.

        The segment's churn over the billing period, plus its cliff when the
        coming period costs more than the last one charged (an intro price or
        a discount ending).
        """
        segment = self.segment[reader]
        chance = self.churn_by_segment[segment]
        _, charges, discount = self.cycle[reader]
        if charges == 0:  # a trial ending: nothing charged yet to step up from
            return chance, False
        old, new = self.current[reader], self.billing.price(discount, charges)
        if new <= old:
            return chance, False
        return min(1.0, chance + self.segments[segment].price.cliff(old, new)), True

    def _renewals(self, day: Day) -> None:
        """Subscribers whose billing day it is renew, or churn with their segment's chance (more at a step-up)."""
        due = np.flatnonzero(self.next_bill == day.index)
        if due.size == 0:
            return
        tally = self.tally
        for reader, die in zip(due.tolist(), day.renewal_dice[due].tolist()):
            chance, step_up = self._leaving_chance(reader)
            leaves = die < chance
            tally.step_ups += step_up
            tally.churned_at_step_up += step_up and leaves
            if leaves:
                self._step(day.index, reader, "churn")
                self.tier[reader] = REGISTERED  # lapsed: an account without a subscription
                self.next_bill[reader] = -1
                self.cycle.pop(reader, None)
                self._set_price(reader, None)
                if reader in self.cohort:
                    self.cohort.discard(reader)
                    tally.cohort -= 1
                tally.churned += 1
                tally.subscribers -= 1
            else:
                tally.renewals += 1
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

    def outcome(self) -> "PresetOutcome":
        """This run's totals and daily rows (a block's: blocks add up to the population's)."""
        totals = {name: getattr(self.tally, name) for name in Tally.__slots__}
        return PresetOutcome(self.name, totals, list(self.daily), self.experiments_ignored,
                             self.scenario, self.billing)


def _rate(part: int, whole: int) -> float:
    """A share, rounded so that JSON stays short and stable."""
    return round(part / whole, 6) if whole else 0.0


def summarise(totals: dict, billing: SimulatedBilling) -> dict:
    """Totals and the rates between them, as the comparison table shows them."""
    t = totals
    return {
        "active_readers": t["readers"], "visitors": t["visitors"], "visits": t["visits"],
        "article_views": t["views"], "gate_impressions": t["impressions"],
        "readers_gated": t["readers_gated"], "readers_exhausted": t["readers_exhausted"],
        "registrations": t["registrations"], "unlocks": t["unlocks"],
        "subscriptions": t["subscriptions"],
        "subscriptions_anonymous": t["subscriptions"] - t["subscriptions_registered"],
        "subscriptions_registered": t["subscriptions_registered"],
        "churned": t["churned"], "renewals": t["renewals"], "subscribers_end": t["subscribers"],
        "revenue_cents": t["revenue_cents"],
        "mrr_cents_end": round(t["rate_cents"] / billing.months),
        "redemptions": t["redemptions"], "discounts_cents": t["discounts_cents"],
        "subscribers_discounted_end": t["discounted"],
        "discounted_share_end": _rate(t["discounted"], t["subscribers"]),
        "step_ups": t["step_ups"], "churned_at_step_up": t["churned_at_step_up"],
        "step_up_churn_rate": _rate(t["churned_at_step_up"], t["step_ups"]),
        "first_month_cohort": t["cohort_started"],
        "first_month_cohort_retained": _rate(t["cohort"], t["cohort_started"]),
        "impression_rate": _rate(t["impressions"], t["views"]),
        "wall_reach": _rate(t["readers_gated"], t["readers"]),
        "meter_reach": _rate(t["readers_exhausted"], t["readers"]),
        "registration_rate": _rate(t["registrations"], t["readers"]),
        "conversion_rate": _rate(t["subscriptions"], t["readers"]),
        "churn_rate": _rate(t["churned"], t["churned"] + t["renewals"]),
        "revenue_per_reader_cents": round(t["revenue_cents"] / t["readers"], 2) if t["readers"] else 0.0,
        "referral_reads": t["referral_reads"], "gift_reads": t["gift_reads"],
        "side_door_readers": t["side_door_readers"], "side_door_registered": t["side_door_registered"],
        "side_door_subscribed": t["side_door_subscribed"], "gift_readers": t["gift_readers"],
        "gift_registered": t["gift_registered"], "gift_subscribed": t["gift_subscribed"],
    }


@dataclass
class PresetOutcome:
    """One scenario's raw result (a preset, sold at a plan's price with any code): totals and one row per day."""

    preset: str
    totals: dict
    daily: list[dict]
    experiments_ignored: list[str] = field(default_factory=list)
    name: str = ""
    billing: SimulatedBilling | None = None

    def __post_init__(self) -> None:
        self.name = self.name or self.preset

    @classmethod
    def combine(cls, shards: Sequence["PresetOutcome"]) -> "PresetOutcome":
        """Add up the shards of one preset: readers are independent, so counts simply add."""
        first = shards[0]
        totals = {name: sum(shard.totals[name] for shard in shards) for name in first.totals}
        daily = []
        for rows in zip(*(shard.daily for shard in shards)):
            daily.append({name: rows[0][name] if name == "day" else sum(row[name] for row in rows)
                          for name in rows[0]})
        return cls(first.preset, totals, daily, first.experiments_ignored, first.name, first.billing)

    def as_dict(self) -> dict:
        """The outcome as JSON shows it."""
        return {"scenario": self.name, "preset": self.preset, "plan": self.billing.as_dict(),
                "experiments_ignored": self.experiments_ignored,
                "summary": summarise(self.totals, self.billing), "daily": self.daily}


@dataclass
class SimulationResult:
    """A whole run: what produced it (to reproduce it) and each preset's outcome."""

    meta: dict
    outcomes: list[PresetOutcome]
    billing: SimulatedBilling
    elapsed_s: float = 0.0
    workers: int = 1

    def summary(self, name: str) -> dict:
        """One scenario's totals and rates (a scenario is named after its preset when nothing else varies)."""
        outcome = next(o for o in self.outcomes if o.name == name)
        return summarise(outcome.totals, outcome.billing)

    @property
    def visits(self) -> int:
        """Visits simulated over all presets."""
        return sum(outcome.totals["visits"] for outcome in self.outcomes)

    @property
    def views(self) -> int:
        """Article views simulated over all presets."""
        return sum(outcome.totals["views"] for outcome in self.outcomes)

    def as_dict(self) -> dict:
        """Everything but the timing, so one seed always gives the same JSON."""
        return {**self.meta, "results": [o.as_dict() for o in self.outcomes]}


@dataclass(frozen=True)
class SimulationPlan:
    """Everything a run needs, picklable so a worker process or a Dask task can play a block of it."""

    population: Population
    presets: dict[str, Rules]
    readers: int
    days: int
    seed: int
    start: datetime
    articles: tuple
    billing: SimulatedBilling
    #: The prices to compare (each preset is run at each); empty: ``billing`` alone, named after the preset.
    billings: tuple = ()

    def scenarios(self) -> list[tuple[str, str, SimulatedBilling]]:
        """(name, preset, billing) for every run: each preset at each price compared."""
        if not self.billings:
            return [(name, name, self.billing) for name in self.presets]
        return [(f"{name}@{billing.label}", name, billing) for name in self.presets for billing in self.billings]

    def play(self, block: Block, trace: Trace | None = None,
             progress: Callable[[int], None] | None = None) -> list[PresetOutcome]:
        """Every scenario over one block of the readers, each day's draws shared between them."""
        crowd, runs = self.start_block(block, trace)
        for index in range(self.days):
            day = crowd.day(index)
            for run in runs:
                run.play(day)
            if progress:
                progress(len(runs))
        return [run.outcome() for run in runs]

    def start_block(self, block: Block, trace: Trace | None = None) -> tuple[Crowd, list["PresetRun"]]:
        """One block's readers and a run of every scenario over them, before their first day."""
        crowd = Crowd(self.population, block.size, len(self.articles), block.seed(self.seed))
        if trace is not None and block.first:  # the trace numbers readers in the whole population
            trace = _shifted(trace, block.first)
        return crowd, [PresetRun(preset, self.presets[preset], crowd, self.articles, billing, self.start, trace, name)
                       for name, preset, billing in self.scenarios()]

    @property
    def capped(self) -> bool:
        """Whether a code compared has a cap: one count of redemptions over every reader."""
        return any(b.offer is not None and b.offer.cap is not None for b in self.billings)


def _shifted(trace: Trace, first: int) -> Trace:
    """A trace that numbers a block's readers from the block's first reader."""
    return lambda step: trace(step._replace(reader=step.reader + first))


def add_up(left: list[PresetOutcome], right: list[PresetOutcome]) -> list[PresetOutcome]:
    """Two neighbouring blocks' outcomes as one, preset by preset (a node of the shards' tree)."""
    return [PresetOutcome.combine([mine, theirs]) for mine, theirs in zip(left, right)]


def _in_process(plan: SimulationPlan, trace: Trace | None, progress) -> list[PresetOutcome]:
    """Every block in turn in this process, added up as they finish."""
    parts = blocks(plan.readers)
    tree = Tree(len(parts), add_up)
    for block in parts:
        tree.add(block.number, plan.play(block, trace, progress))
    return tree.result()


def _in_step(plan: SimulationPlan, trace: Trace | None, progress) -> list[PresetOutcome]:
    """Every block day by day in this process, each scenario's runs sharing one count of redemptions.

    A code's cap is one count over all readers: on each day the blocks are
    played in order, so readers meet the cap in the order one process would.
    """
    players = [plan.start_block(block, trace) for block in blocks(plan.readers)]
    redeemed = [0] * len(plan.scenarios())
    for index in range(plan.days):
        for crowd, runs in players:
            day = crowd.day(index)
            for number, run in enumerate(runs):
                before = run.tally.redemptions
                run.redeemed_elsewhere = redeemed[number] - before
                run.play(day)
                redeemed[number] += run.tally.redemptions - before
            if progress:
                progress(len(runs))
    tree = Tree(len(players), add_up)
    for number, (_, runs) in enumerate(players):
        tree.add(number, [run.outcome() for run in runs])
    return tree.result()


def _worker(plan: SimulationPlan, mine: list[Block], messages) -> None:
    """Some blocks of the readers in a process of its own; reports progress, then each block's outcomes."""
    def progress(units: int) -> None:
        messages.put(("progress", None, units))

    try:
        for block in mine:
            messages.put(("done", block.number, plan.play(block, progress=progress)))
    except BaseException:  # the parent must hear of any failure, or it would wait for ever
        messages.put(("error", None, traceback.format_exc()))


def _in_workers(plan: SimulationPlan, workers: int, progress) -> list[PresetOutcome]:
    """Deal the blocks out over processes; their outcomes add up along the blocks' tree."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    parts = blocks(plan.readers)
    processes = [context.Process(target=_worker, args=(plan, parts[number::workers], messages), daemon=True)
                 for number in range(workers)]
    tree, done = Tree(len(parts), add_up), 0
    try:
        for process in processes:
            process.start()
        while done < len(parts):
            try:
                kind, number, payload = messages.get(timeout=1.0)
            except queue_module.Empty:
                if any(process.exitcode not in (None, 0) for process in processes):
                    raise RuntimeError("a simulation worker process died") from None
                continue
            if kind == "progress" and progress:
                progress(payload)
            elif kind == "error":
                raise RuntimeError(f"a simulation worker failed:\n{payload}")
            elif kind == "done":
                tree.add(number, payload)
                done += 1
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    return tree.result()


def simulate(population: Population, presets: Mapping[str, Rules], *, readers: int, days: int,
             seed: int, start: datetime, articles: Sequence[ArticleLike], billing: SimulatedBilling,
             population_path: Path | None = None, trace: Trace | None = None,
             progress: Callable[[int], None] | None = None, workers: int = 1,
             billings: Sequence[SimulatedBilling] = (), cluster=None) -> SimulationResult:
    """Run ``readers`` readers for ``days`` days through each preset; same seed, same result.

    ``billings``, when given, are prices to compare (a plan, an intro price, a
    code): each preset runs at each, as a scenario named ``preset@plan+CODE``.
    The readers are played in blocks (:mod:`gate.simulate.shards`): in this
    process, dealt over ``workers`` > 1 processes, or as tasks on a Dask
    ``cluster`` (:class:`gate.simulate.cluster.Cluster`); the result is the
    same. A code with a cap is one count over all readers, so such runs play
    every block day by day in one process. ``trace`` receives every
    :class:`Step` and needs one process. ``progress`` is called with a number
    of scenario-days done, out of ``days`` times the number of scenarios.
    """
    if readers < 1 or not 1 <= days <= MAX_DAYS:
        raise ValueError(f"a simulation needs at least one reader and 1 to {MAX_DAYS} days")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if not presets:
        raise ValueError("name at least one preset")
    plan = SimulationPlan(population, dict(presets), readers, days, seed, start, tuple(articles), billing,
                          tuple(billings))
    if plan.capped and cluster is not None:
        raise RuntimeError("a code with a cap is one count over all readers, so it runs in one process: "
                           "run it without --scheduler")
    count = len(blocks(readers))
    workers = max(1, min(workers, count))
    shares = _Shares(progress, count) if progress else None
    began = time.perf_counter()
    if plan.capped:
        workers, outcomes = 1, _in_step(plan, trace, shares)
    elif trace is not None or (workers == 1 and cluster is None):
        workers, outcomes = 1, _in_process(plan, trace, shares)
    elif cluster is not None:
        workers, outcomes = cluster.workers, cluster.run(plan, shares)
    else:
        outcomes = _in_workers(plan, workers, shares)
    elapsed = time.perf_counter() - began
    return SimulationResult(_meta(plan, population_path), outcomes, billing, elapsed, workers)


class _Shares:
    """Turn blocks' progress into whole preset-days: each block does 1/blocks of one."""

    def __init__(self, progress: Callable[[int], None], blocks: int) -> None:
        self.progress, self.blocks, self.units = progress, blocks, 0

    def __call__(self, units: int) -> None:
        before = self.units // self.blocks
        self.units += units
        if self.units // self.blocks > before:
            self.progress(self.units // self.blocks - before)


def _meta(plan: SimulationPlan, population_path: Path | None) -> dict:
    """What a run needs to be reproduced: version, seed, sizes, start, files and plan."""
    tz = next(iter(plan.presets.values())).tz
    return {
        "version": __version__,
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
        "scenarios": [{"name": name, "preset": preset, "plan": billing.plan,
                       "offer": billing.offer.code if billing.offer else None}
                      for name, preset, billing in plan.scenarios()],
    }
