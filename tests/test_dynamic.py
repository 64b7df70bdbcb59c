"""The dynamic meter: the score, the bands, the preset, the signals, the spends, races, leaks and the simulator."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gate.conf.resources import resource_dir
from gate.conf.settings import Config, ConfigError, load_preset
from gate.rules import engagement
from gate.rules.engagement import Dynamic, Signals, Weights
from gate.rules.paywall import Offer, Reason, Rules, Spend, Viewer, decide, explain, meter_for
from gate.rules.referral import REFERRALS
from gate.rules.timeutil import to_iso
from gate.services import engagement as signals_service
from gate.simulate.population import load_population
from gate.simulate.runner import SimulatedBilling, catalogue, simulate
from gate.storage import events, quota
from gate.storage.db import open_database
from gate.storage.quota import MemoryQuotaStore, SqlQuotaStore
from tests.helpers import (
    BOTH_ENGINES,
    BYPASS_TECHNIQUES,
    NY,
    START,
    Reader,
    leaks_from_a_gated_viewer,
    metered_slugs,
    race_processes,
)

CONFIG = resource_dir("config")
NOW = datetime(2026, 11, 18, 15, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Article:
    slug: str
    section: str = "Economy"
    access_class: str = "metered"


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config()


def rules_with(cfg: Config, **dynamic) -> Rules:
    """The shipped dynamic preset with its ``[dynamic]`` section replaced (validated like a file)."""
    data = cfg.preset("dynamic").model_dump(exclude_unset=True)
    data["dynamic"] = {**data["dynamic"], **dynamic}
    return Rules.model_validate(data)


def everyone(cfg: Config) -> Rules:
    """The dynamic meter for both tiers (the registered tier then has no limit of its own)."""
    data = cfg.preset("dynamic").model_dump(exclude_unset=True)
    data["tiers"]["registered"].pop("limit")
    data["dynamic"]["tiers"] = ["anonymous", "registered"]
    return Rules.model_validate(data)


# --- the score ------------------------------------------------------------------------------------


def test_the_default_weights_add_up_to_a_hundred_and_a_perfect_reader_scores_it():
    weights = Weights()
    assert weights.most == 100
    perfect = Signals(visits=30, days_since=0, sections=9, referral="direct", newsletter=True, registered=True)
    assert engagement.score(perfect, weights).total == 100


@pytest.mark.parametrize("signals, points", [
    (Signals(), {"visits": 0, "recency": 0, "sections": 0, "referral": 10, "newsletter": 0, "registered": 0}),
    (Signals(visits=6, days_since=0, sections=2), {"visits": 12, "recency": 15, "sections": 10}),
    (Signals(visits=20, days_since=4, sections=7), {"visits": 30, "recency": 11, "sections": 20}),  # caps
    (Signals(days_since=15), {"recency": 0}),
    (Signals(days_since=400), {"recency": 0}),
    (Signals(referral="search"), {"referral": 0}),
    (Signals(referral="newsletter"), {"referral": 10}),
    (Signals(referral="social", newsletter=True, registered=True),
     {"referral": 0, "newsletter": 10, "registered": 15}),
])
def test_each_signal_earns_its_documented_points(signals, points):
    score = engagement.score(signals, Weights())
    earned = {part.signal: part.points for part in score.parts}
    assert {name: earned[name] for name in points} == points
    assert score.total == sum(earned.values())


@given(st.builds(Signals, visits=st.integers(0, 30), days_since=st.none() | st.integers(0, 5000),
                 sections=st.integers(0, 20), referral=st.sampled_from(REFERRALS), newsletter=st.booleans(),
                 registered=st.booleans()),
       st.integers(0, 30))
def test_a_score_is_its_parts_out_of_a_hundred_and_more_reading_never_lowers_it(signals, more):
    weights = Weights()
    score = engagement.score(signals, weights)
    assert 0 <= score.total <= 100 and score.total == sum(part.points for part in score.parts)
    busier = replace(signals, visits=min(30, signals.visits + more), sections=signals.sections + more)
    assert engagement.score(busier, weights).total >= score.total
    assert Dynamic(tiers=["anonymous"], bands=[{"up_to": 30, "allowance": 5}, {"allowance": 1}]).allowance(
        score.total) in (5, 1)


def test_bands_take_every_score_in_order_and_say_so(cfg):
    dynamic = cfg.preset("dynamic").dynamic
    assert [dynamic.band(score) for score in (0, 30, 31, 70, 71, 100)] == [1, 1, 2, 2, 3, 3]
    assert [dynamic.allowance(score) for score in (0, 30, 31, 70, 71, 100)] == [5, 5, 3, 3, 1, 1]
    assert [dynamic.label(number) for number in (1, 2, 3)] == ["≤ 30", "31–70", "> 70"]
    assert dynamic.most == 5
    assert Dynamic(tiers=["anonymous"], bands=[{"allowance": 2}]).label(1) == "any score"


# --- the preset -----------------------------------------------------------------------------------


def test_the_dynamic_preset_meters_visitors_by_score_and_accounts_by_a_limit(cfg):
    rules = cfg.preset("dynamic")
    assert rules.title == "Dynamic meter"
    assert rules.dynamic_for("anonymous") is rules.dynamic and rules.dynamic_for("registered") is None
    assert rules.meters("anonymous") and rules.ceiling("anonymous") == 5 and rules.ceiling("registered") == 10
    assert rules.registration_helps  # an account reads ten, more than any band
    assert all(cfg.preset(name).dynamic is None for name in cfg.presets if name != "dynamic")


#: (id, text to replace in dynamic.toml, replacement, dotted key, reason)
BROKEN = [
    ("bands out of order", "up_to = 70", "up_to = 20", "dynamic.bands", "up_to must increase"),
    ("last band closed", 'allowance = 1\noffer', 'up_to = 90\nallowance = 1\noffer', "dynamic.bands",
     "the last band must have no up_to"),
    ("open band in the middle", "up_to = 70\n", "", "dynamic.bands", "only the last band may leave out up_to"),
    ("allowance too large", "allowance = 5", "allowance = 500", "dynamic.bands.0.allowance",
     "less than or equal to 100"),
    ("negative allowance", "allowance = 3", "allowance = -1", "dynamic.bands.1.allowance",
     "greater than or equal to 0"),
    ("up_to above a score", "up_to = 70", "up_to = 100", "dynamic.bands", "leaves no score for the last band"),
    ("subscribers are not metered", 'tiers = ["anonymous"]', 'tiers = ["subscriber"]', "dynamic.tiers.0",
     "'anonymous' or 'registered'"),
    ("a tier twice", 'tiers = ["anonymous"]', 'tiers = ["anonymous", "anonymous"]', "dynamic.tiers",
     "listed once"),
    ("no tiers", 'tiers = ["anonymous"]', "tiers = []", "dynamic.tiers", "at least 1 item"),
    ("weights over a hundred", "newsletter = 10\nregistered", "newsletter = 20\nregistered", "dynamic.weights",
     "the weights' caps add up to 110, more than 100"),
    ("a limit beside a band", '[tiers.anonymous]\nperiod', '[tiers.anonymous]\nlimit = 5\nperiod', "dynamic",
     "remove tiers.anonymous.limit"),
    ("unknown band key", 'offer = "subscribe"', 'offer = "subscribe"\nprice = 3', "dynamic.bands.2.price",
     "unknown key"),
    ("unknown band offer", 'offer = "subscribe"', 'offer = "register"', "dynamic.bands.2.offer", "'subscribe'"),
    ("weight missing its cap", "[dynamic.weights.visits]\npoints = 2\ncap = 30", "[dynamic.weights.visits]\npoints = 2",
     "dynamic.weights.visits.cap", "Field required"),
]


@pytest.mark.parametrize("old, new, key, reason", [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN])
def test_a_broken_dynamic_section_is_refused_naming_the_key_and_reason(tmp_path, old, new, key, reason):
    text = (CONFIG / "presets" / "dynamic.toml").read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "dynamic.toml"
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_preset(path, "UTC")
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: ") and reason in message, message
    assert len(message.splitlines()) == 1, message


def test_an_experiment_may_not_set_the_limit_of_a_dynamic_tier(cfg):
    data = cfg.preset("dynamic").model_dump(exclude_unset=True)
    data["experiments"] = [{"id": "tighter", "variants": [{"id": "control", "weight": 1},
                                                          {"id": "two", "weight": 1, "anonymous_limit": 2}]}]
    with pytest.raises(ValueError, match="sets anonymous_limit, but the anonymous tier's allowance comes from"):
        Rules.model_validate(data)


# --- decide ---------------------------------------------------------------------------------------


def _spends(count: int) -> tuple[Spend, ...]:
    return tuple(Spend(f"read-{n}", NOW - timedelta(hours=n + 1)) for n in range(count))


def test_the_band_allowance_replaces_the_limit_and_the_trace_says_why(cfg):
    rules = cfg.preset("dynamic")
    decision = decide(rules, Viewer("anonymous", "visitor:v", signals=Signals()), Article("a"), NOW, traced=True)
    assert (decision.access, decision.reason, decision.spend) == ("full", Reason.METER_AVAILABLE, True)
    meter = decision.meter.as_dict()
    assert (meter["score"], meter["band"], meter["allowance"], meter["limit"], meter["remaining"]) == (10, 1, 5, 5, 5)
    assert ("engagement 10 (visits 0, recency 0, sections 0, referral 10, newsletter 0, registered 0)"
            " → band ≤ 30: 5 free") in decision.trace
    keen = Signals(visits=12, days_since=0, sections=3)  # 24 + 15 + 15 + 10 = 64
    exhausted = decide(rules, Viewer("anonymous", "visitor:v", _spends(3), signals=keen), Article("a"), NOW)
    assert (exhausted.reason, exhausted.offer, exhausted.meter.allowance) == (Reason.METER_EXHAUSTED,
                                                                               Offer.REGISTER, 3)


def test_the_top_band_asks_for_a_subscription_instead_of_a_signup(cfg):
    rules = cfg.preset("dynamic")
    loyal = Signals(visits=25, days_since=0, sections=4, referral="direct")  # 30 + 15 + 20 + 10 = 75
    decision = decide(rules, Viewer("anonymous", "visitor:v", _spends(1), signals=loyal), Article("a"), NOW)
    assert (decision.reason, decision.offer, decision.meter.band) == (Reason.METER_EXHAUSTED, Offer.SUBSCRIBE, 3)
    assert decision.meter.as_dict()["limit"] == 1


def test_a_band_of_none_still_reads_what_was_unlocked_this_period(cfg):
    rules = rules_with(cfg, bands=[{"up_to": 50, "allowance": 2}, {"allowance": 0}])
    keen = Signals(visits=30, days_since=0, sections=4)
    viewer = Viewer("anonymous", "visitor:v", (Spend("kept", NOW - timedelta(days=1)),), signals=keen)
    assert decide(rules, viewer, Article("kept"), NOW).reason == Reason.ALREADY_UNLOCKED
    fresh = decide(rules, viewer, Article("new"), NOW)
    assert (fresh.access, fresh.reason, fresh.meter.limit, fresh.meter.remaining) == ("teaser",
                                                                                      Reason.METER_EXHAUSTED, 0, 0)


def test_an_account_scores_its_newsletter_and_itself_when_its_tier_is_dynamic(cfg):
    rules = everyone(cfg)
    reader = Viewer("registered", "reader:1", signals=Signals(visits=10, days_since=1, sections=2, newsletter=True,
                                                              registered=True))
    meter = meter_for(rules, reader, NOW)  # 20 + 14 + 10 + 10 + 10 + 15 = 79
    assert (meter.score.total, meter.allowance) == (79, 1)
    unread = meter_for(rules, Viewer("registered", "reader:1"), NOW)  # no history read: what the viewer says
    assert (unread.score.total, unread.allowance) == (25, 5)
    assert not rules.registration_helps  # an account only scores higher


def test_a_fixed_meter_says_it_has_no_score(cfg):
    meter = decide(cfg.preset("wpr"), Viewer("registered", "reader:1"), Article("a"), NOW).meter.as_dict()
    assert (meter["score"], meter["band"], meter["allowance"]) == (None, None, None)


def test_explain_lists_the_inputs_with_their_points_and_the_bands(cfg):
    signals = Signals(visits=3, days_since=2, sections=2, referral="search")
    facts = explain(cfg.preset("dynamic"), Viewer("anonymous", "visitor:v", signals=signals), Article("a"), NOW)
    found = facts["engagement"]
    assert (found["score"], found["band"], found["band_label"], found["allowance"]) == (29, 1, "≤ 30", 5)
    assert {part["signal"]: (part["seen"], part["points"]) for part in found["parts"]} == {
        "visits": ("3 of the last 30 days", 6), "recency": ("last read 2 days ago", 13),
        "sections": ("2 read in 30 days", 10), "referral": ("search", 0), "newsletter": ("not enrolled", 0),
        "registered": ("no account", 0)}
    assert [(band["label"], band["allowance"], band["offer"]) for band in found["bands"]] == [
        ("≤ 30", 5, None), ("31–70", 3, None), ("> 70", 1, "subscribe")]
    assert facts["rule"]["limit"] == 5
    assert explain(cfg.preset("wpr"), Viewer("anonymous", "visitor:v"), Article("a"), NOW)["engagement"] is None


# --- quota.unlock records what each spend was granted under (the stores' contract: test_quota.py) -------


def test_unlock_records_the_allowance_it_checked(cfg):
    store, rules = MemoryQuotaStore(), cfg.preset("dynamic")
    keen = Viewer("anonymous", "visitor:v", signals=Signals(visits=5, days_since=0, sections=2))  # 45: three
    for n in range(5):
        viewer = replace(keen, spends=store.spends("visitor:v"))
        quota.unlock(store, rules, viewer, Article(f"a{n}"), NOW)
    assert [(g.score, g.allowance) for g in store.grants("visitor:v")] == [(45, 3)] * 3


# --- races: concurrent unlocks never pass the allowance they record, on both engines -------------------


class SlowStore(SqlQuotaStore):
    """The site's store, slow to admit as a busy server is: it widens any race window."""

    def spend(self, meter_key, slug, window_key, now, admit, **grant):
        def slow(spends):
            time.sleep(0.003)
            return admit(spends)
        return super().spend(meter_key, slug, window_key, now, slow, **grant)


def _racer(target, worker, attempts, signals, start, results):
    """One process: wait for the gun, then unlock many articles for one visitor, scored by ``signals``."""
    db = open_database(target, 2)
    store, rules = SlowStore(db), Config().preset("dynamic")
    start.wait()
    granted = 0
    for attempt in range(attempts):
        viewer = Viewer("anonymous", "visitor:racer", store.spends("visitor:racer"), signals=signals)
        granted += quota.unlock(store, rules, viewer, Article(f"w{worker}-a{attempt}"), NOW)[1]
    db.close()
    results.put(granted)


@pytest.mark.slow
def test_concurrent_unlocks_of_two_bands_never_pass_the_allowance_each_recorded(backend_target):
    """Eight processes race for one visitor: four scored casual (five free), four loyal (one free)."""
    casual, loyal = Signals(), Signals(visits=25, days_since=0, sections=4)
    granted = sum(race_processes(_racer, [(backend_target, w, 12, loyal if w % 2 else casual) for w in range(8)]))
    db = open_database(backend_target)
    rows = db.rows("select score, allowance from unlocks where meter_key = 'visitor:racer' order by id")
    db.close()
    assert 1 <= granted == len(rows) <= 5
    assert {(row["score"], row["allowance"]) for row in rows} <= {(10, 5), (75, 1)}
    for count, row in enumerate(rows, start=1):  # each spend left the meter within its own allowance
        assert count <= row["allowance"], rows


# --- the signals, read from the site's events ---------------------------------------------------------


def _view(db, at: datetime, slug: str, **who) -> None:
    events.record(db, "article_view", at, slug=slug, **who, access="teaser", reason="meter_exhausted")


@BOTH_ENGINES
def test_the_signals_count_local_days_sections_the_last_read_and_a_newsletter(app, db, cfg):
    rules, slugs = everyone(cfg), metered_slugs(db, 3)
    sections = {row["slug"]: row["section"] for row in db.rows("select slug, section from articles")}
    now = START.astimezone(timezone.utc)
    late, early = datetime(2026, 11, 26, 23, 30, tzinfo=NY), datetime(2026, 11, 27, 0, 30, tzinfo=NY)
    assert late.astimezone(timezone.utc).date() == early.astimezone(timezone.utc).date()  # one UTC day, two local
    for at, slug in ((late, slugs[0]), (early, slugs[1]), (early, slugs[1]), (START - timedelta(days=40), slugs[2])):
        _view(db, at, slug, visitor_id="v1")
    found = signals_service.read(db, rules, "anonymous", "visitor:v1", "search", now)
    assert found == Signals(visits=2, days_since=1, sections=len({sections[slugs[0]], sections[slugs[1]]}),
                            referral="search", newsletter=False, registered=False)
    reader = db.insert("readers", {"email": "r@example.com", "session_token": "t", "created_at": to_iso(now)})
    _view(db, START - timedelta(days=35), slugs[2], reader_id=reader)  # outside the 30 days: only the last read
    db.insert("enrollments", {"reader_id": reader, "list_id": "meridian-weekly", "status": "active",
                              "created_at": to_iso(now)})
    found = signals_service.read(db, rules, "registered", f"reader:{reader}", "direct", now)
    assert found == Signals(visits=0, days_since=35, sections=0, referral="direct", newsletter=True, registered=True)
    assert signals_service.read(db, cfg.preset("wpr"), "anonymous", "visitor:v1", "direct", now) is None
    assert signals_service.read(db, cfg.preset("dynamic"), "registered", f"reader:{reader}", "direct", now) is None


def _reads(client, statements, path: str) -> int:
    client.get(path)
    statements.clear()
    assert client.get(path).status_code == 200
    return statements["select"]


@BOTH_ENGINES
def test_the_dynamic_meter_costs_one_statement_and_a_fixed_one_none(app, db, runner, statements):
    slug, fresh = metered_slugs(db, 2)
    runner.invoke(args=["preset", "use", "metered"])  # an anonymous auto meter: the site, then the spends
    fixed_client = app.test_client()
    fixed = _reads(fixed_client, statements, f"/articles/{slug}")
    statements.clear()
    fixed_client.get(f"/articles/{fresh}")  # a view that spends: the meter is read again after it
    fixed_spend = statements["select"]
    runner.invoke(args=["preset", "use", "dynamic"])
    client = app.test_client()
    assert _reads(client, statements, f"/articles/{slug}") == fixed + 1
    statements.clear()
    client.get(f"/articles/{fresh}")
    assert statements["select"] == fixed_spend + 1  # the signals are read once, not again after the spend


# --- the site ---------------------------------------------------------------------------------------


@BOTH_ENGINES
def test_a_visitor_reads_their_bands_allowance_and_each_spend_records_it(app, db, runner):
    runner.invoke(args=["preset", "use", "dynamic"])
    visitor, slugs = Reader(app.test_client()), metered_slugs(db, 8)
    first = visitor.article(slugs[0])
    assert first["access"] == "full" and (first["meter"]["score"], first["meter"]["allowance"]) == (10, 5)
    served = [visitor.article(slug) for slug in slugs[1:]]
    meter = visitor.meter()
    assert meter["allowance"] < 5 and meter["used"] == meter["allowance"]  # reading raised the score
    assert served[-1]["reason"] == "meter_exhausted" and served[-1]["offer"] == "register"
    rows = db.rows("select score, allowance from unlocks order by id")
    assert len(rows) == meter["used"] and all(row["allowance"] is not None for row in rows)
    assert [row["score"] for row in rows] == sorted(row["score"] for row in rows)  # scores only rise today
    for count, row in enumerate(rows, start=1):
        assert count <= row["allowance"] == engagement_allowance(row["score"])


def engagement_allowance(score: int) -> int:
    return Config().preset("dynamic").dynamic.allowance(score)


@BOTH_ENGINES
def test_the_explain_drawer_and_the_api_show_the_score_its_inputs_and_the_band(app, db, runner):
    runner.invoke(args=["preset", "use", "dynamic"])
    app.config["DEMO"] = True
    visitor, slug = Reader(app.test_client()), metered_slugs(db, 1)[0]
    page = visitor.client.get(f"/articles/{slug}").get_data(as_text=True)
    assert "Engagement" in page and "score <strong>10</strong> of 100" in page
    assert "referral: direct → 10 points" in page and "≤ 30: 5 free articles" in page
    assert "31–70 → 3" in page and "&gt; 70 → 1 and a subscribe offer" in page
    data = visitor.client.get(f"/api/articles/{slug}?explain=1").get_json()
    assert data["meter"]["band"] == 2 and data["explain"]["engagement"]["band_label"] == "31–70"
    assert any(line.startswith("engagement ") and "→ band 31–70: 3 free" in line for line in data["trace"])


@BOTH_ENGINES
def test_the_gate_words_its_count_from_the_meter_not_the_preset(app, db, runner, tmp_path):
    """An engaged account under a meter that scores everyone: one free article, and the gate says one."""
    app.extensions["gate.config"] = dynamic_for_everyone(tmp_path / "config")
    runner.invoke(args=["preset", "use", "dynamic"])
    reader, slugs = Reader(app.test_client()), metered_slugs(db, 3)
    reader.signup("keen@example.com")
    reader_id = db.scalar("select id from readers where email = 'keen@example.com'")
    for days in range(20):  # a reader on twenty of the last thirty days
        _view(db, START - timedelta(days=days, hours=1), slugs[days % 3], reader_id=reader_id)
    assert reader.meter()["allowance"] == 1
    assert reader.unlock(slugs[0]).status_code == 303
    page = reader.client.get(f"/articles/{slugs[1]}").get_data(as_text=True)
    assert "read your 1 free article this month" in page and "free articles this month" not in page
    assert 'data-offer="subscribe"' in page


def test_a_persona_with_one_left_has_one_left_of_the_band_its_history_scores(app, db, runner, tmp_path):
    app.extensions["gate.config"] = dynamic_for_everyone(tmp_path / "config")
    app.config["DEMO"] = True
    runner.invoke(args=["preset", "use", "dynamic"])
    presenter = Reader(app.test_client())
    for persona, left in (("one-left", 1), ("none-left", 0)):
        presenter.post("/demo/persona", {"persona": persona, "next": "/"})
        meter = presenter.meter()
        assert (meter["allowance"], meter["remaining"], meter["used"]) == (5, left, 5 - left), persona
    keen = db.scalar("select id from readers where email = 'persona.one-left@meridian.example'")
    for days in range(20):  # the persona has been reading most days
        _view(db, START - timedelta(days=days, hours=1), metered_slugs(db, 4)[days % 4], reader_id=keen)
    presenter.post("/demo/persona", {"persona": "one-left", "next": "/"})
    meter = presenter.meter()
    assert (meter["allowance"], meter["remaining"], meter["used"]) == (1, 1, 0)


def dynamic_for_everyone(target) -> Config:
    """The configuration with the dynamic preset scoring both tiers (a copy of config/ at ``target``), its gate
    worded for a subscription (an account does not read more there)."""
    shutil.copytree(CONFIG, target)
    path = target / "presets" / "dynamic.toml"
    text = path.read_text().replace('tiers = ["anonymous"]', 'tiers = ["anonymous", "registered"]')
    text = text.replace("[tiers.registered]\nlimit = 10\n", "[tiers.registered]\n")
    text = text.replace("Keep reading with a free account", "Subscribe to keep reading")
    path.write_text(text.replace("Create a free account: ten articles a month of your choice, whatever your "
                                 "engagement score.", "Subscribers read every article."))
    return Config(target)


# --- leaks: a gated dynamic viewer gets no gated text through any channel or bypass ---------------------


def _gated(app, runner, db, state: str) -> tuple[Reader, str]:
    """A client in one gated state under the dynamic preset, and the article it is gated from."""
    runner.invoke(args=["preset", "use", "dynamic"])
    person, slugs = Reader(app.test_client()), metered_slugs(db, 8)
    if state == "visitor-exhausted":
        for slug in slugs[1:]:
            person.article(slug)
        assert person.meter()["remaining"] == 0
    else:
        person.signup("choosing@example.com")
    return person, slugs[0]


@pytest.mark.parametrize("state", ["visitor-exhausted", "registered-choosing"])
@pytest.mark.parametrize("technique", list(BYPASS_TECHNIQUES))
def test_no_channel_and_no_bypass_leaks_under_the_dynamic_meter(app, runner, db, state, technique):
    person, slug = _gated(app, runner, db, state)
    assert leaks_from_a_gated_viewer(person, slug, BYPASS_TECHNIQUES[technique]) == [], (state, technique)


# --- the simulator ------------------------------------------------------------------------------------


def _simulate(cfg, presets: dict, trace=None, readers=1500, days=30, seed=7):
    population = load_population(CONFIG / "population.toml")
    start = datetime(2026, 1, 1, 12, tzinfo=cfg.preset("dynamic").tz)
    return simulate(population, presets, readers=readers, days=days, seed=seed, start=start,
                    articles=catalogue(population.articles.count, cfg.publication.sections),
                    billing=SimulatedBilling.from_plans(cfg.plans), trace=trace)


def test_the_simulator_gives_the_same_json_for_the_same_seed(cfg):
    first = _simulate(cfg, {"dynamic": cfg.preset("dynamic")}, readers=600, days=20).as_dict()
    assert first == _simulate(cfg, {"dynamic": cfg.preset("dynamic")}, readers=600, days=20).as_dict()
    assert first != _simulate(cfg, {"dynamic": cfg.preset("dynamic")}, readers=600, days=20, seed=8).as_dict()


def test_one_flat_band_is_exactly_the_fixed_limit(cfg):
    """The score changes nothing by itself: a single band of five is the classic meter of five, to the number."""
    flat = rules_with(cfg, bands=[{"allowance": 5}])
    data = cfg.preset("dynamic").model_dump(exclude_unset=True)
    data.pop("dynamic")
    data["tiers"]["anonymous"]["limit"] = 5
    fixed = Rules.model_validate(data)
    result = _simulate(cfg, {"fixed": fixed, "flat": flat}, readers=800, days=20)
    assert result.summary("fixed") == result.summary("flat")
    assert result.outcomes[0].daily == result.outcomes[1].daily


def test_fixed_and_dynamic_differ_as_the_bands_say(cfg):
    """One population, a fixed five and the dynamic bands: engaged visitors get three or one, so fewer spends,
    more gates and more exhausted meters; every spend stays within the allowance it recorded."""
    data = cfg.preset("dynamic").model_dump(exclude_unset=True)
    data.pop("dynamic")
    data["tiers"]["anonymous"]["limit"] = 5
    steps = []
    result = _simulate(cfg, {"fixed": Rules.model_validate(data), "dynamic": cfg.preset("dynamic")},
                       trace=lambda step: steps.append(step) if step.allowance is not None else None)
    fixed, dynamic = result.summary("fixed"), result.summary("dynamic")
    assert dynamic["unlocks"] < fixed["unlocks"] and dynamic["gate_impressions"] > fixed["gate_impressions"]
    assert dynamic["meter_reach"] > fixed["meter_reach"]
    exhausted = {step.allowance for step in steps if step.reason == Reason.METER_EXHAUSTED}
    assert {3, 1} <= exhausted  # the extra gates came at the tighter bands
    bands = cfg.preset("dynamic").dynamic
    spent: dict[str, int] = {}
    for step in steps:
        assert step.allowance == bands.allowance(step.score)
        if step.reason == Reason.METER_AVAILABLE and step.access == "full":  # a visitor's spend, auto mode
            spent[step.key] = spent.get(step.key, 0) + 1
            assert spent[step.key] <= step.allowance
