"""The reader population as data: segments, how often they come, what they do at a gate.

``config/population.toml`` declares reader segments (one-off, casual,
regular, loyal, ...) with a share of the population, a visit-frequency
distribution, articles per visit, propensities at each kind of gate, the
chance an anonymous visitor arrives as a new visitor (cookies lost), and
the monthly churn of those who subscribe. It is validated like the presets:
an unknown key, a wrong type or an impossible value is a
:class:`gate.conf.settings.ConfigError` naming the file, the dotted key and the reason.

:class:`Crowd` turns the model into arrays: one segment and one visit rate
per reader, drawn once, then each day's visits, articles and dice, drawn
with NumPy from one seeded generator. The draws never depend on the rules,
so every preset of a run meets exactly the same readers on the same days.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator

from gate.conf.settings import ConfigError, _explain, _read_toml
from gate.rules.model import Strict

#: Days in an average Gregorian month, to turn a monthly mean into a daily rate.
DAYS_PER_MONTH = 365.2425 / 12
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Visits(Strict):
    """How often a reader of the segment comes: a mean per week or month, and its spread.

    ``negative_binomial`` gives each reader their own rate, drawn from a gamma
    distribution with shape ``dispersion`` (smaller is more uneven), so the
    segment's visits per period follow a negative binomial with this mean;
    ``poisson`` gives every reader of the segment the same rate.
    """

    mean: float = Field(ge=0.0, le=1000.0)
    per: Literal["week", "month"] = "month"
    distribution: Literal["poisson", "negative_binomial"] = "negative_binomial"
    dispersion: float = Field(default=1.0, gt=0.0, le=1000.0)

    @property
    def daily_mean(self) -> float:
        """The segment's mean visits per day."""
        return self.mean / (7.0 if self.per == "week" else DAYS_PER_MONTH)


class PriceResponse(Strict):
    """How a segment answers a lower first price, and what it does when the price steps up.

    ``conversion_elasticity`` is the (absolute) arc elasticity of subscribing with
    respect to the first paid period's price, at the list price: a linear demand
    curve through the list price, so the chance to subscribe is multiplied by
    ``1 + conversion_elasticity * discount`` where ``discount`` is the share of the
    list price taken off the first period (0 at list, 1 when it is free).
    ``step_up_churn`` is the extra chance of not renewing at a renewal whose price
    is higher than the last one, for a step from free to the full price; smaller
    steps scale it by the share of the new price that was discounted.
    The defaults (0, 0) are readers indifferent to offers.
    """

    conversion_elasticity: float = Field(default=0.0, ge=0.0, le=20.0)
    step_up_churn: Probability = 0.0

    def lift(self, first_cents: int, list_cents: int) -> float:
        """How many times likelier to subscribe at ``first_cents`` than at ``list_cents``."""
        discount = max(0.0, 1.0 - first_cents / list_cents) if list_cents > 0 else 0.0
        return 1.0 + self.conversion_elasticity * discount

    def cliff(self, old_cents: int, new_cents: int) -> float:
        """The extra chance of leaving when the price goes from ``old_cents`` to ``new_cents``."""
        if new_cents <= old_cents:
            return 0.0
        return self.step_up_churn * (1.0 - old_cents / new_cents)


#: How a visit arrives, in the order of :class:`Arrivals`' fields (0: direct, the rest).
ARRIVALS = ("direct", "search", "social", "newsletter", "gift")


class Arrivals(Strict):
    """The share of a segment's visits that arrive by each side door (the rest are direct).

    An arrival opens the visit's first article: search, social and newsletter
    arrivals meet the preset's ``[referral]`` side doors (none in most presets,
    so they read as direct visits there); a gift arrival follows a subscriber's
    gift link and reads that article in full without touching the meter.
    """

    search: Probability = 0.0
    social: Probability = 0.0
    newsletter: Probability = 0.0
    gift: Probability = 0.0

    @field_validator("gift")
    @classmethod
    def _at_most_every_visit(cls, value, info):
        """The side doors' shares are parts of the visits, so together at most all of them."""
        total = value + sum(info.data.get(name, 0.0) for name in ("search", "social", "newsletter"))
        if total > 1.0 + 1e-9:
            raise ValueError(f"search, social, newsletter and gift shares must sum to at most 1, got {total:.6g}")
        return value

    @property
    def cumulative(self) -> list[float]:
        """Upper bounds of each side door's slice of [0, 1), in ARRIVALS order after direct."""
        bounds, total = [], 0.0
        for name in ARRIVALS[1:]:
            total += getattr(self, name)
            bounds.append(total)
        return bounds


class Segment(Strict):
    """One kind of reader, and what they do when they meet the gate."""

    description: str = Field(default="", max_length=300)
    share: Probability
    visits: Visits
    #: Mean articles read per visit (at least the one they came for).
    articles_per_visit: float = Field(ge=1.0, le=100.0)
    #: At a registration offer: the chance they sign up.
    registers: Probability
    #: At an "unlock" offer (choice mode): the chance they want this article enough to spend one.
    unlocks: Probability
    #: At a gate once their meter is exhausted: the chance they subscribe (every gate links to the plans).
    subscribes_when_exhausted: Probability
    #: At any other gate (registration wall, unlock offer, premium, hard wall): the smaller base one.
    subscribes_otherwise: Probability
    #: Per visit, for anonymous visitors: cookies cleared or a new device, so a new visitor.
    cookie_loss: Probability
    #: Per month, for subscribers: the chance they do not renew.
    churn: Probability
    #: How they answer an intro price or a promo code (default: not at all).
    price: PriceResponse = PriceResponse()
    #: The share of their visits that arrive from search, social, a newsletter or a gift link.
    arrivals: Arrivals = Arrivals()


class Articles(Strict):
    """The synthetic article list the readers choose from."""

    count: int = Field(default=500, ge=1, le=20_000)
    #: Zipf exponent of article popularity over the list (0: all equally read).
    popularity: float = Field(default=0.8, ge=0.0, le=3.0)


class Population(Strict):
    """config/population.toml."""

    description: str = Field(default="", max_length=600)
    #: How many times more often a registered reader subscribes than an anonymous one.
    registered_lift: float = Field(default=1.0, ge=1.0, le=100.0)
    articles: Articles = Articles()
    segments: dict[str, Segment] = Field(min_length=1)

    @field_validator("segments")
    @classmethod
    def _shares_add_up(cls, segments):
        """Every reader belongs to exactly one segment, so the shares sum to 1."""
        total = sum(segment.share for segment in segments.values())
        if not math.isclose(total, 1.0, rel_tol=0.0, abs_tol=1e-6):
            raise ValueError(f"the segments' shares must sum to 1, got {total:.6g}")
        for name in segments:
            if not name or len(name) > 40:
                raise ValueError(f"segment names must be 1 to 40 characters, got {name!r}")
        return segments


def load_population(path: Path) -> Population:
    """Load and validate a population file, with errors naming the file and key."""
    path = Path(path)
    try:
        return Population.model_validate(_read_toml(path))
    except ValidationError as error:
        raise ConfigError(_explain(path, error)) from None


def file_digest(path: Path) -> str:
    """The SHA-256 of a population file, so a result names exactly what produced it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Day:
    """One simulated day's draws, shared by every preset of a run.

    Visits are in reader order; ``views`` says how many articles each visit
    reads, and ``article`` and ``dice`` hold one entry per article read, in
    visit order. ``renewal_dice`` has one entry per reader.
    """

    index: int
    reader: list[int]
    views: list[int]
    lost: list[bool]
    article: list[int]
    dice: list[float]
    renewal_dice: np.ndarray
    readers_visiting: int
    #: Per visit, how it arrives (an index of ARRIVALS); empty when every visit is direct.
    arrival: list[int] = ()


class Crowd:
    """A seeded population of readers and the generator of their days."""

    def __init__(self, population: Population, readers: int, articles: int, seed: int) -> None:
        if readers < 1:
            raise ValueError("a population needs at least one reader")
        self.population = population
        self.size = readers
        self.rng = np.random.default_rng(seed)
        self.segments = list(population.segments.values())
        shares = np.array([s.share for s in self.segments])
        self.segment = self.rng.choice(len(shares), size=readers, p=shares / shares.sum())
        self.daily_rate = self._rates()
        self._extra_views = np.array([s.articles_per_visit - 1.0 for s in self.segments])
        self._loss = np.array([s.cookie_loss for s in self.segments])
        weights = 1.0 / np.arange(1, articles + 1) ** population.articles.popularity
        self._popularity = np.cumsum(weights / weights.sum())
        self._popularity[-1] = 1.0
        # Arrivals come from their own generator, so a population without them draws exactly as before.
        bounds = [s.arrivals.cumulative for s in self.segments]
        self._arrivals = np.array(bounds) if any(b[-1] > 0 for b in bounds) else None
        self._arrival_rng = np.random.default_rng(_arrival_seed(seed))

    def _rates(self) -> np.ndarray:
        """Each reader's own mean visits per day (gamma-mixed for negative binomial segments)."""
        rates = np.empty(self.size)
        for number, segment in enumerate(self.segments):
            members = np.flatnonzero(self.segment == number)
            visits = segment.visits
            if visits.distribution == "poisson" or visits.daily_mean == 0.0:
                rates[members] = visits.daily_mean
            else:
                shape = visits.dispersion
                rates[members] = self.rng.gamma(shape, visits.daily_mean / shape, size=members.size)
        return rates

    def day(self, index: int, shard: tuple[int, int] = (0, 1)) -> Day:
        """Draw one day: who visits, how many articles, which ones, and the dice for each choice.

        Days come from one generator, so draw them in order, once each. Every draw is made for the whole population, then only the visits of
        readers in ``shard`` (number, of how many: readers whose index modulo
        the count is the number) are kept, so shards add up to the whole.
        """
        rng = self.rng
        counts = rng.poisson(self.daily_rate)
        who = np.flatnonzero(counts)
        reader = np.repeat(who, counts[who])
        segment = self.segment[reader]
        views = 1 + rng.poisson(self._extra_views[segment])
        lost = rng.random(reader.size) < self._loss[segment]
        total = int(views.sum())
        article = np.searchsorted(self._popularity, rng.random(total), side="right")
        dice = rng.random(total)
        renewal_dice = rng.random(self.size)
        arrival = self._arrival(segment)
        number, count = shard
        if count > 1:
            mine = reader % count == number
            per_view = np.repeat(mine, views)
            reader, views, lost = reader[mine], views[mine], lost[mine]
            article, dice = article[per_view], dice[per_view]
            arrival = arrival[mine] if arrival is not None else None
            who = who[who % count == number]
        return Day(index, reader.tolist(), views.tolist(), lost.tolist(), article.tolist(),
                   dice.tolist(), renewal_dice, int(who.size), arrival.tolist() if arrival is not None else [])

    def _arrival(self, segment: np.ndarray) -> np.ndarray | None:
        """How each visit of the day arrives (None when the population has no side doors at all)."""
        if self._arrivals is None:
            return None
        below = self._arrival_rng.random(segment.size)[:, None] < self._arrivals[segment]
        return np.where(below.any(axis=1), below.argmax(axis=1) + 1, 0)  # the first slice the die falls in


def _arrival_seed(seed: int | np.random.SeedSequence):
    """The arrivals' own seed beside a block's seed (gate.simulate.shards): never one the days draw from."""
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, len(ARRIVALS)))
    return [seed, len(ARRIVALS)]
