"""A per-process writer for the high-volume reading events (views and gate impressions).

Every article view appends two events. Written inside the request, they make
each page wait for SQLite's single write lock behind every other request.
Under `gate serve` they go to this writer instead: a background thread that
commits whatever has queued every quarter of a second, up to :data:`BATCH`
rows at a time, each batch whole or not at all: on PostgreSQL one COPY, which
commits whole by itself (one round trip a batch, not three with a BEGIN and a
COMMIT); on SQLite a few multi-row inserts of a power of two rows each, in
one transaction (see :meth:`gate.storage.engine.SqliteDatabase.insert_rows`).
It opens its own connection in its thread, on either engine (on
PostgreSQL, one more from the process's pool). A view queues its events with
their tags, as a datetime and a dict; the thread turns a whole batch into text
in one loop, where each view turning its own would run that code cold, between
two pages.
Everything else (signups, unlocks, payments, enrollments) is still written
in its request's own transaction. A graceful stop writes every view queued
(the flush at exit waits for the batch the thread has in hand); a hard kill
can lose the views of the last quarter of a second, never a spend, a charge
or a consent.
"""

from __future__ import annotations

import atexit
import queue
import sqlite3
import sys
import threading
import time

from gate.storage import events, forks
from gate.storage.db import open_database
from gate.storage.engine import INSERT_PARAMETERS

#: How long views gather between two batches. A batch costs something of its own besides its
#: rows (the thread's wake-up, the statement, the commit; on PostgreSQL the server's work around a COPY),
#: so fewer, larger batches are cheaper for each page: over HTTP, in alternating rounds, 0.25 s against
#: 0.05 s served the article pages 3% and 1.5% more requests a second at the median of two pairings.
#: Views reach the table (the console, the dynamic meter's count of reads) that much later.
FLUSH_SECONDS = 0.25
RETRY_SECONDS = 1.0
#: How long a flush waits for the rows the writer's thread has in hand (a write that keeps failing holds them).
IN_HAND_SECONDS = 5.0
#: Rows a batch holds at most: as many as one multi-row insert carries.
BATCH = INSERT_PARAMETERS // len(events.COLUMNS)


class EventWriter:
    """Queue rows for the events table; one thread per process commits them in batches."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows = queue.SimpleQueue()  # put and get in C: a view pays one call, not a lock and a condition
        self.pid = None
        self.thread = None
        #: Whether process ``pid``'s writer thread runs: set as it starts, cleared as it ends, however it ends.
        #: A view reads this flag, not ``thread.is_alive()``, which takes and gives back a lock on every call.
        self.running = False
        self.lock = threading.Lock()
        #: Held while rows are out of the queue and not yet written: by the thread's batches, and by flush().
        self.writing = threading.Lock()
        atexit.register(self.flush)  # forked workers inherit it and flush their own queue

    def add(self, *rows: tuple) -> None:
        """Queue pending events (built by gate.storage.events.pending); the writer thread starts on first use."""
        self._ensure_thread()
        for row in rows:
            self.rows.put(row)

    def _inherited(self) -> bool:
        """Whether this writer is a forked child's copy of its parent's: the queue and its lock are the parent's."""
        return self.pid is not None and self.pid != forks.pid()

    def _ensure_thread(self) -> None:
        if self.running and self.pid == forks.pid():
            return
        with self.lock:
            if not (self.running and self.pid == forks.pid()):  # never started, ended, or a forked child's copy
                if self._inherited():
                    self.rows = queue.SimpleQueue()  # a forked child: the parent writes what it queued
                    self.writing = threading.Lock()  # held by the parent's thread at the fork, maybe
                self.pid, self.running = forks.pid(), True
                self.thread = threading.Thread(target=self._run, name="gate-events", daemon=True)
                try:
                    self.thread.start()
                except RuntimeError:  # no thread to be had: the next view tries again
                    self.running = False
                    raise

    def _drain(self) -> list:
        """Up to a batch of queued rows, as many as are queued now."""
        batch = []
        while len(batch) < BATCH:
            try:
                batch.append(self.rows.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, db, batch: list) -> None:
        """One batch, written whole or not at all (one statement, or SQLite's few in one transaction).

        Its text (times and data) is made here, for the whole batch in one loop, not in each request.
        """
        events.record_rows(db, events.as_rows(batch))

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self.running = False  # the next view starts another, which writes what is still queued

    def _serve(self) -> None:
        db = open_database(self.path)
        while True:
            # Rows leave the queue only while the thread holds ``writing``, never across this wait:
            # a flush at exit, which takes the lock too, finds each row queued or written.
            time.sleep(FLUSH_SECONDS)  # let the batch fill
            with self.writing:
                batch = self._drain()
                while batch:
                    db = self._write_surely(db, batch)
                    # A full batch may have left more queued meanwhile: written now, not a wait later, so a
                    # backlog never outgrows the writer. A short batch took everything: the next waits.
                    batch = self._drain() if len(batch) == BATCH else []

    def _write_surely(self, db, batch: list):
        """Write ``batch``, retrying a failed write (never dropped, never the thread's end); the connection after."""
        while True:
            try:
                self._write(db, batch)
                return db
            except _database_errors() as error:
                print(f"gate: could not write {len(batch)} view events ({error}); retrying",
                      file=sys.stderr, flush=True)
                time.sleep(RETRY_SECONDS)
                db = _reopen(db, self.path)  # a PostgreSQL connection may have died with the error

    def flush(self) -> int:
        """Write everything queued now (at exit, and in tests); returns how many this call wrote.

        It first lets the thread finish the batch it has in hand (up to :data:`IN_HAND_SECONDS`), so
        when it returns every row queued before it is in the table. A forked child leaves its
        parent's queue to the parent.
        """
        if self._inherited():
            return 0
        waited = self.writing.acquire(timeout=IN_HAND_SECONDS)
        try:
            batch, total = self._drain(), 0
            if batch:
                db = open_database(self.path)
                try:
                    while batch:
                        self._write(db, batch)
                        total += len(batch)
                        batch = self._drain()
                finally:
                    db.close()
            return total
        finally:
            if waited:
                self.writing.release()


def _database_errors() -> tuple[type[Exception], ...]:
    """What a failed write raises on whichever engines are loaded (psycopg only once a URL was opened)."""
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    if "psycopg" in sys.modules:
        errors += (sys.modules["psycopg"].Error,)
    return errors


def _reopen(db, path: str):
    """A fresh connection after a failed write (the old one goes back to the pool, which drops it if broken)."""
    try:
        db.close()
    except _database_errors():
        pass
    try:
        return open_database(path)
    except _database_errors():
        return db  # the server is still away: the next retry reopens again


_writers: dict[str, EventWriter] = {}


def writer(path: str) -> EventWriter:
    """The process's writer for one database (a SQLite path or a PostgreSQL URL)."""
    if path not in _writers:
        _writers[path] = EventWriter(path)
    return _writers[path]
