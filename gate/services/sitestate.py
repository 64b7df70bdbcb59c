"""What every request reads about the running site, in one statement: the clock, the preset, the consent lesson.

A page needs all three before it decides anything; reading them as one row
is one round trip to PostgreSQL instead of three, and none of them is kept
between requests, so a preset switch or a clock move made on any node is
seen by the next request everywhere. An article page also needs its article,
and a signed-in page its reader (with their subscription and meter): both
come in the same statement. The reader is the one thing a process keeps,
checked by the version of their row in that same statement
(:func:`gate.services.subscriptions.signed_in_columns`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from gate.conf.settings import Config
from gate.services import content, newsletter, presets, subscriptions
from gate.storage.clock import ClockState, state_of

#: The clock row (absent until the clock is first moved) beside the two settings a page reads.
_STATE = ("c.mode, c.offset_seconds, c.frozen_at,"
          " (select value from settings where key = ?) as preset,"
          " (select value from settings where key = ?) as lesson")
_FROM = " from (select 1 as one) site left join clock c on c.id = 1"
#: With an article: its row at a slug (published or not) beside the state.
_ARTICLE = ", ".join(f"a.{column}" for column in content.COLUMNS.split(", "))
_ARTICLE_JOIN = " left join articles a on a.slug = ?"


@functools.cache
def _statement(dialect: str, article: bool, reader: bool, kept: bool = False) -> str:
    """The one statement for the state, with an article and a signed-in reader as asked (``kept``: their version only)."""
    columns = [_STATE, *([_ARTICLE] if article else []),
               *([subscriptions.signed_in_columns(dialect, kept)] if reader else [])]
    joins = (_ARTICLE_JOIN if article else "") + (subscriptions.SESSION_JOIN if reader else "")
    return f"select {', '.join(columns)}{_FROM}{joins}"


@dataclass(frozen=True)
class SiteState:
    """The running site's clock, preset name and consent-lesson switch, as one request read them."""

    clock: ClockState
    preset: str
    consent_lesson: bool
    #: The article a page asked for with the state (published or not), when it asked and it exists.
    article: content.Article | None = None
    #: The slug it asked for (None: it asked for no article).
    slug: str | None = None
    #: The rows of the reader a session token named, when it asked (for :func:`subscriptions.settled`).
    reader_rows: list | None = None


def read(db, cfg: Config, real: datetime, slug: str | None = None, token: str | None = None) -> SiteState:
    """The site's state now, in one statement (the preset falls back as :func:`presets.active_name` does).

    With ``slug``, the article at that slug comes in the same statement; with
    ``token``, the account that session token names, their newest
    subscription and their meter's spends too, or only their version when this
    process has them already (a signed-in page is one round trip; two when a
    reader this process keeps has changed since).
    """
    params = [presets.PRESET_KEY, newsletter.LESSON_KEY, *([slug] if slug is not None else []),
              *([token] if token is not None else [])]
    kept = token is not None and subscriptions.kept(token)
    found = db.rows(_statement(db.dialect, slug is not None, token is not None, kept), params)
    row = found[0]
    clock = state_of((row["mode"], row["offset_seconds"], row["frozen_at"]), real)
    article = content.Article.from_row(row) if slug is not None and row["slug"] is not None else None
    return SiteState(clock, presets.known_or_default(cfg, row["preset"]), row["lesson"] == "on", article,
                     slug, found if token is not None else None)
