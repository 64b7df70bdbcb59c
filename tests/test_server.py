"""The one server-process helper: start, wait, stop within a bound, kill -9, and its log on failure.

Small Python servers stand in for gunicorn here, so each test takes about a
second; the real `gate serve` goes through the same class in the load test,
the browser, crash and wheel tests and the HTTP benchmark.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gate.loadtest.server import LOOPBACK, ServerProcess, free_port, site_env

ROOT = Path(__file__).resolve().parents[1]
SERVE = "import http.server as h; h.ThreadingHTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()"
STUBBORN = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + SERVE
#: A master with a worker in its process group, as gunicorn has: the worker's pid goes to the log.
MASTER = ("import subprocess, sys; worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
          "print('worker', worker.pid, flush=True); " + SERVE)


def python_server(tmp_path: Path, code: str, **kwargs) -> ServerProcess:
    port = free_port()
    return ServerProcess([sys.executable, "-c", code.format(port=port)], site_env(), tmp_path / "server.log", port,
                         ready="/", **kwargs)


def gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting for its new parent counts as exited)."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True


def test_a_started_server_answers_and_a_stopped_one_frees_its_port(tmp_path):
    with python_server(tmp_path, SERVE) as server:
        assert server.url.startswith(f"http://{LOOPBACK}:")
        assert urllib.request.urlopen(server.url + "/", timeout=5).status == 200
        assert server.running
    assert not server.running and server.process is None
    with pytest.raises(ConnectionRefusedError):  # nobody listens there any more
        socket.create_connection((LOOPBACK, server.port), timeout=2)


def test_a_running_server_is_not_started_twice(tmp_path):
    with python_server(tmp_path, SERVE) as server:
        first = server.process
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        assert server.process is first and server.running


def test_a_server_that_exits_is_reported_with_its_log(tmp_path):
    code = "print('no database at /nowhere', flush=True); raise SystemExit(3)"
    server = ServerProcess([sys.executable, "-c", code], site_env(), tmp_path / "server.log", free_port())
    with pytest.raises(RuntimeError, match="did not come up(.|\n)*no database at /nowhere"):
        server.start()
    assert server.process is None


def test_a_server_that_never_answers_is_given_up_on_in_time(tmp_path):
    server = ServerProcess([sys.executable, "-c", "import time; time.sleep(60)"], site_env(),
                           tmp_path / "server.log", free_port())
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="did not come up"):
        server.start(timeout=1)
    assert time.monotonic() - began < 10 and server.process is None


def test_stop_kills_a_server_that_ignores_sigterm_after_the_grace_period(tmp_path):
    server = python_server(tmp_path, STUBBORN).start()
    process = server.process
    began = time.monotonic()
    server.stop(grace=0.5)
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - began < 10


def test_kill_takes_down_the_master_and_its_workers_and_a_restart_serves_again(tmp_path):
    server = python_server(tmp_path, MASTER).start()
    worker = int(re.search(r"worker (\d+)", server.log_tail()).group(1))
    server.kill()
    assert server.process.returncode == -signal.SIGKILL and not server.running
    deadline = time.monotonic() + 5
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(worker)
    with server:  # started again: the same port and log, appended to
        assert urllib.request.urlopen(server.url + "/", timeout=5).status == 200
    assert len(re.findall(r"worker \d+", server.log_tail())) == 2


def test_the_child_sees_no_gate_variable_it_was_not_given(monkeypatch):
    monkeypatch.setenv("GATE_DATABASE", "/tmp/someone-elses.sqlite")
    env = site_env(GATE_SECRET_KEY="k")
    assert "GATE_DATABASE" not in env and env["GATE_SECRET_KEY"] == "k" and "PATH" in env


def test_servers_are_started_in_one_place():
    """No second copy of the helper: free ports and `gate serve` children come from gate/loadtest/server.py."""
    copy = re.compile(r'Popen\((?:(?!\n\n).)*?"serve"|def _?free_port\b|\.bind\(\(["\']127\.0\.0\.1["\'], 0\)\)', re.S)
    helper, this = ROOT / "gate/loadtest/server.py", Path(__file__).resolve()
    found = [str(path.relative_to(ROOT)) for folder in ("gate", "tests", "benchmarks", "tools")
             for path in sorted((ROOT / folder).rglob("*.py"))
             if path not in (helper, this) and copy.search(path.read_text())]
    assert found == []
    assert copy.search(helper.read_text())  # the pattern does find the one copy
