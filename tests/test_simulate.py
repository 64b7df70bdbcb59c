"""The population simulator: the site's engine, reproducible runs, clear errors, outputs."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import gate
from gate.cli.simulate import simulate as simulate_command
from gate.conf.resources import resource_dir
from gate.conf.settings import Config, ConfigError
from gate.rules import periods
from gate.rules.paywall import Reason
from gate.services import newsletter_mail
from gate.services.content import Article
from gate.simulate import runner as sim
from gate.simulate.population import Crowd, load_population
from gate.simulate.runner import PresetRun, SimulatedBilling, catalogue, spend_horizon
from gate.storage.db import open_database
from tests.helpers import START, Reader, mailed_link

POPULATION = resource_dir("config") / "population.toml"
KEY = re.compile(r'name="idempotency_key" type="hidden" value="([^"]+)"')
CARD = {"name": "Sim Reader", "card_number": "4242 4242 4242 4242", "expiry": "12/30", "cvc": "123"}

#: A tiny, eager population: every path (signup, unlock, checkout, lost cookies) happens in days.
KEEN = """
registered_lift = 2.0

[articles]
count = 14
popularity = 0.5

[segments.keen]
share = 1.0
visits = { mean = 6.0, per = "week", distribution = "poisson" }
articles_per_visit = 2.0
registers = 0.5
unlocks = 0.7
subscribes_when_exhausted = 0.15
subscribes_otherwise = 0.04
cookie_loss = 0.25
churn = 0.0
"""
#: Appended to KEEN: the keen readers' visits arrive by every side door.
SIDE_DOORS = "arrivals = { search = 0.35, social = 0.15, newsletter = 0.15 }\n"


@pytest.fixture(scope="module")
def cfg():
    """The shipped configuration, loaded once for the module."""
    return Config()


def invoke(*args):
    """Run `gate simulate` with these arguments."""
    return CliRunner().invoke(simulate_command, [str(arg) for arg in args])


def run(cfg, presets, readers=300, days=20, seed=5, population=None, trace=None, workers=1,
        articles=None, start=None):
    """The simulator as a library, on the shipped population unless another is given."""
    population = population or load_population(POPULATION)
    rules = {name: cfg.preset(name) for name in presets}
    start = start or datetime(2026, 1, 1, 12, tzinfo=rules[presets[0]].tz)
    return sim.simulate(population, rules, readers=readers, days=days, seed=seed, start=start,
                        articles=articles or catalogue(population.articles.count, cfg.publication.sections),
                        billing=SimulatedBilling.from_plans(cfg.plans), trace=trace, workers=workers)


# --- reproducibility ------------------------------------------------------------


def test_same_seed_same_json_and_another_seed_differs():
    args = ["--preset", "wpr", "--preset", "metered", "--readers", 1500, "--days", 20, "--json"]
    first, again = invoke(*args, "--seed", 3), invoke(*args, "--seed", 3)
    other = invoke(*args, "--seed", 4)
    assert first.exit_code == again.exit_code == other.exit_code == 0, first.output
    assert first.stdout == again.stdout
    assert json.loads(first.stdout)["results"] != json.loads(other.stdout)["results"]


def test_splitting_readers_over_processes_gives_the_same_result(cfg):
    one = run(cfg, ["wpr", "metered"], readers=4500, days=8, seed=11)
    two = run(cfg, ["wpr", "metered"], readers=4500, days=8, seed=11, workers=2)
    assert two.workers == 2
    assert one.as_dict() == two.as_dict()


def test_every_preset_meets_the_same_readers(cfg):
    result = run(cfg, ["hard", "wpr", "freemium"], readers=400, days=15)
    visits = {o.preset: [row["visits"] for row in o.daily] for o in result.outcomes}
    assert visits["hard"] == visits["wpr"] == visits["freemium"]
    assert sum(visits["hard"]) > 0


# --- one engine: the simulator and the real site agree ------------------------------


def _pay(reader: Reader, email: str | None):
    """The real checkout form with the test card that succeeds."""
    page = reader.client.get("/subscribe/monthly").get_data(as_text=True)
    fields = {**CARD, "idempotency_key": KEY.search(page).group(1)}
    if email:
        fields["email"] = email
    return reader.post("/subscribe/monthly", fields)


def _arrive(reader: Reader, step) -> dict:
    """A GET of the article as the step arrived: a search or social Referer, or a newsletter's signed link."""
    if step.arrival == "newsletter":
        return reader.client.get("/api" + newsletter_mail.article_link("test-secret-key", "", step.slug, "weekly")
                                 ).get_json()
    referer = {"search": "https://www.google.com/search?q=x", "social": "https://t.co/x"}.get(step.arrival)
    return reader.client.get(f"/api/articles/{step.slug}", headers={"Referer": referer} if referer else {}).get_json()


def _replay(app, clock, steps) -> list[tuple]:
    """Do on the site what the simulated readers did, day by day; return what it served."""
    readers, served, today = {}, [], 0
    for step in steps:
        while today < step.day:
            clock.advance(timedelta(days=1))
            today += 1
        if step.kind == "new_visitor" or step.reader not in readers:
            readers[step.reader] = Reader(app.test_client())
        reader = readers[step.reader]
        if step.kind == "view":
            data = _arrive(reader, step)
        elif step.kind == "unlock":
            data = reader.post_json(f"/api/articles/{step.slug}/unlock").get_json()
        elif step.kind == "register":
            assert reader.signup(f"sim{step.reader}@example.com").status_code == 303
            continue
        elif step.kind == "subscribe":
            email = f"sim{step.reader}@example.com" if step.tier == "anonymous" else None
            if email is None:
                assert _pay(reader, email).status_code == 303
            else:  # an anonymous payer signs in through the link mailed to the address
                assert _pay(reader, email).status_code == 200
                database = open_database(app.config["DATABASE"])
                link = mailed_link(database, email)
                database.close()
                assert reader.post(link).status_code == 303
            continue
        else:
            assert step.kind == "new_visitor", f"the site cannot replay {step.kind}"
            continue
        served.append((step.day, step.reader, step.kind, step.slug,
                       data["access"], data["reason"], data["offer"]))
    return served


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("preset, seed", [("wpr", 6), ("metered", 6), ("side-doors", 6), ("dynamic", 6)])
def test_simulator_and_site_make_the_same_decisions(app, db, clock, runner, cfg, tmp_path, preset, seed):
    """Five keen readers for ten days through the simulator, then through the real site (side doors: by Referer;
    the dynamic meter: its signals from the simulated history there, from the site's events here)."""
    assert runner.invoke(args=["preset", "use", preset]).exit_code == 0
    path = tmp_path / "keen.toml"
    path.write_text(KEEN + (SIDE_DOORS if preset == "side-doors" else ""))
    articles = [Article.from_row(row) for row in
                db.query("select * from articles order by published_at desc, slug")]
    steps = []
    run(cfg, [preset], readers=5, days=10, seed=seed, population=load_population(path),
        trace=steps.append, articles=articles, start=START)
    kinds = {step.kind for step in steps}
    assert {"view", "register", "subscribe", "new_visitor"} <= kinds  # every path was taken
    assert ("unlock" in kinds) == (preset in ("wpr", "dynamic"))  # choice meters press Unlock; auto ones spend on view
    expected = [(s.day, s.reader, s.kind, s.slug, s.access, s.reason, s.offer)
                for s in steps if s.kind in ("view", "unlock")]
    reasons = {step[5] for step in expected}
    assert {Reason.ALREADY_UNLOCKED, Reason.METER_AVAILABLE, Reason.METER_EXHAUSTED, Reason.PREMIUM_ONLY,
            Reason.FREE_ARTICLE, Reason.SUBSCRIBER} <= reasons
    if preset == "side-doors":
        assert {s.arrival for s in steps} == {"direct", "search", "social", "newsletter"} and Reason.REFERRAL in reasons
    if preset == "dynamic":
        assert {5, 3} <= {s.allowance for s in steps}  # reading moved visitors from one band into the next
    assert _replay(app, clock, steps) == expected


# --- the population file ----------------------------------------------------------


def _broken(tmp_path, old: str, new: str) -> Path:
    text = POPULATION.read_text()
    assert old in text
    path = tmp_path / "population.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old, new, message", [
    ("churn = 0.02", "churn = 0.02\ncolour = \"red\"", r"segments\.loyal\.colour: unknown key"),
    ("share = 0.70", "share = 0.60", r"segments: .*shares must sum to 1, got 0\.9"),
    ("registers = 0.005", "registers = 1.5", r"segments\.casual\.registers: .*less than or equal to 1"),
    ("mean = 2.0, per = \"month\"", "mean = -2.0, per = \"month\"",
     r"segments\.casual\.visits\.mean: .*greater than or equal to 0"),
    ("share = 0.265", "share = \"a quarter\"", r"segments\.casual\.share: Input should be a valid number"),
    ("per = \"week\", distribution = \"negative_binomial\", dispersion = 2.0",
     "per = \"fortnight\", distribution = \"negative_binomial\", dispersion = 2.0",
     r"segments\.regular\.visits\.per: Input should be 'week' or 'month'"),
    ("count = 500", "count = 0", r"articles\.count: .*greater than or equal to 1"),
    ("registered_lift = 3.0", "registered_lift = 3.0\n[extra]", r"extra: unknown key"),
    ("[articles]", "[articles", r"not valid TOML"),
    ("conversion_elasticity = 2.5", "conversion_elasticity = -1",
     r"segments\.casual\.price\.conversion_elasticity: .*greater than or equal to 0"),
    ("step_up_churn = 0.15", "step_up_churn = 1.5", r"segments\.loyal\.price\.step_up_churn: .*less than or equal to 1"),
    ("step_up_churn = 0.35 }", "step_up_churn = 0.35, floor = 2 }", r"segments\.regular\.price\.floor: unknown key"),
])
def test_a_broken_population_file_is_refused_naming_file_key_and_reason(tmp_path, old, new, message):
    path = _broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as caught:
        load_population(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert re.search(message, str(caught.value))


def test_the_shipped_population_loads_and_adds_up():
    population = load_population(POPULATION)
    assert list(population.segments) == ["one-off", "casual", "regular", "loyal"]
    assert sum(s.share for s in population.segments.values()) == pytest.approx(1.0)
    assert "TEACHING DEFAULT, not a measurement" in POPULATION.read_text()


def test_the_teaching_default_stays_plausible(cfg):
    """A few percent meet the 5-a-month meter; well under 1% subscribe; the loyal read most."""
    result = run(cfg, ["metered"], readers=3000, days=30, seed=1)
    summary = result.summary("metered")
    assert 0.02 < summary["meter_reach"] < 0.2
    assert summary["conversion_rate"] < 0.01
    assert summary["visitors"] > summary["active_readers"]  # lost cookies inflate visitor counts


# --- the command: outputs and refusals ------------------------------------------------


def test_json_has_what_reproduces_the_run(tmp_path):
    result = invoke("--preset", "wpr", "--preset", "hard", "--readers", 500, "--days", 5, "--seed", 9, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["seed"], data["presets"], data["version"]) == (9, ["wpr", "hard"], gate.__version__)
    assert data["population"] == str(POPULATION) and len(data["population_sha256"]) == 64
    assert [r["preset"] for r in data["results"]] == ["wpr", "hard"]
    assert len(data["results"][0]["daily"]) == 5
    assert "visits/s" in result.stderr


def test_table_compares_the_presets():
    result = invoke("--preset", "wpr", "--preset", "metered", "--readers", 800, "--days", 10)
    assert result.exit_code == 0, result.output
    for label in ("readers", "visitors", "article views", "gate impressions", "registrations", "unlocks",
                  "subscriptions", "churned", "revenue", "impression rate", "registration rate",
                  "conversion rate"):
        assert label in result.stdout
    header = result.stdout.splitlines()[2]
    assert header.split() == ["wpr", "metered"]
    assert "seed 42" in result.stdout and "800 readers" in result.stdout


def test_experiments_are_not_applied_and_the_table_says_so(cfg):
    result = invoke("--preset", "metered-ab", "--preset", "metered", "--readers", 600, "--days", 10, "--json")
    data = json.loads(result.stdout)
    ab, plain = data["results"]
    assert ab["experiments_ignored"] == ["gate-pressure"] and plain["experiments_ignored"] == []
    assert ab["summary"] == plain["summary"]  # the same base rules: metered-ab's control is metered
    table = invoke("--preset", "metered-ab", "--readers", 100, "--days", 2).stdout
    assert "metered-ab: experiments not applied" in table and "gate-pressure" in table


def test_csv_and_plot_are_written(tmp_path):
    out, svg = tmp_path / "csv", tmp_path / "funnel.svg"
    result = invoke("--preset", "wpr", "--preset", "metered", "--readers", 400, "--days", 8,
                    "--csv", out, "--plot", svg)
    assert result.exit_code == 0, result.output
    for name in ("wpr", "metered"):
        with (out / f"daily-{name}.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert tuple(rows[0]) == sim.DAILY_FIELDS and len(rows) == 8
    with (out / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    assert [row["preset"] for row in summary] == ["wpr", "metered"]
    assert {"conversion_rate", "seed", "version", "population_file"} <= set(summary[0])
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) == 2 * (3 + 4 + 3)  # presets x series


@pytest.mark.parametrize("args, message", [
    (["--preset", "paywall"], "no preset named 'paywall'"),
    (["--preset", "wpr", "--preset", "wpr"], "'wpr' is given more than once"),
    (["--readers", "0"], "'--readers': 0 is not in the range 1<=x<=10000000"),
    (["--readers", "-5"], "'--readers': -5 is not in the range 1<=x<=10000000"),
    (["--days", "0"], "0 is not in the range 1<=x<=3650"),
    (["--days", "3651"], "3651 is not in the range 1<=x<=3650"),
    (["--start", "yesterday"], "not a date: 'yesterday'"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, args, message):
    out, svg = tmp_path / "csv", tmp_path / "plot.svg"
    result = invoke(*args, "--csv", out, "--plot", svg)
    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists() and not svg.exists()


@pytest.mark.parametrize("make, args, message", [
    (lambda tmp: None, lambda tmp: ["--plot", tmp / "missing" / "funnel.svg"], "no folder"),
    (lambda tmp: (tmp / "taken").write_text("x"), lambda tmp: ["--csv", tmp / "taken"], "is a file"),
])
def test_unwritable_outputs_are_refused_before_simulating(tmp_path, make, args, message):
    make(tmp_path)
    result = invoke(*args(tmp_path))
    assert result.exit_code == 2 and message in result.output
    assert "Simulated" not in result.output


def test_the_command_loads_numpy_only_when_it_runs():
    probe = "import sys, gate.cli.simulate; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bad_population_file_is_a_clear_error_and_writes_nothing(tmp_path):
    path = _broken(tmp_path, "registers = 0.02", "registers = 2")
    out = tmp_path / "csv"
    result = invoke("--population", path, "--csv", out, "--readers", 10, "--days", 2)
    assert result.exit_code == 1
    assert "population file error" in result.output
    assert f"{path}: segments.loyal.registers:" in result.output
    assert not out.exists()


# --- sanity: what the rules say must happen, happens ------------------------------------------


def test_rules_shape_the_funnel(cfg, tmp_path):
    path = tmp_path / "keen.toml"
    path.write_text(KEEN)
    steps = []
    result = run(cfg, ["hard", "registration-wall", "wpr", "metered"], readers=100, days=20, seed=3,
                 population=load_population(path), trace=steps.append)
    summary = {name: result.summary(name) for name in ("hard", "registration-wall", "wpr", "metered")}
    assert summary["hard"]["unlocks"] == 0 and summary["hard"]["registrations"] == 0
    assert summary["registration-wall"]["registrations"] > summary["hard"]["registrations"]
    assert summary["hard"]["subscriptions"] > 0 and summary["metered"]["unlocks"] > 0
    decisions = [step for step in steps if step.kind in ("view", "unlock")]
    subscribers = [step for step in decisions if step.tier == "subscriber"]
    assert subscribers and all(step.access == "full" for step in subscribers)
    assert all(step.access == "full" for step in decisions if step.reason == Reason.FREE_ARTICLE)


def test_churned_subscribers_lapse_to_registered_and_revenue_follows_the_plan(cfg, tmp_path):
    path = tmp_path / "churny.toml"
    path.write_text(KEEN.replace("churn = 0.0", "churn = 0.5").replace("subscribes_otherwise = 0.04",
                                                                         "subscribes_otherwise = 0.2"))
    steps = []
    result = run(cfg, ["hard"], readers=40, days=120, seed=4, population=load_population(path),
                 trace=steps.append)
    summary = result.summary("hard")
    price = SimulatedBilling.from_plans(cfg.plans).price_cents
    assert summary["churned"] > 0 and summary["renewals"] > 0
    assert summary["revenue_cents"] == price * (summary["subscriptions"] + summary["renewals"])
    assert summary["subscribers_end"] == summary["subscriptions"] - summary["churned"]
    churned = {step.reader for step in steps if step.kind == "churn"}
    later = [s for s in steps if s.reader in churned and s.kind == "view" and s.tier == "registered"]
    assert later  # a lapsed subscriber reads on as a registered reader


@settings(max_examples=60, deadline=None)
@given(first=st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31)),
       day=st.integers(0, sim.MAX_DAYS - 1),
       zone=st.sampled_from(["America/New_York", "Europe/London", "Australia/Lord_Howe",
                             "America/St_Johns", "Asia/Kathmandu", "Pacific/Chatham"]))
def test_each_simulated_day_is_one_local_day_at_the_same_hour(first, day, zone):
    """Across DST changes and year ends, day N is the Nth local date after the first, at noon."""
    config = Config()
    rules = config.preset("wpr").model_copy(update={"timezone": zone})
    crowd = Crowd(load_population(POPULATION), 1, 1, seed=0)
    preset = PresetRun("wpr", rules, crowd, catalogue(1, config.publication.sections),
                       SimulatedBilling.from_plans(config.plans),
                       datetime.combine(first, time(12), tzinfo=ZoneInfo(zone)))
    moment = preset.moment(day)
    local = moment.astimezone(ZoneInfo(zone))
    assert moment.tzinfo is timezone.utc
    assert (local.date(), local.hour) == (first + timedelta(days=day), 12)
    assert preset.day_of(moment) == day


# --- memory: spends no window can count again are forgotten, invisibly ------------------


def test_pruning_changes_no_decision(cfg, monkeypatch):
    pruned = run(cfg, ["wpr", "metered"], readers=500, days=70, seed=8)
    monkeypatch.setattr(sim, "spend_horizon", lambda rules, now: None)
    kept = run(cfg, ["wpr", "metered"], readers=500, days=70, seed=8)
    assert pruned.as_dict() == kept.as_dict()


def test_pruning_forgets_last_months_spends(cfg):
    population = load_population(POPULATION)
    rules = cfg.preset("metered")
    crowd = Crowd(population, 500, 50, seed=8)
    preset = PresetRun("metered", rules, crowd, catalogue(50, cfg.publication.sections),
                       SimulatedBilling.from_plans(cfg.plans), datetime(2026, 1, 1, 12, tzinfo=rules.tz))
    for day in range(45):
        preset.play(crowd.day(day))
    spends = [s for key in preset.spends for s in preset.spends[key]]
    assert spends and min(s.at for s in spends) >= datetime(2026, 2, 1, 5, tzinfo=timezone.utc)


def test_spend_horizon_follows_the_widest_window(cfg):
    now = datetime(2026, 3, 15, 17, tzinfo=timezone.utc)
    assert spend_horizon(cfg.preset("metered"), now) == datetime(2026, 3, 1, 5, tzinfo=timezone.utc)
    assert spend_horizon(cfg.preset("hard"), now) is None  # no meter at all
    rolling = cfg.preset("metered").model_copy(update={"tiers": cfg.preset("metered").tiers.model_copy(
        update={"anonymous": cfg.preset("metered").tiers.anonymous.model_copy(update={"period": "rolling:45"})})})
    assert spend_horizon(rolling, now) == now - timedelta(days=45)
    forever = cfg.preset("wpr").model_copy(update={"tiers": cfg.preset("wpr").tiers.model_copy(
        update={"registered": cfg.preset("wpr").tiers.registered.model_copy(update={"unlock_lasts": "forever"})})})
    assert spend_horizon(forever, now) is None


def test_windows_are_memoised_in_the_engine():
    """decide's window lookup is memoised once, in gate.rules.periods, for the site and the simulator.

    A rolling window is never the kept calendar one: the same moment asked
    again is found in the memo by moment.
    """
    tz, moment = ZoneInfo("America/New_York"), datetime(2031, 3, 5, 12, 0, 7, tzinfo=timezone.utc)
    first = periods.period_window("rolling:30", moment, tz)
    hits = periods._window_at.cache_info().hits
    assert periods.period_window("rolling:30", moment, tz) is first
    assert periods._window_at.cache_info().hits == hits + 1


# --- speed: a smoke run that measures, without asserting the machine's speed ------------


def test_speed_smoke_prints_visits_per_second():
    result = invoke("--preset", "wpr", "--preset", "metered", "--readers", 2000, "--days", 10, "--seed", 7)
    assert result.exit_code == 0, result.output
    measured = re.search(r"Simulated ([\d,]+) visits .* in ([\d.]+) s: ([\d,]+) visits/s", result.stderr)
    assert measured and int(measured.group(1).replace(",", "")) > 0


# --- side doors and gift links in the population (issue 17) ------------------------------


def _with_arrivals(tmp_path, arrivals: str) -> Path:
    path = tmp_path / "doors.toml"
    path.write_text(KEEN + f"arrivals = {{ {arrivals} }}\n")
    return path


def test_arrival_shares_are_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"segments\.keen\.arrivals\.gift: .*sum to at most 1, got 1\.2"):
        load_population(_with_arrivals(tmp_path, "search = 0.6, gift = 0.6"))
    with pytest.raises(ConfigError, match=r"segments\.keen\.arrivals\.email: unknown key"):
        load_population(_with_arrivals(tmp_path, "email = 0.1"))


def test_a_side_door_the_preset_does_not_open_changes_nothing(cfg, tmp_path):
    """Search and social arrivals under a preset without side doors read exactly as direct visits."""
    plain = load_population(_with_arrivals(tmp_path, "search = 0.0"))
    doors = load_population(_with_arrivals(tmp_path, "search = 0.5, social = 0.3"))
    before = run(cfg, ["metered", "side-doors"], readers=60, days=20, seed=3, population=plain)
    after = run(cfg, ["metered", "side-doors"], readers=60, days=20, seed=3, population=doors)
    assert after.summary("metered") == before.summary("metered")
    assert after.summary("side-doors")["referral_reads"] > 0 == before.summary("side-doors")["referral_reads"]
    assert after.summary("side-doors")["unlocks"] < before.summary("side-doors")["unlocks"]  # the meter spared


def test_the_funnel_follows_side_door_and_gift_readers(cfg, tmp_path):
    population = load_population(_with_arrivals(tmp_path, "search = 0.3, social = 0.2, gift = 0.2"))
    summary = run(cfg, ["side-doors"], readers=60, days=20, seed=3, population=population).summary("side-doors")
    assert summary["gift_reads"] > 0 and summary["gift_readers"] > 0
    assert 0 < summary["side_door_readers"] <= summary["active_readers"]
    assert 0 < summary["side_door_registered"] <= summary["registrations"]
    assert summary["gift_subscribed"] + summary["side_door_subscribed"] > 0
    assert summary["side_door_subscribed"] <= summary["subscriptions"]
