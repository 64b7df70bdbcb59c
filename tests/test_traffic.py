"""Numbers a class can trust: the cohort funnel, who is counted, experiments' range, and generated traffic."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate import audit
from gate.rules.experiments import summarize
from gate.services import accounts, dashboard, personas, presets, seed
from gate.simulate import traffic
from gate.storage import events
from tests.helpers import ADMIN, METERED, START, Reader, metered_slugs


def cfg_of(app):
    return app.extensions["gate.config"]


def generate(app, db, preset="metered-ab", visitors=1000, days=14, seed_=7):
    """Generated traffic under ``preset``, made the active one first."""
    cfg = cfg_of(app)
    if presets.active_name(db, cfg) != preset:
        presets.use(db, cfg, preset, START, by="test")
    return traffic.generate(db, cfg, cfg.preset(preset), START, visitors=visitors, days=days, seed=seed_,
                            people=traffic.population(cfg.dir))


def month(today=START):
    return dashboard.Range.days(today.date() - timedelta(days=29), today.date(), today.tzinfo)


def counts(rows):
    return [row["count"] for row in rows]


# --- the cohort funnel ------------------------------------------------------------------


def _a_classroom(app, db, clock):
    """Demo accounts, every persona, real readers reading and signing up, then a month of time travel."""
    cfg = cfg_of(app)
    seed.seed_demo_accounts(db, cfg, START)
    for persona in personas.PERSONAS:
        personas.reset(db, cfg, lambda reader: cfg.preset("wpr"), persona.id, START)
    slugs = metered_slugs(db, 5)
    for number in range(4):
        person = Reader(app.test_client())
        for slug in slugs:
            person.article(slug)
        if number < 2:
            person.signup(f"class{number}@example.com")
            person.unlock(slugs[0])
    clock.advance(timedelta(days=31))
    Reader(app.test_client()).article(METERED)


@pytest.mark.parametrize("audience", ["people", "synthetic", "all"])
def test_each_funnel_step_is_a_subset_of_the_one_before(app, db, clock, audience):
    _a_classroom(app, db, clock)
    generate(app, db, "wpr", visitors=150, days=10)
    for span in (month(), month(START + timedelta(days=31)),
                 dashboard.Range.days(START.date() - timedelta(days=40), START.date() + timedelta(days=31),
                                      START.tzinfo)):
        rows = dashboard.funnel(db, span, audience)
        assert all(row["of_previous"] <= 1.0 for row in rows), rows
        assert counts(rows) == sorted(counts(rows), reverse=True), rows


def test_the_default_funnel_of_a_seeded_classroom_never_grows(app, db, clock):
    # Today's code: "Subscribed 2 · 200% of the step before" on a freshly seeded database.
    _a_classroom(app, db, clock)
    rows = dashboard.funnel(db, month())
    assert counts(rows) == sorted(counts(rows), reverse=True) and counts(rows)[0] == 4, rows
    assert counts(rows)[2] == 2  # the two who signed up at the gate; personas and demo accounts are not people


def test_order_matters_a_signup_before_any_gate_is_not_a_registration_from_the_gate(db):
    at = START - timedelta(hours=2)
    events.record(db, "signup", at, reader_id=500, visitor_id="early")
    events.record(db, "article_view", at + timedelta(minutes=1), reader_id=500, slug="a")
    events.record(db, "gate_impression", at + timedelta(minutes=2), reader_id=500, slug="a")
    rows = dashboard.funnel(db, month())
    assert counts(rows) == [1, 1, 0, 0, 0]


# --- who is counted ------------------------------------------------------------------------


def test_presenters_and_generated_traffic_are_left_out_unless_chosen(app, db, admin, runner):  # noqa: F811
    cfg = cfg_of(app)
    seed.seed_demo_accounts(db, cfg, START)
    personas.reset(db, cfg, lambda reader: cfg.preset("wpr"), "active", START)
    admin.article(METERED)  # the admin reading is not a reader
    persona = accounts.by_email(db, "persona.active@meridian.example")
    events.record(db, "article_view", START, reader_id=persona.id, slug=METERED, access="full")  # the presenter as a persona
    Reader(app.test_client()).article(METERED)  # one real visitor
    done = generate(app, db, "wpr", visitors=200, days=7)
    people = dashboard.metrics(db, month(), {p.id: p for p in cfg.plans}, "people")
    everyone = dashboard.metrics(db, month(), {p.id: p for p in cfg.plans}, "all")
    assert people["visitors"] == 1 and counts(dashboard.funnel(db, month()))[0] == 1
    assert people["active_subscribers"] == 0 and people["mrr_cents"] == 0  # demo, persona and generated subs
    assert everyone["visitors"] > done.counts["visitors"] >= 100
    assert everyone["active_subscribers"] > 2 and everyone["mrr_cents"] > 0
    synthetic = dashboard.funnel(db, month(), "synthetic")
    assert counts(synthetic)[0] == done.counts["visitors"] + 1
    page = admin.client.get("/admin/?include=synthetic").get_data(as_text=True)
    assert "Real readers and generated traffic" in page and "How the funnel is counted" in page
    csv_all = admin.client.get("/admin/export.csv?include=all").get_data(as_text=True)
    csv_people = admin.client.get("/admin/export.csv").get_data(as_text=True)
    views = [sum(int(line.split(",")[1]) for line in body.splitlines()[1:]) for body in (csv_all, csv_people)]
    assert views[0] > views[1] == 1


@pytest.mark.parametrize("url", ["/admin/?include=everybody", "/admin/export.csv?include=people%00",
                                 "/admin/experiments?include=1", "/admin/experiments.csv?include=ALL"])
def test_an_unknown_audience_is_a_clear_400(admin, url):  # noqa: F811
    response = admin.client.get(url)
    assert response.status_code == 400 and "include must be one of" in response.get_data(as_text=True)


# --- experiments ---------------------------------------------------------------------------


def test_experiments_default_to_since_the_experiment_started_after_time_travel(app, db, admin, runner, clock):  # noqa: F811
    runner.invoke(args=["preset", "use", "metered-ab"])
    for _ in range(6):
        Reader(app.test_client()).article(METERED)
    clock.advance(timedelta(days=45))
    page = admin.client.get("/admin/experiments").get_data(as_text=True)
    assert 'name="start" value="2026-11-28"' in page and "Since the experiment started" in page
    rows = list(csv.DictReader(io.StringIO(admin.client.get("/admin/experiments.csv").get_data(as_text=True))))
    ours = [row for row in rows if row["experiment"] == "gate-pressure"]
    assert sum(int(row["visitors"]) for row in ours) == 6
    assert {row["metric"] for row in ours} == {"registration"}
    chosen = admin.client.get("/admin/experiments?start=2026-12-20&end=2027-01-12").get_data(as_text=True)
    assert 'name="start" value="2026-12-20"' in chosen


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)
def test_generated_traffic_finds_a_strong_effect_and_the_audit_stays_clean(app, db):
    done = generate(app, db, "metered-ab", visitors=1000, days=14)
    assert done.counts["visitors"] > 800 and done.counts["signups"] > 50
    experiment = cfg_of(app).preset("metered-ab").experiments[0]
    rows = summarize(dashboard.experiment_counts(db, experiment, month()), list(dashboard.EXPERIMENT_STEPS),
                     experiment.metric)
    banner = next(row for row in rows if row["variant"] == "banner-3")
    assert banner["test"]["step"] == "registration" and banner["test"]["significant"]
    assert banner["test"]["difference"] > 0.05  # three free articles bring more registrations than five
    assert audit.run(db, cfg_of(app)) == []
    tagged = db.scalar(f"select count(*) from events where {db.json_text('data', 'synthetic')} is null"
                       " and type in ('article_view', 'signup', 'unlock', 'subscription_changed')")
    assert tagged == 0  # every generated event is tagged
    assert db.execute("select count(*) from readers where synthetic = 0").fetchone()[0] == 0


@pytest.mark.parametrize("preset", ["wpr", "metered", "hard", "registration-wall", "freemium"])
def test_generated_traffic_keeps_every_rule_the_audit_checks(app, db, preset):
    generate(app, db, preset, visitors=150, days=40)
    assert audit.run(db, cfg_of(app)) == []


def test_generate_traffic_from_the_console(admin, app, db, runner):  # noqa: F811
    runner.invoke(args=["preset", "use", "metered-ab"])
    before = db.execute("select count(*) from events").fetchone()[0]
    for bad in ({"visitors": "5000"}, {"visitors": "many"}, {"days": "0"}, {"visitors": "-3"}):
        response = admin.post("/admin/experiments/traffic", bad, follow_redirects=True)
        assert response.status_code == 200 and "No traffic was generated" in response.get_data(as_text=True)
    assert db.execute("select count(*) from events").fetchone()[0] == before
    assert admin.client.post("/admin/experiments/traffic", data={"visitors": "10"}).status_code == 400  # no CSRF
    response = admin.post("/admin/experiments/traffic", {"visitors": "300", "days": "7"}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "generated visitors" in page and "banner-3" in page
    action = json.loads(db.execute("select data from events where type = 'admin_action'"
                                   " order by id desc limit 1").fetchone()[0])
    assert action["action"] == "traffic_generated" and action["admin"] == ADMIN[0] and action["visitors"] > 200


def test_generate_traffic_from_the_cli(runner, db):
    result = runner.invoke(args=["traffic", "generate", "--visitors", "100", "--days", "5"])
    assert result.exit_code == 0, result.output
    assert "generated visitors" in result.output
    refused = runner.invoke(args=["traffic", "generate", "--visitors", "2001"])
    assert refused.exit_code != 0 and "between 1 and 2,000" in refused.output


# --- the cohort, for any history ------------------------------------------------------------

_moment = st.tuples(st.sampled_from(["visitor:a", "visitor:b", "reader:1", "reader:2"]),
                    st.sampled_from(dashboard.FUNNEL), st.integers(0, 20).map(lambda n: f"2026-11-{n + 1:02d}"),
                    st.sampled_from([None, "control", "b"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_moment, max_size=40))
def test_a_cohort_never_grows_from_one_step_to_the_next(moments):
    reached = dashboard.cohort(moments, dashboard.FUNNEL)
    sizes = [sum(1 for depth, _ in reached.values() if depth > index) for index in range(len(dashboard.FUNNEL))]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == len({person for person, step, *_ in moments if step == "visit"})
    for person, (_depth, tag) in reached.items():  # the tag is one from the person's views
        assert tag is None or (person, "visit", tag) in {(p, s, t) for p, s, _, t in moments}
