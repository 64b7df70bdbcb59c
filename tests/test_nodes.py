"""Many app servers: two `gate serve` nodes on two loopback ports and one database behave as one site.

(a) Thirty concurrent unlocks of one reader, split across both nodes, grant
exactly the limit, five rounds over; a session, a clock move, a preset switch
and the rate limits are shared. (b) `gate loadtest` in Locust's distributed
mode (a master and two workers) drives both nodes. (c) `gate audit` is clean
afterwards. On SQLite (two nodes on one file) and on PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from gate.loadtest.server import gate_command
from gate.storage.schemas import create_schema, drop_schema
from tests.helpers import ADMIN, LiveSite, WireReader, metered_demo_slugs, new_email

ROUNDS, TABS = 5, 30
pytestmark = pytest.mark.slow  # each engine starts a seeded site on two nodes


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request, tmp_path_factory):
    """A seeded site served by two nodes, rate limits on, trusting one proxy (as behind one).

    One site per engine for the whole module, its tests in order: the audit comes last.
    """
    directory = tmp_path_factory.mktemp(f"nodes-{request.param}")
    schema = None
    if request.param == "sqlite":
        database = str(directory / "gate.sqlite")
    else:
        url = request.getfixturevalue("pg_url")
        name, database = create_schema(url, "gate_test_nodes")
        schema = (url, name, database)
    try:
        with LiveSite(directory, "two-node-key", database=database, nodes=2, rate_limits=True, schedule=False,
                      GATE_PROXY_COUNT="1") as live:
            yield live
    finally:
        if schema:
            drop_schema(*schema)


def _health(reader: WireReader, base: str) -> dict:
    status, body = reader.request("/api/health", base=base)
    assert status == 200, body[:300]
    return json.loads(body)


def _unlock_race(reader: WireReader, urls: list[str], slugs: list[str]) -> list[tuple[int, dict]]:
    """TABS unlocks at once, alternating between the nodes and cycling through ``slugs``."""
    token = reader.token("/account", base=urls[1])

    def unlock(n: int) -> tuple[int, dict]:
        status, body = reader.request(f"/api/articles/{slugs[n % len(slugs)]}/unlock", {},
                                      {"X-CSRFToken": token}, base=urls[n % len(urls)])
        return status, json.loads(body) if body.startswith("{") else {"body": body[:200]}

    with ThreadPoolExecutor(TABS) as pool:
        return list(pool.map(unlock, range(TABS)))


def test_the_meter_holds_across_nodes(site: LiveSite) -> None:
    a, b = site.urls
    slugs = metered_demo_slugs()
    for round_ in range(ROUNDS):  # a new reader (and meter) each round, signed up on alternate nodes
        reader = WireReader(site.urls[round_ % 2])
        status, _ = reader.request("/signup", {"email": new_email("race"), "csrf_token": reader.token(), "next": "/"})
        assert status == 303
        answers = _unlock_race(reader, site.urls, slugs)
        assert all(status in (200, 403) for status, _ in answers), answers
        granted = sum(1 for status, data in answers if status == 200 and data.get("spent"))
        meters = [json.loads(reader.request("/api/meter", base=url)[1]) for url in (a, b)]
        assert meters[0] == meters[1]  # both nodes read the one meter
        assert granted == meters[0]["limit"] == meters[0]["used"] == 3, (round_, granted, meters[0])


def test_one_session_one_clock_one_preset(site: LiveSite) -> None:
    a, b = site.urls
    site.gate("readers", "add", ADMIN[0], "--password", ADMIN[1], "--admin")
    admin = WireReader(a)
    status, _ = admin.request("/login", {"email": ADMIN[0], "password": ADMIN[1], "next": "/",
                                         "csrf_token": admin.token("/login")})
    assert status == 303
    assert admin.request("/admin/clock", base=b)[0] == 200  # the session cookie from A works on B
    before = _health(admin, b)["now"]
    status, body = admin.request("/admin/clock", {"duration": "3d", "csrf_token": admin.token("/admin/clock", base=b)},
                                 base=b)
    assert status in (200, 303), body[:500]
    after = _health(admin, a)["now"]  # moved on B, seen by A on its next request
    assert after > before and _health(admin, b)["now"] == after
    assert _health(admin, a)["preset"] != "hard"
    status, _ = admin.request("/admin/rules", {"preset": "hard", "csrf_token": admin.token("/admin/rules")})
    assert status == 303
    assert _health(admin, b)["preset"] == "hard"  # switched on A, applied by B
    admin.request("/admin/rules", {"preset": "wpr", "csrf_token": admin.token("/admin/rules")})


def test_rate_limits_are_shared(site: LiveSite) -> None:
    """Wrong passwords from one address, alternating nodes: one count of 20 a minute, not one per node."""
    a, b = site.urls
    visitor = WireReader(a)
    token = visitor.token("/login")
    headers = {"X-Forwarded-For": "198.18.7.7"}  # one client of the proxy, new to this site
    statuses = [visitor.request("/login", {"email": "nobody@example.org", "password": "wrong", "next": "/",
                                           "csrf_token": token}, headers, base=(a, b)[n % 2])[0]
                for n in range(24)]
    assert statuses[:20] == [400] * 20, statuses
    assert statuses[20:] == [429] * 4, statuses  # each node alone would have allowed 12 more


def test_distributed_loadtest_drives_both_nodes(site: LiveSite, tmp_path) -> None:
    done = subprocess.run(
        [*gate_command(), "loadtest", "--targets", ",".join(site.urls), "--locust-workers", "2",
         "--users", "12", "--spawn-rate", "12", "--duration", "6s", "--subscribers", "0",
         "--out", str(tmp_path / "report")],
        env=site.env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "2 Locust workers" in output and "Load test passed." in output, output[-3000:]
    for server in site.nodes.servers:  # both nodes served the load
        assert server.log_path.read_text().count("GET /articles/") > 0, server.log_tail()


def test_the_audit_is_clean_afterwards(site: LiveSite) -> None:
    output = site.gate("audit")  # exits non-zero on any violation
    assert "no invariant violations" in output.lower() or "clean" in output.lower(), output
