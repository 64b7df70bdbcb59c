"""Presets in words (gate.rules.describe): the differences a presenter reads, not dotted keys."""

from __future__ import annotations

import pytest

from gate.conf.settings import Config
from gate.rules import describe
from gate.rules.paywall import Rules
from tests.helpers import DynamicRules


@pytest.fixture(scope="module")
def shipped() -> dict[str, Rules]:
    return Config().presets


def preset(**data) -> Rules:
    """A preset from file-like data (title filled in), in the demo's time zone."""
    return Rules.model_validate({"title": "A preset", **data, "name": "p", "timezone": "America/New_York"})


WPR_TIERS = {"anonymous": {"limit": 0}, "registered": {"limit": 3, "mode": "choice", "period": "month"}}


@pytest.mark.parametrize("before, after, sentence", [
    ({"tiers": WPR_TIERS},
     {"tiers": {**WPR_TIERS, "registered": {"limit": 5, "mode": "auto", "period": "week"}}},
     "Registered readers: 3 of their choice a month → 5 counted views a week"),
    ({"teaser_paragraphs": 2}, {"teaser_paragraphs": 3}, "Teaser: 2 paragraphs → 3"),
    ({"teaser_paragraphs": 1}, {"teaser_paragraphs": 2}, "Teaser: 1 paragraph → 2 paragraphs"),
    ({"sections": {"Economy": "premium"}}, {"sections": {"Economy": "free"}}, "Section Economy: premium → free"),
    ({}, {"sections": {"Climate": "free"}}, "Section Climate: as each article is marked → free"),
    ({}, {"referral": {"trust_referer": True, "search_daily": 2}},
     "Search arrivals: none → 2 a day outside the meter"),
    ({}, {"referral": {"trust_referer": True, "search_daily": 2}}, "Referer header: ignored → trusted (anyone can fake it)"),
    ({}, {"referral": {"newsletter": True}}, "Newsletter links: the meter → read the article they came for"),
    ({"tiers": {"anonymous": {"limit": 5, "mode": "auto"}}}, {"tiers": {"anonymous": {"limit": 1, "mode": "auto"}}},
     "Anonymous visitors: 5 counted views a month → 1 counted view a month"),
    ({"tiers": {"anonymous": {"limit": 5, "mode": "auto", "period": "rolling:30"}}},
     {"tiers": {"anonymous": {"limit": 5, "mode": "auto", "period": "lifetime"}}},
     "Anonymous visitors: 5 counted views in any 30 days → 5 counted views in all (never resets)"),
    ({"tiers": {"registered": {"limit": 3}}}, {"tiers": {"registered": {"limit": "unlimited"}}},
     "Registered readers: 3 of their choice a month → every article but premium ones"),
    ({"tiers": {"registered": {"limit": 3}}}, {"tiers": {"registered": {"limit": 3, "unlock_lasts": "forever"}}},
     "Registered readers: 3 of their choice a month → 3 of their choice a month, each kept for good"),
    ({"tiers": {"registered": {"limit": 10, "mode": "auto"}}},
     {"tiers": {"registered": {"limit": 10, "mode": "auto", "require_verified": True}}},
     "Registered readers: 10 counted views a month → 10 counted views a month, once their address is confirmed"),
    ({}, {"devices": {"limit": 2}}, "Signed-in devices per account: no cap → 2 devices"),
    ({}, {"gate": {"style": "banner"}}, "Gate: inline, under the teaser → a banner at the foot of the page"),
    ({"title": "Three of your choice"}, {"title": "Five a week"}, "Title: “Three of your choice” → “Five a week”"),
])
def test_a_change_reads_as_a_sentence(before, after, sentence):
    assert sentence in describe.differences(preset(**before), preset(**after))


def test_long_texts_are_quoted_from_where_they_part():
    start = "Create a free account to keep reading: ten articles a month "
    before = preset(gate={"body": start + "and our free newsletter."})
    after = preset(gate={"body": start + "once you confirm your address, and our free newsletter."})
    assert describe.differences(before, after) == [
        "Gate text: “…and our free newsletter.” → “…once you confirm your address, and our free newsletter.”"]


def test_the_same_rules_have_no_differences(shipped):
    for rules in shipped.values():
        assert describe.differences(rules, rules) == []


def test_shipped_presets_compared_in_words(shipped):
    changes = describe.differences(shipped["metered"], shipped["side-doors"])
    assert changes[0] == "Title: “Classic meter” → “Side doors (NYT 2011)”"
    assert "Search arrivals: none → 5 a day outside the meter" in changes
    assert "Registered search arrivals: nothing more → 2 more a day" in changes
    assert not any("referral." in change for change in changes)  # words, never keys
    freemium = describe.differences(shipped["wpr"], shipped["freemium"])
    assert "Section Economy: as each article is marked → premium" in freemium
    assert "Anonymous visitors: a teaser only → every article but premium ones" in freemium


def test_a_change_no_words_cover_is_still_told_by_its_key():
    """A setting with no effect under the others (a teaser-only tier's mode) is not silently dropped."""
    before = preset(tiers={"anonymous": {"limit": 0, "mode": "choice"}})
    after = preset(tiers={"anonymous": {"limit": 0, "mode": "auto"}})
    assert describe.differences(before, after) == ["tiers.anonymous.mode: choice → auto"]


def test_every_key_of_the_model_is_told_by_some_aspect(shipped):
    """A new field of the rules model falls back to its key until it gets words (then this test asks for them)."""
    keys = describe.settings(shipped["side-doors"], None).keys() | describe.settings(shipped["metered-ab"], None).keys()
    untold = sorted(key for key in keys if not any(aspect.covers(key) for aspect in describe.aspects(shipped["wpr"])))
    assert untold == []


def test_summary_leaves_out_what_is_asked(shipped):
    words = dict(describe.summary(shipped["wpr"], without=("title", "description")))
    assert "Title" not in words and words["Registered readers"] == "3 of their choice a month"
    assert words["Anonymous visitors"] == "a teaser only" and words["Subscribers"] == "every article"


def dynamic(**data) -> DynamicRules:
    return DynamicRules.model_validate({"title": "A preset", **data, "name": "p", "timezone": "UTC"})


BANDS = {"tiers": ["anonymous", "registered"],
         "bands": [{"up_to": 30, "allowance": 5}, {"up_to": 70, "allowance": 3}, {"allowance": 1, "offer": "subscribe"}]}


def test_a_dynamic_meter_is_told_by_its_bands():
    fixed, banded = dynamic(tiers={"registered": {"limit": 3}}), dynamic(dynamic=BANDS)
    changes = describe.differences(fixed, banded)
    assert changes == [
        "Anonymous visitors: a teaser only → their band's allowance, of their choice a month",
        "Registered readers: 3 of their choice a month → their band's allowance, of their choice a month",
        "Dynamic meter: none → score ≤ 30: 5, ≤ 70: 3, higher: 1 and a subscribe offer "
        "(anonymous visitors, registered readers)",
        "Engagement score weights: none → the documented defaults"]
    weighted = dynamic(dynamic={**BANDS, "weights": {"visits": 4}})
    assert describe.differences(banded, weighted) == ["Engagement score weights: the documented defaults → custom"]
    heavier = dynamic(dynamic={**BANDS, "weights": {"visits": 6}})
    assert describe.differences(weighted, heavier) == ["dynamic.weights.visits: 4 → 6"]


def test_a_longer_phrase_is_said_whole():
    before, after = preset(tiers={"registered": {"limit": 3}}), preset(tiers={"registered": {"limit": 10}})
    assert describe.differences(before, after) == [
        "Registered readers: 3 of their choice a month → 10 of their choice a month"]
