"""A/B experiments on the gate: variants, sticky assignment and their statistics.

A preset may declare experiments; each splits readers between variants that
override a few of the preset's rules (the gate's style and copy, the
anonymous and registered limits). The first variant is the control.

Everything here is pure: no Flask, no database, no clock. Assignment hashes
with SHA-256, so a reader lands in the same variant on every machine and in
every process (Python's ``hash()`` is salted per process). The statistics are
written out with :mod:`math` alone: the Wilson score interval for one rate,
and the pooled two-proportion z-test with a Wald interval for a difference.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from typing import Literal, NamedTuple

from pydantic import Field, field_validator

from gate.rules.model import GateStyle, Limit, Strict

#: Override fields that land on ``rules.gate``, by the same name.
GATE_FIELDS = ("style", "headline", "body", "subscribe_line")
#: Override fields that land on a tier's ``limit``, and the tier.
LIMIT_FIELDS = {"anonymous_limit": "anonymous", "registered_limit": "registered"}


class VariantOverrides(Strict):
    """The rules a variant changes; ``None`` leaves the preset's value alone."""

    style: GateStyle | None = None
    headline: str | None = Field(default=None, min_length=1, max_length=120)
    body: str | None = Field(default=None, max_length=500)
    subscribe_line: str | None = Field(default=None, max_length=200)
    anonymous_limit: Limit | None = None
    registered_limit: Limit | None = None

    @field_validator("anonymous_limit", "registered_limit", mode="before")
    @classmethod
    def _limit_is_a_count(cls, value):
        """One clear error for a limit, as in TierRule, not one per member of the union."""
        if value is None or value == "unlimited":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError('must be a whole number or "unlimited"')
        if not 0 <= value <= 100_000:
            raise ValueError('must be between 0 and 100000, or "unlimited"')
        return value

    def overrides(self) -> dict:
        """The overrides this variant sets (empty for a control)."""
        names = (*GATE_FIELDS, *LIMIT_FIELDS)
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


class Variant(VariantOverrides):
    """One arm of an experiment: its id, its share of traffic and its overrides."""

    id: str = Field(pattern=r"^[a-z0-9-]+$", max_length=60)
    weight: int = Field(ge=1, le=1000)


class Experiment(Strict):
    """A split of readers between variants; the first variant is the control."""

    id: str = Field(pattern=r"^[a-z0-9-]+$", max_length=60)
    description: str = Field(default="", max_length=600)
    variants: list[Variant]
    active: bool = True
    #: The step the test is judged by: a gate-pressure test moves registrations, not subscriptions.
    metric: Literal["gate_impression", "registration", "subscription"] = "subscription"

    @field_validator("variants")
    @classmethod
    def _comparable_variants(cls, variants):
        """An experiment compares at least two arms, each named once."""
        if len(variants) < 2:
            raise ValueError("an experiment needs at least two variants (a control and one to compare)")
        ids = [variant.id for variant in variants]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"variant ids must be unique; repeated: {', '.join(duplicates)}")
        return variants

    @property
    def control(self) -> Variant:
        """The baseline every other variant is compared with."""
        return self.variants[0]

    def variant(self, variant_id: str) -> Variant:
        """A variant by id, with a clear error listing the known ones."""
        for variant in self.variants:
            if variant.id == variant_id:
                return variant
        known = ", ".join(v.id for v in self.variants)
        raise KeyError(f"experiment {self.id!r} has no variant {variant_id!r} (have: {known})")


# -- assignment ---------------------------------------------------------------


def bucket(experiment_id: str, unit_id: str, buckets: int) -> int:
    """A stable, uniform number in [0, buckets) for this unit in this experiment."""
    digest = hashlib.sha256(f"{experiment_id}:{unit_id}".encode()).digest()
    # Scale 64 bits to the range instead of taking a remainder: no modulo bias.
    return int.from_bytes(digest[:8], "big") * buckets >> 64


def assign(experiment: Experiment, unit_id: str) -> Variant:
    """The variant this unit (visitor or reader) sees, the same on every machine."""
    # The experiment id is in the hash, so arms in two experiments are independent.
    # Changing weights or the order of variants moves readers between arms.
    point = bucket(experiment.id, unit_id, sum(v.weight for v in experiment.variants))
    for variant in experiment.variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    raise AssertionError("unreachable: the bucket is below the total weight")


# -- applying a variant to rules ----------------------------------------------


def apply(rules, variant: VariantOverrides):
    """The rules this variant's readers get; a control gets the same object back."""
    # Duck-typed over gate.rules.paywall.Rules, so paywall may import this module.
    # model_copy does not validate: VariantOverrides repeats GateCopy's and TierRule's bounds.
    changes = variant.overrides()
    update = {}
    gate = {name: value for name, value in changes.items() if name in GATE_FIELDS}
    if gate:
        update["gate"] = rules.gate.model_copy(update=gate)
    tiers = {
        tier: getattr(rules.tiers, tier).model_copy(update={"limit": changes[field]})
        for field, tier in LIMIT_FIELDS.items() if field in changes
    }
    if tiers:
        update["tiers"] = rules.tiers.model_copy(update=tiers)
    return rules.model_copy(update=update) if update else rules


# -- statistics ---------------------------------------------------------------


class TestResult(NamedTuple):
    """A two-proportion comparison: group 1 minus group 2."""

    __test__ = False  # not a pytest test class, despite the name

    z: float
    p_value: float
    difference: float
    ci_low: float
    ci_high: float


def _check_counts(successes: int, trials: int) -> None:
    """Counts are whole, non-negative, and successes cannot outnumber trials."""
    if successes < 0 or trials < 0:
        raise ValueError(f"counts cannot be negative (got {successes} of {trials})")
    if successes > trials:
        raise ValueError(f"successes ({successes}) cannot exceed trials ({trials})")


@lru_cache(maxsize=64)
def normal_quantile(confidence: float) -> float:
    """The z with P(|Z| <= z) = confidence for a standard normal Z (1.96 for 0.95)."""
    # Bisection on the two-sided tail erfc(z / sqrt 2), which falls from 1 at z = 0;
    # 1 - confidence is exact for confidence >= 0.5, so tiny tails keep their digits.
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    tail = 1.0 - confidence
    low, high = 0.0, 40.0
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if math.erfc(middle / math.sqrt(2)) > tail:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a rate; with no trials, all of (0.0, 1.0)."""
    _check_counts(successes, trials)
    z = normal_quantile(confidence)
    if trials == 0:  # nothing is known
        return (0.0, 1.0)
    p, n, z2 = successes / trials, trials, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At x = 0 and x = n an edge is exactly 0 or 1; don't let rounding move it.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return (low, high)


def two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2))


def two_proportion_test(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> TestResult:
    """Whether rate 1 differs from rate 2: pooled z-test, Wald interval for p1 - p2."""
    _check_counts(x1, n1)
    _check_counts(x2, n2)
    if n1 == 0 or n2 == 0:  # nothing is known about one group
        return TestResult(0.0, 1.0, 0.0, -1.0, 1.0)
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    # No variance (both rates 0, or both 1): no evidence of a difference.
    z = (p1 - p2) / pooled_se if pooled_se > 0 else 0.0
    half = normal_quantile(confidence) * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    difference = p1 - p2
    return TestResult(z, two_sided_p(z), difference,
                      max(-1.0, difference - half), min(1.0, difference + half))


# -- summary for the dashboard ------------------------------------------------


def summarize(variant_counts: dict[str, dict[str, int]], steps: list[str],
              metric: str | None = None) -> list[dict]:
    """Plain rows for the dashboard: each variant's funnel, and its ``metric`` step vs control."""
    # Rates are from the first step with a 95% Wilson interval; the first variant
    # is the control; a missing step counts zero; floats are rounded to 4 places.
    # The metric is the last step unless named.
    if not steps:
        raise ValueError("a funnel needs at least one step")
    metric = steps[-1] if metric is None else metric
    if metric not in steps:
        raise ValueError(f"the metric {metric!r} is not a step of the funnel ({', '.join(steps)})")
    rows, control = [], None
    for variant_id, counts in variant_counts.items():
        funnel = _funnel(variant_id, counts, steps)
        test = None if control is None else _compare(funnel, control, steps.index(metric))
        rows.append({"variant": variant_id, "is_control": control is None,
                     "steps": funnel, "test": test})
        if control is None:
            control = funnel
    return rows


def _funnel(variant_id: str, counts: dict[str, int], steps: list[str]) -> list[dict]:
    """Each step's count and its rate from the first step."""
    base = counts.get(steps[0], 0)
    funnel = []
    for step in steps:
        count = counts.get(step, 0)
        if count > base or count < 0:
            raise ValueError(
                f"variant {variant_id!r}: step {step!r} has {count}, "
                f"but the funnel starts with {base} at {steps[0]!r}"
            )
        low, high = wilson_interval(count, base)
        funnel.append({"step": step, "count": count, "rate": round(count / base if base else 0.0, 4),
                       "ci_low": round(low, 4), "ci_high": round(high, 4)})
    return funnel


def _compare(funnel: list[dict], control: list[dict], index: int) -> dict:
    """One step's rate (of visitors) in this variant against the control's."""
    result = two_proportion_test(funnel[index]["count"], funnel[0]["count"],
                                 control[index]["count"], control[0]["count"])
    plain = {name: round(value, 4) for name, value in result._asdict().items()}
    return {"step": funnel[index]["step"], **plain, "significant": result.p_value < 0.05}
