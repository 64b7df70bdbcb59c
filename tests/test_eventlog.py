"""The background writer for view events (used by `gate serve`)."""

from __future__ import annotations

import os
import threading
import time

from gate.storage import eventlog
from tests.helpers import METERED, Reader


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


def test_flush_writes_everything_queued(tmp_path):
    from gate.storage.db import open_site_db

    path = str(tmp_path / "log.sqlite")
    db = open_site_db(path)
    log = eventlog.EventWriter(path)
    for n in range(1200):  # more than one batch
        log.rows.put(("2026-11-28T17:00:00.000000+00:00", "article_view", None, f"v{n}", "a", "{}"))
    assert log.flush() == 1200
    assert db.execute("select count(*) from events").fetchone() == (1200,)
    db.close()


def test_spends_are_never_buffered(app, db):
    app.config["EVENT_BUFFER"] = True
    person = Reader(app.test_client())
    person.signup("unbuffered@example.com")
    person.unlock(METERED)
    assert db.execute("select count(*) from events where type = 'unlock'").fetchone() == (1,)
    assert db.execute("select count(*) from unlocks").fetchone() == (1,)


def test_a_failed_write_is_retried_not_dropped(tmp_path, monkeypatch):
    import sqlite3

    from gate.storage.db import open_site_db

    path = str(tmp_path / "retry.sqlite")
    db = open_site_db(path)
    log = eventlog.EventWriter(path)
    monkeypatch.setattr(eventlog, "RETRY_SECONDS", 0.01)
    real_write, failures = log._write, []

    def flaky(conn, batch):
        if not failures:
            failures.append(len(batch))
            raise sqlite3.OperationalError("database is locked")
        real_write(conn, batch)

    monkeypatch.setattr(log, "_write", flaky)
    for n in range(5):
        log.add(("2026-11-28T17:00:00.000000+00:00", "article_view", None, f"v{n}", "a", "{}"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and db.execute("select count(*) from events").fetchone()[0] < 5:
        time.sleep(0.02)
    assert failures and db.execute("select count(*) from events").fetchone() == (5,)
    assert log.thread.is_alive()  # the writer survived its failed write
    db.close()


def test_a_restarted_writer_keeps_what_was_queued(tmp_path):
    from gate.storage.db import open_site_db

    path = str(tmp_path / "restart.sqlite")
    db = open_site_db(path)
    log = eventlog.EventWriter(path)
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    log.pid, log.thread = os.getpid(), dead  # this process's writer thread has died
    log.rows.put(("2026-11-28T17:00:00.000000+00:00", "article_view", None, "queued", "a", "{}"))
    log.add(("2026-11-28T17:00:00.000000+00:00", "article_view", None, "after", "a", "{}"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and db.execute("select count(*) from events").fetchone()[0] < 2:
        time.sleep(0.02)
    assert {row[0] for row in db.execute("select visitor_id from events")} == {"queued", "after"}
    db.close()
