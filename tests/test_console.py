"""The instructor console: access control, every admin action, dashboard numbers, experiments."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from gate.rules.timeutil import to_iso
from gate.services import dashboard
from gate.storage import events
from tests.helpers import ADMIN, BOTH_ENGINES, METERED, START, Reader, pay

pytestmark = BOTH_ENGINES

PAGES = ("/admin/", "/admin/rules", "/admin/clock", "/admin/readers", "/admin/events",
         "/admin/events.json", "/admin/experiments", "/admin/export.csv")


def admin_actions(db):
    return [json.loads(row[0]) for row in db.execute(
        "select data from events where type = 'admin_action' order by id")]


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_is_sent_to_log_in(client, url):
    response = client.get(url)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("url", PAGES)
def test_readers_get_403(reader, url):
    reader.signup("nosy@example.com")
    assert reader.client.get(url).status_code == 403


def test_reader_cannot_post_admin_actions(reader, db):
    reader.signup("sneaky@example.com")
    assert reader.post("/admin/rules", {"preset": "hard"}).status_code == 403
    assert reader.post("/admin/readers/1/comp", {"until": "2027-01-01"}).status_code == 403
    assert db.execute("select value from settings where key = 'preset'").fetchone() is None


@pytest.mark.parametrize("url", PAGES)
def test_admin_sees_every_page(admin, url):
    assert admin.client.get(url).status_code == 200


def test_switching_preset_applies_at_once_and_names_the_admin(admin, client, db):
    response = admin.post("/admin/rules", {"preset": "hard"})
    assert response.status_code == 303
    anonymous = Reader(client.application.test_client())
    assert anonymous.article(METERED)["reason"] == "subscribers_only"
    changed = db.execute("select data from events where type = 'preset_changed'").fetchone()[0]
    assert json.loads(changed)["by"] == ADMIN[0]
    action = admin_actions(db)[-1]
    assert (action["admin"], action["action"], action["from"], action["to"]) == (ADMIN[0], "preset_switched", "wpr", "hard")


def test_unknown_preset_changes_nothing(admin, db):
    admin.post("/admin/rules", {"preset": "nope"})
    assert db.execute("select value from settings where key = 'preset'").fetchone() is None


def test_rules_diff_shows_differences(admin):
    page = admin.client.get("/admin/rules?a=wpr&b=metered").get_data(as_text=True)
    assert "tiers.anonymous.limit" in page and "diff--changed" in page
    assert admin.client.get("/admin/rules?a=wpr&b=nope").status_code == 400


def test_clock_advance_and_boundary(admin, db, clock):
    admin.post("/admin/clock", {"action": "advance", "duration": "2d"})
    assert clock.now() == START + timedelta(days=2)
    admin.post("/admin/clock", {"action": "boundary"})
    assert to_iso(clock.now()) == "2026-12-01T05:01:00.000000+00:00"
    moves = [json.loads(r[0]) for r in db.execute("select data from events where type = 'clock_changed'")]
    assert [m["by"] for m in moves] == [ADMIN[0], ADMIN[0]]
    assert [a["action"] for a in admin_actions(db)] == ["clock_moved", "clock_moved"]


def test_clock_history_is_in_the_site_time_zone(admin):
    admin.post("/admin/clock", {"action": "advance", "duration": "2d"})
    page = admin.client.get("/admin/clock").get_data(as_text=True)
    assert "Sat 28 Nov 2026, 12:00" in page and "Mon 30 Nov 2026, 12:00" in page  # New York, not UTC's 17:00
    assert "2026-11-28 17:00" not in page


def test_reset_demo_asks_first_then_starts_the_class_afresh(admin, app, db, clock):
    from gate.conf.settings import Config
    from gate.services import newsletter, presets

    admin.post("/admin/rules", {"preset": "hard"})
    newsletter.set_preticked_lesson(db, True, START, by="test")
    admin.post("/admin/clock", {"action": "advance", "duration": "1w"})
    confirm = admin.client.get("/admin/clock/reset")
    assert confirm.status_code == 200 and "Yes, reset the demo" in confirm.get_data(as_text=True)
    admin.post("/admin/clock/reset")  # no confirmation: nothing happens
    assert clock.state().mode == "frozen" and presets.active_name(db, Config()) == "hard"
    response = admin.post("/admin/clock/reset", {"confirm": "yes"})
    assert response.status_code == 303
    assert clock.state().mode == "real" and presets.active_name(db, Config()) == Config().publication.default_preset
    assert not newsletter.preticked_lesson(db)
    assert [m["how"] for m in map(json.loads, (r[0] for r in db.execute(
        "select data from events where type = 'clock_changed' order by id")))][-1] == "reset"
    assert admin_actions(db)[-1]["action"] == "demo_reset"


def test_reset_demo_is_for_admins(reader, clock):
    reader.signup("student@example.com")
    assert reader.post("/admin/clock/reset", {"confirm": "yes"}).status_code == 403
    assert clock.state().mode == "frozen"


@pytest.mark.parametrize("duration", ["", "soon", "-1d", "0d"])
def test_clock_refuses_bad_durations(admin, clock, duration):
    response = admin.post("/admin/clock", {"action": "advance", "duration": duration})
    assert response.status_code == 400 and clock.now() == START


def test_clock_advance_runs_renewals(admin, runner, db):
    runner.invoke(args=["readers", "add", "payer@example.com", "--subscriber"])
    admin.post("/admin/clock", {"action": "advance", "duration": "31d"})
    assert db.execute("select count(*) from payments where kind = 'renewal'").fetchone()[0] == 1


def _reader_id(db, email):
    return db.execute("select id from readers where email = ?", [email]).fetchone()[0]


def test_reader_page_and_search(admin, app, db):
    other = Reader(app.test_client())
    other.signup("found@example.com")
    other.unlock(METERED)
    listing = admin.client.get("/admin/readers?q=found").get_data(as_text=True)
    assert "found@example.com" in listing and f">{ADMIN[0]}</a></td>" not in listing
    page = admin.client.get(f"/admin/readers/{_reader_id(db, 'found@example.com')}").get_data(as_text=True)
    assert "1 of 3 used" in page and METERED in page and "signup" in page and "unlock" in page
    assert admin.client.get("/admin/readers/9999").status_code == 404


def test_reset_meter_action(admin, app, db):
    other = Reader(app.test_client())
    other.signup("spent@example.com")
    other.unlock(METERED)
    rid = _reader_id(db, "spent@example.com")
    admin.post(f"/admin/readers/{rid}/reset-meter")
    assert other.meter()["used"] == 0
    assert admin_actions(db)[-1]["action"] == "meter_reset" and admin_actions(db)[-1]["removed"] == 1


def test_comp_action(admin, app, db):
    other = Reader(app.test_client())
    other.signup("guest@example.com")
    rid = _reader_id(db, "guest@example.com")
    bad = admin.post(f"/admin/readers/{rid}/comp", {"until": "2020-01-01"})
    assert bad.status_code == 303 and other.meter()["tier"] == "registered"
    admin.post(f"/admin/readers/{rid}/comp", {"until": "2027-01-15"})
    assert other.meter()["tier"] == "subscriber"
    action = admin_actions(db)[-1]
    assert action["action"] == "comp_granted" and action["admin"] == ADMIN[0]


def test_cancel_action(admin, runner, db):
    runner.invoke(args=["readers", "add", "leaving@example.com", "--subscriber"])
    rid = _reader_id(db, "leaving@example.com")
    admin.post(f"/admin/readers/{rid}/cancel")
    assert db.execute("select status from subscriptions where reader_id = ?", [rid]).fetchone() == ("canceled",)
    change = json.loads(db.execute("select data from events where type = 'subscription_changed'"
                                   " order by id desc limit 1").fetchone()[0])
    assert change["by"] == ADMIN[0] and change["to"] == "canceled"


def test_unknown_action_is_404(admin):
    assert admin.post("/admin/readers/1/delete-everything").status_code == 404


def test_events_stream_filters(admin, client, db):
    client.get(f"/articles/{METERED}")
    page = admin.client.get("/admin/events?type=gate_impression").get_data(as_text=True)
    assert "gate_impression" in page and "<code>login</code>" not in page
    live = admin.client.get("/admin/events?live=1").get_data(as_text=True)
    assert 'http-equiv="refresh"' in live
    newest = db.execute("select max(id) from events").fetchone()[0]
    assert admin.client.get(f"/admin/events.json?after={newest}").get_json()["events"] == []


def _seed_events(db):
    """A known event set: 10 visitors, 6 see a gate, 3 register, 2 unlock, 1 subscribes."""
    at = START - timedelta(days=1)
    for n in range(10):
        events.record(db, "article_view", at, visitor_id=f"v{n}", slug="a")
        events.record(db, "article_view", at, visitor_id=f"v{n}", slug="b")  # a second view counts once
    for n in range(6):
        events.record(db, "gate_impression", at, visitor_id=f"v{n}", slug="a")
    for n in range(3):  # the signup names the visitor who became the account, as the site records it
        events.record(db, "signup", at, reader_id=100 + n, visitor_id=f"v{n}")
    for n in range(2):
        events.record(db, "unlock", at, reader_id=100 + n, slug="a")
    events.record(db, "subscription_changed", at, reader_id=100, **{"from": None, "to": "active", "by": "checkout"})
    events.record(db, "subscription_changed", at, reader_id=101, **{"from": "active", "to": "canceled"})
    events.record(db, "signup", START - timedelta(days=60), reader_id=999)  # outside the range


def test_funnel_numbers_against_a_seeded_event_set(db):
    _seed_events(db)
    span = dashboard.Range.days((START - timedelta(days=7)).date(), START.date(), START.tzinfo)
    rows = {row["step"]: row for row in dashboard.funnel(db, span)}
    assert [rows[s]["count"] for s in dashboard.FUNNEL] == [10, 6, 3, 2, 1]
    assert rows["gate_impression"]["of_first"] == pytest.approx(0.6)
    assert rows["unlock"]["of_previous"] == pytest.approx(2 / 3)
    metrics = dashboard.metrics(db, span, {})
    assert (metrics["visitors"], metrics["gate_impressions"], metrics["signups"], metrics["unlocks"],
            metrics["new_subscriptions"], metrics["cancellations"]) == (10, 6, 3, 2, 1, 1)
    daily = dashboard.daily(db, span, START.tzinfo)
    assert sum(day["views"] for day in daily) == 20 and len(daily) == 8


def test_dashboard_page_and_csv(admin, db):
    _seed_events(db)
    page = admin.client.get("/admin/?start=2026-11-21&end=2026-11-28").get_data(as_text=True)
    assert "<svg" in page and "Subscribed" in page and "<script" not in page
    csv = admin.client.get("/admin/export.csv?start=2026-11-21&end=2026-11-28")
    assert csv.headers["Content-Type"].startswith("text/csv")
    lines = csv.get_data(as_text=True).splitlines()
    assert lines[0] == "day,views,gate_impressions,signups,unlocks,new_subscriptions,cancellations"
    assert "2026-11-27,20,6,3,2,1,1" in lines
    assert admin.client.get("/admin/?start=2026-12-01&end=2026-11-01").status_code == 400
    assert admin.client.get("/admin/?start=yesterday").status_code == 400


def test_mrr_counts_paying_subscriptions(admin, runner, db):
    runner.invoke(args=["readers", "add", "m@example.com", "--subscriber", "--plan", "monthly"])
    runner.invoke(args=["readers", "add", "a@example.com", "--subscriber", "--plan", "annual"])
    page = admin.client.get("/admin/").get_data(as_text=True)
    assert "USD 22.00" in page  # 12.00 + 120.00 / 12


def test_experiment_assignment_is_sticky_across_login_and_tagged(app, runner, db):
    runner.invoke(args=["preset", "use", "metered-ab"])
    person = Reader(app.test_client())
    before = person.article(METERED)
    person.signup("ab@example.com", "ab-password-1")
    after = person.article(METERED)
    tags = [json.loads(row[0]).get("variants") for row in db.execute("select data from events where type in"
                                                                      " ('article_view', 'signup') order by id")]
    assert len({json.dumps(tag) for tag in tags}) == 1 and tags[0]["gate-pressure"] in ("control", "banner-3")
    variant = tags[0]["gate-pressure"]
    expected_limit = 3 if variant == "banner-3" else 5
    assert before["meter"]["limit"] == expected_limit and after["meter"]["limit"] == 10
    again = Reader(app.test_client())
    again.post("/login/magic", {"email": "ab@example.com"})
    unit = db.execute("select experiment_unit from readers where email = 'ab@example.com'").fetchone()[0]
    assert unit.startswith("visitor:")

    def last_view_variant():
        row = db.execute("select data from events where type = 'article_view' order by id desc limit 1").fetchone()
        return json.loads(row[0])["variants"]["gate-pressure"]

    for _ in range(40):  # another browser, as a visitor first in the other arm
        other = Reader(app.test_client())
        other.article(METERED)
        if last_view_variant() != variant:
            break
    assert last_view_variant() != variant
    assert other.login("ab@example.com", "ab-password-1").status_code == 303
    other.article(METERED)
    assert last_view_variant() == variant  # signed in, the reader is back in their own arm


def test_every_event_of_a_request_carries_the_viewers_variant(app, runner, db):
    runner.invoke(args=["preset", "use", "metered-ab"])
    person = Reader(app.test_client())
    person.signup("abpay@example.com")
    assert pay(person).status_code == 303  # the checkout POST renders no page before its events
    tags = {row[0]: json.loads(row[1]).get("variants") for row in db.execute(
        "select type, data from events where type in ('signup', 'subscription_changed')")}
    assert set(tags) == {"signup", "subscription_changed"}
    assert tags["subscription_changed"] == tags["signup"] and tags["signup"]["gate-pressure"]


def test_experiments_page_reports_variants(admin, app, runner, db):
    runner.invoke(args=["preset", "use", "metered-ab"])
    for _ in range(12):
        Reader(app.test_client()).article(METERED)
    page = admin.client.get("/admin/experiments").get_data(as_text=True)
    assert "gate-pressure" in page and "control" in page and "banner-3" in page
    counts = dashboard.experiment_counts(db, app.extensions["gate.config"].presets["metered-ab"].experiments[0],
                                         dashboard.Range.days(START.date(), START.date(), START.tzinfo))
    assert counts["control"]["visit"] + counts["banner-3"]["visit"] == 12


def test_dashboard_and_experiment_numbers_on_both_engines(backend):
    """The console's counts read JSON data through the engine seam: the same numbers on each engine."""
    from gate.rules.experiments import Experiment

    experiment = Experiment(id="gate-copy", variants=[{"id": "control", "weight": 1}, {"id": "bold", "weight": 1}])
    reader = backend.insert("readers", {"email": "ana@example.com", "session_token": "t", "created_at": to_iso(START)})
    at = [START + timedelta(minutes=n) for n in range(10)]
    arm = {"variants": {"gate-copy": "bold"}}
    events.record(backend, "article_view", at[0], visitor_id="v1", slug=METERED, access="teaser", **arm)
    events.record(backend, "gate_impression", at[1], visitor_id="v1", slug=METERED, **arm)
    events.record(backend, "signup", at[2], reader_id=reader, visitor_id="v1", **arm)
    events.record(backend, "unlock", at[3], reader_id=reader, slug=METERED, **arm)
    events.record(backend, "subscription_changed", at[4], reader_id=reader, **{"from": None}, to="trialing",
                  by="checkout", **arm)
    events.record(backend, "article_view", at[5], visitor_id="v2", slug=METERED, variants={"gate-copy": "control"})
    events.record(backend, "article_view", at[6], visitor_id="v3", slug=METERED, synthetic=True)
    events.record(backend, "subscription_changed", at[7], reader_id=reader, **{"from": "trialing"}, to="canceled")
    span = dashboard.Range.days(START.date(), START.date(), START.tzinfo)
    numbers = dashboard.metrics(backend, span, {})
    assert (numbers["visitors"], numbers["signups"], numbers["unlocks"], numbers["checkouts"],
            numbers["new_subscriptions"], numbers["cancellations"]) == (2, 1, 1, 1, 1, 1)
    assert dashboard.metrics(backend, span, {}, "synthetic")["visitors"] == 3  # generated traffic counted
    assert [row["count"] for row in dashboard.funnel(backend, span)] == [2, 1, 1, 1, 1]
    assert dashboard.experiment_counts(backend, experiment, span, "people") == {
        "control": {"visit": 1, "gate_impression": 0, "registration": 0, "subscription": 0},
        "bold": {"visit": 1, "gate_impression": 1, "registration": 1, "subscription": 1}}
    assert dashboard.experiment_start(backend, experiment) == at[0]
    assert sum(row["views"] for row in dashboard.daily(backend, span, START.tzinfo, "all")) == 3
