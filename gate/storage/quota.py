"""Quota stores: where a meter's spends live, and the one way to spend.

A spend is check-then-insert, so it must happen in one serialised step: the
SQL store opens a transaction, locks the one meter (``db.lock``: an advisory
lock on PostgreSQL, so other meters never wait; on SQLite ``BEGIN IMMEDIATE``
already holds the write lock), reads its spends, admits and inserts, and a
unique key on (meter, article, window) backs it up. A merge locks both meters
in sorted order. The memory store, used by the simulator, does the same under
a lock. The check
itself is :func:`gate.rules.paywall.decide`, re-run on the spends read inside the
transaction, so there is one engine and no second copy of the rules.

A spend from a dynamic meter (docs/dynamic.md) keeps the engagement score and
the allowance it was admitted under beside it: the admit re-runs decide with the
same signals, so the allowance checked under the lock is the one recorded.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable, Protocol

from gate.rules import paywall, referral
from gate.rules.paywall import Decision, Rules, Spend, Viewer
from gate.rules.timeutil import from_iso, to_iso

Admit = Callable[[tuple[Spend, ...]], bool]


@dataclass(frozen=True)
class Grant:
    """One spend as recorded: the article, when, and a dynamic meter's score and allowance then (else None)."""

    slug: str
    at: datetime
    score: int | None = None
    allowance: int | None = None


class QuotaStore(Protocol):
    """Where spends are kept. Both implementations pass tests/test_quota.py."""

    def spends(self, meter_key: str) -> tuple[Spend, ...]:
        """Every spend of one meter, oldest first."""

    def spend(
        self, meter_key: str, slug: str, window_key: str, now: datetime, admit: Admit, *,
        score: int | None = None, allowance: int | None = None,
    ) -> tuple[bool, tuple[Spend, ...]]:
        """Atomically: if ``admit(current spends)``, record a spend (with a dynamic meter's score and
        allowance). Returns (spent, spends)."""

    def grants(self, meter_key: str) -> tuple[Grant, ...]:
        """Every spend of one meter with what it was granted under, oldest first (the console shows them)."""

    def merge(self, from_key: str, to_key: str) -> int:
        """Move one meter's spends to another without double counting; returns rows moved."""

    def reset(self, meter_key: str) -> int:
        """Forget a meter's spends (an admin's reset); returns rows removed."""


class MemoryQuotaStore:
    """An in-process store for the simulator and for tests."""

    def __init__(self) -> None:
        #: meter key -> [(slug, window key, at, score, allowance)]
        self._rows: dict[str, list[tuple[str, str, datetime, int | None, int | None]]] = defaultdict(list)
        self._lock = threading.Lock()

    def spends(self, meter_key: str) -> tuple[Spend, ...]:
        """Every spend of one meter, oldest first."""
        with self._lock:
            return self._as_spends(meter_key)

    def _as_spends(self, meter_key: str) -> tuple[Spend, ...]:
        rows = sorted(self._rows.get(meter_key, ()), key=lambda row: row[2])
        return tuple(Spend(row[0], row[2]) for row in rows)

    def spend(self, meter_key, slug, window_key, now, admit, *, score=None, allowance=None):
        """Check and record under one lock, as the SQL store does in one transaction."""
        with self._lock:
            current = self._as_spends(meter_key)
            rows = self._rows[meter_key]
            if not admit(current) or any(r[0] == slug and r[1] == window_key for r in rows):
                return False, current
            rows.append((slug, window_key, now, score, allowance))
            return True, self._as_spends(meter_key)

    def grants(self, meter_key):
        """Every spend of one meter with its score and allowance, oldest first."""
        with self._lock:
            rows = sorted(self._rows.get(meter_key, ()), key=lambda row: row[2])
            return tuple(Grant(row[0], row[2], row[3], row[4]) for row in rows)

    def merge(self, from_key, to_key):
        """Move spends; a (slug, window) the target already has is dropped."""
        with self._lock:
            target = self._rows[to_key]
            have = {(r[0], r[1]) for r in target}
            moved = [r for r in self._rows.pop(from_key, []) if (r[0], r[1]) not in have]
            target.extend(moved)
            return len(moved)

    def reset(self, meter_key):
        """Forget a meter's spends."""
        with self._lock:
            return len(self._rows.pop(meter_key, []))


class SqlQuotaStore:
    """The site's store: the ``unlocks`` table of the site database, on either engine."""

    def __init__(self, db) -> None:
        self.db = db

    def spends(self, meter_key: str) -> tuple[Spend, ...]:
        """Every spend of one meter, oldest first."""
        rows = self.db.execute(
            "select slug, unlocked_at from unlocks where meter_key = ? order by unlocked_at, id",
            [meter_key],
        ).fetchall()
        return spends_of(rows)

    def spend(self, meter_key, slug, window_key, now, admit, *, score=None, allowance=None):
        """Lock the meter, read its spends, admit, insert: concurrent spends of one meter serialise."""
        with self.db.transaction():
            self.db.lock(meter_lock(meter_key))
            current = self.spends(meter_key)
            if not admit(current):
                return False, current
            row = {"meter_key": meter_key, "slug": slug, "window_key": window_key, "unlocked_at": to_iso(now),
                   "score": score, "allowance": allowance}
            if not self.db.insert_ignore("unlocks", row):  # this article, this window: already spent
                return False, current
            return True, self.spends(meter_key)

    def grants(self, meter_key):
        """Every spend of one meter with its score and allowance, oldest first."""
        rows = self.db.execute(
            "select slug, unlocked_at, score, allowance from unlocks where meter_key = ? order by unlocked_at, id",
            [meter_key],
        ).fetchall()
        return tuple(Grant(slug, from_iso(at), score, allowance) for slug, at, score, allowance in rows)

    def merge(self, from_key, to_key):
        """Move a visitor's spends (and what they were granted under) to an account in one transaction,
        holding both meters' locks."""
        with self.db.transaction():
            for key in sorted({from_key, to_key}):  # one order everywhere: two merges never deadlock
                self.db.lock(meter_lock(key))
            moved = self.db.execute(
                "insert into unlocks (meter_key, slug, window_key, unlocked_at, score, allowance)"
                " select ?, slug, window_key, unlocked_at, score, allowance from unlocks where meter_key = ?"
                " on conflict do nothing",
                [to_key, from_key],
            ).rowcount
            self.db.execute("delete from unlocks where meter_key = ?", [from_key])
        return moved

    def reset(self, meter_key):
        """Forget a meter's spends."""
        return self.db.execute("delete from unlocks where meter_key = ?", [meter_key]).rowcount


def spends_of(rows) -> tuple[Spend, ...]:
    """(slug, unlocked_at) rows of ``unlocks``, oldest first, as a meter's spends."""
    return tuple(Spend(slug, from_iso(at)) for slug, at in rows)


def meter_lock(meter_key: str) -> str:
    """The lock a spend from ``meter_key`` takes (:meth:`gate.storage.engine._Seam.lock`)."""
    return f"meter:{meter_key}"


def unlock(
    store: QuotaStore, rules: Rules, viewer: Viewer, article, now: datetime, first: Decision | None = None
) -> tuple[Decision, bool]:
    """Spend one article of quota if the rules allow it now; return the new decision.

    Works for both modes: a press of *Unlock* in choice mode and a counted
    view in auto mode. Spending twice (double submit, two tabs) spends once.
    ``first`` is the caller's decision for ``viewer`` already made, if any.
    """

    def admit(current: tuple[Spend, ...]) -> bool:
        verdict = paywall.decide(rules, replace(viewer, spends=current), article, now)
        return verdict.reason == paywall.Reason.METER_AVAILABLE

    first = first or paywall.decide(rules, viewer, article, now)
    if first.reason == paywall.Reason.REFERRAL and first.spend:
        first, spent = _search_read(store, rules, viewer, article, now, first)
        if spent or not first.spend:  # lost a race for the last search read: an auto meter may still spend
            return first, spent
    if first.reason != paywall.Reason.METER_AVAILABLE:
        return first, False
    # The admit decides with the same signals, so the allowance checked under the lock is the one recorded.
    spent, after = store.spend(viewer.meter_key, article.slug, first.meter.window_key, now, admit,
                               **first.meter.grant)
    decision = paywall.decide(rules, replace(viewer, spends=after), article, now)
    if spent:  # full access, granted by this spend: keep its reason, show the new meter
        decision = replace(first, access="full", offer=None, spend=False, meter=decision.meter)
    return decision, spent


def spendable(decision: Decision) -> bool:
    """Whether :func:`unlock` may spend for this decision: the meter, or a search arrival's daily allowance."""
    return decision.reason == paywall.Reason.METER_AVAILABLE or (
        decision.reason == paywall.Reason.REFERRAL and decision.spend)


def _search_read(store: QuotaStore, rules: Rules, viewer: Viewer, article, now: datetime,
                 first: Decision) -> tuple[Decision, bool]:
    """Spend one of today's search reads (its own meter, never the viewer's) if decide still grants it."""

    def admit(current: tuple[Spend, ...]) -> bool:
        verdict = paywall.decide(rules, replace(viewer, search_spends=current), article, now)
        return verdict.reason == paywall.Reason.REFERRAL and verdict.spend

    key = referral.search_meter(viewer.meter_key)
    spent, after = store.spend(key, article.slug, first.referral.window_key, now, admit)
    return paywall.decide(rules, replace(viewer, search_spends=after), article, now), spent
