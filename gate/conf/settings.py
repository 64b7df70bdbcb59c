"""Load and validate config/site.toml and the presets in config/presets/.

Settings are data, validated at start-up: an unknown key, a wrong type or an
impossible value stops the app with an error naming the file, the key and
the problem.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from gate.conf import environment
from gate.conf.resources import resource_dir
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


class SiteFile(Strict):
    """config/site.toml as written: its sections are the fields (read them through :class:`Config`)."""

    site: Publication
    plans: list[SubscriptionPlan] = Field(min_length=1)
    billing: DunningPolicy = DunningPolicy()
    mail: Mail = Mail()
    newsletters: list[Newsletter] = Field(default_factory=list)

    @field_validator("plans", "newsletters")
    @classmethod
    def _unique_ids(cls, items):
        """Plans and lists are referred to by id, so ids must be unique."""
        return unique_ids(items, "ids")


def _explain(path: Path, error: ValidationError) -> str:
    """One line per problem: file, dotted key, reason."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        reason = problem["msg"]
        if problem["type"] == "extra_forbidden":
            reason = "unknown key"
        lines.append(f"{path}: {key}: {reason}")
    return "\n".join(lines)


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


def load_preset(path: Path, timezone: str) -> Rules:
    """Load and validate one preset; its name is its file name."""
    data = _read_toml(path)
    for reserved in ("name", "timezone"):
        if reserved in data:
            raise ConfigError(f"{path}: {reserved}: unknown key (set by gate, not the preset)")
    try:
        return Rules.model_validate({**data, "name": path.stem, "timezone": timezone})
    except ValidationError as error:
        raise ConfigError(_explain(path, error)) from None


class Config:
    """The whole validated configuration: the publication, its plans, mail and lists, and every preset."""

    def __init__(self, config_dir: Path | None = None) -> None:
        self.dir = Path(config_dir) if config_dir else resource_dir("config")
        site_file = load_site(self.dir / "site.toml")
        self.publication: Publication = site_file.site
        self.plans: list[SubscriptionPlan] = site_file.plans
        self.billing: DunningPolicy = site_file.billing
        self.mail: Mail = site_file.mail
        self.newsletters: list[Newsletter] = site_file.newsletters
        self.presets = self._load_presets()
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
                rules = load_preset(path, self.publication.timezone)
            except ConfigError as error:
                problems.append(str(error))
                continue
            unknown = sorted(set(rules.sections) - set(self.publication.sections))
            if unknown:
                problems.append(
                    f"{path}: sections.{unknown[0]}: not a section of this site "
                    f"(have: {', '.join(self.publication.sections)})"
                )
                continue
            found[path.stem] = rules
        if problems:
            raise ConfigError("\n".join(problems))
        if not found:
            raise ConfigError(f"{self.dir / 'presets'}: no presets (*.toml) found")
        return found

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
