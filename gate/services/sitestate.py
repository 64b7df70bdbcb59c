"""What every request reads about the running site, in one statement: the clock, the preset, the consent lesson.

A page needs all three before it decides anything; reading them as one row
is one round trip to PostgreSQL instead of three, and nothing is cached
between requests, so a preset switch or a clock move made on any node is
seen by the next request everywhere. An article page also needs its article:
it comes in the same statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gate.conf.settings import Config
from gate.services import content, newsletter, presets
from gate.storage.clock import ClockState, state_of

#: The clock row (absent until the clock is first moved) beside the two settings a page reads.
_STATE = ("c.mode, c.offset_seconds, c.frozen_at,"
          " (select value from settings where key = ?) as preset,"
          " (select value from settings where key = ?) as lesson")
_FROM = " from (select 1 as one) site left join clock c on c.id = 1"
_SQL = f"select {_STATE}{_FROM}"
#: The same, with the article at a slug (published or not) beside it.
_ARTICLE = ", ".join(f"a.{column}" for column in content.COLUMNS.split(", "))
_WITH_ARTICLE = f"select {_STATE}, {_ARTICLE}{_FROM} left join articles a on a.slug = ?"


@dataclass(frozen=True)
class SiteState:
    """The running site's clock, preset name and consent-lesson switch, as one request read them."""

    clock: ClockState
    preset: str
    consent_lesson: bool
    #: The article a page asked for with the state (published or not), when it asked and it exists.
    article: content.Article | None = None


def read(db, cfg: Config, real: datetime, slug: str | None = None) -> SiteState:
    """The site's state now, in one statement (the preset falls back as :func:`presets.active_name` does).

    With ``slug``, the article at that slug comes in the same statement.
    """
    keys = [presets.PRESET_KEY, newsletter.LESSON_KEY]
    if slug is None:
        row = db.first(_SQL, keys)
    else:
        row = db.first(_WITH_ARTICLE, [*keys, slug])
    clock = state_of((row["mode"], row["offset_seconds"], row["frozen_at"]), real)
    article = content.Article.from_row(row) if slug is not None and row["slug"] is not None else None
    return SiteState(clock, presets.known_or_default(cfg, row["preset"]), row["lesson"] == "on", article)
