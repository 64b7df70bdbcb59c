"""The site clock: real, offset (time travel) or frozen, stored in the database.

This is the only module that reads the machine's time. The clock's state is
one row in the ``clock`` table, so the web workers and the CLI of one site
agree on the time. In a running site time only moves forward, like a
billing test clock; ``reset`` returns to real time for a fresh demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from gate.timeutil import from_iso, to_iso

UTC = timezone.utc


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


class Clock:
    """The clock of one site database."""

    def __init__(self, db, real=real_now) -> None:
        self.db = db
        self.real = real

    def state(self) -> ClockState:
        """Read the clock row (real time when there is none)."""
        row = self.db.execute(
            "select mode, offset_seconds, frozen_at from clock where id = 1"
        ).fetchone()
        if row is None:
            return ClockState()
        mode, offset, frozen = row
        return ClockState(mode, timedelta(seconds=offset), from_iso(frozen) if frozen else None)

    def now(self) -> datetime:
        """The site's current time."""
        return self.state().now(self.real())

    def _store(self, state: ClockState) -> ClockState:
        self.db.execute(
            "insert or replace into clock (id, mode, offset_seconds, frozen_at) values (1, ?, ?, ?)",
            [
                state.mode,
                state.offset.total_seconds(),
                to_iso(state.frozen_at) if state.frozen_at else None,
            ],
        )
        return state

    def advance(self, by: timedelta) -> ClockState:
        """Move the clock forward; a frozen clock stays frozen at the new instant."""
        if by <= timedelta():
            raise ClockError("the clock only moves forward: give a positive duration")
        state = self.state()
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
