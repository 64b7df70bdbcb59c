"""The one strict base for every model read from a TOML file: rules, presets, settings, populations."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

#: A tier's meter size: a count of articles, or no meter at all.
Limit = int | Literal["unlimited"]
#: How the gate is drawn over the teaser.
GateStyle = Literal["inline", "modal", "banner"]


class Strict(BaseModel):
    """A model read from configuration: an unknown key is an error, types are not coerced, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
