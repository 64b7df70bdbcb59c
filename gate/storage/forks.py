"""This process's id, without a system call each time a request asks.

What a process opens (SQLite connections, PostgreSQL pools, the event
writer's thread) belongs to it alone: a forked child (a gunicorn worker) must
open its own. The code that keeps such things compares the process id it
kept with this one on every use, several times a page. ``os.getpid`` is a
system call each time; the id here is read once, and read again in a forked
child before it runs anything else.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def pid() -> int:
    """This process's id (``os.getpid()``, kept)."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)
