"""The quota stores: one contract for both, and a real multi-process race."""

from __future__ import annotations

import multiprocessing
import time
from datetime import datetime, timedelta, timezone

import pytest

from gate.rules.paywall import Reason, Spend, Viewer
from gate.simulate.runner import PruningStore
from gate.storage.db import connect, open_site_db
from gate.storage.quota import MemoryQuotaStore, SQLiteQuotaStore

T0 = datetime(2026, 11, 3, 15, 0, tzinfo=timezone.utc)


def _limit(n):
    """An admit rule: fewer than n distinct articles spent so far."""
    return lambda spends: len({s.slug for s in spends}) < n


@pytest.fixture(params=["memory", "sqlite", "pruning"])
def store(request, tmp_path):
    """Each contract test runs against every store (the simulator's pruning one too)."""
    if request.param == "memory":
        yield MemoryQuotaStore()
        return
    if request.param == "pruning":
        yield PruningStore()
        return
    db = open_site_db(tmp_path / "quota.sqlite")
    yield SQLiteQuotaStore(db)
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


def test_reset_forgets(store):
    store.spend("reader:1", "a", "w", T0, _limit(9))
    assert store.reset("reader:1") == 1
    assert store.spends("reader:1") == ()


# --- the race: real processes, one database file -------------------------------

def _slow_limit(n):
    """Like _limit, but slow to decide, as a busy server is: widens any race window."""
    def admit(spends):
        time.sleep(0.003)
        return len({s.slug for s in spends}) < n
    return admit


def _racer(path, meter_key, worker, attempts, start, results):
    """One process: wait for the gun, then try to spend on many different articles."""
    db = connect(path)
    store = SQLiteQuotaStore(db)
    start.wait()
    granted = 0
    for attempt in range(attempts):
        spent, _ = store.spend(meter_key, f"w{worker}-a{attempt}", "month:2026-11",
                               T0 + timedelta(seconds=attempt), _slow_limit(3))
        granted += spent
    db.close()
    results.put(granted)


@pytest.mark.slow
def test_concurrent_processes_never_over_grant(tmp_path):
    """Eight processes race 20 unlocks each for one reader: exactly 3 are granted."""
    path = str(tmp_path / "race.sqlite")
    open_site_db(path).close()
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(path, "reader:7", w, 20, start, results))
             for w in range(8)]
    for proc in procs:
        proc.start()
    start.set()
    granted = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    db = connect(path)
    rows = db.execute("select count(*) from unlocks where meter_key = 'reader:7'").fetchone()[0]
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
    store = SQLiteQuotaStore(db)
    later = T0 + timedelta(milliseconds=5)
    for slug in ("a", "b", "c"):
        store.spend("reader:1", slug, "month:2026-11", later, lambda spends: True)

    class Article:
        slug, section, access_class = "d", "Economy", "metered"

    decision, spent = quota.unlock(store, rules, Viewer("registered", "reader:1"), Article, T0)
    assert spent is False and decision.reason == Reason.METER_EXHAUSTED
    assert len(store.spends("reader:1")) == 3
    db.close()
