"""Packaging: a wheel built from the repo, installed in a fresh venv, serves an article."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

from gate.loadtest.server import ServerProcess, site_env

ROOT = Path(__file__).resolve().parent.parent


def _get(url: str, timeout: float = 60) -> str:
    """GET a URL, retrying until the server is up or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _bench_leaks(wheel: Path) -> list[str]:
    """Benchmark files in the wheel, and benchmark-only packages every install would pull in."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(archive.read(name).decode() for name in names if name.endswith(".dist-info/METADATA"))
    files = [name for name in names if "bench" in name.rsplit("/", 1)[-1] or name.startswith("benchmarks/")]
    required = [line for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line and "psutil" in line]
    return files + required


@pytest.mark.slow
def test_wheel_installs_and_serves_an_article(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(dist.glob("gate-*.whl"))
    assert _bench_leaks(wheel) == [], "benchmarks belong in the checkout and their deps in the bench extra"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    subprocess.run([str(bin_dir / "pip"), "install", "--quiet", "--disable-pip-version-check",
                    str(wheel)], check=True, capture_output=True)
    env = site_env(GATE_DATABASE=str(tmp_path / "site.sqlite"), GATE_SECRET_KEY="wheel",
                   GATE_BASE_URL="http://127.0.0.1")
    env.pop("PYTHONPATH", None)
    run = lambda *args: subprocess.run([str(bin_dir / "gate"), *args], cwd=tmp_path, env=env,  # noqa: E731
                                       check=True, capture_output=True, text=True)
    assert "Seeded 14 demo articles" in run("db", "seed").stdout
    assert "* wpr" in run("preset", "list").stdout
    server = ServerProcess.gate_serve(env, tmp_path / "server.log", gate=[str(bin_dir / "gate")], cwd=tmp_path)
    server.start(timeout=60)  # a fresh venv compiles its bytecode on the first start
    try:
        page = _get(f"{server.url}/articles/prisoner-swaps-rewarding-hostage-takers")
        assert "Keep reading for free" in page and "The Meridian" in page
        assert "site.css" in _get(f"{server.url}/")
        assert "--paper" in _get(f"{server.url}/static/site.css")
    finally:
        server.stop()
