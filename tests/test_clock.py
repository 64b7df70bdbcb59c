"""The clock: real, offset and frozen; forward only; within reach of real time; shared through the database."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.rules.timeutil import parse_duration, parse_moment
from gate.storage.clock import REACH, Clock, ClockError, Step, parse_step
from gate.storage.db import open_site_db
from tests.helpers import METERED, START

UTC = timezone.utc
NY = ZoneInfo("America/New_York")


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


# --- durations in unambiguous units ---------------------------------------------


@pytest.mark.parametrize("text, step, shown", [
    ("90min", Step(span=timedelta(minutes=90)), "1h 30min"), ("12h", Step(span=timedelta(hours=12)), "12h"),
    ("1d", Step(span=timedelta(days=1)), "1d"), ("2w", Step(span=timedelta(weeks=2)), "2w"),
    ("31d", Step(span=timedelta(days=31)), "31d"), ("1mo", Step(months=1), "1mo"),
    ("1mo 2d", Step(1, timedelta(days=2)), "1mo 2d"), ("1d12h", Step(span=timedelta(days=1, hours=12)), "1d 12h"),
    ("30s", Step(span=timedelta(seconds=30)), "30s"), (" 2 W ", Step(span=timedelta(weeks=2)), "2w"),
])
def test_clock_durations(text, step, shown):
    assert parse_step(text) == step and str(step) == shown


@pytest.mark.parametrize("text, message", [
    ("1m", "ambiguous: write 1min for minutes or 1mo for months"), ("1d30m", "ambiguous"),
    ("", "not a duration"), ("soon", "not a duration"), ("-1d", "not a duration"), ("3y", "unknown unit"),
    ("2930000d", "at most 100 years"), ("1201mo", "at most 100 years"), ("9" * 5000 + "d", "at most 100 years"),
])
def test_clock_refuses_ambiguous_or_far_durations(text, message):
    with pytest.raises(ValueError, match=message):
        parse_step(text)


@pytest.mark.parametrize("start, months, lands", [
    (datetime(2027, 1, 31, 9, tzinfo=NY), 1, datetime(2027, 2, 28, 9, tzinfo=NY)),  # clamped, like billing
    (datetime(2028, 1, 31, 9, tzinfo=NY), 1, datetime(2028, 2, 29, 9, tzinfo=NY)),
    (datetime(2027, 3, 1, 9, tzinfo=NY), 1, datetime(2027, 4, 1, 9, tzinfo=NY)),  # across DST: same wall time
    (datetime(2026, 11, 28, 12, tzinfo=NY), 14, datetime(2028, 1, 28, 12, tzinfo=NY)),
])
def test_a_month_is_a_calendar_month_in_the_site_zone(start, months, lands):
    assert Step(months).after(start.astimezone(UTC), NY) == lands


# --- the clock's reach -------------------------------------------------------------


def test_moves_past_a_hundred_years_are_refused(site_db):
    clock = Clock(site_db, real=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    for move in (lambda: clock.advance(timedelta(days=2930000)), lambda: clock.advance(REACH + timedelta(days=1)),
                 lambda: clock.set(datetime(9999, 12, 31, tzinfo=UTC)),
                 lambda: clock.set(datetime(2126, 1, 3, tzinfo=UTC), freeze=True)):
        with pytest.raises(ClockError, match="at most 100 years past real time"):
            move()
    assert site_db.execute("select count(*) from clock").fetchone()[0] == 0
    clock.set(datetime(2125, 12, 31, tzinfo=UTC), freeze=True)  # just inside
    with pytest.raises(ClockError, match="at most 100 years"):
        clock.advance(timedelta(days=3))


def _clock_row(db):
    return db.execute("select mode, offset_seconds, frozen_at from clock").fetchall()


def _moves(db):
    return db.execute("select count(*) from events where type = 'clock_changed'").fetchone()[0]


@pytest.mark.parametrize("duration", ["2930000d", "36600d", "1201mo", "1m", "99999999999999999999w"])
def test_admin_refuses_far_or_ambiguous_moves(admin, db, clock, duration):  # noqa: F811
    response = admin.post("/admin/clock", {"action": "advance", "duration": duration})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and 'class="field__error"' in page and 'aria-invalid="true"' in page
    assert "min, h, d, w, mo" in page and clock.now() == START and _moves(db) == 0
    assert admin.client.get("/api/health").status_code == 200


def test_admin_buttons_move_a_day_a_week_and_a_calendar_month(admin, db, clock):  # noqa: F811
    page = admin.client.get("/admin/clock").get_data(as_text=True)
    for label, value in (("+1 day", "1d"), ("+1 week", "1w"), ("+1 month", "1mo")):
        assert f'name="duration" value="{value}">{label}</button>' in page
    for value in ("1d", "1w", "1mo"):
        assert admin.post("/admin/clock", {"duration": value}).status_code == 303
    assert clock.now() == datetime(2027, 1, 6, 12, tzinfo=NY)  # 28 Nov + 1d + 1w = 6 Dec 2026; + 1mo = 6 Jan 2027
    history = admin.client.get("/admin/clock").get_data(as_text=True)
    assert all(f"<td>advance {value}</td>" in history for value in ("1d", "1w", "1mo"))


@pytest.mark.parametrize("args, message", [
    (["clock", "advance", "2930000d"], "at most 100 years"),
    (["clock", "advance", "90m"], "ambiguous: write 90min for minutes or 90mo for months"),
    (["clock", "set", "9999-12-31"], "outside the years this site accepts"),
    (["clock", "set", "9999-12-31T23:00-12:00"], "outside the years this site accepts"),  # past datetime.max in UTC
    (["clock", "set", "9999-12-30T00:00"], "outside the years this site accepts"),
    (["clock", "set", "2200-01-01"], "outside the years this site accepts"),
    (["clock", "set", "2150-01-01"], "at most 100 years"),  # a date the site accepts, too far for the clock
])
def test_cli_refuses_far_or_ambiguous_moves(runner, db, args, message):
    before = _clock_row(db)
    result = runner.invoke(args=args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit) and message in result.output
    assert _clock_row(db) == before and _moves(db) == 0


def test_cli_advances_a_calendar_month(runner, db):
    result = runner.invoke(args=["clock", "advance", "1mo"])
    assert result.exit_code == 0 and "2026-12-28T12:00:00-05:00" in result.output
    assert "advance 1mo" in db.execute("select data from events where type = 'clock_changed'").fetchone()[0]


UNUSABLE_ROWS = [
    ("offset", 2930000 * 86400.0, None),  # what a 2930000d advance used to store
    ("offset", 1e300, None),  # overflows timedelta
    ("offset", "soon", None),
    ("frozen", 0.0, "9999-12-31T23:59:59.999999+00:00"),
    ("frozen", 0.0, "0001-01-01T00:00:00-05:00"),  # overflows datetime when read as UTC
    ("frozen", 0.0, "not a date"),
    ("frozen", 0.0, None),
    ("sideways", 0.0, None),
]


@pytest.mark.parametrize("row", UNUSABLE_ROWS)
def test_an_unusable_stored_clock_falls_back_to_real_time(client, runner, db, caplog, row):
    db.execute("update clock set mode = ?, offset_seconds = ?, frozen_at = ? where id = 1", row)
    with caplog.at_level(logging.WARNING, logger="gate.storage.clock"):
        health = client.get("/api/health")
        assert client.get(f"/articles/{METERED}").status_code == 200
    assert health.status_code == 200
    assert abs(datetime.fromisoformat(health.get_json()["now"]) - datetime.now(UTC)) < timedelta(minutes=5)
    assert "the stored clock" in caplog.text and "gate clock reset" in caplog.text
    shown = runner.invoke(args=["clock", "show"])
    assert shown.exit_code == 0 and "[real time]" in shown.output
    reset = runner.invoke(args=["clock", "reset"])
    assert reset.exit_code == 0 and "[real time]" in reset.output
    assert _clock_row(db) == [("real", 0.0, None)]


# --- property: every entry point refuses cleanly or moves forward within reach ------

ENTRY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DURATIONS = st.one_of(
    st.builds("{}{}{}".format, st.integers(0, 10**25), st.sampled_from(["", " "]),
              st.sampled_from(["s", "min", "m", "h", "d", "w", "mo", "y", "M", "D"])),
    st.builds("{}mo{}d".format, st.integers(0, 1300), st.integers(0, 40000)),
    st.text(max_size=20),
)
MOMENTS = st.one_of(
    st.builds("{}{}".format, st.datetimes().map(datetime.isoformat),
              st.sampled_from(["", "Z", "+14:00", "-12:00", "+00:00"])),
    st.text(max_size=30),
)


def _check_move(db, before_row, before_moves, accepted):
    """A refused move stores nothing; an accepted one moves forward and stays within reach."""
    if not accepted:
        assert _clock_row(db) == before_row and _moves(db) == before_moves
        return
    now = Clock(db).now()
    assert _moves(db) == before_moves + 1 and now - datetime.now(UTC) <= REACH


@ENTRY
@given(duration=DURATIONS)
def test_admin_form_never_fails_on_a_duration(admin, db, duration):  # noqa: F811
    before_row, before_moves = _clock_row(db), _moves(db)
    response = admin.post("/admin/clock", {"action": "advance", "duration": duration})
    assert response.status_code in (303, 400)
    _check_move(db, before_row, before_moves, response.status_code == 303)


@ENTRY
@given(duration=DURATIONS)
def test_cli_advance_never_fails_on_a_duration(runner, db, duration):
    before_row, before_moves = _clock_row(db), _moves(db)
    result = runner.invoke(args=["clock", "advance", duration])
    assert result.exit_code in (0, 1, 2) and (result.exception is None or isinstance(result.exception, SystemExit))
    _check_move(db, before_row, before_moves, result.exit_code == 0)


@ENTRY
@given(moment=MOMENTS, freeze=st.booleans())
def test_cli_set_never_fails_on_a_date(runner, db, moment, freeze):
    before_row, before_moves = _clock_row(db), _moves(db)
    result = runner.invoke(args=["clock", "set", moment, *(["--freeze"] if freeze else [])])
    assert result.exit_code in (0, 1, 2) and (result.exception is None or isinstance(result.exception, SystemExit))
    _check_move(db, before_row, before_moves, result.exit_code == 0)
