"""The rate-limit storage contract, on SQLite and on PostgreSQL: counts, windows, concurrency."""

from __future__ import annotations

import threading

import pytest
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from gate.storage import engine, ratelimits


class Clock:
    """Stands in for the time module inside gate.storage.ratelimits."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(ratelimits, "time", fake)
    return fake


@pytest.fixture
def storage(backend_target):
    """The storage the site would pick for this database (a path or a PostgreSQL URL)."""
    store = storage_from_string(ratelimits.storage_uri(backend_target))
    yield store
    if engine.is_url(backend_target):
        engine.pools.close(ratelimits.pool_url(backend_target))


def test_the_site_database_picks_its_engines_storage(backend_target, storage):
    expected = ratelimits.PostgresStorage if engine.is_url(backend_target) else ratelimits.SQLiteStorage
    assert type(storage) is expected and storage.check()


def test_hits_count_up_within_a_window_and_start_over_after_it(storage, clock):
    assert [storage.incr("login:203.0.113.9", 60) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert storage.get("login:203.0.113.9") == 5 and storage.get_expiry("login:203.0.113.9") == clock.now + 60
    assert storage.incr("login:198.51.100.7", 60) == 1  # another key has its own count
    clock.now += 59
    assert storage.incr("login:203.0.113.9", 60) == 6  # the window has not moved
    clock.now += 1
    assert storage.get("login:203.0.113.9") == 0  # expired
    assert storage.incr("login:203.0.113.9", 60, amount=2) == 2  # a new window from now
    assert storage.get_expiry("login:203.0.113.9") == clock.now + 60


def test_clear_and_reset_forget_counts(storage, clock):
    storage.incr("a", 60), storage.incr("a", 60), storage.incr("b", 60)
    storage.clear("a")
    assert storage.get("a") == 0 and storage.get("b") == 1
    storage.reset()
    assert storage.get("b") == 0 and storage.incr("b", 60) == 1


def test_the_limiter_refuses_the_hit_over_the_limit(storage):
    limiter, limit = FixedWindowRateLimiter(storage), parse("3 per minute")
    assert [limiter.hit(limit, "unlock", "reader:7") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(limit, "unlock", "reader:8")


def test_concurrent_hits_from_threads_count_exactly(backend_target, storage):
    """Eight threads (as gunicorn threads, or workers on several nodes) hit one key 25 times each."""
    threads, hits = 8, 25
    seen: list[int] = []
    start = threading.Barrier(threads)
    store = [storage_from_string(ratelimits.storage_uri(backend_target)) for _ in range(threads)]  # a worker each

    def worker(index: int) -> None:
        start.wait()
        counts = [store[index].incr("checkout:203.0.113.9", 3600) for _ in range(hits)]
        seen.extend(counts)

    running = [threading.Thread(target=worker, args=(index,)) for index in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    assert sorted(seen) == list(range(1, threads * hits + 1))  # every hit saw its own count: none lost
    assert storage.get("checkout:203.0.113.9") == threads * hits
