"""The background writer for view events (used by `gate serve`)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import datetime
from types import SimpleNamespace

import pytest

from gate.storage import engine, eventlog, events
from gate.storage.db import open_site_db
from tests.helpers import BOTH_ENGINES, METERED, VIEWED_AT, Reader, pending_view


def test_buffered_views_reach_the_events_table(app, db):
    app.config["EVENT_BUFFER"] = True
    person = Reader(app.test_client())
    for _ in range(3):
        person.client.get(f"/articles/{METERED}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        count = db.execute("select count(*) from events where type = 'article_view'").fetchone()[0]
        if count == 3:
            break
        time.sleep(0.02)
    assert count == 3
    assert db.execute("select count(*) from events where type = 'gate_impression'").fetchone()[0] == 3
    row = next(db.query("select * from events where type = 'gate_impression'"))
    assert row["slug"] == METERED and row["visitor_id"] and '"offer": "register"' in row["data"]


def test_flush_writes_everything_queued(backend_target, backend):
    log = eventlog.EventWriter(backend_target)
    for n in range(1200):  # more than one batch
        log.rows.put(pending_view(f"v{n}"))
    assert log.flush() == 1200
    assert backend.scalar("select count(*) from events") == 1200
    assert backend.scalar("select count(distinct visitor_id) from events") == 1200


def test_each_batch_is_written_whole_in_one_commit(backend_target, backend, statements):
    """PostgreSQL: one COPY (a multi-row insert below COPY_FROM rows) with no BEGIN or COMMIT around it;
    SQLite: multi-row inserts of a power of two rows each, in one transaction a batch."""
    assert eventlog.BATCH * len(events.COLUMNS) <= engine.INSERT_PARAMETERS  # one insert could hold a whole batch
    log = eventlog.EventWriter(backend_target)
    for n in range(2 * eventlog.BATCH + 7):
        log.rows.put(pending_view(f"v{n}"))
    assert log.flush() == 2 * eventlog.BATCH + 7
    assert statements["begin"] == statements["commit"] == 0  # none sent as statements of their own
    if backend.dialect == "sqlite":  # 500 rows as 256 + 128 + 64 + 32 + 16 + 4, and 7 as 4 + 2 + 1
        assert statements["transaction"] == 3
        assert statements["insert"] == sum(rows.bit_count() for rows in (eventlog.BATCH, eventlog.BATCH, 7))
    else:
        assert statements["transaction"] == 0 and statements["insert"] == 1  # COPY, but for the 7


def test_a_batch_that_fails_part_way_writes_none_of_its_rows(tmp_path, monkeypatch):
    """SQLite writes a batch in several statements, in one transaction: a failure leaves no part of it.

    (PostgreSQL writes it as one COPY, or one insert below COPY_FROM rows: whole by itself.)
    """
    db = open_site_db(tmp_path / "events.sqlite")
    try:
        sent, real = [], type(db).execute

        def failing(self, sql, params=()):  # the batch's second insert fails
            if sql.startswith("insert into events"):
                if sent:
                    raise RuntimeError("the disk filled up")
                sent.append(sql)
            return real(self, sql, params)

        monkeypatch.setattr(type(db), "execute", failing)
        before = db.scalar("select count(*) from events")
        with pytest.raises(RuntimeError):
            events.record_rows(db, events.as_rows([pending_view(f"v{n}") for n in range(300)]))
        monkeypatch.undo()
        assert len(sent) == 1 and db.scalar("select count(*) from events") == before
        assert not db.in_transaction
    finally:
        db.close()


def test_a_backlog_is_written_at_once_in_full_batches_not_a_batch_a_wait(backend_target, backend, monkeypatch):
    """After its wait the writer writes all that is queued, a batch after each full one, and only then waits again."""
    log, left, real_sleep = eventlog.EventWriter(backend_target), [], time.sleep

    def wait(seconds):  # what is still queued at each of the writer's waits between batches
        if seconds == eventlog.FLUSH_SECONDS and threading.current_thread() is log.thread:  # not another test's
            left.append(log.rows.qsize())
        real_sleep(0.01)

    monkeypatch.setattr(eventlog, "time", SimpleNamespace(sleep=wait))
    queued = 2 * eventlog.BATCH + 7
    for n in range(queued - 1):
        log.rows.put(pending_view(f"v{n}"))
    log.add(pending_view("last"))  # starts the thread, the backlog already queued
    assert _wait_for(backend, queued) == queued
    deadline = time.monotonic() + 5
    while len(left) < 2 and time.monotonic() < deadline:
        real_sleep(0.01)
    assert left[0] >= queued - 1 and left[1] == 0  # the whole backlog between the first wait and the second
    # (the thread starts as the last view is queued, so its first wait may come just before that view)


def test_a_flush_returns_once_every_row_queued_before_it_is_written(backend_target, backend, monkeypatch):
    """At exit a flush first lets the thread finish the batch it has in hand: no view queued before it is lost."""
    log, in_hand, real_write = eventlog.EventWriter(backend_target), threading.Event(), eventlog.EventWriter._write

    def slow(db, batch):  # the thread's batch is out of the queue for a while before it is written
        in_hand.set()
        time.sleep(0.3)
        real_write(log, db, batch)

    monkeypatch.setattr(log, "_write", slow)
    log.add(pending_view("in-hand"))
    assert in_hand.wait(5)
    log.flush()
    assert [row[0] for row in backend.execute("select visitor_id from events").fetchall()] == ["in-hand"]
    log.add(pending_view("queued"))  # and one still queued when the flush comes: written once, by one of them
    log.flush()
    time.sleep(3 * eventlog.FLUSH_SECONDS)
    assert sorted(row[0] for row in backend.execute("select visitor_id from events").fetchall()) == [
        "in-hand", "queued"]


def test_a_forked_childs_flush_leaves_its_parents_queue_to_the_parent(backend_target, backend):
    log = eventlog.EventWriter(backend_target)
    log.pid = -1  # as a child finds its parent's writer after the fork, before any view of its own
    log.rows.put(pending_view("parents"))
    assert log.flush() == 0 and backend.scalar("select count(*) from events") == 0


def test_spends_are_never_buffered(app, db):
    app.config["EVENT_BUFFER"] = True
    person = Reader(app.test_client())
    person.signup("unbuffered@example.com")
    person.unlock(METERED)
    assert db.execute("select count(*) from events where type = 'unlock'").fetchone() == (1,)
    assert db.execute("select count(*) from unlocks").fetchone() == (1,)


def _wait_for(db, count: int) -> int:
    """The number of events once it reaches ``count``, or after five seconds."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and db.scalar("select count(*) from events") < count:
        time.sleep(0.02)
    return db.scalar("select count(*) from events")


@pytest.mark.parametrize("dropped", [False, True], ids=["busy", "connection-dropped"])
def test_a_failed_write_is_retried_not_dropped(backend_target, backend, monkeypatch, dropped):
    """A busy database, or a connection the server closed (a restart, a failover): retried on a fresh one."""
    import psycopg

    log = eventlog.EventWriter(backend_target)
    monkeypatch.setattr(eventlog, "RETRY_SECONDS", 0.01)
    real_write, failures = log._write, []

    def flaky(db, batch):
        if not failures:
            failures.append(len(batch))
            if not dropped:
                raise sqlite3.OperationalError("database is locked")
            db.conn.close()
            raise (psycopg.OperationalError if db.dialect == "postgresql" else sqlite3.ProgrammingError)("gone")
        real_write(db, batch)

    monkeypatch.setattr(log, "_write", flaky)
    for n in range(5):
        log.add(pending_view(f"v{n}"))
    assert _wait_for(backend, 5) == 5 and failures
    assert log.thread.is_alive()  # the writer survived its failed write


def test_a_restarted_writer_keeps_what_was_queued(backend_target, backend, monkeypatch):
    db = backend
    log = eventlog.EventWriter(backend_target)
    monkeypatch.setattr(log, "_serve", lambda: None)  # this writer thread ends as soon as it starts
    log.add(pending_view("queued"))
    log.thread.join(5)
    assert not log.thread.is_alive() and not log.running
    monkeypatch.undo()
    log.add(pending_view("after"))  # a new thread, which writes what the first left queued
    assert log.running and log.thread.is_alive()
    assert _wait_for(db, 2) == 2
    assert {row[0] for row in db.execute("select visitor_id from events").fetchall()} == {"queued", "after"}


def test_a_forked_childs_writer_is_its_own(backend_target, backend):
    """A forked worker inherits the parent's writer as it was: it starts its own thread, with its own queue."""
    log = eventlog.EventWriter(backend_target)
    log.pid, log.running = -1, True  # as a child finds its parent's writer after the fork
    log.rows.put(pending_view("parents"))  # the parent's to write
    log.add(pending_view("childs"))
    assert log.pid == os.getpid() and log.running and log.thread.ident != threading.get_ident()
    assert _wait_for(backend, 1) == 1
    assert [row[0] for row in backend.execute("select visitor_id from events").fetchall()] == ["childs"]


def test_an_events_data_is_the_json_it_always_was():
    """The shared encoder writes what json.dumps(data, default=str) wrote: dates as text, non-ASCII escaped."""
    import json
    from datetime import datetime, timezone

    from gate.storage import events

    at = datetime(2026, 11, 28, 17, tzinfo=timezone.utc)
    data = {"from": "trialing", "until": at, "note": "café", "n": 3, "none": None}
    token = events.TAGS.set({"variants": {"headline": "b"}})
    try:
        written = events.row("article_view", at, slug="a", **data)[5]
    finally:
        events.TAGS.reset(token)
    assert written == json.dumps({"variants": {"headline": "b"}, **data}, default=str)


def test_a_queued_events_tags_are_its_requests_though_its_text_is_made_later():
    """A page queues its events with the tags of its request; the writer makes their text after the request ended."""
    token = events.TAGS.set(lambda: {"variants": {"headline": "b"}})
    try:
        queued = events.pending(VIEWED_AT, [("article_view", {"access": "teaser"}), ("gate_impression", {"offer": "register"})],
                                visitor_id="v", slug="a")
    finally:
        events.TAGS.reset(token)
    written = events.as_rows(queued)  # as the writer's thread makes them, with no tags of its own
    assert [row[5] for row in written] == ['{"variants": {"headline": "b"}, "access": "teaser"}',
                                         '{"variants": {"headline": "b"}, "offer": "register"}']
    assert written[0][:5] == ("2026-11-28T17:00:00.000000+00:00", "article_view", None, "v", "a")
    token = events.TAGS.set({"variants": {"headline": "b"}})
    try:
        assert written == [events.row("article_view", VIEWED_AT, visitor_id="v", slug="a", access="teaser"),
                           events.row("gate_impression", VIEWED_AT, visitor_id="v", slug="a", offer="register")]
    finally:
        events.TAGS.reset(token)


@pytest.mark.parametrize("at, typed", [(datetime(2026, 11, 28, 17), [("article_view", {})]),
                                       (VIEWED_AT, [("article_view", {}), ("no_such_event", {})])])
def test_an_event_that_cannot_be_written_is_refused_in_the_request_that_made_it(at, typed):
    """A time without a zone, or an undeclared type, fails where it is made, before the writer's thread sees it."""
    log = eventlog.EventWriter(":memory:")
    with pytest.raises((ValueError, events.UnknownEvent)):
        log.add(*events.pending(at, typed, visitor_id="v", slug="a"))
    assert log.rows.empty() and log.thread is None


#: The reads of a reader's events, and the dynamic meter's count of their reads in a window.
BY_READER = ("select * from events where reader_id = ? order by id desc limit 200",
             "select count(*) from events e where e.type = 'article_view' and e.reader_id = ? and e.at >= ?")


def _events_indexes(db) -> dict[str, str]:
    """The events table's indexes and their definitions, lower-cased with PostgreSQL's brackets round WHERE gone."""
    if db.dialect == "sqlite":
        found = db.execute("select name, sql from sqlite_master where type = 'index' and tbl_name = 'events'")
    else:
        found = db.execute("select indexname, indexdef from pg_indexes where schemaname = current_schema()"
                           " and tablename = 'events'")
    return {name: (sql or "").lower().replace("where (", "where ").rstrip(")") for name, sql in found}


@BOTH_ENGINES
def test_a_readers_events_are_one_index_that_visitors_events_stay_out_of(db):
    """One partial index (a visitor's event adds no entry, a reader's view one): both reads by reader use it."""
    if db.dialect == "sqlite":
        for sql in BY_READER:
            plan = " ".join(row[3] for row in db.execute(f"explain query plan {sql}", [1, "2026"][:sql.count("?")]))
            assert "idx_events_by_reader" in plan, plan
    indexes = _events_indexes(db)
    assert "(reader_id, type, at) where reader_id is not null" in indexes["idx_events_by_reader"]
    assert not indexes.keys() & {"idx_events_reader_id_at", "idx_events_reads_by_reader"}
