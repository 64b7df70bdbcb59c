"""Meter periods: windows in the site time zone, across DST changes and year ends.

The properties below do not recompute windows the way gate.rules.periods does; they
check what a reader would observe on a wall clock in the site's zone: the
window starts at the first instant of the right local day, ends at the first
instant of the next period, and consecutive windows tile time without gaps.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.rules import periods
from gate.rules.periods import (
    EPOCH,
    Window,
    local_midnight,
    period_window,
    resets_at,
    rolling_days,
    validate_period,
)

UTC = timezone.utc
TICK = timedelta(microseconds=1)
LOW = datetime(1990, 1, 1, tzinfo=UTC)
HIGH = datetime(2060, 12, 31, 23, 59, 59, tzinfo=UTC)

#: Zones with every kind of awkwardness: DST at midnight (Santiago, Havana,
#: Asuncion, Beirut, Sao Paulo), 30-minute DST (Lord_Howe), quarter-hour
#: offsets (Chatham, Kathmandu), negative DST (Dublin), Ramadan DST
#: (Casablanca), skipped calendar days (Apia 2011, Kiritimati 1994), clocks set
#: back across midnight (St John's and Goose Bay until 2011, Casey 2010), none (UTC).
ZONES = (
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Dublin",
    "Europe/Moscow",
    "Australia/Lord_Howe",
    "Australia/Adelaide",
    "America/Santiago",
    "America/Havana",
    "America/Asuncion",
    "America/Sao_Paulo",
    "America/St_Johns",
    "America/Goose_Bay",
    "America/Nuuk",
    "Asia/Beirut",
    "Asia/Tehran",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Africa/Casablanca",
    "Pacific/Chatham",
    "Pacific/Auckland",
    "Pacific/Apia",
    "Pacific/Kiritimati",
    "Antarctica/Casey",
)
#: Local calendar days that never happened: the zone jumped over them.
SKIPPED_DAYS = {
    ("Pacific/Kiritimati", date(1994, 12, 31)),
    ("Pacific/Apia", date(2011, 12, 30)),
}
CALENDAR = ("month", "week", "day")
FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def transitions(name: str) -> tuple[datetime, ...]:
    """Every instant in 1990-2060 at which the zone's UTC offset changes, to the microsecond."""
    tz = ZoneInfo(name)
    found, step = [], timedelta(days=7)
    moment, offset = LOW, LOW.astimezone(tz).utcoffset()
    while moment < HIGH:
        following = moment + step
        after = following.astimezone(tz).utcoffset()
        if after != offset:
            lo, hi = moment, following
            while hi - lo > TICK:
                mid = lo + (hi - lo) // 2
                if mid.astimezone(tz).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
        moment, offset = following, after
    return tuple(found)


def _offsets() -> st.SearchStrategy[timedelta]:
    """A small nudge: a few microseconds, or up to two days either way."""
    return st.one_of(
        st.integers(-3, 3).map(lambda n: n * TICK),
        st.integers(-172_800, 172_800).map(lambda n: timedelta(seconds=n)),
    )


@st.composite
def zoned_instants(draw) -> tuple[str, datetime]:
    """A zone and an aware UTC instant: anywhere, near a DST change, or near a local year/month end."""
    name = draw(st.sampled_from(ZONES))
    tz = ZoneInfo(name)
    kind = draw(st.sampled_from(("anywhere", "transition", "year_end", "month_end")))
    if kind == "transition" and transitions(name):
        base = draw(st.sampled_from(transitions(name)))
    elif kind in ("year_end", "month_end"):
        year = draw(st.integers(1991, 2060))
        month = 1 if kind == "year_end" else draw(st.integers(1, 12))
        base = datetime(year, month, 1, tzinfo=tz).astimezone(UTC)
    else:
        base = draw(st.datetimes(LOW.replace(tzinfo=None), HIGH.replace(tzinfo=None)))
        base = base.replace(tzinfo=UTC)
    moment = base + draw(_offsets())
    return name, min(max(moment, LOW), HIGH)


def next_month(day: date) -> date:
    """The first day of the month after ``day``'s."""
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def expected_bounds(period: str, today: date) -> tuple[date, date, str]:
    """First local day of the period containing ``today``, of the next one, and its key."""
    if period == "day":
        return today, today + timedelta(days=1), f"day:{today:%Y-%m-%d}"
    if period == "week":
        year, week, weekday = today.isocalendar()
        monday = today - timedelta(days=weekday - 1)
        return monday, monday + timedelta(days=7), f"week:{year}-W{week:02d}"
    first = date(today.year, today.month, 1)
    return first, next_month(first), f"month:{today.year:04d}-{today.month:02d}"


def midnight_exists(day: date, tz: ZoneInfo) -> bool:
    """Whether a wall clock in ``tz`` ever reads 00:00 on ``day``."""
    naive = datetime.combine(day, time.min)
    for fold in (0, 1):
        moment = naive.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if moment.astimezone(tz).replace(tzinfo=None) == naive:
            return True
    return False


def assert_first_instant(moment: datetime, day: date, tz: ZoneInfo) -> None:
    """``moment`` is the first instant of local ``day``: 00:00, or later if midnight was skipped.

    A day the zone jumped over has no instants: its successor starts instead.
    """
    while (tz.key, day) in SKIPPED_DAYS:
        day += timedelta(days=1)
    assert moment.utcoffset() == timedelta(0), "windows are returned in UTC"
    local = moment.astimezone(tz)
    assert local.date() == day, f"{moment} is {local} locally, not on {day}"
    assert (moment - TICK).astimezone(tz).date() < day, f"{day} had begun before {moment}"
    if midnight_exists(day, tz):
        assert local.time() == time.min, f"{day} has a midnight but the window starts at {local}"


@FAST
@pytest.mark.parametrize("period", CALENDAR)
@given(case=zoned_instants())
def test_calendar_window_holds_now_and_runs_midnight_to_midnight(period, case):
    name, now = case
    tz = ZoneInfo(name)
    window = period_window(period, now, tz)
    local = now.astimezone(tz)
    first, following, key = expected_bounds(period, local.date())
    if window.key != key:
        # Only where clocks went back across midnight: a repeated hour of
        # yesterday, after the new period had already begun.
        assert local.fold == 1, f"{now} ({local}) is in {window.key}, expected {key}"
        first, following, key = expected_bounds(period, following)

    assert window.start <= now < window.end
    assert window.contains(now)
    assert window.period == period
    assert window.key == key
    assert_first_instant(window.start, first, tz)
    assert_first_instant(window.end, following, tz)
    assert resets_at(window, [now]) == window.end


@FAST
@pytest.mark.parametrize("period", CALENDAR)
@given(case=zoned_instants())
def test_consecutive_windows_tile_time(period, case):
    name, now = case
    tz = ZoneInfo(name)
    window = period_window(period, now, tz)
    following = period_window(period, window.end, tz)
    before = period_window(period, window.start - TICK, tz)

    assert following.start == window.end
    assert following.key != window.key
    assert before.end == window.start
    assert before.key != window.key
    assert not window.contains(window.end)
    assert not window.contains(window.start - TICK)


@FAST
@pytest.mark.parametrize("period", CALENDAR)
@given(case=zoned_instants(), share=st.floats(0, 1))
def test_every_instant_of_a_window_gets_the_same_window(period, case, share):
    name, now = case
    tz = ZoneInfo(name)
    window = period_window(period, now, tz)
    inside = min(window.start + (window.end - window.start) * share, window.end - TICK)

    assert period_window(period, inside, tz) == window
    assert period_window(period, window.start, tz) == window
    assert period_window(period, window.end - TICK, tz) == window


@FAST
@pytest.mark.parametrize("period", CALENDAR)
@given(case=zoned_instants(), steps=st.lists(st.timedeltas(timedelta(days=-40), timedelta(days=40)), max_size=8))
def test_the_kept_window_answers_as_a_fresh_one_whatever_was_asked_before(period, case, steps):
    """Moments asked in any order, near DST changes and period ends, get the window worked out afresh for each."""
    name, now = case
    tz = ZoneInfo(name)
    for moment in [now, *(min(max(now + step, LOW), HIGH) for step in steps), now - TICK, now]:
        fresh = periods._window_at.__wrapped__(period, moment, tz)  # the computation, not its memo
        assert period_window(period, moment, tz) == fresh
        assert fresh.contains(moment)


@FAST
@pytest.mark.parametrize("period", CALENDAR)
@given(case=zoned_instants())
def test_window_ignores_the_offset_now_is_given_in(period, case):
    name, now = case
    tz = ZoneInfo(name)
    elsewhere = now.astimezone(ZoneInfo("Asia/Kathmandu"))
    assert period_window(period, elsewhere, tz) == period_window(period, now, tz)


@FAST
@given(case=zoned_instants())
def test_week_key_is_the_iso_year_and_week_of_the_local_date(case):
    name, now = case
    tz = ZoneInfo(name)
    year, week, _ = now.astimezone(tz).isocalendar()
    window = period_window("week", now, tz)
    assert window.key == f"week:{year}-W{week:02d}"
    assert window.start.astimezone(tz).isoweekday() == 1


@FAST
@given(case=zoned_instants(), days=st.integers(1, 9999), ages=st.lists(st.integers(0, 10**9), max_size=6))
def test_rolling_window_reaches_back_exactly_n_days(case, days, ages):
    name, now = case
    tz = ZoneInfo(name)
    window = period_window(f"rolling:{days}", now, tz)
    span = timedelta(days=days)

    assert window.start == now - span
    assert window.end is None
    assert window.contains(now) and window.contains(window.start)
    assert not window.contains(window.start - TICK)
    assert window.key == f"rolling:{now.astimezone(tz).date().isoformat()}"
    assert rolling_days(window.period) == days

    spent = [now - timedelta(seconds=age) for age in ages]
    recent = [moment for moment in spent if moment >= now - span]
    expected = min(recent) + span if recent else None
    reset = resets_at(window, spent)
    assert reset == expected
    if reset is not None:  # a reset is never in the past
        assert reset > now or reset == now and min(recent) == now - span


@FAST
@given(case=zoned_instants(), other=st.datetimes(LOW.replace(tzinfo=None), HIGH.replace(tzinfo=None)))
def test_lifetime_contains_everything_and_never_resets(case, other):
    name, now = case
    window = period_window("lifetime", now, ZoneInfo(name))
    assert window.start == EPOCH
    assert window.end is None
    assert window.key == "lifetime"
    assert window.contains(now)
    assert window.contains(other.replace(tzinfo=UTC))
    assert resets_at(window, [now, other.replace(tzinfo=UTC)]) is None


@FAST
@given(name=st.sampled_from(ZONES), day=st.dates(date(1990, 1, 1), date(2060, 12, 31)))
def test_local_midnight_is_the_first_instant_of_the_local_day(name, day):
    tz = ZoneInfo(name)
    moment = local_midnight(day, tz)
    if (name, day) in SKIPPED_DAYS:
        assert moment == local_midnight(day + timedelta(days=1), tz)
    assert_first_instant(moment, day, tz)
    assert local_midnight(day + timedelta(days=1), tz) > moment


@pytest.mark.parametrize("name", ("America/Santiago", "America/Havana", "Australia/Lord_Howe"))
def test_transitions_are_found_for_the_zones_under_test(name):
    """The strategy really does aim at DST changes (else the properties would test less)."""
    found = transitions(name)
    assert len(found) > 50
    tz = ZoneInfo(name)
    assert all((t - TICK).astimezone(tz).utcoffset() != t.astimezone(tz).utcoffset() for t in found)


def z(text: str) -> datetime:
    """An ISO instant, aware."""
    return datetime.fromisoformat(text)


NY, LONDON = "America/New_York", "Europe/London"

EXAMPLES = [
    # (zone, period, now, start, end, key)
    # DST ends in New York on 2026-11-01: the month starts in EDT and ends in EST.
    (NY, "month", "2026-11-28T12:00-05:00", "2026-11-01T04:00Z", "2026-12-01T05:00Z", "month:2026-11"),
    # 23:30 on New Year's Eve in New York is already 2027 in UTC, not in the site.
    (NY, "month", "2026-12-31T23:30-05:00", "2026-12-01T05:00Z", "2027-01-01T05:00Z", "month:2026-12"),
    (NY, "month", "2027-01-01T05:00Z", "2027-01-01T05:00Z", "2027-02-01T05:00Z", "month:2027-01"),
    (NY, "month", "2027-01-01T04:59:59.999999Z", "2026-12-01T05:00Z", "2027-01-01T05:00Z", "month:2026-12"),
    (NY, "month", "2026-03-20T12:00Z", "2026-03-01T05:00Z", "2026-04-01T04:00Z", "month:2026-03"),
    (NY, "week", "2026-12-31T23:30-05:00", "2026-12-28T05:00Z", "2027-01-04T05:00Z", "week:2026-W53"),
    (NY, "week", "2027-01-03T12:00-05:00", "2026-12-28T05:00Z", "2027-01-04T05:00Z", "week:2026-W53"),
    (NY, "week", "2024-12-31T12:00-05:00", "2024-12-30T05:00Z", "2025-01-06T05:00Z", "week:2025-W01"),
    (NY, "week", "2021-01-03T12:00-05:00", "2020-12-28T05:00Z", "2021-01-04T05:00Z", "week:2020-W53"),
    (NY, "day", "2026-03-08T12:00-04:00", "2026-03-08T05:00Z", "2026-03-09T04:00Z", "day:2026-03-08"),
    (NY, "day", "2026-11-01T01:30-05:00", "2026-11-01T04:00Z", "2026-11-02T05:00Z", "day:2026-11-01"),
    # London is on BST from 2026-03-29: April begins at 23:00 UTC on March 31.
    (LONDON, "month", "2026-03-31T23:30Z", "2026-03-31T23:00Z", "2026-04-30T23:00Z", "month:2026-04"),
    (LONDON, "month", "2026-03-31T22:59Z", "2026-03-01T00:00Z", "2026-03-31T23:00Z", "month:2026-03"),
    # Lord Howe falls back half an hour at 02:00 on 2026-04-05: a 24.5-hour day.
    ("Australia/Lord_Howe", "day", "2026-04-05T01:45+10:30", "2026-04-04T13:00Z", "2026-04-05T13:30Z", "day:2026-04-05"),
    # Santiago springs forward at midnight on 2026-09-06: that day starts at 01:00.
    ("America/Santiago", "day", "2026-09-06T12:00-03:00", "2026-09-06T04:00Z", "2026-09-07T03:00Z", "day:2026-09-06"),
    ("America/Santiago", "week", "2026-09-01T12:00-04:00", "2026-08-31T04:00Z", "2026-09-07T03:00Z", "week:2026-W36"),
    # Santiago falls back at midnight on 2026-04-05: 23:00-23:59 on the 4th happens twice.
    ("America/Santiago", "day", "2026-04-04T23:30-04:00", "2026-04-04T03:00Z", "2026-04-05T04:00Z", "day:2026-04-04"),
    # Havana springs forward at 00:00 (2026-03-08) and falls back at 01:00 (2026-11-01),
    # so on 2026-11-01 midnight happens twice: the day starts at the first one.
    ("America/Havana", "day", "2026-03-08T12:00-04:00", "2026-03-08T05:00Z", "2026-03-09T04:00Z", "day:2026-03-08"),
    ("America/Havana", "day", "2026-11-01T00:30-05:00", "2026-11-01T04:00Z", "2026-11-02T05:00Z", "day:2026-11-01"),
    ("America/Havana", "month", "2026-11-15T12:00-05:00", "2026-11-01T04:00Z", "2026-12-01T05:00Z", "month:2026-11"),
    ("Asia/Kolkata", "month", "2026-01-15T12:00+05:30", "2025-12-31T18:30Z", "2026-01-31T18:30Z", "month:2026-01"),
    ("Asia/Kolkata", "month", "2025-12-31T18:29:59Z", "2025-11-30T18:30Z", "2025-12-31T18:30Z", "month:2025-12"),
    ("Pacific/Chatham", "month", "2026-01-01T00:00+13:45", "2025-12-31T10:15Z", "2026-01-31T10:15Z", "month:2026-01"),
    ("UTC", "month", "2028-02-29T23:59:59Z", "2028-02-01T00:00Z", "2028-03-01T00:00Z", "month:2028-02"),
    ("UTC", "day", "2060-12-31T23:59:59Z", "2060-12-31T00:00Z", "2061-01-01T00:00Z", "day:2060-12-31"),
    ("Pacific/Apia", "day", "2011-12-31T00:00+14:00", "2011-12-30T10:00Z", "2011-12-31T10:00Z", "day:2011-12-31"),
    # St John's fell back at 00:01 on 1990-10-28, to 23:01 on the 27th: the
    # 28th began at the first midnight, and the repeated hour belongs to it.
    ("America/St_Johns", "day", "1990-10-28T02:30Z", "1990-10-28T02:30Z", "1990-10-29T03:30Z", "day:1990-10-28"),
    ("America/St_Johns", "day", "1990-10-28T02:31Z", "1990-10-28T02:30Z", "1990-10-29T03:30Z", "day:1990-10-28"),
    ("America/St_Johns", "day", "1990-10-28T03:29Z", "1990-10-28T02:30Z", "1990-10-29T03:30Z", "day:1990-10-28"),
    ("America/St_Johns", "day", "1990-10-28T02:29Z", "1990-10-27T02:30Z", "1990-10-28T02:30Z", "day:1990-10-27"),
]


@pytest.mark.parametrize("name, period, now, start, end, key", EXAMPLES)
def test_window_examples(name, period, now, start, end, key):
    window = period_window(period, z(now), ZoneInfo(name))
    assert window == Window(period, z(start), z(end), key)


def test_new_year_in_new_york_opens_the_january_window():
    tz = ZoneInfo(NY)
    december = period_window("month", z("2026-12-31T23:30-05:00"), tz)
    january = period_window("month", december.end, tz)
    assert january.start == z("2027-01-01T05:00Z")
    assert january.key == "month:2027-01"


@pytest.mark.parametrize(
    "name, day, expected",
    [
        (NY, date(2026, 11, 1), "2026-11-01T04:00Z"),
        (NY, date(2026, 11, 2), "2026-11-02T05:00Z"),
        ("America/Santiago", date(2026, 9, 6), "2026-09-06T04:00Z"),
        ("America/Havana", date(2026, 3, 8), "2026-03-08T05:00Z"),
        ("America/Havana", date(2026, 11, 1), "2026-11-01T04:00Z"),
        ("Australia/Lord_Howe", date(2026, 4, 6), "2026-04-05T13:30Z"),
        ("Asia/Kolkata", date(1990, 1, 1), "1989-12-31T18:30Z"),
        ("UTC", date(2060, 12, 31), "2060-12-31T00:00Z"),
    ],
)
def test_local_midnight_examples(name, day, expected):
    assert local_midnight(day, ZoneInfo(name)) == z(expected)


def test_rolling_examples():
    now = z("2026-11-28T17:00Z")
    window = period_window("rolling:30", now, ZoneInfo(NY))
    assert window == Window("rolling:30", z("2026-10-29T17:00Z"), None, "rolling:2026-11-28")
    spent = [now - timedelta(days=40), now - timedelta(days=20), now - timedelta(days=10)]
    assert resets_at(window, spent) == now + timedelta(days=10)
    assert resets_at(window, [now - timedelta(days=40)]) is None
    assert resets_at(window, []) is None


def test_calendar_window_resets_at_its_end_even_with_no_spends():
    window = period_window("month", z("2026-11-28T17:00Z"), ZoneInfo(NY))
    assert resets_at(window, []) == z("2026-12-01T05:00Z")


@pytest.mark.parametrize(
    "period",
    ["rolling:0", "rolling:x", "rolling:", "rolling:-1", "rolling:01", "rolling:10000",
     "monthly", "Month", " month", "month ", "weekly", "year", "fortnight", ""],
)
def test_validate_period_rejects(period):
    problem = validate_period(period)
    assert problem and "rolling:N" in problem
    with pytest.raises(ValueError):
        period_window(period, z("2026-11-28T17:00Z"), ZoneInfo(NY))


@pytest.mark.parametrize("period", ["month", "week", "day", "lifetime", "rolling:1", "rolling:9999"])
def test_validate_period_accepts(period):
    assert validate_period(period) is None
    assert period_window(period, z("2026-11-28T17:00Z"), ZoneInfo(NY)).contains(z("2026-11-28T17:00Z"))


def test_naive_now_is_refused():
    period_window("month", datetime(2026, 11, 28, 12, tzinfo=UTC), ZoneInfo(NY))  # a window kept for the zone
    with pytest.raises(ValueError, match="timezone-aware"):
        period_window("month", datetime(2026, 11, 28, 12), ZoneInfo(NY))
