"""The quota stores: one contract for all, and real races on both engines (processes, and a merge)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from gate.rules.paywall import Reason, Spend, Viewer
from gate.simulate.runner import PruningStore
from gate.storage.db import open_database, open_site_db
from gate.storage.quota import MemoryQuotaStore, SqlQuotaStore
from tests.helpers import race_processes

T0 = datetime(2026, 11, 3, 15, 0, tzinfo=timezone.utc)


def _limit(n):
    """An admit rule: fewer than n distinct articles spent so far."""
    return lambda spends: len({s.slug for s in spends}) < n


@pytest.fixture(params=["memory", "sqlite", "postgresql", "pruning"])
def store(request, tmp_path):
    """Each contract test runs against every store (the SQL one on both engines, the simulator's too)."""
    if request.param == "memory":
        yield MemoryQuotaStore()
        return
    if request.param == "pruning":
        yield PruningStore()
        return
    target = tmp_path / "quota.sqlite" if request.param == "sqlite" else request.getfixturevalue("pg_database")
    db = open_site_db(target)
    yield SqlQuotaStore(db)
    db.close()


def test_empty_meter_has_no_spends(store):
    assert store.spends("reader:1") == ()


def test_spend_records_in_time_order(store):
    assert store.spend("reader:1", "b", "month:2026-11", T0 + timedelta(hours=1), _limit(3))[0]
    assert store.spend("reader:1", "a", "month:2026-11", T0, _limit(3))[0]
    assert store.spends("reader:1") == (Spend("a", T0), Spend("b", T0 + timedelta(hours=1)))


def test_admit_false_spends_nothing(store):
    spent, after = store.spend("reader:1", "a", "w", T0, lambda spends: False)
    assert (spent, after) == (False, ())
    assert store.spends("reader:1") == ()


def test_limit_is_never_exceeded(store):
    results = [store.spend("reader:1", f"s{i}", "w", T0, _limit(3))[0] for i in range(6)]
    assert results == [True, True, True, False, False, False]
    assert len(store.spends("reader:1")) == 3


def test_same_article_same_window_spends_once(store):
    always = lambda spends: True  # noqa: E731 - even a permissive rule cannot double-spend
    assert store.spend("reader:1", "a", "w1", T0, always)[0] is True
    assert store.spend("reader:1", "a", "w1", T0, always)[0] is False
    assert store.spend("reader:1", "a", "w2", T0 + timedelta(days=31), always)[0] is True
    assert len(store.spends("reader:1")) == 2


def test_meters_are_separate(store):
    store.spend("reader:1", "a", "w", T0, _limit(1))
    assert store.spend("reader:2", "a", "w", T0, _limit(1))[0] is True
    assert len(store.spends("reader:1")) == 1


def test_merge_moves_without_double_counting(store):
    store.spend("visitor:v", "a", "w", T0, _limit(9))
    store.spend("visitor:v", "b", "w", T0, _limit(9))
    store.spend("reader:1", "a", "w", T0, _limit(9))
    assert store.merge("visitor:v", "reader:1") == 1
    assert {s.slug for s in store.spends("reader:1")} == {"a", "b"}
    assert store.spends("visitor:v") == ()
    assert len(store.spends("reader:1")) == 2


def test_a_spend_keeps_a_dynamic_meters_score_and_allowance_through_a_merge(store):
    always = lambda spends: True  # noqa: E731
    assert store.spend("visitor:v", "a", "w", T0, always, score=42, allowance=3)[0]
    assert store.spend("visitor:v", "b", "w", T0 + timedelta(minutes=1), always)[0]  # a fixed meter's: none
    store.merge("visitor:v", "reader:1")
    assert [(g.slug, g.score, g.allowance) for g in store.grants("reader:1")] == [("a", 42, 3), ("b", None, None)]
    assert store.grants("visitor:v") == ()


def test_reset_forgets(store):
    store.spend("reader:1", "a", "w", T0, _limit(9))
    assert store.reset("reader:1") == 1
    assert store.spends("reader:1") == ()


# --- the races: real processes (and threads), one database, on each engine -------------

def _slow_limit(n):
    """Like _limit, but slow to decide, as a busy server is: widens any race window."""
    def admit(spends):
        time.sleep(0.003)
        return len({s.slug for s in spends}) < n
    return admit


def _racer(target, meter_key, worker, attempts, start, results):
    """One process: wait for the gun, then try to spend on many different articles."""
    db = open_database(target, 2)
    store = SqlQuotaStore(db)
    start.wait()
    granted = 0
    for attempt in range(attempts):
        spent, _ = store.spend(meter_key, f"w{worker}-a{attempt}", "month:2026-11",
                               T0 + timedelta(seconds=attempt), _slow_limit(3))
        granted += spent
    db.close()
    results.put(granted)


@pytest.mark.slow
def test_concurrent_processes_never_over_grant(backend_target):
    """Eight processes race 20 unlocks each for one reader: exactly 3 are granted (on each engine)."""
    granted = race_processes(_racer, [(backend_target, "reader:7", w, 20) for w in range(8)])
    db = open_database(backend_target)
    rows = db.scalar("select count(*) from unlocks where meter_key = 'reader:7'")
    db.close()
    assert sum(granted) == 3
    assert rows == 3


def test_a_stale_snapshot_and_a_later_clock_still_cannot_over_grant(tmp_path):
    """Request A read the clock at t; B, C, D spent at t+5ms and committed first.
    A's check inside the transaction must see them all."""
    from gate.conf.settings import Config
    from gate.storage import quota

    rules = Config().preset("wpr")
    db = open_site_db(tmp_path / "stale.sqlite")
    store = SqlQuotaStore(db)
    later = T0 + timedelta(milliseconds=5)
    for slug in ("a", "b", "c"):
        store.spend("reader:1", slug, "month:2026-11", later, lambda spends: True)

    class Article:
        slug, section, access_class = "d", "Economy", "metered"

    decision, spent = quota.unlock(store, rules, Viewer("registered", "reader:1"), Article, T0)
    assert spent is False and decision.reason == Reason.METER_EXHAUSTED
    assert len(store.spends("reader:1")) == 3
    db.close()


def _pausing(db, method: str, seconds: float, starting: str = ""):
    """``db`` pausing after each call of ``method`` (whose SQL starts ``starting``): a race window held open."""
    original = getattr(db, method)

    def paused(first, *args):
        result = original(first, *args)
        if first.startswith(starting):
            time.sleep(seconds)
        return result

    setattr(db, method, paused)
    return db


def _run_together(*jobs) -> list[BaseException]:
    """Start every job at once in its own thread; the errors they raised."""
    gun, errors = threading.Barrier(len(jobs)), []

    def run(job):
        gun.wait()
        try:
            job()
        except BaseException as error:  # noqa: BLE001 - reported to the test
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_a_merge_racing_spends_loses_and_doubles_none(backend_target):
    """Spends on a visitor's meter while it merges into the account: every granted spend ends up
    exactly once, on the account (moved) or on the visitor (spent after the merge).

    The merge pauses between copying and deleting; without the visitor meter's lock a
    spend committed in that pause would be deleted unmoved on PostgreSQL."""
    setup = open_database(backend_target)
    store = SqlQuotaStore(setup)
    for meter, slug in (("reader:1", "r0"), ("visitor:v", "v0"), ("visitor:v", "v1")):
        store.spend(meter, slug, "w", T0, _limit(99))
    granted = []

    def spender(worker):
        def spend():
            db = open_database(backend_target)
            try:
                for attempt in range(8):
                    slug = f"t{worker}-{attempt}"
                    if SqlQuotaStore(db).spend("visitor:v", slug, "w", T0, _slow_limit(99))[0]:
                        granted.append(slug)
            finally:
                db.close()
        return spend

    def merger():
        db = _pausing(open_database(backend_target), "execute", 0.2, "insert into unlocks")
        try:
            time.sleep(0.02)
            SqlQuotaStore(db).merge("visitor:v", "reader:1")
        finally:
            db.close()

    assert _run_together(merger, *(spender(n) for n in range(4))) == []
    on_reader = {s.slug for s in store.spends("reader:1")}
    on_visitor = {s.slug for s in store.spends("visitor:v")}
    total = setup.scalar("select count(*) from unlocks")
    setup.close()
    assert {"r0", "v0", "v1"} <= on_reader and not on_reader & on_visitor
    assert on_reader | on_visitor == {"r0", "v0", "v1", *granted}
    assert total == 3 + len(granted)


def test_two_merges_across_the_same_meters_do_not_deadlock(backend_target):
    """Each merge locks both meters in one order, so opposite merges at once wait, never deadlock."""
    setup = open_database(backend_target)
    store = SqlQuotaStore(setup)
    store.spend("visitor:a", "x", "w", T0, _limit(9))
    store.spend("visitor:b", "y", "w", T0, _limit(9))

    def merge(source, target):
        def run():
            db = _pausing(open_database(backend_target), "lock", 0.2)
            try:
                SqlQuotaStore(db).merge(source, target)
            finally:
                db.close()
        return run

    assert _run_together(merge("visitor:a", "visitor:b"), merge("visitor:b", "visitor:a")) == []
    spends = store.spends("visitor:a") + store.spends("visitor:b")
    setup.close()
    assert sorted(s.slug for s in spends) == ["x", "y"]
