"""Load and validate config/site.toml and the presets in config/presets/.

Settings are data, validated at start-up: an unknown key, a wrong type or an
impossible value stops the app with an error naming the file, the key and
the problem.
"""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from gate.conf import environment
from gate.conf.resources import resource_dir
from gate.conf.saved import SavedPresets
from gate.rules import periods
from gate.rules.model import Strict, Zoned
from gate.rules.paywall import Rules, unique_ids

#: Where a demo with no configured origin is reached (`gate demo`'s default bind).
LOCAL_ORIGIN = "http://127.0.0.1:5000"


class ConfigError(ValueError):
    """A configuration file that cannot be used, with the reasons."""


class Publication(Zoned):
    """The publication itself: the ``[site]`` section."""

    name: str = Field(min_length=1, max_length=80)
    tagline: str = ""
    default_preset: str = "wpr"
    sections: list[str] = Field(min_length=1)
    #: The public origin of every absolute URL the site emits (GATE_BASE_URL overrides it).
    base_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _origin(cls, value):
        """An origin only (scheme, host, port): links are this plus a path."""
        return None if value is None else environment.origin(value)


class SubscriptionPlan(Strict):
    """A subscription plan offered on /subscribe: one ``[[plans]]`` entry."""

    id: str = Field(pattern=r"^[a-z0-9-]+$")
    name: str = Field(min_length=1)
    price_cents: int = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    interval: Literal["month", "year"]
    trial_days: int = Field(default=0, ge=0, le=365)
    #: An introductory price for the first ``intro_periods`` paid periods ("$1 for your
    #: first month, then $12 a month"), charged by the same billing state machine.
    intro_price_cents: int | None = Field(default=None, ge=0)
    intro_periods: int = Field(default=0, ge=0, le=24)
    #: Signed-in devices a subscriber on this plan may hold (None: the preset's ``[devices] limit``).
    device_limit: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="after")
    def _intro(self):
        """An intro price needs its periods, is below the list price, and has nothing to do without one."""
        if (self.intro_price_cents is None) != (self.intro_periods == 0):
            raise ValueError("intro_price_cents and intro_periods go together (both set, or neither)")
        if self.intro_price_cents is not None and self.intro_price_cents >= self.price_cents:
            raise ValueError("intro_price_cents must be below price_cents")
        return self


class PromoOffer(Strict):
    """A promo code declared in config/site.toml: one ``[[offers]]`` entry (see gate.rules.offers)."""

    code: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$")
    name: str = Field(min_length=1, max_length=80)
    #: Exactly one of the three discounts.
    percent_off: int | None = Field(default=None, ge=1, le=100)
    amount_off_cents: int | None = Field(default=None, ge=1)
    free_periods: int | None = Field(default=None, ge=1, le=24)
    duration: Literal["once", "repeating", "forever"] = "once"
    #: Paid periods a ``repeating`` offer covers.
    periods: int | None = Field(default=None, ge=1, le=120)
    #: Plan ids it applies to (empty: every plan).
    plans: list[str] = Field(default_factory=list)
    #: The validity window, as dates in the site's time zone (starts inclusive, ends exclusive).
    starts: date | None = None
    ends: date | None = None
    cap: int | None = Field(default=None, ge=1)
    new_subscribers_only: bool = False

    @model_validator(mode="after")
    def _one_discount(self):
        """One discount, a period count exactly when repeating, and a window that is not empty."""
        given = [x for x in (self.percent_off, self.amount_off_cents, self.free_periods) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of percent_off, amount_off_cents, free_periods")
        if (self.duration == "repeating") != (self.periods is not None):
            raise ValueError('periods is required with duration = "repeating" and only then')
        if self.starts and self.ends and self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self


class Pass(Strict):
    """A one-time purchase of full access for a while, with no renewal: one ``[[passes]]`` entry."""

    id: str = Field(pattern=r"^[a-z0-9-]+$")
    name: str = Field(min_length=1, max_length=40)
    price_cents: int = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    #: How long it gives full access from the moment it is bought.
    hours: int = Field(ge=1, le=24 * 31)


class SaveOffer(Strict):
    """What cancelling readers who give one reason are offered instead: one ``[[retention.save_offers]]``."""

    reason: str = Field(pattern=r"^[a-z0-9_]+$")
    kind: Literal["discount", "pause"]
    #: A discount: percent off for ``periods`` paid periods.
    percent_off: int | None = Field(default=None, ge=1, le=100)
    periods: int | None = Field(default=None, ge=1, le=12)
    #: A pause: the lengths offered, in months (1–3).
    pause_months: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self):
        """A discount names its percent and periods; a pause its months."""
        if self.kind == "discount" and (self.percent_off is None or self.periods is None or self.pause_months):
            raise ValueError('kind = "discount" takes percent_off and periods (and no pause_months)')
        if self.kind == "pause" and (not self.pause_months or self.percent_off or self.periods
                                     or any(not 1 <= m <= 3 for m in self.pause_months)):
            raise ValueError('kind = "pause" takes pause_months, each 1 to 3 (and no discount)')
        return self


class WinBack(Strict):
    """The win-back mail: a personal one-time code sent ``days_after`` access ends."""

    days_after: int = Field(default=14, ge=1, le=365)
    percent_off: int = Field(default=50, ge=1, le=100)
    periods: int = Field(default=3, ge=1, le=12)
    #: How long the personal code stays valid after it is sent.
    valid_days: int = Field(default=30, ge=1, le=365)


class Retention(Strict):
    """The ``[retention]`` section: why readers cancel, what is offered to keep them, and win-back."""

    #: Reason ids and their wording on the cancel form, in order.
    reasons: dict[str, str] = Field(default_factory=lambda: {
        "too_expensive": "It costs too much", "not_reading": "I don't read enough right now",
        "content": "The journalism isn't what I want", "other": "Something else"})
    save_offers: list[SaveOffer] = Field(default_factory=list)
    winback: WinBack | None = None

    @model_validator(mode="after")
    def _known_reasons(self):
        """Each save offer answers a listed reason, at most one offer per reason."""
        seen = [offer.reason for offer in self.save_offers]
        unknown = sorted(set(seen) - set(self.reasons))
        if unknown:
            raise ValueError(f"save offer for unknown reason {unknown[0]!r} (have: {', '.join(self.reasons)})")
        if len(seen) != len(set(seen)):
            raise ValueError("at most one save offer per reason")
        return self


class Newsletter(Strict):
    """A mailing list readers can join."""

    id: str = Field(pattern=r"^[a-z0-9-]+$")
    name: str = Field(min_length=1)
    description: str = ""
    audience: Literal["registered", "subscriber"]
    cadence: Literal["daily", "weekly"]
    default_on_signup: bool = False
    #: Local time of day the issue goes out (daily lists: Monday to Friday).
    send_time: str = Field(default="07:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    #: Weekly lists: the day the issue goes out.
    send_day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                      "sunday"] = "saturday"
    #: The checkbox text shown at signup; recorded word for word as the consent.
    consent_text: str = Field(default="", max_length=300)
    #: Whether the signup box starts ticked. GDPR consent is an affirmative act, so the
    #: default is "unticked"; "ticked" is the dark pattern /learn teaches.
    consent_default: Literal["unticked", "ticked"] = "unticked"

    @property
    def consent_wording(self) -> str:
        """What the reader agrees to when they tick this list's box."""
        return self.consent_text or f"Send me {self.name}: {self.description}"


class Mail(Strict):
    """Outgoing mail: the sender, double opt-in and optional SMTP (links use ``[site] base_url``)."""

    sender: str = "The Meridian <newsletters@meridian.example>"
    double_opt_in: bool = True
    confirm_days: int = Field(default=7, ge=1, le=60)
    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""


class DunningPolicy(Strict):
    """The ``[billing]`` section: when failed renewals are retried and what happens when retries run out."""

    retry_days: list[int] = Field(default_factory=lambda: [1, 3, 5], max_length=10)
    grace_days: int = Field(default=7, ge=0, le=90)
    on_retries_exhausted: Literal["canceled", "unpaid"] = "canceled"

    @field_validator("retry_days")
    @classmethod
    def _increasing(cls, days):
        """Retries happen in order, each after the one before."""
        if any(day < 1 for day in days) or days != sorted(set(days)):
            raise ValueError("must be increasing whole days after the failed renewal, e.g. [1, 3, 5]")
        return days


class Gifts(Strict):
    """The ``[gifts]`` section: how many articles a subscriber may gift, for how long, to how many devices."""

    #: Gift links one subscriber may make in each period.
    per_period: int = Field(default=10, ge=0, le=1000)
    #: The allowance's period, in the site's time zone (see gate.rules.periods).
    period: str = "month"
    #: Days a link reads, on the site's (simulated) clock.
    days: int = Field(default=14, ge=1, le=365)
    #: Devices one link opens for (a visitor, or a signed-in reader, counts once).
    devices: int = Field(default=10, ge=1, le=10_000)

    @field_validator("period")
    @classmethod
    def _allowance_period(cls, value):
        """The allowance counts in one of the meter's periods (see gate.rules.periods)."""
        return periods.checked_period(value)


class SiteFile(Strict):
    """config/site.toml as written: its sections are the fields (read them through :class:`Config`)."""

    site: Publication
    plans: list[SubscriptionPlan] = Field(min_length=1)
    billing: DunningPolicy = DunningPolicy()
    mail: Mail = Mail()
    newsletters: list[Newsletter] = Field(default_factory=list)
    offers: list[PromoOffer] = Field(default_factory=list)
    passes: list[Pass] = Field(default_factory=list)
    retention: Retention = Retention()
    gifts: Gifts = Gifts()

    @field_validator("plans", "newsletters", "passes")
    @classmethod
    def _unique_ids(cls, items):
        """Plans, lists and passes are referred to by id, so ids must be unique."""
        return unique_ids(items, "ids")

    @field_validator("offers")
    @classmethod
    def _offers_known(cls, offers, info: ValidationInfo):
        """Codes are unique case-insensitively and name only configured plans."""
        codes = [offer.code.upper() for offer in offers]
        if len(codes) != len(set(codes)):
            raise ValueError(f"codes must be unique (case-insensitive), got {codes}")
        if "plans" not in info.data:
            return offers  # the plans' own error is the one to read
        plan_ids = {plan.id for plan in info.data["plans"]}
        for offer in offers:
            unknown = sorted(set(offer.plans) - plan_ids)
            if unknown:
                raise ValueError(f"{offer.code}: no plan called {unknown[0]!r}")
        return offers


def _reasons(error: ValidationError) -> list[tuple[str, str]]:
    """Each problem as (dotted key, reason): the words every preset error uses (file, studio, CLI, API).

    A check of gate's own is its message alone (pydantic prefixes "Value error, ").
    """
    found = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        reason = problem["msg"].removeprefix("Value error, ")
        found.append((key, "unknown key" if problem["type"] == "extra_forbidden" else reason))
    return found


def field_errors(error: ValidationError) -> dict[str, str]:
    """The first reason for each dotted key, as a form shows it beside the field and the API answers."""
    found: dict[str, str] = {}
    for key, reason in _reasons(error):
        found.setdefault(key, reason)
    return found


def _explain(path: Path, error: ValidationError) -> str:
    """One line per problem: file, dotted key, reason."""
    return "\n".join(f"{path}: {key}: {reason}" for key, reason in _reasons(error))


def _read_toml(path: Path) -> dict:
    """Parse a TOML file, naming the file in any syntax error."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def load_site(path: Path) -> SiteFile:
    """Load and validate the site file."""
    data = _read_toml(path)
    if isinstance(data.get("mail"), dict) and "base_url" in data["mail"]:
        raise ConfigError(f"{path}: mail.base_url: moved to [site] base_url (the origin of every link)")
    try:
        return SiteFile.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_explain(path, error)) from None


#: Keys gate sets on every preset itself: a file (or a studio form) never gives them.
RESERVED_KEYS = ("name", "timezone")


def load_preset(path: Path, timezone: str) -> Rules:
    """Load and validate one preset; its name is its file name."""
    data = _read_toml(path)
    for reserved in RESERVED_KEYS:
        if reserved in data:
            raise ConfigError(f"{path}: {reserved}: unknown key (set by gate, not the preset)")
    try:
        return Rules.model_validate({**data, "name": path.stem, "timezone": timezone})
    except ValidationError as error:
        raise ConfigError(_explain(path, error)) from None


def foreign_sections(rules: Rules, sections: list[str]) -> str | None:
    """Why a preset's ``[sections]`` names a section this site has not, or None (key: reason)."""
    unknown = sorted(set(rules.sections) - set(sections))
    if not unknown:
        return None
    return f"sections.{unknown[0]}: not a section of this site (have: {', '.join(sections)})"


class Config:
    """The whole validated configuration: the publication, its plans, mail and lists, and every preset."""

    def __init__(self, config_dir: Path | None = None, saved_dir: Path | str | None = None) -> None:
        self.dir = Path(config_dir) if config_dir else resource_dir("config")
        site_file = load_site(self.dir / "site.toml")
        self.publication: Publication = site_file.site
        self.plans: list[SubscriptionPlan] = site_file.plans
        self.billing: DunningPolicy = site_file.billing
        self.mail: Mail = site_file.mail
        self.newsletters: list[Newsletter] = site_file.newsletters
        self.offers: list[PromoOffer] = site_file.offers
        self.passes: list[Pass] = site_file.passes
        self.retention: Retention = site_file.retention
        self.gifts: Gifts = site_file.gifts
        #: The presets shipped in config/presets/: a broken one stops the start.
        self.builtin: dict[str, Rules] = self._load_presets()
        #: The presets saved in the instance folder (the rule studio, `gate preset new`).
        self.saved = SavedPresets(saved_dir, self.builtin, self._checked)
        #: The public origin of every link; the app pins it from GATE_BASE_URL and friends.
        self.origin = self.publication.base_url or LOCAL_ORIGIN
        default = self.publication.default_preset
        if default not in self.presets:
            raise ConfigError(
                f"{self.dir / 'site.toml'}: site.default_preset: no preset named {default!r} "
                f"(have: {', '.join(sorted(self.presets))})"
            )

    def _load_presets(self) -> dict[str, Rules]:
        """Every config/presets/*.toml, all errors reported together."""
        found, problems = {}, []
        for path in sorted((self.dir / "presets").glob("*.toml")):
            try:
                found[path.stem] = self._checked(path)
            except ConfigError as error:
                problems.append(str(error))
        if problems:
            raise ConfigError("\n".join(problems))
        if not found:
            raise ConfigError(f"{self.dir / 'presets'}: no presets (*.toml) found")
        return found

    def _checked(self, path: Path) -> Rules:
        """One preset file, valid and naming only this site's sections (ConfigError naming the file if not)."""
        rules = load_preset(path, self.publication.timezone)
        foreign = foreign_sections(rules, self.publication.sections)
        if foreign:
            raise ConfigError(f"{path}: {foreign}")
        return rules

    @property
    def presets(self) -> dict[str, Rules]:
        """Every preset by name: the built-in ones, then those saved in the instance folder."""
        return self.saved.presets

    def refresh(self, within: float = 0.0) -> bool:
        """Pick up presets saved or deleted by another process (one ``stat`` when nothing changed).

        ``within``: not if the folder was looked at less than that many seconds ago.
        """
        return self.saved.check(within)

    @property
    def signup_lists(self) -> list[Newsletter]:
        """The lists a signup offers, each with its own consent checkbox."""
        return [item for item in self.newsletters if item.audience == "registered" and item.default_on_signup]

    def preset(self, name: str) -> Rules:
        """A preset by name, with a clear error listing the known ones."""
        try:
            return self.presets[name]
        except KeyError:
            raise ConfigError(
                f"no preset named {name!r} (have: {', '.join(sorted(self.presets))})"
            ) from None
