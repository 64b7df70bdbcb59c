"""The decision engine, table-driven over every preset in config/presets.

Each row says what a reader of one tier sees of one class of article with one
meter state under one preset: access, reason, offer and meter numbers. The
expectations are written out by hand from the presets' descriptions, not
recomputed from the rules, so a change to decide or to a preset shows up here.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from gate.conf.settings import Config
from gate.rules import paywall
from gate.rules.paywall import Decision, Offer, Reason, Rules, Spend, Viewer, decide, meter_for
from gate.storage.quota import MemoryQuotaStore, unlock

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
#: Site time of every row: late November 2026, after DST ended on November 1.
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=NY)
#: The December window opens at local midnight in New York: 05:00 UTC.
DECEMBER = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
SLUG = "the-article"
PRESETS = ("wpr", "metered", "hard", "freemium", "registration-wall")
TIERS = ("anonymous", "registered", "subscriber")
CLASSES = ("free", "metered", "premium")
STATES = ("none", "some", "exhausted", "unlocked")


@dataclass(frozen=True)
class Article:
    """Just what decide reads of an article."""

    slug: str
    section: str
    access_class: str


@pytest.fixture(scope="module")
def config() -> Config:
    """The shipped configuration, loaded once for the module."""
    return Config()


def test_every_preset_is_tested(config):
    """The table covers every preset; metered-ab is metered plus an experiment (test_console),
    metered-verified is metered plus proven addresses (below), and bypass-lab, the unsafe
    teaching preset, has its own tests (test_classroom); side-doors is metered plus referral
    side doors (test_referral); dynamic, the dynamic meter, has its own (test_dynamic)."""
    assert sorted(config.presets) == sorted(PRESETS + ("metered-ab", "metered-verified", "bypass-lab", "side-doors",
                                                       "dynamic"))
    assert config.presets["side-doors"].tiers == config.presets["metered"].tiers
    plain = config.presets["metered-ab"].model_dump(exclude={"name", "title", "description", "experiments"})
    assert plain == config.presets["metered"].model_dump(exclude={"name", "title", "description", "experiments"})
    tiers = config.presets["metered-verified"].tiers
    assert tiers.registered.require_verified
    assert tiers.model_copy(update={"registered": tiers.registered.model_copy(
        update={"require_verified": False})}) == config.presets["metered"].tiers


#: (access, reason, offer) for an unproven registered reader's metered article under metered-verified.
UNPROVEN = {
    "none": ("teaser", Reason.VERIFICATION_REQUIRED, Offer.VERIFY),
    "some": ("teaser", Reason.VERIFICATION_REQUIRED, Offer.VERIFY),  # spends moved from the anonymous meter
    "exhausted": ("teaser", Reason.METER_EXHAUSTED, Offer.SUBSCRIBE),
    "unlocked": ("full", Reason.ALREADY_UNLOCKED, None),
}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("verified", [True, False])
def test_the_registered_meter_can_require_a_proven_address(config, state, verified):
    rules = config.preset("metered-verified")
    viewer = Viewer("registered", "reader:1", spends_for(state, 10), verified=verified)
    decision = decide(rules, viewer, article_for("metered-verified", "metered"), NOW)
    want = METERED["metered", "registered"][state][:3] if verified else UNPROVEN[state]
    assert (decision.access, decision.reason, decision.offer) == want
    assert not decision.spend or verified
    assert paywall.explain(rules, viewer, article_for("metered-verified", "metered"), NOW)["offer_why"]


def test_an_unlimited_registered_tier_can_require_a_proven_address():
    rules = Rules(name="x", title="x", tiers={"anonymous": {"limit": 0},
                                               "registered": {"limit": "unlimited", "require_verified": True}})
    decision = decide(rules, Viewer("registered", "reader:1", verified=False), Article(SLUG, "Diplomacy", "metered"), NOW)
    assert (decision.access, decision.reason, decision.offer) == ("teaser", Reason.VERIFICATION_REQUIRED, Offer.VERIFY)


@pytest.mark.parametrize("tier", ["anonymous", "subscriber"])
def test_only_the_registered_tier_has_an_address_to_prove(tier):
    rule = {"limit": "unlimited", "require_verified": True}
    with pytest.raises(ValueError, match="registered tier only"):
        Rules(name="x", title="x", tiers={tier: rule})


def article_for(preset: str, cls: str, slug: str = SLUG) -> Article:
    """An article whose class under ``preset`` is ``cls``.

    Freemium sets the class of every site section, so its articles get their
    class from the section: Climate is free, Security premium, and a metered
    article can only come from a section the preset does not mention.
    """
    if preset == "freemium":
        section = {"free": "Climate", "premium": "Security", "metered": "Letters"}[cls]
        return Article(slug, section, "metered")
    return Article(slug, "Diplomacy", cls)


#: Each tier's meter limit per preset: None for unlimited (from the presets' descriptions).
LIMITS = {
    "wpr": {"anonymous": 0, "registered": 3, "subscriber": None},
    "metered": {"anonymous": 5, "registered": 10, "subscriber": None},
    "hard": {"anonymous": 0, "registered": 0, "subscriber": None},
    "freemium": {"anonymous": None, "registered": None, "subscriber": None},
    "registration-wall": {"anonymous": 0, "registered": None, "subscriber": None},
}


def spends_for(state: str, limit: int | None) -> tuple[Spend, ...]:
    """A November meter in one of the four states, for a tier with this limit.

    ``exhausted`` spends the whole limit on other articles; ``unlocked`` spends
    it too, one of them on this article, so only re-reading can be free.
    Tiers without a meter get a few spends anyway (left from another preset).
    """
    room = limit if limit else 3
    others = [f"other-{n}" for n in range(room)]
    slugs = {"none": [], "some": others[:1], "exhausted": others, "unlocked": [SLUG] + others[1:]}
    return tuple(Spend(slug, datetime(2026, 11, 2 + n, 9, tzinfo=NY)) for n, slug in enumerate(slugs[state]))


#: (used, limit, remaining) of the meter, per preset, tier and state.
METERS = {
    ("wpr", "anonymous"): dict.fromkeys(STATES, (0, 0, 0)),
    ("wpr", "registered"): {"none": (0, 3, 3), "some": (1, 3, 2), "exhausted": (3, 3, 0), "unlocked": (3, 3, 0)},
    ("metered", "anonymous"): {"none": (0, 5, 5), "some": (1, 5, 4), "exhausted": (5, 5, 0), "unlocked": (5, 5, 0)},
    ("metered", "registered"): {"none": (0, 10, 10), "some": (1, 10, 9), "exhausted": (10, 10, 0), "unlocked": (10, 10, 0)},
    ("hard", "anonymous"): dict.fromkeys(STATES, (0, 0, 0)),
    ("hard", "registered"): dict.fromkeys(STATES, (0, 0, 0)),
    ("freemium", "anonymous"): dict.fromkeys(STATES, (0, None, None)),
    ("freemium", "registered"): dict.fromkeys(STATES, (0, None, None)),
    ("registration-wall", "anonymous"): dict.fromkeys(STATES, (0, 0, 0)),
    ("registration-wall", "registered"): dict.fromkeys(STATES, (0, None, None)),
    **{(preset, "subscriber"): dict.fromkeys(STATES, (0, None, None)) for preset in PRESETS},
}

AVAILABLE_CHOICE = ("teaser", Reason.METER_AVAILABLE, Offer.UNLOCK, False)
AVAILABLE_AUTO = ("full", Reason.METER_AVAILABLE, None, True)
REREAD = ("full", Reason.ALREADY_UNLOCKED, None, False)

#: (access, reason, offer, spend) for a metered article, per preset, tier and state.
METERED = {
    ("wpr", "anonymous"): dict.fromkeys(STATES, ("teaser", Reason.REGISTRATION_REQUIRED, Offer.REGISTER, False)),
    ("wpr", "registered"): {
        "none": AVAILABLE_CHOICE,
        "some": AVAILABLE_CHOICE,
        "exhausted": ("teaser", Reason.METER_EXHAUSTED, Offer.SUBSCRIBE, False),
        "unlocked": REREAD,
    },
    ("metered", "anonymous"): {
        "none": AVAILABLE_AUTO,
        "some": AVAILABLE_AUTO,
        # Five free articles spent: signing up gives ten, so offer that first.
        "exhausted": ("teaser", Reason.METER_EXHAUSTED, Offer.REGISTER, False),
        "unlocked": REREAD,
    },
    ("metered", "registered"): {
        "none": AVAILABLE_AUTO,
        "some": AVAILABLE_AUTO,
        "exhausted": ("teaser", Reason.METER_EXHAUSTED, Offer.SUBSCRIBE, False),
        "unlocked": REREAD,
    },
    # Signing up to a hard paywall gives nothing more: offer the subscription.
    ("hard", "anonymous"): dict.fromkeys(STATES, ("teaser", Reason.SUBSCRIBERS_ONLY, Offer.SUBSCRIBE, False)),
    ("hard", "registered"): dict.fromkeys(STATES, ("teaser", Reason.SUBSCRIBERS_ONLY, Offer.SUBSCRIBE, False)),
    ("freemium", "anonymous"): dict.fromkeys(STATES, ("full", Reason.TIER_UNLIMITED, None, False)),
    ("freemium", "registered"): dict.fromkeys(STATES, ("full", Reason.TIER_UNLIMITED, None, False)),
    ("registration-wall", "anonymous"): dict.fromkeys(STATES, ("teaser", Reason.REGISTRATION_REQUIRED, Offer.REGISTER, False)),
    ("registration-wall", "registered"): dict.fromkeys(STATES, ("full", Reason.TIER_UNLIMITED, None, False)),
}


def expected(preset: str, tier: str, cls: str, state: str) -> tuple:
    """The row's (access, reason, offer, spend)."""
    if tier == "subscriber":
        return ("full", Reason.SUBSCRIBER, None, False)
    if cls == "free":
        return ("full", Reason.FREE_ARTICLE, None, False)
    if cls == "premium":
        return ("teaser", Reason.PREMIUM_ONLY, Offer.SUBSCRIBE, False)
    return METERED[preset, tier][state]


ROWS = list(itertools.product(PRESETS, TIERS, CLASSES, STATES))


@pytest.mark.parametrize("preset, tier, cls, state", ROWS)
def test_decision_table(config, preset, tier, cls, state):
    rules = config.preset(preset)
    viewer = Viewer(tier, "meter:1", spends_for(state, LIMITS[preset][tier]))
    decision = decide(rules, viewer, article_for(preset, cls), NOW)

    access, reason, offer, spend = expected(preset, tier, cls, state)
    meter = decision.meter
    assert (decision.access, decision.reason, decision.offer, decision.spend) == (access, reason, offer, spend)
    assert (meter.used, meter.limit, meter.remaining) == METERS[preset, tier][state]
    assert decision.tier == tier
    assert decision.access_class == cls
    limit = LIMITS[preset][tier]
    assert decision.meter.resets_at == (DECEMBER if limit else None)
    assert decision.meter.period == ("month" if limit else None)
    traced = decide(rules, viewer, article_for(preset, cls), NOW, traced=True)
    assert decision.trace == () and replace(traced, trace=()) == decision  # the words change nothing decided
    assert any(f"preset {preset}" in line for line in traced.trace)
    assert traced.trace[-1].startswith(f"{access}: {reason}")
    if rules.tier(tier).mode == "choice":
        assert not decision.spend
    assert decision.as_dict()["meter"]["resets_at"] == (DECEMBER.isoformat() if limit else None)


@pytest.mark.parametrize("preset, tier, cls, state", ROWS[::7])
def test_decide_is_pure(config, preset, tier, cls, state):
    rules = config.preset(preset)
    viewer = Viewer(tier, "meter:1", spends_for(state, LIMITS[preset][tier]))
    article = article_for(preset, cls)
    before = (rules.model_dump(), viewer, article)
    first = decide(rules, viewer, article, NOW)
    second = decide(rules, viewer, article, NOW)
    assert first == second
    assert isinstance(first, Decision)
    assert (rules.model_dump(), viewer, article) == before


def rules_with(config: Config, preset: str, **registered) -> Rules:
    """A preset with the registered tier's rule changed."""
    rules = config.preset(preset)
    rule = rules.tiers.registered.model_copy(update=registered)
    return rules.model_copy(update={"tiers": rules.tiers.model_copy(update={"registered": rule})})


def test_choice_mode_offers_unlock_and_never_spends(config):
    rules = config.preset("wpr")
    assert rules.tiers.registered.mode == "choice"
    for count in range(5):
        spends = tuple(Spend(f"s{n}", NOW - timedelta(hours=n + 1)) for n in range(count))
        decision = decide(rules, Viewer("registered", "m", spends), article_for("wpr", "metered"), NOW)
        assert decision.spend is False
        assert decision.offer == (Offer.UNLOCK if count < 3 else Offer.SUBSCRIBE)


def test_auto_mode_counts_the_view(config):
    rules = config.preset("metered")
    decision = decide(rules, Viewer("registered", "m"), article_for("metered", "metered"), NOW)
    assert (decision.access, decision.reason, decision.spend) == ("full", Reason.METER_AVAILABLE, True)
    choice = rules_with(config, "metered", mode="choice")
    decision = decide(choice, Viewer("registered", "m"), article_for("metered", "metered"), NOW)
    assert (decision.access, decision.offer, decision.spend) == ("teaser", Offer.UNLOCK, False)


@pytest.mark.parametrize("preset", ["wpr", "metered"])
def test_rereading_an_unlocked_article_is_free_even_when_exhausted(config, preset):
    rules = config.preset(preset)
    limit = rules.tiers.registered.limit
    spends = tuple(Spend(f"s{n}", NOW - timedelta(days=n + 1)) for n in range(limit - 1))
    spends += (Spend(SLUG, NOW - timedelta(minutes=5)),)
    viewer = Viewer("registered", "m", spends)
    again = decide(rules, viewer, article_for(preset, "metered"), NOW)
    assert (again.access, again.reason, again.spend) == ("full", Reason.ALREADY_UNLOCKED, False)
    assert again.meter.remaining == 0
    other = decide(rules, viewer, article_for(preset, "metered", "another"), NOW)
    assert (other.access, other.reason) == ("teaser", Reason.METER_EXHAUSTED)


#: Halloween 23:30 in New York is already November 1 in UTC, but October on the site.
HALLOWEEN = datetime(2026, 10, 31, 23, 30, tzinfo=NY)


@pytest.mark.parametrize(
    "lasts, access, reason, offer",
    [
        ("forever", "full", Reason.ALREADY_UNLOCKED, None),
        ("period", "teaser", Reason.METER_AVAILABLE, Offer.UNLOCK),
    ],
)
def test_unlock_lasts_across_a_month_boundary(config, lasts, access, reason, offer):
    rules = rules_with(config, "wpr", unlock_lasts=lasts)
    viewer = Viewer("registered", "m", (Spend(SLUG, HALLOWEEN),))
    decision = decide(rules, viewer, article_for("wpr", "metered"), NOW)
    assert (decision.access, decision.reason, decision.offer) == (access, reason, offer)
    # Either way, October's unlock is not charged to November's meter.
    assert (decision.meter.used, decision.meter.remaining) == (0, 3)
    # Within October, both rules say it is unlocked.
    october = decide(rules, viewer, article_for("wpr", "metered"), HALLOWEEN + timedelta(minutes=10))
    assert october.reason == Reason.ALREADY_UNLOCKED
    assert october.meter.used == 1


def test_previous_months_spends_do_not_count(config):
    rules = config.preset("wpr")
    october = tuple(Spend(f"old-{n}", HALLOWEEN - timedelta(days=n)) for n in range(3))
    first_minute = Spend("new", datetime(2026, 11, 1, 0, 0, tzinfo=NY))
    viewer = Viewer("registered", "m", october + (first_minute,))
    meter = meter_for(rules, viewer, NOW)
    assert (meter.used, meter.limit, meter.remaining) == (1, 3, 2)
    assert meter.window_key == "month:2026-11"
    # At the end of October the same spends fill that month's meter.
    assert meter_for(rules, replace(viewer, spends=october), HALLOWEEN).remaining == 0


def test_spends_stamped_after_now_still_count(config):
    """A concurrent request may stamp its spend a moment after this one's now: the meter
    must count it (never over-grant), and the article it bought is readable."""
    rules = config.preset("wpr")
    viewer = Viewer("registered", "m", (Spend(SLUG, NOW + timedelta(seconds=1)),))
    decision = decide(rules, viewer, article_for("wpr", "metered"), NOW)
    assert (decision.reason, decision.meter.used) == (Reason.ALREADY_UNLOCKED, 1)
    other = decide(rules, viewer, article_for("wpr", "metered", "another"), NOW)
    assert (other.reason, other.meter.used, other.meter.remaining) == (Reason.METER_AVAILABLE, 1, 2)


def test_same_article_spent_twice_counts_once(config):
    rules = config.preset("wpr")
    spends = (Spend(SLUG, NOW - timedelta(days=3)), Spend(SLUG, NOW - timedelta(days=1)))
    assert meter_for(rules, Viewer("registered", "m", spends), NOW).used == 1


@pytest.mark.parametrize(
    "now, resets",
    [
        (NOW, DECEMBER),
        (datetime(2026, 12, 31, 23, 30, tzinfo=NY), datetime(2027, 1, 1, 5, tzinfo=UTC)),
        (datetime(2027, 3, 20, 12, tzinfo=NY), datetime(2027, 4, 1, 4, tzinfo=UTC)),
        (datetime(2026, 10, 31, 23, 59, tzinfo=NY), datetime(2026, 11, 1, 4, tzinfo=UTC)),
    ],
)
def test_meter_resets_at_the_next_local_month_start(config, now, resets):
    rules = config.preset("wpr")
    assert rules.timezone == "America/New_York"
    decision = decide(rules, Viewer("registered", "m"), article_for("wpr", "metered"), now, traced=True)
    assert decision.meter.resets_at == resets
    assert any(resets.astimezone(NY).isoformat() in line for line in decision.trace)


@pytest.mark.parametrize(
    "section, own_class, access, reason",
    [
        ("Diplomacy", "metered", "full", Reason.FREE_ARTICLE),
        ("Climate", "premium", "full", Reason.FREE_ARTICLE),
        ("Economy", "free", "teaser", Reason.PREMIUM_ONLY),
        ("Technology", "metered", "teaser", Reason.PREMIUM_ONLY),
        ("Letters", "premium", "teaser", Reason.PREMIUM_ONLY),
        ("Letters", "free", "full", Reason.FREE_ARTICLE),
    ],
)
def test_freemium_sections_override_the_article_class(config, section, own_class, access, reason):
    rules = config.preset("freemium")
    article = Article(SLUG, section, own_class)
    decision = decide(rules, Viewer("registered", "m"), article, NOW, traced=True)
    assert (decision.access, decision.reason) == (access, reason)
    overridden = section in rules.sections and rules.sections[section] != own_class
    assert any(f"section {section} makes" in line for line in decision.trace) == overridden
    assert decide(rules, Viewer("subscriber", "m"), article, NOW).access == "full"


def test_sections_only_override_in_presets_that_set_them(config):
    article = Article(SLUG, "Economy", "metered")
    assert decide(config.preset("wpr"), Viewer("registered", "m"), article, NOW).access_class == "metered"
    freemium = decide(config.preset("freemium"), Viewer("registered", "m"), article, NOW)
    assert freemium.access_class == "premium"


@pytest.mark.parametrize(
    "preset, offer",
    [("wpr", Offer.REGISTER), ("registration-wall", Offer.REGISTER), ("metered", Offer.REGISTER), ("hard", Offer.SUBSCRIBE)],
)
def test_anonymous_is_offered_registration_only_when_it_helps(config, preset, offer):
    rules = config.preset(preset)
    limit = LIMITS[preset]["anonymous"]
    viewer = Viewer("anonymous", "visitor:1", spends_for("exhausted", limit))
    decision = decide(rules, viewer, article_for(preset, "metered"), NOW)
    assert decision.access == "teaser"
    assert decision.offer == offer
    registered = decide(rules, replace(viewer, tier="registered"), article_for(preset, "metered"), NOW)
    assert registered.offer != Offer.REGISTER


def test_trace_explains_the_decision(config):
    rules = config.preset("wpr")
    viewer = Viewer("registered", "m", spends_for("some", 3))
    trace = decide(rules, viewer, article_for("wpr", "metered"), NOW, traced=True).trace
    assert trace[:3] == ("tier registered", "preset wpr", "article is metered")
    assert any("meter 1 of 3 used" in line and "month:2026-11" in line for line in trace)
    assert trace[-1] == "teaser: meter_available, offer unlock"


# --- gate.storage.quota.unlock over the memory store ---------------------------------


def test_unlock_spends_at_most_the_limit(config):
    rules, store = config.preset("wpr"), MemoryQuotaStore()
    viewer = Viewer("registered", "reader:1")
    results = []
    for n in range(5):
        article = article_for("wpr", "metered", f"a{n}")
        decision, spent = unlock(store, rules, replace(viewer, spends=store.spends("reader:1")), article, NOW)
        results.append((decision.reason, spent, decision.meter.remaining))
    assert results == [
        (Reason.METER_AVAILABLE, True, 2),
        (Reason.METER_AVAILABLE, True, 1),
        (Reason.METER_AVAILABLE, True, 0),
        (Reason.METER_EXHAUSTED, False, 0),
        (Reason.METER_EXHAUSTED, False, 0),
    ]
    assert [s.slug for s in store.spends("reader:1")] == ["a0", "a1", "a2"]


def test_double_unlock_spends_once(config):
    rules, store = config.preset("wpr"), MemoryQuotaStore()
    stale = Viewer("registered", "reader:1")  # both tabs loaded before either unlocked
    article = article_for("wpr", "metered")
    first, spent_first = unlock(store, rules, stale, article, NOW)
    second, spent_second = unlock(store, rules, stale, article, NOW)
    assert (spent_first, spent_second) == (True, False)
    assert (first.reason, second.reason) == (Reason.METER_AVAILABLE, Reason.ALREADY_UNLOCKED)
    assert first.access == second.access == "full"
    assert second.meter.used == 1
    assert len(store.spends("reader:1")) == 1


def test_concurrent_unlocks_never_exceed_the_limit(config):
    rules, store = config.preset("wpr"), MemoryQuotaStore()
    stale = Viewer("registered", "reader:1")
    start = threading.Barrier(16)
    outcomes = []

    def press(n: int) -> None:
        start.wait()
        outcomes.append(unlock(store, rules, stale, article_for("wpr", "metered", f"a{n % 8}"), NOW)[1])

    threads = [threading.Thread(target=press, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 3
    assert len(store.spends("reader:1")) == 3
    assert len({s.slug for s in store.spends("reader:1")}) == 3


def test_unlock_when_exhausted_is_refused(config):
    rules, store = config.preset("wpr"), MemoryQuotaStore()
    for n in range(3):
        unlock(store, rules, Viewer("registered", "r"), article_for("wpr", "metered", f"a{n}"), NOW)
    viewer = Viewer("registered", "r", store.spends("r"))
    decision, spent = unlock(store, rules, viewer, article_for("wpr", "metered"), NOW)
    assert (decision.access, decision.reason, decision.offer) == ("teaser", Reason.METER_EXHAUSTED, Offer.SUBSCRIBE)
    assert spent is False
    assert len(store.spends("r")) == 3


@pytest.mark.parametrize(
    "preset, tier, cls, reason",
    [
        ("wpr", "anonymous", "metered", Reason.REGISTRATION_REQUIRED),
        ("hard", "registered", "metered", Reason.SUBSCRIBERS_ONLY),
        ("wpr", "registered", "free", Reason.FREE_ARTICLE),
        ("wpr", "registered", "premium", Reason.PREMIUM_ONLY),
        ("wpr", "subscriber", "metered", Reason.SUBSCRIBER),
    ],
)
def test_unlock_spends_nothing_where_the_meter_does_not_apply(config, preset, tier, cls, reason):
    store = MemoryQuotaStore()
    decision, spent = unlock(store, config.preset(preset), Viewer(tier, "r"), article_for(preset, cls), NOW)
    assert (decision.reason, spent) == (reason, False)
    assert store.spends("r") == ()


def test_auto_mode_view_spends_through_unlock(config):
    rules, store = config.preset("metered"), MemoryQuotaStore()
    decision, spent = unlock(store, rules, Viewer("anonymous", "v"), article_for("metered", "metered"), NOW)
    assert spent and decision.reason == Reason.METER_AVAILABLE and decision.access == "full"
    assert decision.meter.used == 1 and decision.meter.remaining == 4


def test_unlock_records_the_spend_in_the_local_month_window(config):
    rules, store = config.preset("wpr"), MemoryQuotaStore()
    unlock(store, rules, Viewer("registered", "r"), article_for("wpr", "metered"), HALLOWEEN)
    # A second unlock of the same article in November is a new spend: October's has lapsed.
    viewer = Viewer("registered", "r", store.spends("r"))
    decision, spent = unlock(store, rules, viewer, article_for("wpr", "metered"), NOW)
    assert spent
    assert decision.meter.used == 1
    assert len(store.spends("r")) == 2


def test_module_exports_match_the_design():
    """Decision, Viewer, decide and the tiers are the public names the design promises."""
    assert paywall.TIERS == TIERS
    assert {"access", "reason", "offer", "meter", "tier", "access_class"} <= set(
        decide(Config().preset("wpr"), Viewer("anonymous", "v"), article_for("wpr", "free"), NOW).as_dict()
    )


def test_every_reason_and_offer_has_words():
    """Explain shows every code in words: a Reason or Offer added without them fails here."""
    assert set(paywall.REASON_LABELS) == set(Reason)
    assert set(paywall.OFFER_WHY) == {*Offer, None}
    assert all(paywall.REASON_LABELS.values()) and all(paywall.OFFER_WHY.values())
    assert all(paywall.reason_label(reason) == paywall.REASON_LABELS[reason] for reason in Reason)


def test_decide_speaks_only_the_shared_vocabulary(config):
    """Over every shipped preset, tier, class, meter state and proof, decide gives Reason and Offer members, and all of them."""
    reasons, offers = set(), set()
    for rules, tier, cls, state, verified, pass_ends, licence, came in itertools.product(
            config.presets.values(), TIERS, CLASSES, STATES, (True, False), (None, NOW + timedelta(hours=1)),
            (None, paywall.Licence("Riverside University", 25)), ("direct", "social")):
        limit = rules.tier(tier).limit
        article = article_for(rules.name, cls)
        viewer = Viewer(tier, "m", spends_for(state, None if limit == "unlimited" else limit),
                        verified=verified or tier != "registered", pass_ends=pass_ends, licence=licence,
                        referral=came, arrival=article.slug)
        decision = decide(rules, viewer, article, NOW)
        assert type(decision.reason) is Reason
        assert decision.offer is None or type(decision.offer) is Offer
        assert f'"reason": "{decision.reason.value}"' in json.dumps(decision.as_dict())  # the wire keeps the code
        reasons.add(decision.reason)
        offers.add(decision.offer)
    gift = paywall.GiftGrant(SLUG, 1, "a***@example.org", NOW + timedelta(days=1), 3)  # a gift link opened
    reasons.add(decide(config.preset("wpr"), Viewer("anonymous", "v", gifts=(gift,)), article_for("wpr", "premium"),
                       NOW).reason)
    assert reasons == set(Reason)
    assert offers == {*Offer, None}


@pytest.mark.parametrize("viewer, cls, line", [
    (Viewer("registered", "m", licence=paywall.Licence("Riverside University", 25, datetime(2027, 1, 1, 5, tzinfo=UTC))),
     "premium", "licensed by Riverside University (25 seats) until 2027-01-01T00:00:00-05:00"),
    (Viewer("registered", "m", licence=paywall.Licence("Riverside University", 25)), "metered",
     "licensed by Riverside University (25 seats)"),
    (Viewer("anonymous", "v", gifts=(paywall.GiftGrant(SLUG, 7, "a***@example.org", datetime(2026, 12, 1, 17, tzinfo=UTC),
                                                       3),)),
     "premium", "gift link 7 from a***@example.org, until 2026-12-01T12:00:00-05:00"),
    (Viewer("registered", "m"), "premium", "premium articles need a subscription"),
])
def test_the_trace_names_what_opened_the_article_with_its_end_in_the_sites_zone(config, viewer, cls, line):
    rules = config.preset("wpr")
    assert line in decide(rules, viewer, article_for("wpr", cls), NOW, traced=True).trace
    assert decide(rules, viewer, article_for("wpr", cls), NOW).trace == ()


def template_codes() -> dict[str, set]:
    """Every literal a template compares ``decision.<field>`` with, by field."""
    from jinja2 import Environment, nodes

    from gate.conf.resources import resource_dir

    found: dict[str, set] = {}
    for path in resource_dir("templates").rglob("*.html"):
        for compare in Environment().parse(path.read_text()).find_all(nodes.Compare):
            left = compare.expr
            if isinstance(left, nodes.Getattr) and getattr(left.node, "name", None) == "decision":
                for op in compare.ops:
                    consts = [op.expr] if isinstance(op.expr, nodes.Const) else op.expr.find_all(nodes.Const)
                    found.setdefault(left.attr, set()).update(const.value for const in consts)
    return found


def test_templates_compare_decisions_with_known_codes():
    """Templates stay plain Jinja; a misspelt or retired reason or offer there would silently never match."""
    codes = template_codes()
    assert codes["reason"] and codes["reason"] <= set(Reason)
    assert codes["offer"] and codes["offer"] <= set(Offer)
    assert codes["access"] <= {"full", "teaser"}


def test_the_api_docs_name_every_reason_and_offer():
    """docs/api.md is where API clients learn the codes: each one the engine gives is listed there."""
    from gate.conf.resources import PACKAGE

    text = (PACKAGE.parent / "docs" / "api.md").read_text()
    assert [code for code in (*Reason, *Offer) if f"`{code}`" not in text] == []


@pytest.mark.parametrize("tier, cls, ends, reason", [
    ("registered", "premium", NOW + timedelta(seconds=1), Reason.PASS),  # a pass opens premium articles too
    ("registered", "metered", NOW + timedelta(seconds=1), Reason.PASS),
    ("registered", "premium", NOW, Reason.PREMIUM_ONLY),  # its end is exclusive: at the end, the teaser
    ("registered", "metered", NOW - timedelta(days=1), Reason.METER_AVAILABLE),
    ("subscriber", "premium", NOW + timedelta(days=1), Reason.SUBSCRIBER),  # a subscription comes first
])
def test_a_pass_grants_full_access_until_its_end_exactly(config, tier, cls, ends, reason):
    rules = config.preset("wpr")
    decision = decide(rules, Viewer(tier, "m", pass_ends=ends), article_for("wpr", cls), NOW, traced=True)
    assert decision.reason == reason
    assert ("pass_ends" in decision.as_dict()) == (reason == Reason.PASS)
    if reason == Reason.PASS:
        assert decision.access == "full" and decision.offer is None and not decision.spend
        assert decision.as_dict()["pass_ends"] == ends.isoformat()
        assert f"pass until {ends.astimezone(rules.tz).isoformat()}" in decision.trace
