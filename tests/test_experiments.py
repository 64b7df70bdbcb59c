"""Experiments: the models, sticky assignment, applying a variant, and the statistics.

The statistics are checked three ways: against values published in the
literature (Newcombe 1998, the standard reference for these intervals),
against the same quantities derived by a different route in this file (a
2x2 chi-square, a bisection on the Wilson score condition, the standard
library's NormalDist), and by properties that must hold for any counts.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gate.conf.settings import Config
from gate.rules.experiments import (
    Experiment,
    TestResult,
    Variant,
    VariantOverrides,
    apply,
    assign,
    normal_quantile,
    summarize,
    two_proportion_test,
    two_sided_p,
    wilson_interval,
)
from gate.rules.paywall import Offer, Reason, Viewer, decide

FAST = settings(max_examples=150, deadline=None)
STANDARD_NORMAL = NormalDist()


def experiment(*weights: int, id: str = "gate-style") -> Experiment:
    """An experiment with one variant per weight: control, b, c, ..."""
    names = ["control", "b", "c", "d"]
    return Experiment(id=id, variants=[Variant(id=names[i], weight=w) for i, w in enumerate(weights)])


@pytest.fixture(scope="module")
def wpr():
    """The default preset, as shipped."""
    return Config().preset("wpr")


# -- models -------------------------------------------------------------------

PRESET_TOML = """
[[experiments]]
id = "gate-style"
description = "Does a modal gate convert better than the inline one?"
variants = [
  { id = "control", weight = 1 },
  { id = "modal", weight = 1, style = "modal" },
]
"""


def test_the_documented_toml_loads():
    (data,) = tomllib.loads(PRESET_TOML)["experiments"]
    parsed = Experiment.model_validate(data)
    assert parsed.active
    assert parsed.control.id == "control"
    assert parsed.control.overrides() == {}
    assert parsed.variant("modal").overrides() == {"style": "modal"}


def test_every_override_field_is_accepted():
    variant = Variant.model_validate({
        "id": "all", "weight": 1000, "style": "banner", "headline": "h" * 120, "body": "b" * 500,
        "subscribe_line": "Subscribe", "anonymous_limit": "unlimited", "registered_limit": 100_000,
    })
    assert set(variant.overrides()) == set(VariantOverrides.model_fields)


GOOD = {"id": "x", "variants": [{"id": "control", "weight": 1}, {"id": "b", "weight": 1}]}


def with_variant(**changes) -> dict:
    """GOOD with its second variant changed."""
    return {**GOOD, "variants": [GOOD["variants"][0], {**GOOD["variants"][1], **changes}]}


@pytest.mark.parametrize("data, complaint", [
    ({**GOOD, "owner": "me"}, "Extra inputs"),
    (with_variant(colour="red"), "Extra inputs"),
    ({**GOOD, "variants": [{"id": "a", "weight": 1}, {"id": "a", "weight": 2}]}, "unique; repeated: a"),
    ({**GOOD, "variants": [{"id": "control", "weight": 1}]}, "at least two variants"),
    ({**GOOD, "variants": []}, "at least two variants"),
    (with_variant(weight=0), "greater than or equal to 1"),
    (with_variant(weight=1001), "less than or equal to 1000"),
    (with_variant(weight="1"), "valid integer"),
    (with_variant(style="popup"), "'inline', 'modal' or 'banner'"),
    (with_variant(anonymous_limit=-1), "between 0 and 100000"),
    (with_variant(registered_limit=100_001), "between 0 and 100000"),
    (with_variant(registered_limit=True), "whole number"),
    (with_variant(registered_limit="lots"), "whole number"),
    (with_variant(headline=""), "at least 1 character"),
    (with_variant(headline="h" * 121), "at most 120 characters"),
    (with_variant(body="b" * 501), "at most 500 characters"),
    (with_variant(id="Modal"), "should match pattern"),
    ({**GOOD, "id": "gate style"}, "should match pattern"),
    ({**GOOD, "active": "yes"}, "valid boolean"),
])
def test_invalid_experiments_are_rejected(data, complaint):
    with pytest.raises(ValidationError) as error:
        Experiment.model_validate(data)
    assert complaint in str(error.value)


def test_models_are_frozen():
    parsed = Experiment.model_validate(GOOD)
    with pytest.raises(ValidationError):
        parsed.active = False


def test_unknown_variant_id_names_the_known_ones():
    with pytest.raises(KeyError, match="no variant 'z' .have: control, b"):
        Experiment.model_validate(GOOD).variant("z")


# -- assignment ---------------------------------------------------------------

#: Worked out independently with `printf 'gate-style:ID' | sha256sum`: the first
#: 16 hex digits as an integer, times the total weight 4, shifted right 64 bits.
PINNED = [
    ("visitor-1", "banner"),         # c88ffc72aee52f24 -> bucket 3
    ("visitor-3", "control"),        # 118ed7bac37cc615 -> bucket 0
    ("reader-42", "control"),        # 724074787424ed25 -> bucket 1
    ("alice@example.com", "modal"),  # 8d4aebe01a13d75a -> bucket 2
    ("reader-1000", "modal"),        # ac6a67b979d23f19 -> bucket 2
]
THREE_ARMS = Experiment(id="gate-style", variants=[
    Variant(id="control", weight=2), Variant(id="modal", weight=1), Variant(id="banner", weight=1),
])


@pytest.mark.parametrize("unit_id, variant_id", PINNED)
def test_assignment_is_pinned(unit_id, variant_id):
    assert assign(THREE_ARMS, unit_id).id == variant_id


def test_assignment_is_sticky():
    units = [f"visitor-{i}" for i in range(200)]
    first = [assign(THREE_ARMS, unit).id for unit in units]
    rebuilt = Experiment.model_validate(THREE_ARMS.model_dump())
    assert [assign(rebuilt, unit).id for unit in reversed(units)] == first[::-1]
    assert len(set(first)) == 3


@pytest.mark.parametrize("weights", [(3, 1), (1, 1), (1, 1, 2), (1, 8, 1), (997, 3)])
def test_assignment_follows_the_weights(weights):
    arms = experiment(*weights)
    seen = {variant.id: 0 for variant in arms.variants}
    units = 20_000
    for i in range(units):
        seen[assign(arms, f"unit-{i}").id] += 1
    for variant in arms.variants:
        expected = variant.weight / sum(weights)
        assert abs(seen[variant.id] / units - expected) < 0.02, (variant.id, seen)


def test_experiments_split_readers_independently():
    first, second = experiment(1, 1, id="gate-style"), experiment(1, 1, id="headline")
    joint = {}
    for i in range(8000):
        pair = (assign(first, f"unit-{i}").id, assign(second, f"unit-{i}").id)
        joint[pair] = joint.get(pair, 0) + 1
    assert len(joint) == 4
    assert all(abs(count / 8000 - 0.25) < 0.02 for count in joint.values()), joint


# -- applying a variant to a preset -------------------------------------------

@dataclass(frozen=True)
class Article:
    """Just what decide reads of an article."""

    slug: str = "the-article"
    section: str = "world"
    access_class: str = "metered"


def changed(before, after) -> dict:
    """The dotted keys whose values differ between two rule sets."""
    flat_before, flat_after = flatten(before.model_dump()), flatten(after.model_dump())
    assert flat_before.keys() == flat_after.keys()
    return {key: flat_after[key] for key in flat_before if flat_before[key] != flat_after[key]}


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested dicts as one dict of dotted keys."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize("overrides, expected", [
    ({"style": "modal"}, {"gate.style": "modal"}),
    ({"headline": "Read on", "body": "Free with an email."},
     {"gate.headline": "Read on", "gate.body": "Free with an email."}),
    ({"subscribe_line": "Or subscribe."}, {"gate.subscribe_line": "Or subscribe."}),
    ({"registered_limit": 5}, {"tiers.registered.limit": 5}),
    ({"anonymous_limit": 1, "registered_limit": "unlimited"},
     {"tiers.anonymous.limit": 1, "tiers.registered.limit": "unlimited"}),
    ({"style": "banner", "anonymous_limit": 2}, {"gate.style": "banner", "tiers.anonymous.limit": 2}),
])
def test_apply_changes_only_the_overridden_rules(wpr, overrides, expected):
    after = apply(wpr, Variant(id="v", weight=1, **overrides))
    assert changed(wpr, after) == expected
    assert type(after) is type(wpr)
    assert type(after.tiers.registered) is type(wpr.tiers.registered)
    assert after.tiers.registered.unlimited == (after.tiers.registered.limit == "unlimited")


def test_apply_leaves_the_preset_untouched(wpr):
    before = wpr.model_dump()
    apply(wpr, Variant(id="v", weight=1, style="modal", registered_limit=9))
    assert wpr.model_dump() == before


def test_control_gets_the_rules_unchanged(wpr):
    control = Variant(id="control", weight=1)
    assert apply(wpr, control) == wpr
    assert apply(wpr, control) is wpr


def test_an_applied_limit_changes_the_decision(wpr):
    viewer = Viewer("anonymous", "visitor-1")
    now = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
    assert decide(wpr, viewer, Article(), now).reason == Reason.REGISTRATION_REQUIRED
    generous = apply(wpr, Variant(id="one-free", weight=1, anonymous_limit=1))
    decision = decide(generous, viewer, Article(), now)
    assert (decision.reason, decision.offer, decision.meter.limit) == (Reason.METER_AVAILABLE, Offer.UNLOCK, 1)


# -- normal quantile ----------------------------------------------------------

@pytest.mark.parametrize("confidence, z", [
    (0.90, 1.644854), (0.95, 1.959964), (0.98, 2.326348), (0.99, 2.575829), (0.999, 3.290527),
    (0.6826894921, 1.0), (0.5, 0.674490),
])
def test_normal_quantile_matches_tables(confidence, z):
    assert normal_quantile(confidence) == pytest.approx(z, abs=1e-6)


@FAST
@given(st.floats(min_value=1e-6, max_value=1 - 1e-9))
def test_normal_quantile_agrees_with_the_standard_library(confidence):
    # (1 + c) / 2 rounds away digits of a tiny tail, so the library is the looser side.
    expected = STANDARD_NORMAL.inv_cdf((1 + confidence) / 2)
    assert normal_quantile(confidence) == pytest.approx(expected, rel=1e-7, abs=1e-12)
    # 1 - c is exact for c >= 0.5, so the tail round-trips tightly.
    assert two_sided_p(normal_quantile(confidence)) == pytest.approx(1 - confidence, rel=1e-12)


@pytest.mark.parametrize("confidence", [0, 1, -0.5, 1.5, 95])
def test_normal_quantile_rejects_impossible_confidence(confidence):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        normal_quantile(confidence)


# -- Wilson interval ----------------------------------------------------------

#: Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3
#: (score interval without continuity correction); 0/10 is a textbook case.
NEWCOMBE_WILSON = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (0, 10, 0.0, 0.2775),
]


@pytest.mark.parametrize("successes, trials, low, high", NEWCOMBE_WILSON)
def test_wilson_matches_published_values(successes, trials, low, high):
    got = wilson_interval(successes, trials)
    assert got == pytest.approx((low, high), abs=5e-5)


def wilson_by_search(successes: int, trials: int, z: float) -> tuple[float, float]:
    """The Wilson interval from its definition: the p where |p_hat - p| <= z sqrt(p(1-p)/n)."""
    p_hat = successes / trials

    def inside(p):
        """Whether p is within z standard errors of the observed rate."""
        return abs(p_hat - p) <= z * math.sqrt(p * (1 - p) / trials)

    def edge(inner, outer):
        """Bisect between a p inside the interval and one outside it."""
        for _ in range(100):
            middle = (inner + outer) / 2
            inner, outer = (middle, outer) if inside(middle) else (inner, middle)
        return inner

    return edge(p_hat, 0.0), edge(p_hat, 1.0)


@pytest.mark.parametrize("successes, trials, confidence", [
    (81, 263, 0.95), (3, 7, 0.95), (40, 400, 0.99), (999, 1000, 0.90), (1, 2, 0.8), (37, 50, 0.95),
])
def test_wilson_agrees_with_its_definition(successes, trials, confidence):
    z = STANDARD_NORMAL.inv_cdf((1 + confidence) / 2)
    expected = wilson_by_search(successes, trials, z)
    assert wilson_interval(successes, trials, confidence) == pytest.approx(expected, abs=1e-9)


def test_wilson_with_no_trials_knows_nothing():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("successes, trials, message", [
    (5, 4, "cannot exceed trials"), (-1, 4, "negative"), (0, -1, "negative"),
])
def test_wilson_rejects_impossible_counts(successes, trials, message):
    with pytest.raises(ValueError, match=message):
        wilson_interval(successes, trials)


counts = st.integers(min_value=1, max_value=100_000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n)))


@FAST
@given(counts)
def test_wilson_contains_the_rate_and_stays_in_bounds(pair):
    successes, trials = pair
    low, high = wilson_interval(successes, trials)
    assert 0.0 <= low <= successes / trials <= high <= 1.0
    assert low < high


@FAST
@given(counts, st.integers(min_value=2, max_value=50))
def test_wilson_narrows_with_more_trials(pair, scale):
    successes, trials = pair
    low, high = wilson_interval(successes, trials)
    more_low, more_high = wilson_interval(successes * scale, trials * scale)
    assert more_high - more_low < high - low


@FAST
@given(counts)
def test_wilson_widens_with_confidence_and_mirrors(pair):
    successes, trials = pair
    low, high = wilson_interval(successes, trials, 0.90)
    wide_low, wide_high = wilson_interval(successes, trials, 0.99)
    assert wide_low <= low and high <= wide_high
    mirror_low, mirror_high = wilson_interval(trials - successes, trials, 0.90)
    assert (mirror_low, mirror_high) == pytest.approx((1 - high, 1 - low), abs=1e-12)


# -- two-proportion test ------------------------------------------------------

def pearson_chi_square(x1: int, n1: int, x2: int, n2: int) -> float:
    """Pearson's chi-square for the 2x2 table; it equals the pooled z squared."""
    a, b, c, d = x1, n1 - x1, x2, n2 - x2
    n = a + b + c + d
    return n * (a * d - b * c) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))


def test_two_proportion_reference_case():
    # 45/100 vs 30/100: the table [[45, 55], [30, 70]] has chi-square exactly
    # 4.8 (scipy.stats.chi2_contingency without correction agrees: p = 0.02846),
    # so the pooled z is sqrt(4.8) = 2.1909. (2.1849 / 0.0289, quoted with the
    # task, does not follow from the pooled formula.)
    result = two_proportion_test(45, 100, 30, 100)
    assert result.z == pytest.approx(2.1909, abs=1e-4)
    assert result.z ** 2 == pytest.approx(4.8, rel=1e-12)
    assert result.p_value == pytest.approx(0.0285, abs=1e-4)
    assert result.difference == pytest.approx(0.15, abs=1e-12)
    # Unpooled SE sqrt(.45*.55/100 + .30*.70/100) = 0.067639; 1.959964 * it = 0.132570.
    assert (result.ci_low, result.ci_high) == pytest.approx((0.0174, 0.2826), abs=1e-4)


#: Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 1
#: (the simple asymptotic, i.e. Wald, interval for p1 - p2).
NEWCOMBE_WALD = [
    (56, 70, 48, 80, 0.0575, 0.3425),
    (9, 10, 3, 10, 0.2605, 0.9395),
    (6, 7, 2, 7, 0.1481, 0.9947),
    (5, 56, 0, 29, 0.0146, 0.1640),
]


@pytest.mark.parametrize("x1, n1, x2, n2, low, high", NEWCOMBE_WALD)
def test_difference_interval_matches_published_values(x1, n1, x2, n2, low, high):
    result = two_proportion_test(x1, n1, x2, n2)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=5e-5)
    assert result.difference == pytest.approx(x1 / n1 - x2 / n2)


@pytest.mark.parametrize("x1, n1, x2, n2", [
    (45, 100, 30, 100), (56, 70, 48, 80), (8, 400, 15, 410), (120, 5000, 95, 5100), (1, 3, 2, 3),
])
def test_z_squared_is_the_chi_square(x1, n1, x2, n2):
    result = two_proportion_test(x1, n1, x2, n2)
    chi_square = pearson_chi_square(x1, n1, x2, n2)
    assert result.z ** 2 == pytest.approx(chi_square, rel=1e-9)
    assert math.copysign(1, result.z) == math.copysign(1, x1 / n1 - x2 / n2)
    expected_p = 2 * (1 - STANDARD_NORMAL.cdf(math.sqrt(chi_square)))
    assert result.p_value == pytest.approx(expected_p, abs=1e-9)


@pytest.mark.parametrize("x1, n1, x2, n2, expected", [
    (0, 0, 3, 10, TestResult(0.0, 1.0, 0.0, -1.0, 1.0)),
    (3, 10, 0, 0, TestResult(0.0, 1.0, 0.0, -1.0, 1.0)),
    (0, 0, 0, 0, TestResult(0.0, 1.0, 0.0, -1.0, 1.0)),
    (0, 50, 0, 80, TestResult(0.0, 1.0, 0.0, 0.0, 0.0)),
    (50, 50, 80, 80, TestResult(0.0, 1.0, 0.0, 0.0, 0.0)),
])
def test_degenerate_comparisons_show_no_evidence(x1, n1, x2, n2, expected):
    assert two_proportion_test(x1, n1, x2, n2) == expected


@pytest.mark.parametrize("args", [(5, 4, 1, 4), (1, 4, 5, 4), (-1, 4, 1, 4), (1, 4, 1, -4)])
def test_two_proportion_rejects_impossible_counts(args):
    with pytest.raises(ValueError):
        two_proportion_test(*args)


@FAST
@given(counts, counts)
def test_swapping_groups_mirrors_the_result(first, second):
    forward = two_proportion_test(*first, *second)
    backward = two_proportion_test(*second, *first)
    assert backward.p_value == pytest.approx(forward.p_value, abs=1e-12)
    assert backward.z == pytest.approx(-forward.z, abs=1e-9)
    assert backward.difference == pytest.approx(-forward.difference, abs=1e-12)
    mirrored = (-forward.ci_high, -forward.ci_low)
    assert (backward.ci_low, backward.ci_high) == pytest.approx(mirrored, abs=1e-12)
    assert 0.0 <= forward.p_value <= 1.0
    assert -1.0 <= forward.ci_low <= forward.difference <= forward.ci_high <= 1.0


@pytest.mark.parametrize("z, p", [(0.0, 1.0), (1.959964, 0.05), (-2.575829, 0.01), (3.290527, 0.001)])
def test_two_sided_p(z, p):
    assert two_sided_p(z) == pytest.approx(p, abs=1e-7)


# -- summary ------------------------------------------------------------------

STEPS = ["visit", "gate_impression", "signup", "subscription"]
COUNTS = {
    "control": {"visit": 1000, "gate_impression": 400, "signup": 40, "subscription": 8},
    "modal": {"visit": 1000, "gate_impression": 420, "signup": 63, "subscription": 20},
    "banner": {"visit": 200, "gate_impression": 150, "signup": 9},
}


def test_summary_rows_for_the_template():
    rows = summarize(COUNTS, STEPS)
    assert [row["variant"] for row in rows] == ["control", "modal", "banner"]
    assert [row["is_control"] for row in rows] == [True, False, False]
    control = rows[0]
    assert control["test"] is None
    assert [step["step"] for step in control["steps"]] == STEPS
    assert [step["count"] for step in control["steps"]] == [1000, 400, 40, 8]
    assert [step["rate"] for step in control["steps"]] == [1.0, 0.4, 0.04, 0.008]
    signup = control["steps"][2]
    assert (signup["ci_low"], signup["ci_high"]) == tuple(round(v, 4) for v in wilson_interval(40, 1000))
    assert (signup["ci_low"], signup["ci_high"]) == (0.0295, 0.054)


def test_summary_compares_the_last_step_with_the_control():
    rows = summarize(COUNTS, STEPS)
    modal = rows[1]["test"]
    expected = two_proportion_test(20, 1000, 8, 1000)
    assert modal["step"] == "subscription"
    assert modal["z"] == round(expected.z, 4)
    assert modal["p_value"] == round(expected.p_value, 4)
    assert (modal["difference"], modal["ci_low"], modal["ci_high"]) == (
        0.012, round(expected.ci_low, 4), round(expected.ci_high, 4))
    assert modal["significant"] is True  # 2.0% vs 0.8%: z = 2.28, p = 0.022
    banner = rows[2]
    assert banner["steps"][-1] == {"step": "subscription", "count": 0, "rate": 0.0,
                                   "ci_low": 0.0, "ci_high": 0.0188}
    assert banner["test"]["difference"] == -0.008
    assert banner["test"]["significant"] is False  # 0 of 200 vs 8 of 1000: z = -1.27


def test_summary_is_plain_and_rounded():
    rows = summarize(COUNTS, STEPS)
    for row in rows:
        for step in row["steps"]:
            for key in ("rate", "ci_low", "ci_high"):
                assert isinstance(step[key], float) and round(step[key], 4) == step[key]
        if row["test"]:
            assert all(type(v) in (str, float, bool) for v in row["test"].values())


@pytest.mark.parametrize("counts, steps, message", [
    ({"control": {"visit": 10, "signup": 11}}, ["visit", "signup"], "'signup' has 11"),
    ({"control": {"visit": 10, "signup": -1}}, ["visit", "signup"], "'signup' has -1"),
    ({"control": {"visit": 10}}, [], "at least one step"),
])
def test_summary_rejects_an_impossible_funnel(counts, steps, message):
    with pytest.raises(ValueError, match=message):
        summarize(counts, steps)


def test_summary_of_nothing():
    assert summarize({}, STEPS) == []
    (row,) = summarize({"control": {}}, STEPS)
    assert [step["ci_high"] for step in row["steps"]] == [1.0] * 4
    assert [step["rate"] for step in row["steps"]] == [0.0] * 4


def test_another_readers_rules_follow_their_own_arm(app, runner):
    """An admin's view of a reader, or a persona being built, uses that reader's variant, not the viewer's."""
    from types import SimpleNamespace

    from gate.app import context
    from gate.rules import experiments

    runner.invoke(args=["preset", "use", "metered-ab"])
    experiment = app.extensions["gate.config"].presets["metered-ab"].experiments[0]
    arms = set()
    with app.test_request_context():
        for number in range(1, 21):
            reader = SimpleNamespace(id=number, experiment_unit=None if number % 2 else f"visitor:v{number}")
            arm = experiments.assign(experiment, context.reader_unit(reader)).id
            arms.add(arm)
            assert context.current().rules_for(reader).tiers.anonymous.limit == (3 if arm == "banner-3" else 5)
    assert arms == {"control", "banner-3"}  # both arms were met


def test_an_experiment_is_judged_by_its_primary_metric():
    rows = summarize(COUNTS, STEPS, "signup")
    modal = rows[1]["test"]
    assert modal["step"] == "signup"
    assert modal["difference"] == pytest.approx(round(63 / 1000 - 40 / 1000, 4))
    assert summarize(COUNTS, STEPS)[1]["test"]["step"] == "subscription"  # the last step by default
    with pytest.raises(ValueError, match="'unlock' is not a step"):
        summarize(COUNTS, STEPS, "unlock")


@pytest.mark.parametrize("metric, ok", [("registration", True), ("gate_impression", True),
                                        ("subscription", True), ("signups", False), ("visit", False), (1, False)])
def test_the_primary_metric_is_validated_strictly(metric, ok):
    data = {"id": "gate-style", "metric": metric,
            "variants": [{"id": "control", "weight": 1}, {"id": "b", "weight": 1}]}
    if ok:
        assert Experiment.model_validate(data).metric == metric
    else:
        with pytest.raises(ValidationError, match="metric"):
            Experiment.model_validate(data)


def test_the_gate_pressure_test_is_judged_by_registrations():
    (experiment,) = Config().preset("metered-ab").experiments
    assert experiment.metric == "registration"
