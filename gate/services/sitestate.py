"""What every request reads about the running site, in one statement: the clock, the preset, the consent lesson.

A page needs all three before it decides anything; an article page also
needs its article, and a signed-in page its reader (with their subscription
and meter): all of it comes in one statement, one round trip to PostgreSQL.
What a process has read before it keeps, checked by a version in that same
statement: the state by the version of the ``site_version`` row, which every
write to the clock or the settings changes (migration m025), and every save or
delete of a preset (:mod:`gate.services.presets`), and a reader by
their row's (:func:`gate.services.subscriptions.signed_in_columns`). So a
page of a reader this process knows reads the article and two versions, and
a preset switch or a clock move made on any node is still seen by the next
request everywhere (with one more statement, once).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from gate.conf import saved
from gate.conf.settings import Config
from gate.services import content, newsletter, presets, subscriptions
from gate.storage.clock import ClockState, state_of

#: The clock row (absent until the clock is first moved) beside the two settings a page reads, and their version.
_STATE = ("c.mode, c.offset_seconds, c.frozen_at,"
          " (select value from settings where key = ?) as preset,"
          " (select value from settings where key = ?) as lesson")
_VERSION = "(select version from site_version where id = 1) as site_version"
_FROM = " from (select 1 as one) site"
_CLOCK_JOIN = " left join clock c on c.id = 1"
#: With an article: its row at a slug (published or not) beside the state.
_ARTICLE = ", ".join(f"a.{column}" for column in content.COLUMNS.split(", "))
_ARTICLE_JOIN = " left join articles a on a.slug = ?"


@functools.cache
def _statement(dialect: str, article: bool, reader: bool, kept_reader: bool = False, kept_site: bool = False) -> str:
    """The one statement for the state, with an article and a signed-in reader as asked.

    ``kept_site``: the state's version only; ``kept_reader``: the reader's version only (by their id).
    Its parameters: the two settings' keys (unless ``kept_site``), the reader's id (if ``kept_reader``),
    the article's slug (if ``article``), the session's token (if ``reader`` and not ``kept_reader``).
    """
    columns = [*([] if kept_site else [_STATE]), _VERSION, *([_ARTICLE] if article else []),
               *([subscriptions.signed_in_columns(dialect, kept_reader)] if reader else [])]
    joins = (("" if kept_site else _CLOCK_JOIN) + (_ARTICLE_JOIN if article else "")
             + (subscriptions.SESSION_JOIN if reader and not kept_reader else ""))
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


#: The site's state as this process last read it, by its version: (clock row, preset name, lesson setting).
#: Keyed by version, not by site, so processes serving several sites (tests) keep each; bounded all the same.
KEEP_STATES = 64
_kept: dict[int, tuple] = {}


def read(db, cfg: Config, real: datetime, slug: str | None = None, token: str | None = None) -> SiteState:
    """The site's state now, in one statement (the preset falls back as :func:`presets.active_name` does).

    With ``slug``, the article at that slug comes in the same statement; with
    ``token``, the account that session token names, their newest
    subscription and their meter's spends too. What this process has read
    already (the state, a device's reader) is asked for by its version only,
    and read again, in a second statement, only when the version has changed.
    """
    reader_id = subscriptions.kept(token) if token is not None else None
    kept_site = bool(_kept)
    found = db.rows(*_asked(db.dialect, slug, token, reader_id, kept_site))
    state = _kept.get(found[0]["site_version"]) if kept_site else None
    if state is None:  # changed since this process read it (or never read): the whole state, once
        cfg.refresh()  # a preset saved or deleted moves the version too: look at the folder now
        if kept_site:
            found = db.rows(*_asked(db.dialect, slug, token, reader_id, False))
        row = found[0]
        state = ((row["mode"], row["offset_seconds"], row["frozen_at"]), row["preset"], row["lesson"])
        if row["site_version"] is not None:  # its row deleted by hand: nothing would tell a change, so keep nothing
            if len(_kept) >= KEEP_STATES:
                _kept.clear()
            _kept[row["site_version"]] = state
    else:
        cfg.refresh(within=saved.LOOK_SECONDS)  # a file put there by hand: seen within a second
    row = found[0]
    clock, preset, lesson = state
    article = content.Article.from_row(row) if slug is not None and row["slug"] is not None else None
    return SiteState(state_of(clock, real), presets.known_or_default(cfg, preset), lesson == "on", article,
                     slug, found if token is not None else None)


def _asked(dialect: str, slug: str | None, token: str | None, reader_id: int | None, kept_site: bool):
    """The statement and parameters for what :func:`read` asks (see :func:`_statement`)."""
    params = [*([] if kept_site else [presets.PRESET_KEY, newsletter.LESSON_KEY]),
              *([reader_id] if reader_id is not None else []), *([slug] if slug is not None else []),
              *([token] if token is not None and reader_id is None else [])]
    return _statement(dialect, slug is not None, token is not None, reader_id is not None, kept_site), params
