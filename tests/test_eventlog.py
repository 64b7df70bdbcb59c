"""The background writer for view events (used by `gate serve`)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from gate.storage import engine, eventlog, events
from tests.helpers import BOTH_ENGINES, METERED, Reader


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
        log.rows.put(("2026-11-28T17:00:00.000000+00:00", "article_view", None, f"v{n}", "a", "{}"))
    assert log.flush() == 1200
    assert backend.scalar("select count(*) from events") == 1200
    assert backend.scalar("select count(distinct visitor_id) from events") == 1200


def test_each_batch_is_one_statement_that_commits_by_itself(backend_target, backend, statements):
    """No BEGIN and no COMMIT around a batch: a multi-row insert or a COPY is written whole or not at all."""
    assert eventlog.BATCH * len(events.COLUMNS) <= engine.INSERT_PARAMETERS  # one insert holds a whole batch
    log = eventlog.EventWriter(backend_target)
    for n in range(2 * eventlog.BATCH + 7):
        log.rows.put(("2026-11-28T17:00:00.000000+00:00", "article_view", None, f"v{n}", "a", "{}"))
    assert log.flush() == 2 * eventlog.BATCH + 7
    assert statements["transaction"] == statements["begin"] == statements["commit"] == 0
    assert statements["insert"] == (3 if backend.dialect == "sqlite" else 1)  # PostgreSQL: COPY, but for the 7


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
        log.add(("2026-11-28T17:00:00.000000+00:00", "article_view", None, f"v{n}", "a", "{}"))
    assert _wait_for(backend, 5) == 5 and failures
    assert log.thread.is_alive()  # the writer survived its failed write


def test_a_restarted_writer_keeps_what_was_queued(backend_target, backend):
    db = backend
    log = eventlog.EventWriter(backend_target)
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    log.pid, log.thread = os.getpid(), dead  # this process's writer thread has died
    log.rows.put(("2026-11-28T17:00:00.000000+00:00", "article_view", None, "queued", "a", "{}"))
    log.add(("2026-11-28T17:00:00.000000+00:00", "article_view", None, "after", "a", "{}"))
    assert _wait_for(db, 2) == 2
    assert {row[0] for row in db.execute("select visitor_id from events").fetchall()} == {"queued", "after"}


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
