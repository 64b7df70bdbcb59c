"""What every request reads about the running site, in one statement: the clock, the preset, the consent lesson.

A page needs all three before it decides anything; reading them as one row
is one round trip to PostgreSQL instead of three, and nothing is cached
between requests, so a preset switch or a clock move made on any node is
seen by the next request everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gate.conf.settings import Config
from gate.services import newsletter, presets
from gate.storage.clock import ClockState, state_of

#: The clock row (absent until the clock is first moved) beside the two settings a page reads.
_SQL = ("select c.mode, c.offset_seconds, c.frozen_at,"
        " (select value from settings where key = ?) as preset,"
        " (select value from settings where key = ?) as lesson"
        " from (select 1 as one) site left join clock c on c.id = 1")


@dataclass(frozen=True)
class SiteState:
    """The running site's clock, preset name and consent-lesson switch, as one request read them."""

    clock: ClockState
    preset: str
    consent_lesson: bool


def read(db, cfg: Config, real: datetime) -> SiteState:
    """The site's state now, in one statement (see :func:`presets.active_name` for the preset's fallback)."""
    mode, offset, frozen, preset, lesson = db.execute(_SQL, [presets.PRESET_KEY, newsletter.LESSON_KEY]).fetchone()
    return SiteState(state_of((mode, offset, frozen), real), presets.known_or_default(cfg, preset), lesson == "on")
