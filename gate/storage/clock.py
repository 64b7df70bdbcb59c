"""The site clock: real, offset (time travel) or frozen, stored in the database.

This is the only module that reads the machine's time. The clock's state is
one row in the ``clock`` table, so the web workers and the CLI of one site
agree on the time. In a running site time only moves forward, like a
billing test clock; ``reset`` returns to real time for a fresh demo.

The simulated time stays within ``REACH`` (a hundred years) of real time:
every move past it is refused, and a stored row outside it (or unreadable)
is ignored with a warning, so no request ever computes with a year-9999 date.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from gate.rules.billing import add_months
from gate.rules.timeutil import from_iso, parse_moment, to_iso

UTC = timezone.utc
log = logging.getLogger(__name__)

#: How far the simulated time may be from real time: beyond it dates overflow, and no demo needs it.
REACH_YEARS = 100
REACH = timedelta(days=36525)
MODES = ("real", "offset", "frozen")
#: Exact units of a clock move, in seconds; ``mo`` (a calendar month) is handled apart.
_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"([0-9]+)\s*([a-z]+)")
_UNITS_HELP = "use a number and a unit: 90min, 12h, 1d, 2w, 1mo, combinable: 1d12h"


def real_now() -> datetime:
    """The machine's time, in UTC."""
    return datetime.now(UTC)


class ClockError(ValueError):
    """A clock change that would break the forward-only rule."""


@dataclass(frozen=True)
class ClockState:
    """What the clock row says: a mode, an offset and, when frozen, the instant."""

    mode: str = "real"
    offset: timedelta = timedelta()
    frozen_at: datetime | None = None

    def now(self, real: datetime) -> datetime:
        """The simulated time, given the real time."""
        if self.mode == "frozen" and self.frozen_at is not None:
            return self.frozen_at
        return real + self.offset

    @property
    def simulated(self) -> bool:
        """Whether the clock differs from real time."""
        return self.mode != "real"


@dataclass(frozen=True)
class Step:
    """A move of the clock: calendar months on the site's calendar, then an exact span."""

    months: int = 0
    span: timedelta = timedelta()

    def after(self, moment: datetime, tz: ZoneInfo) -> datetime:
        """Where the move lands from ``moment``.

        A month keeps the local wall time and day of month, clamped to the
        month's last day like a billing cycle (Jan 31 + 1mo = Feb 28 or 29).
        """
        if self.months:
            moment = add_months(moment.astimezone(tz), self.months).astimezone(UTC)
        return moment + self.span

    def __str__(self) -> str:
        """The move in unambiguous units, as the history shows it: '1mo', '2w', '1d 12h', '90min'."""
        days, rest = divmod(int(self.span.total_seconds()), 86400)
        weeks, days = (days // 7, 0) if days % 7 == 0 else (0, days)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        parts = zip((self.months, weeks, days, hours, minutes, seconds), ("mo", "w", "d", "h", "min", "s"))
        return " ".join(f"{count}{unit}" for count, unit in parts if count) or "0d"


def parse_step(text: str) -> Step:
    """Read a clock move such as 1mo, 2w, 31d, 12h, 90min or 1d12h, within the clock's reach.

    A bare ``m`` is refused: a class reads "1m" as a month, the old form read a minute.
    """
    parts = _PART.findall(text.lower()) if isinstance(text, str) else []
    if not parts or _PART.sub("", text.lower()).strip():
        raise ValueError(f"not a duration: {str(text)[:40]!r} ({_UNITS_HELP})")
    months = seconds = 0
    for number, unit in parts:
        if unit == "m":
            raise ValueError(f"{number}m is ambiguous: write {number}min for minutes or {number}mo for months "
                             f"({_UNITS_HELP})")
        if unit != "mo" and unit not in _SECONDS:
            raise ValueError(f"unknown unit {unit[:20]!r} in {text[:40]!r} ({_UNITS_HELP})")
        if len(number.lstrip("0")) > 12:  # a 4,000-digit number is refused here, not by int()
            raise ValueError(_too_far(text))
        months += int(number) if unit == "mo" else 0
        seconds += int(number) * _SECONDS.get(unit, 0)
    if months > 12 * REACH_YEARS or seconds > REACH.total_seconds():
        raise ValueError(_too_far(text))
    return Step(months, timedelta(seconds=seconds))


def _too_far(text: str) -> str:
    """The refusal of a move past the clock's reach."""
    return f"{text[:40]!r} is too far: the clock goes at most {REACH_YEARS} years past real time"


def parse_target(text: str, tz: ZoneInfo) -> datetime:
    """An ISO moment to set the clock to; one too far out for Python's dates is refused, not a crash."""
    try:
        return parse_moment(text, tz)
    except OverflowError:
        raise ClockError(_too_far(text)) from None


def _from_row(row, real: datetime) -> ClockState:
    """The stored row as a state; ValueError, TypeError or OverflowError when it is unusable."""
    mode, offset, frozen = row
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    state = ClockState(mode, timedelta(seconds=offset), from_iso(frozen) if frozen else None)
    if mode == "frozen" and state.frozen_at is None:
        raise ValueError("frozen without an instant")
    if abs(state.now(real) - real) > REACH:
        raise ValueError(f"more than {REACH_YEARS} years from real time")
    return state


def state_of(row, real: datetime) -> ClockState:
    """The clock row (mode, offset_seconds, frozen_at) as a state: real time when there is none or it is unusable."""
    if row is None or row[0] is None:
        return ClockState()
    try:
        return _from_row(tuple(row), real)
    except (ValueError, TypeError, OverflowError) as error:
        # Written by hand or by an older version: serve real time rather than fail every request.
        log.warning("the stored clock %.120r is unusable (%s): using real time; "
                    "`gate clock reset` clears it", tuple(row), error)
        return ClockState()


class Clock:
    """The clock of one site database."""

    def __init__(self, db, real=real_now) -> None:
        self.db = db
        self.real = real

    def state(self) -> ClockState:
        """Read the clock row (real time when there is none, or when it is unusable)."""
        row = self.db.execute(
            "select mode, offset_seconds, frozen_at from clock where id = 1"
        ).fetchone()
        return state_of(row, self.real())

    def now(self) -> datetime:
        """The site's current time."""
        return self.state().now(self.real())

    def _store(self, state: ClockState) -> ClockState:
        self.db.upsert("clock", {
            "id": 1,
            "mode": state.mode,
            "offset_seconds": state.offset.total_seconds(),
            "frozen_at": to_iso(state.frozen_at) if state.frozen_at else None,
        }, ["id"])
        return state

    def _within_reach(self, to: datetime, real: datetime) -> None:
        """Refuse a move past the clock's reach (checked before anything is stored)."""
        if to - real > REACH:
            raise ClockError(f"the clock goes at most {REACH_YEARS} years past real time "
                             f"(until {(real + REACH).date().isoformat()}): {to.date().isoformat()} is too far")

    def advance(self, by: timedelta) -> ClockState:
        """Move the clock forward; a frozen clock stays frozen at the new instant."""
        if by <= timedelta():
            raise ClockError("the clock only moves forward: give a positive duration")
        if by > REACH:  # refused before the sum below could overflow
            raise ClockError(f"the clock goes at most {REACH_YEARS} years past real time")
        state, real = self.state(), self.real()
        self._within_reach(state.now(real) + by, real)
        if state.mode == "frozen":
            return self._store(ClockState("frozen", state.offset, state.frozen_at + by))
        return self._store(ClockState("offset", state.offset + by, None))

    def set(self, to: datetime, *, freeze: bool = False) -> ClockState:
        """Jump to an instant that is not in the past; time runs on from there unless frozen."""
        real = self.real()
        current = self.state().now(real)
        if to < current:
            raise ClockError(
                f"the clock only moves forward: {to.isoformat()} is before the site's "
                f"current time {current.isoformat()} (use `gate clock reset` for a fresh demo)"
            )
        self._within_reach(to, real)
        if freeze:
            return self._store(ClockState("frozen", to - real, to))
        return self._store(ClockState("offset", to - real, None))

    def freeze(self) -> ClockState:
        """Stop the clock at the current simulated instant."""
        now = self.now()
        return self._store(ClockState("frozen", now - self.real(), now))

    def reset(self) -> ClockState:
        """Back to real time (for a fresh demo; may move time backward)."""
        return self._store(ClockState())
