"""Stored time: every instant is kept as a fixed-width UTC ISO string.

A fixed width keeps SQL comparisons on the text column in time order.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc
_DURATION = re.compile(r"^\s*(\d+)\s*(w|d|h|m|s)\s*$")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
#: The years a date typed at the site's edges (comp ends, dashboard ranges) may fall in: room
#: for a simulated clock a century ahead, and far enough from datetime's limits that no
#: arithmetic on such a date (a day added, a time zone applied) can overflow.
YEARS = range(2000, 2200)


def to_iso(moment: datetime) -> str:
    """An aware datetime as 'YYYY-MM-DDTHH:MM:SS.ffffff+00:00'."""
    if moment.tzinfo is None:
        raise ValueError("stored times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(text: str) -> datetime:
    """Parse a stored time back into an aware UTC datetime."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_duration(text: str) -> timedelta:
    """Parse '31d', '2w', '12h', '90m' or '30s' (or several: '1d12h')."""
    parts = re.findall(r"\d+\s*[wdhms]", text or "")
    if not parts or re.sub(r"\d+\s*[wdhms]|\s", "", text):
        raise ValueError(
            f"not a duration: {text!r} (use a number and a unit: 31d, 2w, 12h, 90m, 30s)"
        )
    total = timedelta()
    for part in parts:
        number, unit = _DURATION.match(part).groups()
        total += timedelta(**{_UNITS[unit]: int(number)})
    return total


def parse_moment(text: str, tz: ZoneInfo) -> datetime:
    """Parse an ISO date or date-time; a naive value is read in the site time zone."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a date or time: {text!r} (use ISO 8601, e.g. 2027-03-01T09:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return in_years(moment).astimezone(UTC)


def parse_day(text: str) -> date:
    """Parse an ISO date (2026-11-01) within YEARS."""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date: {text!r} (use ISO 8601, e.g. 2026-11-01)") from None
    return in_years(day)


def in_years(moment):
    """The date or time itself, if its year is in YEARS; else a ValueError saying the window."""
    if moment.year not in YEARS:
        raise ValueError(f"{moment.isoformat()[:10]} is outside the years this site accepts "
                         f"({YEARS[0]} to {YEARS[-1]})")
    return moment
