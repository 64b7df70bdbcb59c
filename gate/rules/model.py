"""The one strict base for every model read from a TOML file: rules, presets, settings, populations."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, field_validator

from gate.rules import periods

#: A tier's meter size: a count of articles, or no meter at all.
Limit = int | Literal["unlimited"]
#: How the gate is drawn over the teaser.
GateStyle = Literal["inline", "modal", "banner"]


class Strict(BaseModel):
    """A model read from configuration: an unknown key is an error, types are not coerced, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Zoned(Strict):
    """A model with a time zone (the site, a preset): an IANA name zoneinfo knows, checked where it is read."""

    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value):
        """Report a bad zone in the file that names it, not later when a meter resets."""
        return periods.known_zone(value)

    @property
    def tz(self) -> ZoneInfo:
        """The time zone periods start and end in and mail is dated in."""
        return ZoneInfo(self.timezone)
