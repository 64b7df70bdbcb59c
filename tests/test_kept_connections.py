"""PostgreSQL: each request thread keeps the connection it borrowed, within the pool's room for kept ones."""

from __future__ import annotations

import gc
import threading
import time

import psycopg
import pytest

from gate.storage.db import open_database
from gate.storage.engine import open_postgres, pools
from tests.helpers import Reader, metered_slugs

SIZE = 4  # room for SIZE - 2 kept connections: one is left for the event writer, one spare


def _backend(db) -> int:
    return db.scalar("select pg_backend_pid()")


def _borrowed(url: str) -> int:
    """How many times the pool has lent a connection so far."""
    return pools.by_url[url].get_stats()["requests_num"]


def _in_thread(action):
    """Run ``action`` in a thread of its own that then ends; its answer."""
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(value=action()))
    thread.start()
    thread.join()
    return answer["value"]


def test_a_thread_keeps_its_connection_from_one_seam_to_the_next(pg_database):
    first = open_postgres(pg_database, SIZE, kept=True)
    backend, borrowed = _backend(first), _borrowed(pg_database)
    first.close()
    for _ in range(3):
        again = open_postgres(pg_database, SIZE, kept=True)
        assert _backend(again) == backend
        again.close()
    assert _borrowed(pg_database) == borrowed  # not borrowed from the pool again


def test_a_second_seam_within_one_request_borrows_another_connection(pg_database):
    outer = open_postgres(pg_database, SIZE, kept=True)
    inner = open_postgres(pg_database, SIZE, kept=True)  # the kept one is lent: a connection of its own
    assert _backend(inner) != _backend(outer)
    inner.close()
    outer.close()
    assert pools.by_url[pg_database].get_stats()["pool_available"] >= 1  # the inner one went back


def test_threads_keep_at_most_the_pool_size_less_two_and_the_rest_borrow_per_request(pg_database):
    stay, release = threading.Event(), threading.Event()
    kept = []

    def keeper():
        db = open_postgres(pg_database, SIZE, kept=True)
        kept.append(db.kept is not None)
        db.close()
        stay.set()
        release.wait(10)  # alive: its connection stays kept

    keepers = [threading.Thread(target=keeper) for _ in range(SIZE - 2)]
    for thread in keepers:
        stay.clear()
        thread.start()
        assert stay.wait(10)
    try:
        assert kept == [True] * (SIZE - 2)
        borrowed = _borrowed(pg_database)
        for _ in range(3):  # past the room: borrowed and given back each time, never starving the pool
            db = open_postgres(pg_database, SIZE, kept=True)
            assert db.kept is None and db.scalar("select 1") == 1
            db.close()
        assert _borrowed(pg_database) == borrowed + 3
    finally:
        release.set()
        for thread in keepers:
            thread.join()


def test_a_thread_that_ends_gives_its_connection_back(pg_database):
    def keep_and_end():
        db = open_postgres(pg_database, SIZE, kept=True)
        db.close()
        return db.kept

    kept = _in_thread(keep_and_end)
    gc.collect()
    assert kept.conn is None  # given back with the thread's local slot
    assert pools.by_url[pg_database].get_stats()["pool_available"] >= 1


def test_a_transaction_left_open_is_rolled_back_and_the_connection_kept(pg_database):
    db = open_postgres(pg_database, SIZE, kept=True)
    backend = _backend(db)
    db.execute("begin")
    db.execute("create table left_open (x integer)")
    db.close()
    again = open_postgres(pg_database, SIZE, kept=True)
    assert _backend(again) == backend and not again.in_transaction
    assert not again.has_table("left_open")
    again.close()


def test_a_broken_kept_connection_goes_back_and_the_next_request_gets_a_working_one(pg_database):
    db = open_postgres(pg_database, SIZE, kept=True)
    backend = _backend(db)
    db.close()
    with psycopg.connect(pg_database, autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s)", [backend])
    broken = open_postgres(pg_database, SIZE, kept=True)
    with pytest.raises(psycopg.OperationalError):
        broken.scalar("select 1")
    broken.close()  # no error: it goes back to the pool, which replaces it
    fresh = open_postgres(pg_database, SIZE, kept=True)
    assert fresh.scalar("select 1") == 1 and _backend(fresh) != backend
    fresh.close()


def _ended(database: str, backend: int, within: float = 10.0) -> bool:
    """Whether the server process ``backend`` has gone (a closed connection's process exits a moment later)."""
    deadline = time.monotonic() + within
    with psycopg.connect(database, autocommit=True) as admin:
        while admin.execute("select count(*) from pg_stat_activity where pid = %s", [backend]).fetchone()[0]:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
    return True


def test_closing_the_pool_closes_every_threads_kept_connection(pg_database):
    def keep_and_wait(started, release):
        db = open_postgres(pg_database, SIZE, kept=True)
        backend = _backend(db)
        db.close()  # kept by this thread, which goes on living
        started.append(backend)
        release.wait(10)

    started, release = [], threading.Event()
    thread = threading.Thread(target=keep_and_wait, args=(started, release))
    thread.start()
    try:
        while not started:
            thread.join(0.01)
        pools.close(pg_database)  # before its database is dropped: no connection may stay open
        assert _ended(pg_database, started[0])
    finally:
        release.set()
        thread.join()


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_pages_of_one_thread_run_on_one_kept_connection(client, app):
    Reader(client).signup("kept@example.com")
    url = app.config["DATABASE"]
    db = open_database(url)
    slugs = metered_slugs(db, 3)
    db.close()
    borrowed = _borrowed(url)
    for slug in slugs:
        assert client.get(f"/articles/{slug}").status_code == 200
    assert _borrowed(url) == borrowed  # the test client's requests all run in this thread, on its kept one
