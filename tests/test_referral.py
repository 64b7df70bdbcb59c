"""Referral rules: the class of an arrival, the side doors it opens, spoofing, signed newsletter links,
the daily search allowance (raced on both engines), leaks, explain and the audit."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from pydantic import ValidationError

from gate import audit
from gate.conf.settings import Config
from gate.rules import referral
from gate.rules.paywall import Reason, ReferralRules, Viewer, decide
from gate.services import newsletter_mail
from gate.storage import quota
from gate.storage.db import open_database
from gate.storage.quota import MemoryQuotaStore, SqlQuotaStore
from tests.helpers import FREE, METERED, PREMIUM, START, Reader, leaks, metered_slugs

GOOGLE = {"Referer": "https://www.google.com/"}
FACEBOOK = {"Referer": "https://m.facebook.com/story.php?id=1"}
SECRET = "test-secret-key"  # conftest's SECRET_KEY


@pytest.mark.parametrize("referer, expected", [
    ("https://www.google.com/", "search"),
    ("https://www.google.co.uk/search?q=swaps", "search"),
    ("https://www.bing.com/search?q=x", "search"),
    ("https://duckduckgo.com/", "search"),
    ("https://search.yahoo.com/", "search"),
    ("https://search.brave.com/search?q=x", "search"),
    ("https://m.facebook.com/", "social"),
    ("https://t.co/abc", "social"),
    ("https://x.com/someone/status/1", "social"),
    ("https://twitter.com/", "social"),
    ("https://www.linkedin.com/feed/", "social"),
    ("https://old.reddit.com/r/news", "social"),
    ("https://news.ycombinator.com/item?id=1", "social"),
    ("https://google.evil.example/", "direct"),  # the name inside another site's host is not the engine
    ("https://notgoogle.com/", "direct"),
    ("https://www.nytimes.com/", "direct"),
    ("http://meridian.test/articles/x", "direct"),  # our own pages
    ("ftp://www.google.com/", "direct"),
    ("not a url", "direct"),
    ("", "direct"),
    (None, "direct"),
])
def test_classification_table(referer, expected):
    assert referral.classify(referer, True, None, "a") == expected
    assert referral.classify(referer, False, None, "a") == "direct"  # an untrusting preset never reads it


def test_a_signed_newsletter_link_counts_only_on_its_article():
    assert referral.classify(None, False, "a", "a") == "newsletter"
    assert referral.classify("https://www.google.com/", True, "b", "a") == "search"


@pytest.mark.parametrize("section", [{"social": True}, {"search_daily": 2}, {"search_registration_grant": 1}])
def test_referer_grants_need_a_trusted_referer(section):
    with pytest.raises(ValidationError, match="trust_referer"):
        ReferralRules.model_validate(section)


# --- decide, pure ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def doors():
    return Config().preset("side-doors")


class Art:
    def __init__(self, slug, access_class="metered", section="Economy"):
        self.slug, self.access_class, self.section = slug, access_class, section


def test_premium_stays_premium_and_free_stays_free(doors):
    for kind in ("search", "social", "newsletter"):
        viewer = Viewer("anonymous", "visitor:v", referral=kind, arrival="p")
        assert decide(doors, viewer, Art("p", "premium"), START).reason == Reason.PREMIUM_ONLY
        assert decide(doors, viewer, Art("p", "free"), START).reason == Reason.FREE_ARTICLE


def test_social_opens_the_article_it_came_for_and_no_other(doors):
    viewer = Viewer("anonymous", "visitor:v", referral="social", arrival="a")
    came = decide(doors, viewer, Art("a"), START)
    assert came.reason == Reason.REFERRAL and came.access == "full" and not came.spend
    assert came.as_dict()["grant"] == {"kind": "referral", "referral": "social", "slug": "a"}
    other = decide(doors, viewer, Art("b"), START, traced=True)
    assert other.reason == Reason.METER_AVAILABLE and other.spend  # the normal meter, and it counts
    assert "another article" in " ".join(other.trace)


def trace(rules, viewer, slug) -> tuple[str, ...]:
    """The decision's steps in words for ``viewer`` on the metered article ``slug`` at START."""
    return decide(rules, viewer, Art(slug), START, traced=True).trace


@pytest.mark.parametrize("kind, preset, line", [
    ("social", "side-doors", "social arrival reads the article it came for"),
    ("newsletter", "side-doors", "newsletter arrival reads the article it came for"),
    ("social", "wpr", "social arrival, but this preset opens no social side door"),
    ("search", "wpr", "search arrival, but this preset opens no search side door for this reader"),
])
def test_the_trace_says_why_a_side_door_opened_or_not(kind, preset, line):
    rules, viewer = Config().preset(preset), Viewer("anonymous", "visitor:v", referral=kind, arrival="a")
    assert line in trace(rules, viewer, "a")
    assert decide(rules, viewer, Art("a"), START).trace == ()  # words only when asked


def test_the_search_allowance_is_per_day_and_wider_once_registered(doors):
    store, day = MemoryQuotaStore(), referral.search_meter("visitor:v")
    for n in range(5):
        viewer = Viewer("anonymous", "visitor:v", referral="search", arrival=f"s{n}",
                        search_spends=store.spends(day))
        decision, spent = quota.unlock(store, doors, viewer, Art(f"s{n}"), START)
        assert spent and decision.reason == Reason.REFERRAL and decision.as_dict()["grant"]["left_today"] == 4 - n
    sixth = Viewer("anonymous", "visitor:v", referral="search", arrival="s5", search_spends=store.spends(day))
    assert decide(doors, sixth, Art("s5"), START).reason == Reason.METER_AVAILABLE  # the meter applies
    assert "search arrival: 5 of 5 search reads used today, so the meter applies" in trace(doors, sixth, "s5")
    again = replace(sixth, arrival="s0")
    assert decide(doors, again, Art("s0"), START).reason == Reason.REFERRAL  # re-reading today is free
    assert "search arrival: 5 of 5 search reads used today, re-reading this one is free" in trace(doors, again, "s0")
    first = replace(sixth, search_spends=())
    assert "search arrival: 0 of 5 search reads used today, this one counts (not the meter)" in trace(doors, first, "s5")
    assert decide(doors, sixth, Art("s5"), START + timedelta(days=1)).reason == Reason.REFERRAL  # a new day
    registered = replace(sixth, tier="registered")  # Extended Access: two more a day once registered
    assert decide(doors, registered, Art("s5"), START).reason == Reason.REFERRAL
    assert store.spends("visitor:v") == ()  # the meter was never touched


# --- the site: spoofing, signed links, leaks ---------------------------------------------


def use(runner, preset):
    assert runner.invoke(args=["preset", "use", preset]).exit_code == 0


def test_a_spoofed_referer_reads_in_full_where_the_preset_trusts_it(app, runner, db):
    use(runner, "side-doors")
    curl = app.test_client()  # like curl: no cookies kept between calls that matter
    data = curl.get(f"/api/articles/{METERED}", headers=GOOGLE).get_json()
    assert data["reason"] == "referral" and "body_html" in data
    assert data["grant"]["referral"] == "search" and data["meter"]["used"] == 0
    assert db.execute("select count(*) from unlocks where meter_key like 'search:%'").fetchone()[0] == 1
    assert db.execute("select count(*) from events where type = 'referral_read'").fetchone()[0] == 1


def test_an_untrusting_preset_ignores_the_same_referer(app, runner):
    use(runner, "metered")
    data = app.test_client().get(f"/api/articles/{METERED}", headers=GOOGLE).get_json()
    assert data["reason"] == "meter_available" and data["meter"]["used"] == 1 and data["grant"] is None


def link(slug, list_id="meridian-weekly"):
    """The path of a newsletter's signed link to ``slug``."""
    return newsletter_mail.article_link(SECRET, "", slug, list_id)


def test_a_signed_newsletter_link_reads_its_article(app, runner):
    use(runner, "side-doors")
    data = app.test_client().get("/api" + link(METERED)).get_json()
    assert data["reason"] == "referral" and data["grant"]["referral"] == "newsletter"


def tampered(path):
    """The link with one character of its signature changed."""
    cut = len(path) - 3
    return path[:cut] + ("A" if path[cut] != "A" else "B") + path[cut + 1:]


@pytest.mark.parametrize("how", ["tampered", "moved", "forged"])
def test_a_bad_newsletter_link_falls_back_to_the_meter(app, runner, db, how):
    use(runner, "side-doors")
    other = metered_slugs(db, 2)[1 if metered_slugs(db, 2)[0] == METERED else 0]
    path = {"tampered": tampered(link(METERED)),
            "moved": link(other).replace(f"/articles/{other}", f"/articles/{METERED}"),
            "forged": newsletter_mail.article_link("another-secret", "", METERED, "meridian-weekly")}[how]
    data = app.test_client().get("/api" + path).get_json()
    assert data["reason"] == "meter_available" and data["meter"]["used"] == 1 and data["grant"] is None


def exhaust(visitor, db):
    """Spend the anonymous meter (5 a month under side-doors) on articles other than METERED."""
    for slug in [s for s in metered_slugs(db, 7) if s != METERED][:5]:
        assert visitor.article(slug)["reason"] == "meter_available"


def test_a_referral_grant_for_one_article_never_opens_another(app, runner, db):
    use(runner, "side-doors")
    visitor = Reader(app.test_client())
    exhaust(visitor, db)
    other = next(s for s in metered_slugs(db, 8)[5:] if s != METERED)
    page = visitor.client.get(f"/articles/{METERED}", headers=FACEBOOK).get_data(as_text=True)
    assert 'data-access="full"' in page
    assert visitor.article(METERED)["reason"] == "referral"  # it sticks for the session's views of it
    for response in (visitor.client.get(f"/articles/{other}"), visitor.client.get(f"/api/articles/{other}"),
                     visitor.client.get(f"/api/articles/{other}?{link(METERED).split('?')[1]}")):
        text = response.get_data(as_text=True)
        assert leaks(text, other) == [] and "body_html" not in text
    assert visitor.article(other)["reason"] == "meter_exhausted"
    for slug in (PREMIUM, FREE):  # premium stays premium through any side door
        visitor.client.get(f"/articles/{slug}", headers=GOOGLE)
    assert visitor.article(PREMIUM)["reason"] == "premium_only"


def test_json_ld_stays_right_through_a_side_door(app, runner):
    use(runner, "side-doors")
    page = app.test_client().get(f"/articles/{METERED}", headers=GOOGLE).get_data(as_text=True)
    ld = json.loads(re.search(r'<script type="application/ld\+json">(.*?)</script>', page, re.S).group(1))
    assert 'data-access="full"' in page and ld["isAccessibleForFree"] is False


def test_explain_shows_the_class_and_why(app, runner):
    use(runner, "side-doors")
    data = app.test_client().get(f"/api/articles/{METERED}?explain=1", headers=GOOGLE).get_json()
    facts = data["explain"]["referral"]
    assert facts["class"] == "search" and facts["arrival"] == METERED and "Referer" in facts["why"]
    assert facts["grant"]["per_day"] == 5 and any("search reads used today" in line for line in data["trace"])
    assert data["explain"]["reason_label"].startswith("Side door")


def test_the_search_allowance_holds_on_the_site_and_the_audit_agrees(app, runner, db, clock):
    use(runner, "side-doors")
    visitor = Reader(app.test_client())
    slugs = metered_slugs(db, 6)
    assert [visitor.client.get(f"/api/articles/{s}", headers=GOOGLE).get_json()["reason"] for s in slugs] == \
        ["referral"] * 5 + ["meter_available"]
    assert audit.run(db, Config()) == []
    db.execute("insert into unlocks (meter_key, slug, window_key, unlocked_at) select meter_key, 'planted',"
               " window_key, unlocked_at from unlocks where meter_key like 'search:%' limit 1")
    assert {v.kind for v in audit.run(db, Config())} == {"referral_over"}


# --- the race: tens of threads, one day's allowance, on each engine ------------------------


def test_concurrent_search_reads_never_exceed_the_allowance(backend_target, doors):
    """Twenty threads arrive from search at twenty articles at once: exactly five are read by the side door."""
    gun, results = threading.Barrier(20), []

    def arrive(n):
        db = open_database(backend_target, 2)
        try:
            store, slug = SqlQuotaStore(db), f"race-{n}"
            viewer = Viewer("anonymous", "visitor:racer", referral="search", arrival=slug,
                            search_spends=store.spends(referral.search_meter("visitor:racer")))
            gun.wait()
            results.append(quota.unlock(store, doors, viewer, Art(slug), START))
        finally:
            db.close()

    threads = [threading.Thread(target=arrive, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db = open_database(backend_target)
    rows = db.scalar("select count(*) from unlocks where meter_key = 'search:visitor:racer'")
    metered = db.scalar("select count(*) from unlocks where meter_key = 'visitor:racer'")
    db.close()
    side_door = [d for d, spent in results if spent and d.reason == Reason.REFERRAL]
    assert len(results) == 20 and len(side_door) == 5 and rows == 5
    assert metered == sum(spent for _, spent in results) - 5 <= 5  # the losers fell back to the meter (auto)


def test_the_arrives_from_search_persona_sets_the_next_article_only(app, runner, db):
    use(runner, "side-doors")
    app.config["DEMO"] = True
    presenter = Reader(app.test_client())
    presenter.post("/demo/persona", {"persona": "from-search", "next": "/"})
    first, second = metered_slugs(db, 2)
    assert presenter.article(first)["grant"]["referral"] == "search"
    assert presenter.article(second)["reason"] == "meter_available"  # the next page only
    assert presenter.article(first)["reason"] == "referral"  # the arrival sticks to its article


def test_a_search_arrival_who_registers_at_the_gate_reads_on(app, runner, db):
    """Extended Access: the arrival survives signing up, and the account has its own, wider allowance."""
    use(runner, "side-doors")
    visitor = Reader(app.test_client())
    slugs = metered_slugs(db, 7)
    for slug in slugs[:5]:  # the day's five search reads
        assert visitor.client.get(f"/api/articles/{slug}", headers=GOOGLE).get_json()["reason"] == "referral"
    for slug in [*slugs[:4], slugs[5]]:  # then five direct reads spend the meter (the first four again too)
        assert visitor.article(slug)["reason"] == "meter_available"
    gate = visitor.client.get(f"/api/articles/{slugs[6]}", headers=GOOGLE).get_json()
    assert (gate["reason"], gate["offer"]) == ("meter_exhausted", "register")
    assert visitor.signup("extended@example.com", next=f"/articles/{slugs[6]}").status_code == 303
    back = visitor.article(slugs[6])
    assert back["reason"] == "referral" and back["tier"] == "registered" and back["grant"]["per_day"] == 7
    assert back["meter"]["used"] == 5  # the visitor's meter moved to the account; this read did not touch it
