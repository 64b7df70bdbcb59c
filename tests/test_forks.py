"""The process id kept by gate.storage.forks, and what a forked child opens for itself by it."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta

from gate.storage import db as storage_db
from gate.storage import eventlog, forks
from tests.helpers import VIEWED_AT, pending_view

ROW = pending_view("v")


def test_the_kept_id_is_this_process_and_asks_no_system_call(monkeypatch):
    expected = os.getpid()

    def no_system_call():
        raise AssertionError("os.getpid() was called")

    monkeypatch.setattr(os, "getpid", no_system_call)
    assert forks.pid() == expected


def _in_child(work) -> dict:
    """Run ``work`` in a forked child; what it returned (a JSON-able dict), or its error."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report and leave without running the parent's exit handlers
        os.close(read)
        try:
            answer = {"ok": work()}
        except BaseException as error:  # noqa: BLE001 - any failure is the answer
            answer = {"error": repr(error)}
        os.write(write, json.dumps(answer).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = json.loads(pipe.read() or '{"error": "the child said nothing"}')
    os.waitpid(child, 0)
    assert "error" not in answer, answer["error"]
    return answer["ok"]


def test_a_forked_child_keeps_its_own_id():
    parent = forks.pid()
    seen = _in_child(lambda: {"kept": forks.pid(), "real": os.getpid()})
    assert seen["kept"] == seen["real"] != parent
    assert forks.pid() == parent == os.getpid()


def test_a_forked_child_opens_its_own_sqlite_connection(tmp_path):
    path = str(tmp_path / "site.sqlite")
    mine = storage_db.thread_connection(path)
    mine.execute("create table marks (n integer)")

    def child():
        theirs = storage_db.thread_connection(path)
        theirs.execute("insert into marks values (1)")
        return {"same": theirs is mine}

    assert _in_child(child) == {"same": False}
    assert storage_db.thread_connection(path) is mine  # the parent's, still open and still its own
    assert mine.execute("select count(*) from marks").fetchone() == (1,)


def _wait_for_rows(path: str, count: int, visitor: str | None = None) -> list[str]:
    """The events' visitor ids once there are ``count`` (or one of ``visitor``): a writer writes within FLUSH_SECONDS."""
    db = storage_db.connect(path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = sorted(row[0] for row in db.execute("select visitor_id from events"))
        if len(found) >= count or visitor in found:
            return found
        time.sleep(0.01)
    return found


def _waiting_for_rows(log: eventlog.EventWriter) -> bool:
    """Whether the writer's thread is back in its loop, out of any SQLite call, within 10 s.

    A row is visible once its insert commits, while the thread is still inside that call; only
    when the call has returned is the thread's innermost Python frame its loop again.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(log.thread.ident)
        if frame is not None and frame.f_code is eventlog.EventWriter._serve.__code__:
            return True
        time.sleep(0.01)
    return False


def test_a_forked_childs_writer_writes_its_own_rows_not_its_parents(tmp_path):
    path = str(tmp_path / "site.sqlite")
    storage_db.open_site_db(path).close()
    log = eventlog.EventWriter(path)
    log.add(ROW)
    # Written before the fork, and its thread back in its loop, so that thread is idle when the fork comes: a
    # fork while it is inside SQLite (finishing a commit, say) can leave SQLite's own mutex held in the child
    # for good, and the child's writer could never open its connection.
    assert _wait_for_rows(path, 1) == ["v"]
    assert _waiting_for_rows(log)

    def child():
        log.add(pending_view("child", VIEWED_AT + timedelta(seconds=1)))
        started = log.thread is not None and log.thread.is_alive() and log.pid == os.getpid()
        return {"thread": started, "written": "child" in _wait_for_rows(path, 2, "child")}

    assert _in_child(child) == {"thread": True, "written": True}
    assert _wait_for_rows(path, 2) == ["child", "v"]
    time.sleep(4 * eventlog.FLUSH_SECONDS)
    assert _wait_for_rows(path, 0) == ["child", "v"]  # the parent's row once: the child never wrote it
