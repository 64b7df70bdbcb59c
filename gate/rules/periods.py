"""Meter periods: calendar month, ISO week, day, rolling N days, lifetime.

Every window is computed in the site's IANA time zone and returned as aware
UTC datetimes, so the meter resets at local midnight whatever the offset of
the server, and across daylight-saving changes and year ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc
#: Start of time for lifetime meters.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CALENDAR = ("month", "week", "day")
_ROLLING = re.compile(r"^rolling:([1-9][0-9]{0,3})$")


@dataclass(frozen=True)
class Window:
    """The span a meter counts in: [start, end), and a key naming it.

    ``end`` is ``None`` for rolling and lifetime windows, which have no fixed
    end; ``key`` identifies the window for the unlock uniqueness constraint.
    """

    period: str
    start: datetime
    end: datetime | None
    key: str

    def contains(self, moment: datetime) -> bool:
        """Whether a moment falls inside the window."""
        return self.start <= moment and (self.end is None or moment < self.end)


def validate_period(period: str) -> str | None:
    """Return an error message for an invalid period name, or None."""
    if period in CALENDAR or period == "lifetime" or _ROLLING.match(period):
        return None
    return "must be month, week, day, lifetime or rolling:N (N days, 1-9999)"


def checked_period(period: str) -> str:
    """``period`` unchanged if it is a known period, else ValueError (a settings validator's answer)."""
    problem = validate_period(period)
    if problem:
        raise ValueError(problem)
    return period


def known_zone(name: str) -> str:
    """The name, if zoneinfo knows it as an IANA time zone; else a ValueError saying so."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None
    return name


def rolling_days(period: str) -> int | None:
    """The N of a ``rolling:N`` period, else None."""
    match = _ROLLING.match(period)
    return int(match.group(1)) if match else None


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local calendar day, in UTC.

    Where midnight does not exist (a DST jump at 00:00), zoneinfo maps the
    wall time forward, which is the first real instant of that day.
    """
    naive = datetime.combine(day, time.min)
    return naive.replace(tzinfo=tz).astimezone(UTC)


def _calendar_bounds(period: str, today: date) -> tuple[date, date, str]:
    """First day of this calendar period, first day of the next, and a key."""
    if period == "day":
        return today, today + timedelta(days=1), f"day:{today.isoformat()}"
    if period == "week":
        monday = today - timedelta(days=today.weekday())
        year, week, _ = monday.isocalendar()
        return monday, monday + timedelta(days=7), f"week:{year}-W{week:02d}"
    first = today.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following, f"month:{first:%Y-%m}"


#: The calendar window each (period, zone) was last asked for: a site's next request is almost always inside it.
_latest: dict[tuple[str, ZoneInfo], Window] = {}


def period_window(period: str, now: datetime, tz: ZoneInfo) -> Window:
    """The meter window that contains ``now`` for a period rule.

    Pure, and asked for the same few windows over and over (every decision
    computes one). A site asks at a new moment every request, nearly always
    inside the calendar window it asked for last: that one is kept per period
    and zone and answered when it contains ``now`` (a calendar period's windows
    tile time, so the one that contains a moment is its window). Otherwise the
    window is memoised by moment (the simulator asks at the same few moments
    again and again), and a calendar window by its local day.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    latest = _latest.get((period, tz))
    if latest is not None and latest.start <= now < latest.end:
        return latest
    window = _window_at(period, now, tz)
    if window.end is not None:
        _latest[(period, tz)] = window
    return window


@lru_cache(maxsize=8192)
def _window_at(period: str, now: datetime, tz: ZoneInfo) -> Window:
    """:func:`period_window`, worked out (``now`` is aware)."""
    now = now.astimezone(UTC)
    if period == "lifetime":
        return _LIFETIME
    days = rolling_days(period)
    if days is not None:
        today = now.astimezone(tz).date()
        return Window(period, now - timedelta(days=days), None, f"rolling:{today.isoformat()}")
    if period not in CALENDAR:
        raise ValueError(f"unknown period {period!r}")
    window, following = _calendar_window(period, now.astimezone(tz).date(), tz)
    if now >= window.end:
        # Clocks set back across midnight (St John's until 2011) repeat part of
        # yesterday after today began; that repeat belongs to the new period.
        window, _ = _calendar_window(period, following, tz)
    return window


_LIFETIME = Window("lifetime", EPOCH, None, "lifetime")


@lru_cache(maxsize=4096)
def _calendar_window(period: str, today: date, tz: ZoneInfo) -> tuple[Window, date]:
    """The calendar window holding the local day ``today``, and the first day of the next one."""
    first, following, key = _calendar_bounds(period, today)
    return Window(period, local_midnight(first, tz), local_midnight(following, tz), key), following


def resets_at(window: Window, spent_at: list[datetime]) -> datetime | None:
    """When the meter next gains a free article.

    Calendar windows reset at their end. A rolling window frees a slot when
    its oldest spend in the window ages out. A lifetime meter never resets.
    """
    if window.end is not None:
        return window.end
    days = rolling_days(window.period)
    if days is None:
        return None
    inside = [moment for moment in spent_at if window.contains(moment)]
    if not inside:
        return None
    return min(inside) + timedelta(days=days)


def describe(period: str) -> str:
    """A reader-facing phrase for a period: 'this month', 'in any 30 days'."""
    days = rolling_days(period)
    if days is not None:
        return f"in any {days} days"
    return {"month": "this month", "week": "this week", "day": "today", "lifetime": "in all"}[
        period
    ]
