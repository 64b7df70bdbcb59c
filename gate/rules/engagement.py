"""The dynamic meter: a transparent engagement score, and the bands that turn it into an allowance.

Piano's and the WSJ's "propensity" meters give each reader an allowance from
their behaviour. gate's is written out in full so a class can follow it: six
signals the site already records, each worth a documented number of points up
to a cap, added up to a score out of 100, then looked up in the preset's bands
(``[[dynamic.bands]]``) for the allowance that replaces the tier's ``limit``.

Pure, like the rest of :mod:`gate.rules`: the web layer reads the
:class:`Signals` (one statement, gate.services.engagement), the simulator keeps
them from its own history, and :func:`gate.rules.paywall.decide` scores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from gate.rules.model import Strict

#: The look-back of the score's counted signals (visits and sections), in days: today and the 29 before.
WINDOW_DAYS = 30
#: A score's range.
TOP = 100
DynamicTier = Literal["anonymous", "registered"]
#: A number of points (or a cap on them).
Points = Annotated[int, Field(ge=0, le=TOP)]


class Weight(Strict):
    """A counted signal: ``points`` for each one, never more than ``cap`` in all."""

    points: Points
    cap: Points

    def of(self, count: int) -> int:
        """The points ``count`` of this signal earns."""
        return min(self.cap, self.points * count)


class Recency(Strict):
    """Days since the last read: ``cap`` for a read today, ``points`` fewer for each day since (never below 0)."""

    points: Points
    cap: Points

    def of(self, days: int | None) -> int:
        """The points a last read ``days`` ago earns (None: never read, nothing)."""
        return 0 if days is None else max(0, self.cap - self.points * days)


class ReferralPoints(Strict):
    """Points for the class of this arrival (gate.rules.referral): coming back on one's own shows a habit."""

    direct: Points
    newsletter: Points
    search: Points
    social: Points

    def of(self, kind: str) -> int:
        """The points an arrival of class ``kind`` earns (an unknown class: none)."""
        return getattr(self, kind) if kind in ("direct", "newsletter", "search", "social") else 0

    @property
    def cap(self) -> int:
        """The most an arrival can earn."""
        return max(self.direct, self.newsletter, self.search, self.social)


class Weights(Strict):
    """What each signal is worth (``[dynamic.weights]``); the defaults add up to exactly 100."""

    #: Per day with a read among the last 30 (today included).
    visits: Weight = Weight(points=2, cap=30)
    #: 15 for a read today, one fewer per day since the last read.
    recency: Recency = Recency(points=1, cap=15)
    #: Per distinct section read in the last 30 days.
    sections: Weight = Weight(points=5, cap=20)
    #: By how this visit arrived.
    referral: ReferralPoints = ReferralPoints(direct=10, newsletter=10, search=0, social=0)
    #: An account enrolled in any newsletter.
    newsletter: Points = 10
    #: A registered account (a subscriber has no meter to score).
    registered: Points = 15

    @model_validator(mode="after")
    def _out_of_a_hundred(self):
        """A score is out of 100: the caps may not add up to more, or some points would be hidden by a clamp."""
        total = self.most
        if total > TOP:
            raise ValueError(f"the weights' caps add up to {total}, more than {TOP}: lower some of them")
        return self

    @property
    def most(self) -> int:
        """The highest score these weights can give."""
        return (self.visits.cap + self.recency.cap + self.sections.cap + self.referral.cap + self.newsletter
                + self.registered)


class Band(Strict):
    """Scores up to ``up_to`` (inclusive) read ``allowance`` articles a period; the last band has no ``up_to``."""

    up_to: int | None = Field(default=None, ge=0, le=TOP)
    allowance: int = Field(ge=0, le=100)
    #: What the gate offers once this band's allowance is read (default: the preset's usual upsell).
    offer: Literal["subscribe"] | None = None


class Dynamic(Strict):
    """A preset's ``[dynamic]`` section: the tiers whose allowance comes from the score, its bands and weights."""

    tiers: list[DynamicTier] = Field(min_length=1)
    bands: list[Band] = Field(min_length=1, max_length=10)
    weights: Weights = Weights()

    @field_validator("tiers")
    @classmethod
    def _each_tier_once(cls, value):
        """A tier is listed once (a subscriber reads everything, so has no meter to make dynamic)."""
        if len(set(value)) != len(value):
            raise ValueError(f"each tier may be listed once, got {value}")
        return value

    @field_validator("bands")
    @classmethod
    def _bands_cover_every_score(cls, bands):
        """Bands go up in order, and the last one is open-ended, so every score falls in exactly one."""
        bounds = [band.up_to for band in bands]
        if bounds[-1] is not None:
            raise ValueError(f"the last band must have no up_to (it takes every score above {bounds[-1]})")
        if None in bounds[:-1]:
            raise ValueError("only the last band may leave out up_to")
        if any(later <= earlier for earlier, later in zip(bounds[:-1], bounds[1:-1])):
            raise ValueError(f"up_to must increase from band to band, got {bounds[:-1]}")
        if len(bounds) > 1 and bounds[-2] >= TOP:
            raise ValueError(f"up_to = {bounds[-2]} leaves no score for the last band (scores go up to {TOP})")
        return bands

    def band(self, score: int) -> int:
        """The number (from 1) of the band a score falls in."""
        for number, band in enumerate(self.bands, start=1):
            if band.up_to is None or score <= band.up_to:
                return number
        raise AssertionError("the last band is open-ended")  # guaranteed by the validator

    def allowance(self, score: int) -> int:
        """The allowance of the band a score falls in."""
        return self.bands[self.band(score) - 1].allowance

    @property
    def most(self) -> int:
        """The largest allowance of any band: the most a reader of a dynamic tier can ever read in a period."""
        return max(band.allowance for band in self.bands)

    def label(self, number: int) -> str:
        """A band in words, as explain shows it: ``≤ 30``, ``31–70``, ``> 70`` (``any score`` for one band)."""
        bounds = [band.up_to for band in self.bands]
        low = bounds[number - 2] + 1 if number > 1 else 0
        high = bounds[number - 1]
        if high is None:
            return f"> {low - 1}" if number > 1 else "any score"
        return f"≤ {high}" if number == 1 else f"{low}–{high}"


@dataclass(frozen=True)
class Signals:
    """What the score reads about one reader at one moment, before this request's own view is recorded."""

    #: Days with a read among the last 30 (today included).
    visits: int = 0
    #: Whole days since the last read (0: earlier today); None if there is none.
    days_since: int | None = None
    #: Distinct sections read in the last 30 days.
    sections: int = 0
    #: The class of this arrival (gate.rules.referral): direct, search, social or newsletter.
    referral: str = "direct"
    #: Whether the account is enrolled in a newsletter.
    newsletter: bool = False
    #: Whether the reader has an account.
    registered: bool = False


@dataclass(frozen=True)
class Part:
    """One signal's share of a score: its name, what was seen, and the points it earned."""

    signal: str
    seen: str
    points: int

    def as_dict(self) -> dict:
        """The part as explain and the API show it."""
        return {"signal": self.signal, "seen": self.seen, "points": self.points}


@dataclass(frozen=True)
class Score:
    """An engagement score out of 100 and the points of each signal behind it."""

    total: int
    parts: tuple[Part, ...]

    def __str__(self) -> str:
        """The score in one line, for the trace: ``engagement 42 (visits 12, recency 14, ...)``."""
        return f"engagement {self.total} (" + ", ".join(f"{p.signal} {p.points}" for p in self.parts) + ")"


@lru_cache(maxsize=4096)
def score(signals: Signals, weights: Weights) -> Score:
    """The engagement score of ``signals`` under ``weights``: each signal's points, added up (cached: the simulator
    scores the same few signals again and again)."""
    since = {None: "never", 0: "today", 1: "yesterday"}.get(signals.days_since, f"{signals.days_since} days ago")
    parts = (
        Part("visits", f"{signals.visits} of the last {WINDOW_DAYS} days", weights.visits.of(signals.visits)),
        Part("recency", f"last read {since}", weights.recency.of(signals.days_since)),
        Part("sections", f"{signals.sections} read in {WINDOW_DAYS} days", weights.sections.of(signals.sections)),
        Part("referral", signals.referral, weights.referral.of(signals.referral)),
        Part("newsletter", "enrolled" if signals.newsletter else "not enrolled",
             weights.newsletter if signals.newsletter else 0),
        Part("registered", "an account" if signals.registered else "no account",
             weights.registered if signals.registered else 0),
    )
    return Score(min(TOP, sum(part.points for part in parts)), parts)
