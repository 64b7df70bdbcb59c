"""The decision engine: one pure function from rules, viewer, article and now.

Every access decision, on the web, in the API, in the simulator and in the
audit, comes from :func:`decide`. It imports neither Flask nor the database
and never reads a clock: the caller passes the viewer's spends and ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from gate.rules import engagement, periods, referral
from gate.rules.engagement import Dynamic, Score, Signals
from gate.rules.experiments import Experiment
from gate.rules.model import GateStyle, Limit, Strict, Zoned

Tier = Literal["anonymous", "registered", "subscriber"]
AccessClass = Literal["metered", "free", "premium"]
TIERS: tuple[Tier, ...] = ("anonymous", "registered", "subscriber")
Access = Literal["full", "teaser"]


class Reason(StrEnum):
    """Why decide gave the access it gave: the code the API, the events table, explain and the audit carry."""

    SUBSCRIBER = "subscriber"
    FREE_ARTICLE = "free_article"
    PREMIUM_ONLY = "premium_only"
    TIER_UNLIMITED = "tier_unlimited"
    REGISTRATION_REQUIRED = "registration_required"
    SUBSCRIBERS_ONLY = "subscribers_only"
    ALREADY_UNLOCKED = "already_unlocked"
    METER_AVAILABLE = "meter_available"
    METER_EXHAUSTED = "meter_exhausted"
    VERIFICATION_REQUIRED = "verification_required"
    PASS = "pass"
    LICENSED = "licensed"
    REFERRAL = "referral"
    GIFT = "gift"


class Offer(StrEnum):
    """What the gate asks the reader to do next (no offer when the access is full)."""

    REGISTER = "register"
    UNLOCK = "unlock"
    VERIFY = "verify"
    SUBSCRIBE = "subscribe"


def unique_ids(items: list, what: str) -> list:
    """``items`` unchanged if their ids are unique (things are referred to by id), else ValueError."""
    ids = [item.id for item in items]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{what} must be unique, got {ids}")
    return items


class TierRule(Strict):
    """What one viewer tier may read of metered articles."""

    limit: Limit = Field(default=0)
    period: str = "month"
    mode: Literal["choice", "auto"] = "choice"
    unlock_lasts: Literal["period", "forever"] = "period"
    #: Registered tier only: the meter opens once the reader has proven their address
    #: (clicked a mailed link). Friction for real readers, against throwaway accounts.
    require_verified: bool = False

    @field_validator("limit", mode="before")
    @classmethod
    def _limit_is_a_count(cls, value):
        """One clear error for a wrong type, not one per member of the union."""
        if value != "unlimited" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError('must be a whole number or "unlimited"')
        return value

    @field_validator("limit")
    @classmethod
    def _limit_not_negative(cls, value):
        """A meter cannot grant fewer than zero articles."""
        if isinstance(value, int) and not 0 <= value <= 100_000:
            raise ValueError("must be between 0 and 100000, or \"unlimited\"")
        return value

    @field_validator("period")
    @classmethod
    def _known_period(cls, value):
        """Periods are a closed vocabulary (see gate.rules.periods)."""
        return periods.checked_period(value)

    @property
    def unlimited(self) -> bool:
        """Whether this tier reads every metered article."""
        return self.limit == "unlimited"

    @property
    def metered(self) -> bool:
        """Whether this tier has a meter to count: a limit above zero (decide reads spends only then)."""
        return not self.unlimited and self.limit > 0


class Tiers(Strict):
    """The rule for each tier."""

    anonymous: TierRule = TierRule()
    registered: TierRule = TierRule()
    subscriber: TierRule = TierRule(limit="unlimited")

    @field_validator("subscriber")
    @classmethod
    def _subscribers_read_everything(cls, value):
        """A subscription is the promise of full access."""
        if not value.unlimited:
            raise ValueError('subscribers must have limit = "unlimited"')
        return value

    @field_validator("anonymous", "subscriber")
    @classmethod
    def _only_accounts_prove_addresses(cls, value):
        """Only a registered account has an address to prove."""
        if value.require_verified:
            raise ValueError("require_verified applies to the registered tier only")
        return value


class GateCopy(Strict):
    """How the gate looks and what it says."""

    style: GateStyle = "inline"
    headline: str = Field(default="Keep reading for free", min_length=1, max_length=120)
    body: str = Field(default="", max_length=500)
    subscribe_line: str = Field(default="Or, subscribe now to get full access.", max_length=200)


class Devices(Strict):
    """A preset's cap on signed-in devices per account (``[devices]``; see docs/devices.md)."""

    #: Live sessions one account may hold; None: no cap. A subscriber's plan may set its own.
    limit: int | None = Field(default=None, ge=1, le=100)
class ReferralRules(Strict):
    """Side doors by where a reader came from (docs/referral.md); the defaults open none."""

    #: Read the ``Referer`` header for search and social arrivals. Anyone can send any
    #: Referer (curl -H), so this is for presets that accept that, as the NYT did in 2011.
    trust_referer: bool = False
    #: Search arrivals read this many articles a day outside the meter (their own daily meter).
    search_daily: int = Field(default=0, ge=0, le=100)
    #: Extended Access: a registered reader arriving from search reads this many more a day.
    search_registration_grant: int = Field(default=0, ge=0, le=100)
    #: Social arrivals read the article they came for.
    social: bool = False
    #: A signed newsletter link reads the article it names.
    newsletter: bool = False

    @field_validator("social")
    @classmethod
    def _social_needs_the_referer(cls, value, info):
        """A social arrival is known only from its Referer: a social grant without trusting it would never apply."""
        if value and not info.data.get("trust_referer"):
            raise ValueError("social = true needs trust_referer = true (the Referer is the only sign of it)")
        return value

    @field_validator("search_daily", "search_registration_grant")
    @classmethod
    def _search_needs_the_referer(cls, value, info):
        """A search arrival is known only from its Referer."""
        if value and not info.data.get("trust_referer"):
            raise ValueError("a search grant needs trust_referer = true (the Referer is the only sign of it)")
        return value

    def search_allowance(self, tier: Tier) -> int:
        """How many articles a day a search arrival of ``tier`` reads outside the meter."""
        extra = self.search_registration_grant if tier == "registered" else 0
        return self.search_daily + extra


class Rules(Zoned):
    """A paywall preset: the gate's rules, as loaded from config/presets/NAME.toml."""

    name: str = Field(min_length=1)
    title: str = Field(min_length=1, max_length=80)
    description: str = Field(default="", max_length=600)
    teaser_paragraphs: int = Field(default=3, ge=1, le=20)
    gate: GateCopy = GateCopy()
    tiers: Tiers = Tiers()
    sections: dict[str, AccessClass] = Field(default_factory=dict)
    experiments: list[Experiment] = Field(default_factory=list)
    #: UNSAFE, for the bypass lab only: the page carries the whole body hidden
    #: by CSS and script, and the anonymous meter lives in a plain cookie.
    porous: bool = False
    devices: Devices = Devices()
    #: Side doors for search, social and newsletter arrivals (gate.rules.referral).
    referral: ReferralRules = ReferralRules()
    #: The dynamic meter (docs/dynamic.md): tiers whose allowance comes from an engagement score.
    dynamic: Dynamic | None = None

    @field_validator("experiments")
    @classmethod
    def _unique_experiments(cls, value):
        """Experiments are reported by id, so ids must be unique within a preset."""
        return unique_ids(value, "experiment ids")

    @field_validator("dynamic")
    @classmethod
    def _dynamic_tiers_have_no_limit(cls, value, info):
        """A dynamic tier's allowance comes from its band: a ``limit`` beside it would be a second, ignored answer."""
        tiers, trials = info.data.get("tiers"), info.data.get("experiments") or []
        for tier in value.tiers if value is not None and tiers is not None else ():
            if "limit" in getattr(tiers, tier).model_fields_set:
                raise ValueError(f"the {tier} tier's allowance comes from [[dynamic.bands]]: remove "
                                 f"tiers.{tier}.limit")
            for exp in trials:
                if any(getattr(variant, f"{tier}_limit") is not None for variant in exp.variants):
                    raise ValueError(f"experiment {exp.id!r} sets {tier}_limit, but the {tier} tier's allowance "
                                     "comes from [[dynamic.bands]]")
        return value

    def tier(self, tier: Tier) -> TierRule:
        """The rule for one tier."""
        return getattr(self.tiers, tier)

    def dynamic_for(self, tier: str) -> Dynamic | None:
        """The dynamic meter, if it sets this tier's allowance; else None (a fixed limit, or none)."""
        return self.dynamic if self.dynamic is not None and tier in self.dynamic.tiers else None

    def meters(self, tier: str) -> bool:
        """Whether this tier has spends for decide to read: a fixed limit above zero, or a dynamic allowance."""
        return self.tier(tier).metered or self.dynamic_for(tier) is not None

    def ceiling(self, tier: str) -> Limit:
        """The most a reader of this tier may read in a period: the limit, or a dynamic tier's largest allowance."""
        dynamic = self.dynamic_for(tier)
        return dynamic.most if dynamic is not None else self.tier(tier).limit

    def access_class(self, article: "ArticleLike") -> AccessClass:
        """An article's class after this preset's section overrides."""
        return self.sections.get(article.section, article.access_class)

    @property
    def registration_helps(self) -> bool:
        """Whether an account reads more than an anonymous visitor (else the only upsell is a subscription)."""
        registered, anonymous = self.ceiling("registered"), self.ceiling("anonymous")
        if registered == "unlimited":
            return anonymous != "unlimited"
        return anonymous != "unlimited" and registered > anonymous


class ArticleLike(Protocol):
    """What decide needs to know about an article."""

    slug: str
    section: str
    access_class: str


@dataclass(frozen=True)
class Spend:
    """One article counted against a meter, and when."""

    slug: str
    at: datetime


@dataclass(frozen=True)
class Licence:
    """A group licence the viewer is an active member of: full access while it runs (``until`` exclusive)."""

    org: str
    seats: int
    until: datetime | None = None
    slug: str = ""

    def covers(self, now: datetime) -> bool:
        """Whether the licence runs at ``now`` on the site's clock (no end: it runs on)."""
        return self.until is None or now < self.until

    def as_grant(self) -> dict:
        """The licence as the API's ``grant`` object."""
        return {"kind": "licence", "org": self.org, "org_slug": self.slug, "seats": self.seats,
                "ends": self.until.isoformat() if self.until else None}


@dataclass(frozen=True)
class GiftGrant:
    """A gift link this device opened: one article, in full, until the link expires (site time)."""

    slug: str
    link_id: int
    giver: str
    expires_at: datetime
    opens_left: int
    kind: str = "gift"

    def live(self, slug: str, now: datetime) -> bool:
        """Whether this gift opens ``slug`` at ``now`` (it ends at exactly ``expires_at``)."""
        return self.slug == slug and now < self.expires_at

    def as_dict(self) -> dict:
        """The grant as the JSON API shows it."""
        return {"kind": self.kind, "giver": self.giver, "expires_at": self.expires_at.isoformat(),
                "opens_left": self.opens_left, "link_id": self.link_id}


@dataclass(frozen=True)
class Viewer:
    """Who is reading: their tier, their meter key and what they have spent."""

    tier: Tier
    meter_key: str
    spends: tuple[Spend, ...] = ()
    #: Whether the reader has proven their address (always true for other tiers).
    verified: bool = True
    #: When the reader's day or week pass ends (None: no pass); full access while now < pass_ends.
    pass_ends: datetime | None = None
    #: The group licence the reader is a member of (gate.services.orgs), or None.
    licence: Licence | None = None
    #: Where this viewer came from (gate.rules.referral), and the article they arrived at.
    referral: str = "direct"
    arrival: str | None = None
    #: Spends of the viewer's daily search allowance (its own meter: ``search:<meter key>``).
    search_spends: tuple[Spend, ...] = ()
    #: Gift links this device opened and that have not expired (gate.services.gifts.grants).
    gifts: tuple[GiftGrant, ...] = ()
    #: What the dynamic meter scores (gate.rules.engagement), read only when the preset has one for this tier.
    signals: Signals | None = None


@dataclass(frozen=True)
class ReferralGrant:
    """A side door that opened this article: the arrival's class and, for search, the day's allowance."""

    referral: str
    slug: str
    allowance: int | None = None
    used: int | None = None
    window_key: str | None = None

    def as_grant(self) -> dict:
        """The grant as the API's ``grant`` object."""
        data = {"kind": "referral", "referral": self.referral, "slug": self.slug}
        if self.allowance is not None:
            data.update(per_day=self.allowance, used_today=self.used, left_today=self.allowance - self.used)
        return data


@dataclass(frozen=True)
class Meter:
    """A viewer's meter in the window that contains now."""

    used: int
    limit: int | None
    remaining: int | None
    resets_at: datetime | None
    period: str | None
    mode: str | None
    window_key: str | None = None
    #: A dynamic meter's engagement score, the number of its band (from 1) and that band's allowance
    #: (which is then also ``limit``); None for a fixed meter.
    score: Score | None = None
    band: int | None = None
    allowance: int | None = None

    def as_dict(self) -> dict:
        """The meter as the JSON API shows it (score, band and allowance are null for a fixed meter)."""
        return {
            "used": self.used,
            "limit": self.limit,
            "remaining": self.remaining,
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "period": self.period,
            "mode": self.mode,
            "score": self.score.total if self.score else None,
            "band": self.band,
            "allowance": self.allowance,
        }

    @property
    def grant(self) -> dict:
        """What a spend from this meter records beside it: the score and allowance of that moment (fixed: none)."""
        return {"score": self.score.total if self.score else None, "allowance": self.allowance}


@dataclass(frozen=True)
class Decision:
    """The verdict for one viewer and one article at one moment.

    ``spend`` is true when the access is granted on condition that the
    caller spends one article of quota first (auto-mode meters).
    """

    access: Access
    reason: Reason
    offer: Offer | None
    meter: Meter
    tier: Tier
    access_class: AccessClass
    spend: bool = False
    #: The steps in words, when decide() was asked for them (``traced``), else empty.
    trace: tuple[str, ...] = field(default=())
    #: With reason ``pass``: when the pass that grants this access ends.
    pass_ends: datetime | None = None
    #: With reason ``licensed``: the group licence that grants this access.
    licence: Licence | None = None
    #: With reason ``referral``: the side door (search spends it on its own daily meter when ``spend``).
    referral: ReferralGrant | None = None
    #: What opened the article besides a subscription or the meter (a gift), else None.
    grant: GiftGrant | None = None

    def as_dict(self) -> dict:
        """The decision as the JSON API shows it (``pass_ends`` only when a pass grants it)."""
        data = {
            "access": self.access,
            "reason": self.reason,
            "offer": self.offer,
            "meter": self.meter.as_dict(),
            "tier": self.tier,
            "access_class": self.access_class,
            "grant": self.grant.as_dict() if self.grant else None,
        }
        if self.reason == Reason.PASS:
            data["pass_ends"] = self.pass_ends.isoformat()
        if self.reason == Reason.LICENSED:
            data["grant"] = self.licence.as_grant()
        if self.reason == Reason.REFERRAL:
            data["grant"] = self.referral.as_grant()
        return data


def meter_for(rules: Rules, viewer: Viewer, now: datetime) -> Meter:
    """The viewer's meter: spends counted in the window of their tier's period, against their limit or band."""
    rule = rules.tier(viewer.tier)
    dynamic = rules.dynamic_for(viewer.tier)
    if dynamic is None and not rule.metered:
        limit = None if rule.unlimited else 0
        return Meter(0, limit, limit, None, None, None)
    window = periods.period_window(rule.period, now, rules.tz)
    # Every spend in the window counts, even one stamped a moment after ``now``: a
    # concurrent request may have read the clock later, and the meter must never over-grant.
    inside = [s for s in viewer.spends if window.contains(s.at)]
    used = len({s.slug for s in inside})
    resets = periods.resets_at(window, [s.at for s in inside])
    if dynamic is None:
        return Meter(used, rule.limit, max(0, rule.limit - used), resets, rule.period, rule.mode, window.key)
    scored = engagement.score(signals_of(viewer), dynamic.weights)
    band = dynamic.band(scored.total)
    allowance = dynamic.bands[band - 1].allowance
    return Meter(used, allowance, max(0, allowance - used), resets, rule.period, rule.mode, window.key,
                 scored, band, allowance)


def signals_of(viewer: Viewer) -> Signals:
    """The viewer's signals; with none read (a caller that knows no history), only what the viewer itself says."""
    if viewer.signals is not None:
        return viewer.signals
    return Signals(referral=viewer.referral, registered=viewer.tier != "anonymous")


@lru_cache(maxsize=512)
def _with_allowance(rule: TierRule, allowance: int) -> TierRule:
    """A dynamic tier's rule with its band's allowance as the limit (cached: the simulator asks millions of times)."""
    return rule.model_copy(update={"limit": allowance})


def rule_for(rules: Rules, tier: str, meter: Meter) -> TierRule:
    """The rule a viewer's meter is read by: the tier's, with a dynamic meter's allowance as its limit."""
    rule = rules.tier(tier)
    return rule if meter.allowance is None else _with_allowance(rule, meter.allowance)


def _unlocked(rule: TierRule, viewer: Viewer, slug: str, now: datetime, tz: ZoneInfo) -> bool:
    """Whether the viewer already holds this article under the current rule."""
    mine = [s for s in viewer.spends if s.slug == slug]
    if rule.unlock_lasts == "forever":
        return bool(mine)
    window = periods.period_window(rule.period, now, tz)
    return any(window.contains(s.at) for s in mine)


def _registration_helps(rules: Rules, viewer: Viewer) -> bool:
    """Whether signing up would give an anonymous visitor more to read."""
    return viewer.tier == "anonymous" and rules.registration_helps


def _awaits_proof(rule: TierRule, viewer: Viewer) -> bool:
    """Whether the meter stays shut until this reader proves their address (against throwaway accounts)."""
    return viewer.tier == "registered" and rule.require_verified and not viewer.verified


def pass_covers(viewer: Viewer, now: datetime) -> bool:
    """Whether the viewer holds a pass that has not ended: its end is exclusive, on the site's clock."""
    return viewer.pass_ends is not None and now < viewer.pass_ends


class _Trace:
    """A decision's steps in words, written only when asked for.

    Only the explain drawer reads them; the pages, the unlock and the simulator
    decide on every view and would format lines nobody reads.
    """

    __slots__ = ("lines", "tz")

    def __init__(self, written: bool, tz: ZoneInfo) -> None:
        self.lines: list[str] | None = [] if written else None
        self.tz = tz

    @property
    def asked(self) -> bool:
        """Whether the words were asked for (a step whose arguments cost work to find checks first)."""
        return self.lines is not None

    def add(self, template: str, *args) -> None:
        """One step: ``template`` filled with ``args``, a moment shown in the site's zone."""
        if self.lines is not None:
            self.lines.append(template.format(*(_local(arg, self.tz) if isinstance(arg, datetime) else arg
                                                for arg in args)))

    def written(self) -> tuple[str, ...]:
        """The lines, or none when the trace was not asked for."""
        return tuple(self.lines or ())


def _side_door(rules: Rules, viewer: Viewer, article: ArticleLike, now: datetime, rule: TierRule,
               trace: _Trace) -> tuple[ReferralGrant | None, bool]:
    """The side door this arrival opens on this article (and whether it spends a search read); the trace says why."""
    doors, kind = rules.referral, viewer.referral
    if kind == "direct":
        return None, False
    if viewer.arrival != article.slug:
        trace.add("{} arrival was for another article: the side door opens only that one", kind)
        return None, False
    if rule.metered and _unlocked(rule, viewer, article.slug, now, rules.tz):
        return None, False  # already theirs on the meter: re-reading costs nothing either way
    if kind in ("social", "newsletter"):
        if getattr(doors, kind):
            trace.add("{} arrival reads the article it came for", kind)
            return ReferralGrant(kind, article.slug), False
        trace.add("{0} arrival, but this preset opens no {0} side door", kind)
        return None, False
    allowance = doors.search_allowance(viewer.tier)
    if not allowance:
        trace.add("search arrival, but this preset opens no search side door for this reader")
        return None, False
    window = periods.period_window("day", now, rules.tz)
    today = {spend.slug for spend in viewer.search_spends if window.contains(spend.at)}
    fresh = article.slug not in today
    if fresh and len(today) >= allowance:
        trace.add("search arrival: {} of {} search reads used today, so the meter applies", len(today), allowance)
        return None, False
    trace.add("search arrival: {} of {} search reads used today, " + (
        "this one counts (not the meter)" if fresh else "re-reading this one is free"), len(today), allowance)
    return ReferralGrant("search", article.slug, allowance, len(today), window.key), fresh


def decide(rules: Rules, viewer: Viewer, article: ArticleLike, now: datetime, traced: bool = False) -> Decision:
    """Decide what this viewer may read of this article now, and what to offer.

    ``traced`` also writes the steps in words (``Decision.trace``), for the
    explain drawer; the decision itself is the same either way.
    """
    cls = rules.access_class(article)
    meter = meter_for(rules, viewer, now)
    rule = rule_for(rules, viewer.tier, meter)
    trace = _Trace(traced, rules.tz)
    trace.add("tier {}", viewer.tier)
    trace.add("preset {}", rules.name)
    if cls != article.access_class:
        trace.add("section {} makes the article {}", article.section, cls)
    else:
        trace.add("article is {}", cls)

    def verdict(access: Access, reason: Reason, offer: Offer | None = None, spend=False):
        trace.add("{}: {}" + (", offer {}" if offer else ""), access, reason, offer)
        return Decision(access, reason, offer, meter, viewer.tier, cls, spend, trace.written())

    upsell = Offer.REGISTER if _registration_helps(rules, viewer) else Offer.SUBSCRIBE
    if viewer.tier == "subscriber":
        return verdict("full", Reason.SUBSCRIBER)
    # --- group licences: an active member of a running licence reads everything, premium too
    licence = viewer.licence
    if licence is not None and licence.covers(now):
        trace.add("licensed by {} ({} seats)" + (" until {}" if licence.until else ""),
                  licence.org, licence.seats, licence.until)
        return replace(verdict("full", Reason.LICENSED), licence=licence)
    # --- end of group licences
    if pass_covers(viewer, now):  # a pass is full access, premium articles too, until its end exactly
        trace.add("pass until {}", viewer.pass_ends)
        return replace(verdict("full", Reason.PASS), pass_ends=viewer.pass_ends)
    # --- grants for this article: a gift link this device opened, until it expires -----------
    gift = next((grant for grant in viewer.gifts if grant.live(article.slug, now)), None)
    if gift is not None:
        trace.add("gift link {} from {}, until {}", gift.link_id, gift.giver, gift.expires_at)
        return replace(verdict("full", Reason.GIFT), grant=gift)
    # --- end of grants ------------------------------------------------------------------------
    if cls == "free":
        return verdict("full", Reason.FREE_ARTICLE)
    if cls == "premium":
        trace.add("premium articles need a subscription")
        return verdict("teaser", Reason.PREMIUM_ONLY, Offer.SUBSCRIBE)
    proof_note = "the meter opens once the reader confirms their address"
    if rule.unlimited and _awaits_proof(rule, viewer):
        trace.add(proof_note)
        return verdict("teaser", Reason.VERIFICATION_REQUIRED, Offer.VERIFY)
    if rule.unlimited:
        trace.add("{} readers have no limit", viewer.tier)
        return verdict("full", Reason.TIER_UNLIMITED)
    # --- referral side doors (issue 17): the article a search, social or newsletter arrival came for
    door, spend = _side_door(rules, viewer, article, now, rule, trace)
    if door is not None:
        return replace(verdict("full", Reason.REFERRAL, spend=spend), referral=door)
    # --- end of referral side doors
    if rule.limit == 0 and meter.allowance is None:
        reason = Reason.REGISTRATION_REQUIRED if upsell == Offer.REGISTER else Reason.SUBSCRIBERS_ONLY
        trace.add("{} readers get a teaser only", viewer.tier)
        return verdict("teaser", reason, upsell)
    if meter.allowance is not None:
        if trace.asked:  # the band's label is worked out for the words alone
            trace.add("{} → band {}: {} free", meter.score, rules.dynamic.label(meter.band), meter.allowance)
        if rules.dynamic.bands[meter.band - 1].offer == "subscribe":
            upsell = Offer.SUBSCRIBE  # this band's readers are asked to pay, not to sign up
    trace.add("meter {} of {} used, {} window {}" + (", resets {}" if meter.resets_at else ""),
              meter.used, meter.limit, rule.period, meter.window_key, meter.resets_at)
    if _unlocked(rule, viewer, article.slug, now, rules.tz):
        trace.add("re-reading costs nothing")
        return verdict("full", Reason.ALREADY_UNLOCKED)
    if meter.remaining and _awaits_proof(rule, viewer):
        trace.add(proof_note)
        return verdict("teaser", Reason.VERIFICATION_REQUIRED, Offer.VERIFY)
    if meter.remaining:
        if rule.mode == "auto":
            trace.add("auto mode: this view counts")
            return verdict("full", Reason.METER_AVAILABLE, spend=True)
        trace.add("choice mode: the reader may unlock")
        return verdict("teaser", Reason.METER_AVAILABLE, Offer.UNLOCK)
    return verdict("teaser", Reason.METER_EXHAUSTED, upsell)


#: Every reason code decide() gives, in words a reader or a classroom can follow.
REASON_LABELS: dict[Reason, str] = {
    Reason.SUBSCRIBER: "Subscriber: every article is open",
    Reason.FREE_ARTICLE: "Free article: open to everyone",
    Reason.PREMIUM_ONLY: "Premium article: for subscribers only",
    Reason.TIER_UNLIMITED: "No limit for this kind of reader",
    Reason.REGISTRATION_REQUIRED: "A free account is needed to read on",
    Reason.SUBSCRIBERS_ONLY: "Only subscribers read past the teaser",
    Reason.ALREADY_UNLOCKED: "Already unlocked: reading it again is free",
    Reason.METER_AVAILABLE: "Free articles left on the meter",
    Reason.METER_EXHAUSTED: "Free articles used up",
    Reason.VERIFICATION_REQUIRED: "The meter opens once the reader proves their address",
    Reason.PASS: "Day or week pass: every article is open until it ends",
    Reason.LICENSED: "Group licence: a member of a licensed organisation reads every article",
    Reason.REFERRAL: "Side door: an arrival from search, social or a newsletter reads the article it came for",
    Reason.GIFT: "A gift: a subscriber shared this article, outside the reader's meter",
}


def reason_label(code: str) -> str:
    """A reason code in words (an unknown code is shown as it is, never hidden)."""
    return REASON_LABELS.get(code, code)


@dataclass(frozen=True)
class GateCopyUse:
    """Whether a gate shows the preset's own headline and body, and where its words come from."""

    own: bool
    source: str


def gate_copy(rules: Rules, decision: Decision) -> GateCopyUse | None:
    """Which copy the gate for ``decision`` shows: a preset's copy is written for its own offer.

    A preset whose accounts read more than visitors pitches a signup; its copy
    would be wrong on a subscribe gate, which then has the built-in words.
    """
    preset = f"The preset's own [gate] headline and body (config/presets/{rules.name}.toml)"
    if decision.access == "full":
        return None
    if decision.offer == Offer.UNLOCK:
        return GateCopyUse(False, "Built-in unlock gate (choice mode), with the preset's subscribe_line")
    if decision.offer == Offer.REGISTER or not rules.registration_helps:
        return GateCopyUse(True, preset)
    return GateCopyUse(False, "Built-in subscribe copy: this preset's own copy asks for a signup, "
                              "which would not give this reader more")


#: Why each offer is made, in words a classroom can follow.
OFFER_WHY: dict[Offer | None, str] = {
    Offer.REGISTER: "Signing up would give this visitor more to read than they have now, so the gate asks for an email.",
    Offer.UNLOCK: "Choice mode: the reader picks which articles to spend free articles on, and has some left.",
    Offer.VERIFY: "This preset opens the meter only once a reader proves their address, so throwaway accounts "
              "get nothing: the gate asks the reader to click the link we emailed.",
    Offer.SUBSCRIBE: "Nothing short of a subscription gives more access here, so the gate offers one.",
    None: "No offer: this reader may read the whole article.",
}


def _local(moment: datetime | None, tz: ZoneInfo) -> str | None:
    return moment.astimezone(tz).isoformat() if moment else None


def explain(rules: Rules, viewer: Viewer, article: ArticleLike, now: datetime,
            after: Decision | None = None, before: Decision | None = None) -> dict:
    """Everything behind a decision, for the explain drawer and ?explain=1.

    ``viewer`` is the viewer before this request; ``after`` is the decision
    served (after an auto-mode spend), so counts before and after both show;
    ``before`` is the decision already made for ``viewer`` with its trace
    (``decide(..., traced=True)``), so it is not made twice.
    """
    before = before or decide(rules, viewer, article, now, traced=True)
    served = after or before
    rule = rule_for(rules, viewer.tier, before.meter)
    window = None
    if rules.meters(viewer.tier):
        span = periods.period_window(rule.period, now, rules.tz)
        window = {"key": span.key, "start": _local(span.start, rules.tz), "end": _local(span.end, rules.tz),
                  "resets_at": _local(served.meter.resets_at, rules.tz), "timezone": rules.timezone}
    return {
        "tier": viewer.tier, "preset": rules.name, "preset_title": rules.title,
        "article_class": article.access_class, "access_class": served.access_class,
        "section_override": served.access_class != article.access_class,
        "rule": rule.model_dump(), "window": window,
        "meter_before": before.meter.as_dict(), "meter_after": served.meter.as_dict(),
        "spent": served.meter.used > before.meter.used,
        "access": served.access, "reason": served.reason, "reason_label": reason_label(served.reason),
        "offer": served.offer,
        "offer_why": OFFER_WHY[served.offer], "trace": list(before.trace),
        "pass_ends": _local(served.pass_ends, rules.tz),
        "licence": ({"org": served.licence.org, "seats": served.licence.seats,
                     "until": _local(served.licence.until, rules.tz)} if served.licence else None),
        "referral": {"class": viewer.referral, "arrival": viewer.arrival, "why": referral.WHY.get(viewer.referral),
                     "grant": served.referral.as_grant() if served.referral else None},
        "grant": served.grant.as_dict() if served.grant else None,
        "engagement": _engagement(rules, before.meter),
    }


def _engagement(rules: Rules, meter: Meter) -> dict | None:
    """A dynamic meter's score, its inputs with their points, and every band with the one that applied."""
    if meter.score is None:
        return None
    dynamic = rules.dynamic
    bands = [{"number": number, "label": dynamic.label(number), "allowance": band.allowance, "offer": band.offer}
             for number, band in enumerate(dynamic.bands, start=1)]
    return {"score": meter.score.total, "parts": [part.as_dict() for part in meter.score.parts],
            "band": meter.band, "band_label": dynamic.label(meter.band), "allowance": meter.allowance,
            "bands": bands}
