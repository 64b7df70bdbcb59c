"""Presets in words: what a preset does, and how two presets differ, as sentences a presenter reads.

"Registered readers: 3 of their choice a month → 5 counted views a week", not
``tiers.registered.limit``. Pure, like the rest of :mod:`gate.rules`: the rule
studio, the compare view and the JSON API call it with two :class:`Rules`.

Each :class:`Aspect` speaks for some keys of a preset; a difference that no
aspect's words show (a section added to the rules model later, a setting with no
effect under the others, words cut short) is still told, by its key, so no
change is ever left out of the list.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gate.rules import periods
from gate.rules.paywall import TIERS, Rules, TierRule

TIER_LABELS = {"anonymous": "Anonymous visitors", "registered": "Registered readers", "subscriber": "Subscribers"}
_PER = {"month": "a month", "week": "a week", "day": "a day", "lifetime": "in all (never resets)"}
GATE_STYLES = {"inline": "inline, under the teaser", "modal": "a modal over the page",
               "banner": "a banner at the foot of the page"}
#: Keys no sentence needs: gate sets them (the file name, the site's time zone).
_UNTOLD = ("name", "timezone")
#: Text longer than this is cut in a sentence (the full text is in the form and the file).
QUOTE_CHARS = 60
#: "2 paragraphs": a number and a one-word unit, said once in a change ("Teaser: 2 paragraphs → 3").
_COUNT = re.compile(r"^(\d+) (\D\S*)$")


@dataclass(frozen=True)
class Aspect:
    """One thing a preset decides, told in words: its label, the keys it covers, and its phrase."""

    label: str
    keys: tuple[str, ...]
    words: Callable[[Rules], str]
    #: Words a reader wrote (a headline): quoted, and cut where two versions part.
    text: bool = False

    def covers(self, key: str) -> bool:
        """Whether a dotted key is this aspect's to tell."""
        return any(key == mine or key.startswith(mine + ".") for mine in self.keys)

    def phrase(self, rules: Rules) -> str:
        """This aspect of one preset in words (text quoted and cut short)."""
        return quoted(self.words(rules)) if self.text else self.words(rules)

    def change(self, before: Rules, after: Rules) -> str | None:
        """'Label: before → after', or None when the two read the same."""
        old, new = self.words(before), self.words(after)
        if old == new:
            return None
        if self.text:
            return f"{self.label}: " + " → ".join(quoted(part) for part in parted(old, new))
        return change(self.label, old, new)


def count(number: int, one: str, many: str) -> str:
    """'1 paragraph', '3 paragraphs'."""
    return f"{number} {one if number == 1 else many}"


def period_words(period: str) -> str:
    """How often a meter fills again, after a count: 'a month', 'in any 30 days', 'in all (never resets)'."""
    days = periods.rolling_days(period)
    return f"in any {count(days, 'day', 'days')}" if days is not None else _PER[period]


def tier_words(rule: TierRule, tier: str = "registered", dynamic: bool = False) -> str:
    """What one tier reads of metered articles: 'a teaser only', '3 of their choice a month', 'every article'.

    ``dynamic``: the tier's allowance comes from the dynamic meter's bands, not ``limit``.
    """
    if dynamic:
        what = "their band's allowance" + (", of their choice" if rule.mode == "choice" else " in counted views")
        return f"{what} {period_words(rule.period)}"
    if rule.limit == 0:
        words = "a teaser only"
    elif rule.unlimited:
        words = "every article" if tier == "subscriber" else "every article but premium ones"
    else:
        what = (f"{rule.limit} of their choice" if rule.mode == "choice"
                else count(rule.limit, "counted view", "counted views"))
        words = f"{what} {period_words(rule.period)}"
        if rule.unlock_lasts == "forever":
            words += ", each kept for good"
    return words + (", once their address is confirmed" if rule.require_verified else "")


def quoted(text: str) -> str:
    """Text in quotation marks, cut at QUOTE_CHARS; '(none)' when empty."""
    if not text:
        return "(none)"
    return f"“{text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS - 1].rstrip() + '…'}”"


def parted(before: str, after: str) -> tuple[str, str]:
    """Two versions of a long text from the word where they part, the shared start elided ('…')."""
    shared = 0
    while shared < min(len(before), len(after)) and before[shared] == after[shared]:
        shared += 1
    start = before.rfind(" ", 0, shared) + 1
    if len(before) <= QUOTE_CHARS and len(after) <= QUOTE_CHARS or start < QUOTE_CHARS // 3:
        return before, after
    return "…" + before[start:], "…" + after[start:]


def _tier(tier: str) -> Aspect:
    """A tier's meter."""
    return Aspect(TIER_LABELS[tier], (f"tiers.{tier}",),
                  lambda rules: tier_words(rules.tier(tier), tier, _dynamic_for(rules, tier) is not None))


def _dynamic_for(rules: Rules, tier: str):
    """The dynamic meter setting this tier's allowance, where the rules model has one (else None)."""
    dynamic_for = getattr(rules, "dynamic_for", None)
    return dynamic_for(tier) if dynamic_for is not None else None


def _bands(rules: Rules) -> str:
    """The dynamic meter's bands: 'score ≤ 30: 5, ≤ 70: 3, higher: 1 and a subscribe offer (anonymous visitors)'."""
    dynamic = getattr(rules, "dynamic", None)
    if dynamic is None:
        return "none"
    parts = [("score " if number == 0 else "") + (f"≤ {band.up_to}" if band.up_to is not None else "higher")
             + f": {band.allowance}" + (" and a subscribe offer" if band.offer else "")
             for number, band in enumerate(dynamic.bands)]
    return ", ".join(parts) + f" ({', '.join(TIER_LABELS[tier].lower() for tier in dynamic.tiers)})"


def _section(name: str) -> Aspect:
    """One section's class override."""
    return Aspect(f"Section {name}", (f"sections.{name}",),
                  lambda rules: rules.sections.get(name, "as each article is marked"))


def _search(rules: Rules) -> str:
    daily = rules.referral.search_daily
    return f"{daily} a day outside the meter" if daily else "none"


def _door(kind: str) -> Callable[[Rules], str]:
    """A side door that opens the one article an arrival came for."""
    return lambda rules: "read the article they came for" if getattr(rules.referral, kind) else "the meter"


def _weights(rules: Rules) -> str:
    """Whether the dynamic meter scores with the documented weights (two custom sets differ by their keys)."""
    dynamic = getattr(rules, "dynamic", None)
    if dynamic is None:
        return "none"
    return "the documented defaults" if dynamic.weights == type(dynamic.weights)() else "custom"


def _experiments(rules: Rules) -> str:
    if not rules.experiments:
        return "none"
    return ", ".join(exp.id + ("" if exp.active else " (paused)") for exp in rules.experiments)


ASPECTS: tuple[Aspect, ...] = (
    Aspect("Title", ("title",), lambda rules: rules.title, text=True),
    Aspect("Description", ("description",), lambda rules: rules.description, text=True),
    *(_tier(tier) for tier in TIERS),
    Aspect("Teaser", ("teaser_paragraphs",), lambda rules: count(rules.teaser_paragraphs, "paragraph", "paragraphs")),
    Aspect("Gate", ("gate.style",), lambda rules: GATE_STYLES[rules.gate.style]),
    Aspect("Gate headline", ("gate.headline",), lambda rules: rules.gate.headline, text=True),
    Aspect("Gate text", ("gate.body",), lambda rules: rules.gate.body, text=True),
    Aspect("Subscribe line", ("gate.subscribe_line",), lambda rules: rules.gate.subscribe_line, text=True),
    Aspect("Signed-in devices per account", ("devices.limit",),
           lambda rules: count(rules.devices.limit, "device", "devices") if rules.devices.limit else "no cap"),
    Aspect("Referer header", ("referral.trust_referer",),
           lambda rules: "trusted (anyone can fake it)" if rules.referral.trust_referer else "ignored"),
    Aspect("Search arrivals", ("referral.search_daily",), _search),
    Aspect("Registered search arrivals", ("referral.search_registration_grant",),
           lambda rules: f"{rules.referral.search_registration_grant} more a day"
           if rules.referral.search_registration_grant else "nothing more"),
    Aspect("Social arrivals", ("referral.social",), _door("social")),
    Aspect("Newsletter links", ("referral.newsletter",), _door("newsletter")),
    Aspect("Dynamic meter", ("dynamic.tiers", "dynamic.bands"), _bands),
    Aspect("Engagement score weights", ("dynamic.weights",), _weights),
    Aspect("Experiments", ("experiments",), _experiments),
    Aspect("Porous page (unsafe, for the bypass lab)", ("porous",), lambda rules: "yes" if rules.porous else "no"),
)


def aspects(*presets: Rules) -> list[Aspect]:
    """Every aspect of these presets: the fixed ones, and one per section any of them overrides."""
    sections = sorted({name for rules in presets for name in rules.sections})
    return [*ASPECTS, *(_section(name) for name in sections)]


def change(label: str, before: str, after: str) -> str:
    """'Label: before → after', the unit said once ('Teaser: 2 paragraphs → 3')."""
    first, second = _COUNT.match(before), _COUNT.match(after)
    if first and second and first.group(2) == second.group(2):
        after = second.group(1)
    return f"{label}: {before} → {after}"


def flatten(value, prefix: str = "", empty: str | None = "(none)") -> dict[str, object]:
    """Settings as dotted keys (lists whole); an empty table is ``empty`` (None: left out, and so is an unset key)."""
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, inner in value.items():
            flat.update(flatten(inner, f"{prefix}{key}.", empty))
        return flat or ({prefix.rstrip("."): empty} if empty is not None else {})
    return {} if value is None and empty is None else {prefix.rstrip("."): value}


def settings(rules: Rules, empty: str | None = "(none)") -> dict[str, object]:
    """Every setting of a preset as dotted keys (those gate sets itself left out), for the settings table."""
    return flatten(rules.model_dump(mode="json", exclude=set(_UNTOLD)), empty=empty)


def differences(before: Rules, after: Rules) -> list[str]:
    """How ``after`` differs from ``before``, one sentence per change, in the order a presenter reads them."""
    told = [aspect for aspect in aspects(before, after) if aspect.change(before, after)]
    sentences = [aspect.change(before, after) for aspect in told]
    old, new = settings(before, None), settings(after, None)
    for key in sorted(old.keys() | new.keys()):  # what no sentence above said, by its key
        if old.get(key) != new.get(key) and not any(aspect.covers(key) for aspect in told):
            sentences.append(change(key, _plain(old.get(key)), _plain(new.get(key))))
    return sentences


def _plain(value) -> str:
    """An untold setting's value as written (absent: '(none)')."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def summary(rules: Rules, without: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """What a preset does, aspect by aspect: (label, words); ``without`` leaves out the aspects of those keys."""
    return [(aspect.label, aspect.phrase(rules)) for aspect in aspects(rules)
            if not any(aspect.covers(key) for key in without)]
