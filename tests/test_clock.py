"""The clock: real, offset and frozen; forward only; shared through the database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import time_machine

from gate.clock import Clock, ClockError
from gate.db import open_site_db
from gate.timeutil import parse_duration, parse_moment

UTC = timezone.utc


@pytest.fixture
def site_db(tmp_path):
    db = open_site_db(tmp_path / "clock.sqlite")
    yield db
    db.close()


def test_real_time_by_default(site_db):
    with time_machine.travel(datetime(2026, 5, 5, 12, tzinfo=UTC), tick=False):
        assert Clock(site_db).now() == datetime(2026, 5, 5, 12, tzinfo=UTC)
        assert not Clock(site_db).state().simulated


def test_offset_keeps_running(site_db):
    with time_machine.travel(datetime(2026, 5, 5, 12, tzinfo=UTC), tick=False) as traveller:
        clock = Clock(site_db)
        clock.advance(timedelta(days=31))
        assert clock.now() == datetime(2026, 6, 5, 12, tzinfo=UTC)
        traveller.shift(timedelta(minutes=5))
        assert clock.now() == datetime(2026, 6, 5, 12, 5, tzinfo=UTC)


def test_frozen_stays_put_and_advances(site_db):
    clock = Clock(site_db)
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    clock.set(moment, freeze=True)
    assert clock.now() == moment
    clock.advance(timedelta(hours=2))
    assert clock.now() == moment + timedelta(hours=2)
    assert clock.state().mode == "frozen"


def test_two_connections_agree(site_db, tmp_path):
    Clock(site_db).set(datetime(2031, 2, 3, tzinfo=UTC), freeze=True)
    other = open_site_db(tmp_path / "clock.sqlite")
    assert Clock(other).now() == datetime(2031, 2, 3, tzinfo=UTC)
    other.close()


def test_time_never_moves_backward(site_db):
    clock = Clock(site_db)
    clock.set(datetime(2030, 1, 1, tzinfo=UTC), freeze=True)
    with pytest.raises(ClockError):
        clock.set(datetime(2029, 12, 31, tzinfo=UTC))
    with pytest.raises(ClockError):
        clock.advance(timedelta(seconds=-1))
    assert clock.now() == datetime(2030, 1, 1, tzinfo=UTC)


def test_freeze_and_reset(site_db):
    clock = Clock(site_db, real=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    clock.advance(timedelta(days=1))
    clock.freeze()
    assert clock.now() == datetime(2026, 1, 2, tzinfo=UTC)
    clock.reset()
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("text, expected", [
    ("31d", timedelta(days=31)), ("2w", timedelta(weeks=2)), ("12h", timedelta(hours=12)),
    ("90m", timedelta(minutes=90)), ("1d12h", timedelta(days=1, hours=12)), ("30s", timedelta(seconds=30)),
])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "d", "3x", "tomorrow", "1d and", "-1d"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_naive_moments_are_site_local():
    moment = parse_moment("2027-03-01T09:00", ZoneInfo("America/New_York"))
    assert moment == datetime(2027, 3, 1, 14, 0, tzinfo=UTC)
    assert parse_moment("2027-07-01T09:00+02:00", ZoneInfo("UTC")) == datetime(2027, 7, 1, 7, tzinfo=UTC)
