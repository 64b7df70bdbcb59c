"""The dynamic meter's signals for one viewer, read from what the site records, in one statement.

The score (gate.rules.engagement) counts article views: ``article_view``
events, which every GET of an article records for the reader or visitor it is
about. One statement reads, for one meter's reader or visitor: the days with a
read among the last 30 (each view placed in its local day of the site's time
zone by a ``case`` over the 30 midnights), the distinct sections of those reads,
the time of the last read ever, and (for an account) whether it is enrolled in
a newsletter. Partial indexes on ``events`` (migration m022) keep it one index
range. Nothing is read for a preset without ``[dynamic]`` or a tier it leaves fixed.

The history is the one the meter belongs to: a visitor's reads while anonymous,
the account's once signed in (a signup starts the account's history, as it
starts its own meter).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from gate.rules import periods
from gate.rules.engagement import WINDOW_DAYS, Signals
from gate.rules.paywall import Rules
from gate.rules.timeutil import from_iso, to_iso

#: The column an ``article_view`` event names its viewer by, for each kind of meter key.
_WHO = {"visitor": "visitor_id", "reader": "reader_id"}


@lru_cache(maxsize=2)
def _statement(who: str) -> str:
    """The one statement for a visitor's or a reader's signals (``who`` is a column name of ``_WHO``)."""
    days = " ".join(f"when e.at >= ? then {day}" for day in range(WINDOW_DAYS - 1))
    enrolled = ("(select count(*) from enrollments where reader_id = ? and status = 'active')"
                if who == "reader_id" else "0")
    return (f"select count(distinct case {days} else {WINDOW_DAYS - 1} end) as visits,"
            " count(distinct a.section) as sections,"
            f" (select max(at) from events where type = 'article_view' and {who} = ?) as last_read,"
            f" {enrolled} as enrolled"
            " from events e left join articles a on a.slug = e.slug"
            f" where e.type = 'article_view' and e.{who} = ? and e.at >= ?")


def midnights(now: datetime, tz: ZoneInfo) -> list[datetime]:
    """The starts of today and the 29 local days before it, newest first: the score's look-back."""
    today = now.astimezone(tz).date()
    return [periods.local_midnight(today - timedelta(days=back), tz) for back in range(WINDOW_DAYS)]


def _owner(meter_key: str) -> tuple[str, object] | None:
    """The events column and value a meter key's reads are recorded under, or None for another kind of meter."""
    kind, _, ident = meter_key.partition(":")
    if kind not in _WHO or not ident:
        return None
    if kind == "reader":
        return (_WHO[kind], int(ident)) if ident.isdigit() else None
    return _WHO[kind], ident


def read(db, rules: Rules, tier: str, meter_key: str, referral: str, now: datetime) -> Signals | None:
    """The viewer's signals now, in one statement; None (and nothing read) if the preset scores no one of ``tier``."""
    owner = _owner(meter_key) if rules.dynamic_for(tier) is not None else None
    if owner is None:
        return None
    who, ident = owner
    starts = [to_iso(moment) for moment in midnights(now, rules.tz)]
    params = [*starts[:-1], ident, *([ident] if who == "reader_id" else []), ident, starts[-1]]
    row = db.first(_statement(who), params)
    return Signals(visits=row["visits"], days_since=_days_since(row["last_read"], now, rules.tz),
                   sections=row["sections"], referral=referral, newsletter=bool(row["enrolled"]),
                   registered=tier != "anonymous")


def _days_since(last_read: str | None, now: datetime, tz: ZoneInfo) -> int | None:
    """Whole local days from the last read to now (0: today), or None if there was none."""
    if last_read is None:
        return None
    days = (now.astimezone(tz).date() - from_iso(last_read).astimezone(tz).date()).days
    return max(0, days)
