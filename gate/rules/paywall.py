"""The decision engine: one pure function from rules, viewer, article and now.

Every access decision, on the web, in the API, in the simulator and in the
audit, comes from :func:`decide`. It imports neither Flask nor the database
and never reads a clock: the caller passes the viewer's spends and ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from gate.rules import periods
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

    @field_validator("experiments")
    @classmethod
    def _unique_experiments(cls, value):
        """Experiments are reported by id, so ids must be unique within a preset."""
        return unique_ids(value, "experiment ids")

    def tier(self, tier: Tier) -> TierRule:
        """The rule for one tier."""
        return getattr(self.tiers, tier)

    def access_class(self, article: "ArticleLike") -> AccessClass:
        """An article's class after this preset's section overrides."""
        return self.sections.get(article.section, article.access_class)

    @property
    def registration_helps(self) -> bool:
        """Whether an account reads more than an anonymous visitor (else the only upsell is a subscription)."""
        registered, anonymous = self.tiers.registered, self.tiers.anonymous
        if registered.unlimited:
            return not anonymous.unlimited
        return not anonymous.unlimited and registered.limit > anonymous.limit


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
    #: Gift links this device opened and that have not expired (gate.services.gifts.grants).
    gifts: tuple[GiftGrant, ...] = ()


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

    def as_dict(self) -> dict:
        """The meter as the JSON API shows it."""
        return {
            "used": self.used,
            "limit": self.limit,
            "remaining": self.remaining,
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "period": self.period,
            "mode": self.mode,
        }


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
    trace: tuple[str, ...] = field(default=())
    #: What opened the article besides a subscription or the meter (a gift), else None.
    grant: GiftGrant | None = None

    def as_dict(self) -> dict:
        """The decision as the JSON API shows it."""
        return {
            "access": self.access,
            "reason": self.reason,
            "offer": self.offer,
            "meter": self.meter.as_dict(),
            "tier": self.tier,
            "access_class": self.access_class,
            "grant": self.grant.as_dict() if self.grant else None,
        }


def meter_for(rules: Rules, viewer: Viewer, now: datetime) -> Meter:
    """The viewer's meter: spends counted in the window of their tier's period."""
    rule = rules.tier(viewer.tier)
    if not rule.metered:
        limit = None if rule.unlimited else 0
        return Meter(0, limit, limit, None, None, None)
    window = periods.period_window(rule.period, now, rules.tz)
    # Every spend in the window counts, even one stamped a moment after ``now``: a
    # concurrent request may have read the clock later, and the meter must never over-grant.
    inside = [s for s in viewer.spends if window.contains(s.at)]
    used = len({s.slug for s in inside})
    resets = periods.resets_at(window, [s.at for s in inside])
    remaining = max(0, rule.limit - used)
    return Meter(used, rule.limit, remaining, resets, rule.period, rule.mode, window.key)


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


def decide(rules: Rules, viewer: Viewer, article: ArticleLike, now: datetime) -> Decision:
    """Decide what this viewer may read of this article now, and what to offer."""
    cls = rules.access_class(article)
    rule = rules.tier(viewer.tier)
    meter = meter_for(rules, viewer, now)
    trace = [f"tier {viewer.tier}", f"preset {rules.name}"]
    if cls != article.access_class:
        trace.append(f"section {article.section} makes the article {cls}")
    else:
        trace.append(f"article is {cls}")

    def verdict(access: Access, reason: Reason, offer: Offer | None = None, spend=False, note=None):
        if note:
            trace.append(note)
        trace.append(f"{access}: {reason}" + (f", offer {offer}" if offer else ""))
        return Decision(access, reason, offer, meter, viewer.tier, cls, spend, tuple(trace))

    upsell = Offer.REGISTER if _registration_helps(rules, viewer) else Offer.SUBSCRIBE
    if viewer.tier == "subscriber":
        return verdict("full", Reason.SUBSCRIBER)
    # --- grants for this article: a gift link this device opened, until it expires -----------
    gift = next((grant for grant in viewer.gifts if grant.live(article.slug, now)), None)
    if gift is not None:
        note = f"gift link {gift.link_id} from {gift.giver}, until {gift.expires_at.astimezone(rules.tz).isoformat()}"
        return replace(verdict("full", Reason.GIFT, note=note), grant=gift)
    # --- end of grants ------------------------------------------------------------------------
    if cls == "free":
        return verdict("full", Reason.FREE_ARTICLE)
    if cls == "premium":
        return verdict("teaser", Reason.PREMIUM_ONLY, Offer.SUBSCRIBE, note="premium articles need a subscription")
    proof_note = "the meter opens once the reader confirms their address"
    if rule.unlimited and _awaits_proof(rule, viewer):
        return verdict("teaser", Reason.VERIFICATION_REQUIRED, Offer.VERIFY, note=proof_note)
    if rule.unlimited:
        return verdict("full", Reason.TIER_UNLIMITED, note=f"{viewer.tier} readers have no limit")
    if rule.limit == 0:
        reason = Reason.REGISTRATION_REQUIRED if upsell == Offer.REGISTER else Reason.SUBSCRIBERS_ONLY
        return verdict("teaser", reason, upsell, note=f"{viewer.tier} readers get a teaser only")
    window_note = (
        f"meter {meter.used} of {meter.limit} used, {rule.period} window {meter.window_key}"
        + (f", resets {meter.resets_at.astimezone(rules.tz).isoformat()}" if meter.resets_at else "")
    )
    trace.append(window_note)
    if _unlocked(rule, viewer, article.slug, now, rules.tz):
        return verdict("full", Reason.ALREADY_UNLOCKED, note="re-reading costs nothing")
    if meter.remaining and _awaits_proof(rule, viewer):
        return verdict("teaser", Reason.VERIFICATION_REQUIRED, Offer.VERIFY, note=proof_note)
    if meter.remaining:
        if rule.mode == "auto":
            return verdict("full", Reason.METER_AVAILABLE, spend=True, note="auto mode: this view counts")
        return verdict("teaser", Reason.METER_AVAILABLE, Offer.UNLOCK, note="choice mode: the reader may unlock")
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
    ``before`` is the decision already made for ``viewer``, so it is not made twice.
    """
    before = before or decide(rules, viewer, article, now)
    served = after or before
    rule = rules.tier(viewer.tier)
    window = None
    if rule.metered:
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
        "grant": served.grant.as_dict() if served.grant else None,
    }
