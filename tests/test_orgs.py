"""Group licences: each way to join, refusals, leaving, expiry on the site clock, the seat race, proxies."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from gate import create_app
from gate.audit import checks
from gate.services import accounts, orgs
from gate.storage import engine as storage_engine
from tests.helpers import BOTH_ENGINES, METERED, PREMIUM, START, Reader, at_once, leaks

pytestmark = BOTH_ENGINES
JOIN = re.compile(r"https?://[^/\s]+(/orgs/join/[A-Za-z0-9._-]+)")
CAMPUS = "203.0.113.7"


@pytest.fixture
def riverside(db):
    """Riverside University: 2 seats, the riverside.example domain, one IP range, for 30 days."""
    return orgs.create(db, "Riverside University", 2, START, domain="riverside.example",
                       ip_ranges=["203.0.113.0/24"], until=START + timedelta(days=30))


def join_link(db, to: str) -> str:
    """The path of the newest join link mailed to ``to``."""
    text = db.scalar("select body_text from outbox where to_addr = ? and kind = 'org_link' order by id desc limit 1",
                     [to])
    return JOIN.search(text).group(1)


def kinds(db, kind: str) -> list[dict]:
    """The data of each event of one type, oldest first."""
    return [json.loads(row["data"]) for row in db.rows("select data from events where type = ? order by id", [kind])]


def test_a_reader_on_the_domain_joins_by_the_mailed_link_and_reads_premium(riverside, reader, db):
    reader.signup("ada@riverside.example")
    assert reader.article(PREMIUM)["access"] == "teaser"
    sent = reader.post("/orgs/riverside-university/domain")
    assert "Check your email" in sent.get_data(as_text=True)
    path = join_link(db, "ada@riverside.example")
    assert "Join Riverside University" in reader.client.get(path).get_data(as_text=True)  # GET joins nobody
    assert orgs.seats_used(db, riverside.id) == 0
    assert reader.post(path).status_code == 303
    data = reader.article(PREMIUM)
    assert (data["access"], data["reason"]) == ("full", "licensed")
    assert data["grant"] == {"kind": "licence", "org": "Riverside University", "org_slug": "riverside-university",
                             "seats": 2, "ends": riverside.active_until.isoformat()}
    assert kinds(db, "org_joined")[0].items() >= {"org": "riverside-university", "via": "domain", "from": None,
                                                  "to": "member"}.items()
    assert reader.post(path).status_code == 400  # single use


def test_a_reader_off_the_domain_is_refused_and_no_link_is_sent(riverside, reader, db):
    reader.signup("eve@elsewhere.example")
    page = reader.post("/orgs/riverside-university/domain", follow_redirects=True).get_data(as_text=True)
    assert "not on this organisation" in page
    assert db.scalar("select count(*) from outbox where kind = 'org_link'") == 0
    assert kinds(db, "org_join_refused")[0]["reason"] == "not_on_domain"


def test_a_tampered_join_link_joins_nobody(riverside, reader, db):
    reader.signup("ada@riverside.example")
    reader.post("/orgs/riverside-university/domain")
    path = join_link(db, "ada@riverside.example")
    assert reader.post(path[:-3] + "xyz").status_code == 400
    assert orgs.seats_used(db, riverside.id) == 0


def test_an_invitation_makes_the_account_and_joins(riverside, runner, client, db):
    result = runner.invoke(args=["orgs", "invite", "riverside-university", "Guest@Other.example"])
    assert result.exit_code == 0, result.output
    reader = Reader(client)
    assert reader.post(join_link(db, "guest@other.example")).status_code == 303
    member = accounts.by_email(db, "guest@other.example")
    assert member.licence.org == "Riverside University" and member.email_verified_at is not None
    assert reader.article(PREMIUM)["reason"] == "licensed"  # signed in by the link
    assert kinds(db, "org_joined")[0]["via"] == "invite"


def test_a_reader_in_the_ip_range_joins_from_the_org_page(riverside, reader, db):
    reader.signup("walkin@example.com")
    inside = {"environ_base": {"REMOTE_ADDR": CAMPUS}}
    page = reader.client.get("/orgs/riverside-university", **inside).get_data(as_text=True)
    assert "Join from this network" in page
    reader.post("/orgs/riverside-university/ip", **inside)
    assert reader.article(METERED)["reason"] == "licensed"
    assert kinds(db, "org_joined")[0]["via"] == "ip"


@pytest.mark.parametrize(("proxies", "joined"), [(0, False), (1, True)])
def test_x_forwarded_for_counts_only_with_a_configured_proxy(riverside, app, proxies, joined, db):
    site = create_app({**app.config, "PROXY_COUNT": proxies})
    reader = Reader(site.test_client())
    reader.signup("spoof@example.com")
    forwarded = {"headers": {"X-Forwarded-For": CAMPUS}, "environ_base": {"REMOTE_ADDR": "198.51.100.1"}}
    reader.post("/orgs/riverside-university/ip", **forwarded)
    assert (orgs.seats_used(db, riverside.id) == 1) is joined
    if not joined:
        assert kinds(db, "org_join_refused")[0]["reason"] == "not_in_range"


def test_a_full_licence_refuses_and_leaving_frees_a_seat(riverside, db):
    ids = [accounts.register(db, f"r{n}@riverside.example", None, START).id for n in range(3)]
    orgs.join(db, riverside.slug, ids[0], "invite", START)
    orgs.join(db, riverside.slug, ids[1], "invite", START)
    with pytest.raises(orgs.JoinRefused) as refused:
        orgs.join(db, riverside.slug, ids[2], "invite", START)
    assert refused.value.refusal == "full" and kinds(db, "org_join_refused")[0]["reason"] == "full"
    assert orgs.leave(db, riverside.slug, ids[0], START)
    assert accounts.by_id(db, ids[0]).licence is None
    assert orgs.join(db, riverside.slug, ids[2], "invite", START).seat == 1  # the freed seat
    assert kinds(db, "org_left")[0].items() >= {"from": "member", "to": None}.items()


def test_leaving_from_the_account_page(riverside, reader, db):
    reader.signup("ada@riverside.example")
    orgs.join(db, riverside.slug, accounts.by_email(db, "ada@riverside.example").id, "domain", START)
    page = reader.client.get("/account").get_data(as_text=True)
    assert "Leave Riverside University" in page
    reader.post("/orgs/riverside-university/leave")
    assert orgs.seats_used(db, riverside.id) == 0
    assert reader.article(PREMIUM)["access"] == "teaser"


def test_the_licence_ends_on_the_site_clock(riverside, reader, db, clock):
    reader.signup("ada@riverside.example")
    orgs.join(db, riverside.slug, accounts.by_email(db, "ada@riverside.example").id, "domain", START)
    clock.advance(timedelta(days=30) - timedelta(seconds=1))
    assert reader.article(PREMIUM)["reason"] == "licensed"
    clock.advance(timedelta(seconds=1))
    data = reader.article(PREMIUM)
    assert (data["access"], data["reason"]) == ("teaser", "premium_only")
    assert "body_html" not in data and not leaks(json.dumps(data), PREMIUM)
    other = accounts.register(db, "late@riverside.example", None, START)
    with pytest.raises(orgs.JoinRefused) as refused:
        orgs.join(db, riverside.slug, other.id, "domain", clock.now())
    assert refused.value.refusal == "expired"


@pytest.fixture
def rush_target(app, engine):
    """The site's database for 50 threads at once: on PostgreSQL a pool of its own, big enough for all of them."""
    target = app.config["DATABASE"]
    if engine == "sqlite":
        yield target
        return
    yield target + "&application_name=seat-rush"
    storage_engine.pools.close(target + "&application_name=seat-rush")


def test_fifty_joins_for_ten_seats_give_exactly_ten_members(rush_target, db):
    org = orgs.create(db, "Rush College", 10, START, domain="rush.example")
    ids = iter([accounts.register(db, f"r{n}@rush.example", None, START).id for n in range(50)])
    results, errors = at_once(rush_target, 50, lambda conn: _try_join(conn, org.slug, next(ids)), pool=50)
    assert errors == []
    assert sorted(results).count(True) == 10
    assert orgs.seats_used(db, org.id) == 10
    assert sorted(m.seat for m in orgs.members(db, org.id)) == list(range(1, 11))
    assert len(kinds(db, "org_join_refused")) == 40
    assert checks.check_seats(db, None) == []


def _try_join(conn, slug: str, reader_id: int) -> bool:
    """One join in a race: whether it took a seat."""
    try:
        orgs.join(conn, slug, reader_id, "domain", START)
    except orgs.JoinRefused:
        return False
    return True


def test_the_unique_seat_key_is_the_backstop(riverside, db):
    reader = accounts.register(db, "a@riverside.example", None, START)
    other = accounts.register(db, "b@riverside.example", None, START)
    orgs.join(db, riverside.slug, reader.id, "domain", START)
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        db.execute("insert into org_members (org_id, reader_id, seat, via, joined_at) values (?, ?, 1, 'ip', ?)",
                   [riverside.id, other.id, START.isoformat()])


def test_a_licensed_reader_sees_only_the_article_asked_for(riverside, reader, db, app):
    reader.signup("ada@riverside.example")
    orgs.join(db, riverside.slug, accounts.by_email(db, "ada@riverside.example").id, "domain", START)
    html = reader.client.get(f"/articles/{PREMIUM}").get_data(as_text=True)
    assert not leaks(html, METERED)
    assert '"isAccessibleForFree": false' in html or '"isAccessibleForFree":false' in html
    explained = reader.client.get(f"/api/articles/{PREMIUM}?explain=1").get_json()["explain"]
    assert explained["licence"]["org"] == "Riverside University" and explained["reason"] == "licensed"
    app.config["DEMO"] = True  # the explain drawer
    assert "a member of Riverside University (2 seats)" in reader.client.get(f"/articles/{PREMIUM}").get_data(
        as_text=True)


def test_the_cli_adds_lists_shows_and_lists_members(runner, db):
    added = runner.invoke(args=["orgs", "add", "Harbor Library", "--seats", "3", "--ip", "10.0.0.0/8",
                                "--ip", "192.0.2.0/24", "--until", "2027-01-31"])
    assert added.exit_code == 0, added.output
    assert "Harbor Library" in runner.invoke(args=["orgs", "list"]).output
    reader = accounts.register(db, "m@example.com", None, START)
    orgs.join(db, "harbor-library", reader.id, "ip", START)
    shown = runner.invoke(args=["orgs", "show", "harbor-library"]).output
    assert "1 of 3 used" in shown and "10.0.0.0/8, 192.0.2.0/24" in shown
    assert "m@example.com" in runner.invoke(args=["orgs", "members", "harbor-library"]).output
    bad = runner.invoke(args=["orgs", "add", "Bad", "--seats", "2", "--ip", "10.0.0.300/8"])
    assert bad.exit_code == 1 and "not an IP range" in bad.output
    assert "no organisation" in runner.invoke(args=["orgs", "show", "nope"]).output


def test_the_console_shows_seats_members_reading_and_core_readers(riverside, admin, db):
    reader = accounts.register(db, "keen@riverside.example", None, START)
    orgs.join(db, riverside.slug, reader.id, "domain", START)
    rows = [("article_view", reader.id, f"slug-{n}", json.dumps({"access": "full"})) for n in range(9)]
    for kind, reader_id, slug, data in rows:
        db.execute("insert into events (at, type, reader_id, slug, data) values (?, ?, ?, ?, ?)",
                   [START.isoformat(), kind, reader_id, slug, data])
    page = admin.client.get("/admin/orgs/riverside-university").get_data(as_text=True)
    assert "1 of 2" in page and "keen@riverside.example" in page and "9 (core reader)" in page and "100%" in page
    made = admin.post("/admin/orgs", {"name": "Dock School", "seats": "5", "domain": "dock.example"})
    assert made.status_code == 303 and orgs.by_slug(db, "dock-school").seats == 5
    admin.post("/admin/orgs/dock-school/invite", {"email": "new@dock.example"})
    assert join_link(db, "new@dock.example")
    assert admin.post("/admin/orgs", {"name": "No Seats", "seats": "x"}).status_code == 200


def test_the_licensed_persona_reads_premium_through_riverside(app, db):
    app.config["DEMO"] = True
    presenter = Reader(app.test_client())
    for _ in range(2):  # a second switch rebuilds the persona in the same seat
        assert presenter.post("/demo/persona", {"persona": "licensed", "next": "/"}).status_code == 303
    data = presenter.article(PREMIUM)
    assert (data["reason"], data["grant"]["org"], data["grant"]["seats"]) == ("licensed", "Riverside University", 25)
    assert orgs.seats_used(db, orgs.by_slug(db, "riverside-university").id) == 1


def test_a_link_refused_for_a_full_licence_stays_usable_until_a_seat_is_free(riverside, runner, client, db):
    seated = [accounts.register(db, f"s{n}@riverside.example", None, START).id for n in range(2)]
    for reader_id in seated:
        orgs.join(db, riverside.slug, reader_id, "invite", START)
    runner.invoke(args=["orgs", "invite", "riverside-university", "late@riverside.example"])
    path, reader = join_link(db, "late@riverside.example"), Reader(client)
    reader.post(path)
    assert kinds(db, "org_join_refused")[-1]["reason"] == "full"
    orgs.leave(db, riverside.slug, seated[0], START)
    assert reader.post(path).status_code == 303
    assert accounts.by_email(db, "late@riverside.example").licence.org == "Riverside University"
