"""Subscriptions in the database: checkout, settling, and who has access now.

The lifecycle rules live in :mod:`gate.rules.billing` (pure). This module loads and
saves subscriptions, writes every charge attempt to ``payments`` and every
status change to ``events`` (with from, to and reason, at the moment it
happened), each operation in one transaction on either engine.

Every read-then-write of a reader's subscription first takes
:func:`lock_subscription` (the write lock on SQLite, one advisory lock per reader on
PostgreSQL), and re-reads under it: two nodes running ``billing tick`` at once, or a
tick and a page load, charge one renewal once. A checkout also locks its idempotency
key, before the reader's lock (always in that order). The unique keys stay the
backstop: ``checkouts.idempotency_key`` and one renewal or retry charge per
subscription and moment (migration m014).
"""

from __future__ import annotations

import functools
import json
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from gate.rules import billing
from gate.rules.billing import Outcome, PlanTerms, Policy, Subscription
from gate.rules.timeutil import from_iso, to_iso
from gate.services import accounts, newsletter, notices, offers, winback
from gate.storage import engine, events, quota
from gate.storage.db import first

_TIMES = ("created_at", "anchor", "current_period_start", "current_period_end", "trial_end",
          "past_due_since", "next_retry_at", "ended_at", "paused_at", "resumes_at")


class CheckoutError(ValueError):
    """A checkout that cannot go ahead, with the reader-facing reason."""


def lock_subscription(db, reader_id: int) -> None:
    """Serialise every change to one reader's subscriptions (inside a transaction)."""
    db.lock(f"subscription:reader:{reader_id}")


def _lock_checkout(db, idempotency_key: str) -> None:
    """Serialise the submissions of one checkout form (taken before the reader's lock)."""
    db.lock(f"checkout:{idempotency_key}")


def _save_checkout(db, idempotency_key: str, reader_id: int, subscription_id: int | None,
                   decline: str | None, now: datetime) -> None:
    """Record a spent checkout key; a key spent meanwhile (the lock makes that a bug) rolls it all back."""
    fresh = db.insert_ignore("checkouts", {"idempotency_key": idempotency_key, "reader_id": reader_id,
                                           "subscription_id": subscription_id, "created_at": to_iso(now),
                                           "decline_code": decline})
    if not fresh:
        raise CheckoutError("This checkout form was already submitted. Reload the page.")


def policy(cfg) -> Policy:
    """The dunning policy from config/site.toml."""
    terms = cfg.billing
    return Policy(tuple(terms.retry_days), terms.grace_days, terms.on_retries_exhausted)


def plan_terms(cfg, plan_id: str) -> PlanTerms:
    """A configured plan, as the state machine needs it."""
    for plan in cfg.plans:
        if plan.id == plan_id:
            return PlanTerms(plan.id, plan.price_cents, plan.currency, plan.interval, plan.trial_days,
                             plan.intro_price_cents, plan.intro_periods)
    raise CheckoutError(f"There is no plan called {plan_id!r}.")


def _from_row(row: dict) -> Subscription:
    data = {key: row[key] for key in Subscription.__dataclass_fields__ if key in row}
    for key in _TIMES:
        data[key] = from_iso(row[key]) if row[key] else None
    data["cancel_at_period_end"] = bool(row["cancel_at_period_end"])
    return Subscription(**data)


def _to_row(sub: Subscription) -> dict:
    row = {key: getattr(sub, key) for key in Subscription.__dataclass_fields__}
    for key in _TIMES:
        row[key] = to_iso(row[key]) if row[key] else None
    row["cancel_at_period_end"] = int(sub.cancel_at_period_end)
    if row["id"] is None:
        del row["id"]
    return row


def current(db, reader_id: int) -> Subscription | None:
    """The reader's newest subscription (live or not)."""
    row = first(db, "select * from subscriptions where reader_id = ? order by id desc limit 1",
                [reader_id])
    return _from_row(row) if row else None


def payments(db, reader_id: int) -> list[dict]:
    """Every charge attempt for a reader, newest first."""
    return db.rows("select * from payments where reader_id = ? order by at desc, id desc", [reader_id])


def apply_outcome(db, outcome: Outcome, by: str, notify=None) -> Subscription:
    """Save the subscription, its charges and its changes (inside the caller's transaction).

    With ``notify`` (the site config) the reader is also emailed about each
    change, in the same transaction, once per change.
    """
    sub = outcome.subscription
    if sub.id is None:
        sub = replace(sub, id=db.insert("subscriptions", _to_row(sub)))
    else:
        row = _to_row(sub)
        assignments = ", ".join(f"{key} = :{key}" for key in row if key != "id")
        db.execute(f"update subscriptions set {assignments} where id = :id", row)
    for charge in outcome.charges:
        db.insert("payments", {
            "subscription_id": sub.id, "reader_id": sub.reader_id, "at": to_iso(charge.at),
            "amount_cents": charge.amount_cents, "currency": charge.currency,
            "outcome": charge.outcome, "decline_code": charge.decline_code, "kind": charge.kind,
            "card_last4": charge.card_last4, "offer_code": charge.offer_code, "list_cents": charge.list_cents,
        })
    for change in outcome.changes:
        events.record(db, "subscription_changed", change.at, reader_id=sub.reader_id,
                      subscription_id=sub.id, plan=sub.plan_id, reason=change.reason, by=by,
                      **{"from": change.from_status, "to": change.to_status})
        if notify is not None:
            notices.for_change(db, notify, sub, change, outcome.charges)
    return sub


def settle_reader(db, cfg, reader_id: int, now: datetime) -> Subscription | None:
    """Bring one reader's subscription up to ``now`` (renewals, retries, expiry)."""
    return _settle(db, cfg, reader_id, now, current(db, reader_id))[0]


#: Their meter's spends, for :func:`signed_in_columns`.
_SPENDS = ("u.unlocked_at", "u.id", "u.slug")
_SPENDS_OF = f"from unlocks u where u.meter_key = '{accounts.METER_PREFIX}' || cast(r.id as text)"
#: A session token's live device (``d``, a parameter) and its account (``r``): none for an ended session.
SESSION_JOIN = (" left join reader_sessions d on d.token = ? and d.ended_at is null"
                " left join readers r on r.id = d.reader_id")
_BY_TOKEN = " from reader_sessions d join readers r on r.id = d.reader_id"
_LIVE = " where d.token = ? and d.ended_at is null"
#: Read with a reader: the account, the device's own columns and the version of the reader's row.
_DEVICE = ("r.id as reader_id, d.token as reader_session_token, d.last_seen_at as reader_seen_at,"
           " r.version as reader_version")
#: All a page reads of a reader this process keeps: the version of their row, by id (a parameter).
_VERSION = "(select version from readers where id = ?) as reader_version"


@dataclass(frozen=True)
class KeptReader:
    """What this process last read of a signed-in device's reader, and the version of their row it was read at."""

    version: int
    #: Their ``readers`` row (the columns :meth:`accounts.Reader.from_row` reads, and more on PostgreSQL).
    fields: dict
    comp_until: datetime | None
    #: Their newest subscription as read (settled again on every page), and their meter's spends, oldest first.
    sub: Subscription | None
    spends: tuple
    #: The device's last-seen time as read, or as this process last wrote it (ISO text; None: never).
    seen_at: str | None = None
    #: The readers built from it, by (token, is_subscriber, grace_ends): a page builds one only when the access
    #: it works out for its moment is new (a ``replace`` of this read starts none).
    built: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def reader(self, token: str, access: dict) -> accounts.Reader:
        """The reader as read, with this device's token and the ``access`` worked out for now (frozen: shared)."""
        key = (token, access["is_subscriber"], access["grace_ends"])
        found = self.built.get(key)
        if found is None:
            if len(self.built) >= BUILT_PER_READ:
                self.built.clear()
            fields = {**self.fields, "session_token": token, "seen_at": self.seen_at}
            found = self.built[key] = accounts.Reader.from_row(fields, **access)
        return found


#: Readers built from one read, at most (one per access a device's pages have seen since it was read).
BUILT_PER_READ = 4


#: The readers this process read, by session token (one per signed-in device), until past this many.
KEEP_READERS = 4096
_kept: dict[str, KeptReader] = {}


def kept(token: str) -> int | None:
    """The id of the reader a session token names, when this process keeps a read of them (a page asks
    only their version, with this id), else None."""
    found = _kept.get(token)
    return found.fields["id"] if found is not None else None


def seen(token: str, at: str) -> None:
    """This process wrote the device's last-seen time: keep it with the device's reader."""
    found = _kept.get(token)
    if found is not None:
        _kept[token] = replace(found, seen_at=at)


@functools.cache
def signed_in_columns(dialect: str, kept: bool = False) -> str:
    """The device's columns and the reader's version, their newest subscription (``sub``) and their
    meter's spends (``spends``), one JSON column each; if ``kept``, only the version, by id.

    The version changes with every write to the reader's row, their subscriptions, their spends or
    their sessions' ends (triggers, migrations m023 and m025), so a kept read whose version the
    database still shows is what reading it again would find, and a page of a reader this process
    has read asks for nothing more, not even their session: on PostgreSQL each relation a statement
    reads costs the server tens of thousands of instructions to set up, however little it reads.
    The spends come as one array of ``[at, id, slug]``, in no order (:func:`settled` orders them),
    so the statement is one row however many there are (joined, a reader with 36 spends read 36
    rows of 56 columns: 4.8 M PostgreSQL server instructions a read against 0.78 M as one column).
    """
    if kept:
        return _VERSION
    sub = engine.json_row(dialect, "s", tuple(Subscription.__dataclass_fields__))
    newest = (f"(select {sub} from subscriptions s"
              " where s.id = (select max(id) from subscriptions where reader_id = r.id))")  # one index probe each
    return (f"{_DEVICE}, {engine.json_row(dialect, 'r', accounts.READER_COLUMNS)} as reader, {newest} as sub,"
            f" {engine.json_rows(dialect, _SPENDS, _SPENDS_OF)} as spends")


@functools.cache
def _signed_in(dialect: str, kept: bool) -> str:
    return f"select {signed_in_columns(dialect, kept)}" + ("" if kept else f"{_BY_TOKEN}{_LIVE}")


def signed_in(db, cfg, token: str, now: datetime) -> tuple[accounts.Reader | None, tuple | None]:
    """The account a session token names, with its access settled for ``now`` (see :func:`refresh`), and their spends.

    Every signed-in page asks this first, so the reader, their newest
    subscription and their meter's spends come in one statement (nothing but
    their version when this process has read them before); settling reads
    again only when a renewal, retry or expiry is due. A page that read them
    with the site's state instead (:mod:`gate.services.sitestate`) hands its
    rows to :func:`settled`.
    """
    if not token:
        return None, None
    reader_id = kept(token)
    found = db.rows(_signed_in(db.dialect, reader_id is not None), [reader_id if reader_id is not None else token])
    return settled(db, cfg, token, found, now)


def settled(db, cfg, token: str, found: list[dict], now: datetime) -> tuple[accounts.Reader | None, tuple | None]:
    """The reader a session token names in rows read with :func:`signed_in_columns` (none: None), settled for
    ``now``; their spends."""
    row = found[0] if found else None
    kept = _kept_read(db, token, row) if row is not None else None
    if kept is None:
        return None, None
    sub = _settle(db, cfg, kept.fields["id"], now, kept.sub)[0]
    return kept.reader(token, _access(cfg, kept.comp_until, now, sub)), kept.spends


def _kept_read(db, token: str, row: dict) -> KeptReader | None:
    """The reader a signed-in row names: read in it (and kept), or kept at the version it shows, or read again."""
    if "reader" not in row:  # only the version came
        kept = _kept.get(token)
        if kept is not None and kept.version == row["reader_version"]:
            return kept
        row = first(db, _signed_in(db.dialect, False), [token])  # changed since this process read them
    if row is None or row["reader_id"] is None:
        return None
    fields = json.loads(row["reader"])
    comp_until = from_iso(fields["comp_until"]) if fields["comp_until"] else None
    kept = KeptReader(row["reader_version"], fields, comp_until,
                      _from_row(json.loads(row["sub"])) if row["sub"] is not None else None, _spends(row["spends"]),
                      row["reader_seen_at"])
    if len(_kept) >= KEEP_READERS:
        _kept.clear()
    _kept[token] = kept
    return kept


def _spends(spends: str) -> tuple:
    """The meter's spends as :func:`signed_in_columns` reads them (JSON), oldest first (as ``quota.spends`` orders them)."""
    spent = sorted(tuple(spend) for spend in json.loads(spends))  # [at, id, slug]: by time, then id
    return quota.spends_of((slug, at) for at, _, slug in spent)


def _settle(db, cfg, reader_id: int, now: datetime, sub: Subscription | None
            ) -> tuple[Subscription | None, int]:
    """Settle one reader from ``sub``, their newest subscription as read; it and how many charges this call made."""
    if not _needs_settling(db, sub, now):
        return sub, 0
    with db.transaction():
        lock_subscription(db, reader_id)
        sub = current(db, reader_id)  # re-read under the lock: another node may have settled it
        if not _needs_settling(db, sub, now):
            return sub, 0
        notices.remind_trial_end(db, cfg, sub, now)
        outcome = billing.settle(sub, plan_terms(cfg, sub.plan_id), policy(cfg), now)
        sub = apply_outcome(db, outcome, by="clock", notify=cfg)
    _sync_lists(db, cfg, reader_id, now)
    return sub, len(outcome.charges)


def _needs_settling(db, sub: Subscription | None, now: datetime) -> bool:
    """Whether a renewal, retry, expiry or trial reminder is due."""
    return sub is not None and sub.status in billing.LIVE and (
        _due(sub, now) or notices.trial_reminder_due(db, sub, now))


def _sync_lists(db, cfg, reader_id: int, now: datetime) -> None:
    """Pause or resume subscriber-only newsletters to match access now."""
    reader = accounts.by_id(db, reader_id)
    comp = reader.comp_active(now)
    live = billing.has_access(current(db, reader_id), policy(cfg), now)
    newsletter.sync_access(db, cfg, reader_id, comp or live, now)


def _due(sub: Subscription, now: datetime) -> bool:
    if sub.status == "paused":
        return sub.resumes_at is not None and sub.resumes_at <= now
    if sub.status == "past_due":
        return sub.next_retry_at is not None and sub.next_retry_at <= now
    return sub.current_period_end <= now


def settle_all(db, cfg, now: datetime) -> dict:
    """Settle every subscription with something due; returns counts of what this call did.

    Several nodes may tick at once: each reader is settled under its lock, so a
    renewal is charged once and counted by the node that charged it.
    """
    rows = db.execute(
        "select distinct reader_id from subscriptions where"
        " (status in ('trialing', 'active') and current_period_end <= ?)"
        " or (status = 'past_due' and next_retry_at <= ?)"
        " or (status = 'trialing' and cancel_at_period_end = 0 and trial_end <= ?)"
        " or (status = 'paused' and resumes_at <= ?)",
        [to_iso(now), to_iso(now),
         to_iso(now + timedelta(days=notices.TRIAL_REMINDER_DAYS)), to_iso(now)],
    ).fetchall()
    charges = sum(_settle(db, cfg, reader_id, now, current(db, reader_id))[1] for (reader_id,) in rows)
    winback.send_due(db, cfg, now)  # lapsed readers' win-back mail falls due on the same tick
    return {"subscriptions": len(rows), "charges": charges}


def grace_end(cfg, sub: Subscription | None) -> datetime | None:
    """When a past-due subscription stops giving access (None: not past due)."""
    if sub is None or sub.status != "past_due":
        return None
    return billing.grace_ends(sub, policy(cfg))


def has_access(db, cfg, reader: accounts.Reader, now: datetime) -> bool:
    """Full access now: a complimentary grant or a live subscription (settled first)."""
    if reader.comp_active(now):
        return True
    return billing.has_access(settle_reader(db, cfg, reader.id, now), policy(cfg), now)


def refresh(db, cfg, reader: accounts.Reader, now: datetime) -> accounts.Reader:
    """The reader with ``is_subscriber`` and a past-due ``grace_ends`` set for this moment (one settle)."""
    return _refreshed(cfg, reader, now, settle_reader(db, cfg, reader.id, now))


def _refreshed(cfg, reader: accounts.Reader, now: datetime, sub: Subscription | None) -> accounts.Reader:
    """The reader with their access now, from their settled subscription."""
    return replace(reader, **_access(cfg, reader.comp_until, now, sub))


def _access(cfg, comp_until: datetime | None, now: datetime, sub: Subscription | None) -> dict:
    """A reader's access now (the Reader fields), from their complimentary grant and settled subscription."""
    access = accounts.comp_covers(comp_until, now) or (sub is not None and billing.has_access(sub, policy(cfg), now))
    return {"is_subscriber": access, "grace_ends": grace_end(cfg, sub)}  # without a subscription, no policy to read


def checkout(db, cfg, reader_id: int, plan_id: str, card: billing.Card, card_number: str,
             idempotency_key: str, now: datetime, ip: str | None = None, code: str | None = None
             ) -> tuple[Subscription, str | None, bool]:
    """Subscribe a reader; returns (subscription, decline code, replayed).

    The idempotency key makes a double submit (double click, refresh, two
    tabs) return the first attempt's result instead of charging again. A promo
    ``code`` is claimed before the card is charged and redeemed only if the charge
    succeeds; a code refused meanwhile (its cap reached) raises
    :class:`gate.services.offers.OfferError` and nothing is charged.
    """
    terms = plan_terms(cfg, plan_id)
    with _recording_refusal(db, code, plan_id, now, reader_id=reader_id), db.transaction():
        _lock_checkout(db, idempotency_key)
        seen = first(db, "select * from checkouts where idempotency_key = ?", [idempotency_key])
        if seen:
            if seen["reader_id"] != reader_id:
                raise CheckoutError("This checkout form belongs to another session. Reload the page.")
            if seen["subscription_id"] is None:  # spent on a guest checkout that charged nothing
                raise CheckoutError("This checkout form has expired. Reload the page.")
            sub = _from_row(first(db, "select * from subscriptions where id = ?", [seen["subscription_id"]]))
            return sub, seen["decline_code"], True
        lock_subscription(db, reader_id)
        existing = current(db, reader_id)
        if existing and existing.status in billing.LIVE:
            raise CheckoutError("You already have a subscription: manage it from your account.")
        decline = billing.checkout_decline(card_number)
        offer = offers.claim(db, cfg, code, plan_id, reader_id, now) if code else None  # lock: key, reader, offer
        discount = offer.discount if offer is not None and not decline else None  # a decline consumes nothing
        if existing and existing.status == "incomplete":
            outcome = billing.complete(replace(existing, plan_id=plan_id).with_discount(discount), terms, card,
                                       decline, now)
        else:
            outcome = billing.start(reader_id, terms, card, decline, now, discount=discount)
        sub = apply_outcome(db, outcome, by="checkout", notify=cfg)
        if discount is not None:
            _redeemed(db, offer, sub, outcome, now)
        _save_checkout(db, idempotency_key, reader_id, sub.id, decline, now)
    if not decline:
        newsletter.enroll_subscriber_lists(db, cfg, reader_id, now, source="checkout", ip=ip)
    return sub, decline, False


def _redeemed(db, offer, sub: Subscription, outcome: Outcome, now: datetime) -> None:
    """The redemption row naming the subscription, and its event (in the checkout's transaction)."""
    offers.record_redemption(db, offer, sub.reader_id, now, subscription_id=sub.id)
    events.record(db, "offer_redeemed", now, reader_id=sub.reader_id, code=offer.code, plan=sub.plan_id,
                  subscription_id=sub.id, amount_cents=sum(charge.amount_cents for charge in outcome.charges))


@contextmanager
def _recording_refusal(db, code: str | None, plan_id: str, now: datetime, **who):
    """Record ``offer_refused`` for a code refused at payment, once its checkout has rolled back.

    Inside an outer transaction (a guest checkout) the outer one records it, after its own rollback.
    """
    try:
        yield
    except offers.OfferError as error:
        if code and not db.in_transaction:
            offers.refused(db, code, plan_id, error, now, **who)
        raise


def change(db, cfg, reader_id: int, now: datetime, operation, by: str) -> Subscription:
    """Settle, then apply one reader-initiated operation, in one transaction.

    ``operation(sub)`` runs under the reader's lock inside that transaction and returns the
    :class:`Outcome`; what else it writes (an event, a meter spend) commits with it or not at all.
    """
    settle_reader(db, cfg, reader_id, now)
    with db.transaction():
        lock_subscription(db, reader_id)
        sub = current(db, reader_id)
        if sub is None:
            raise billing.BillingError("there is no subscription to change")
        sub = apply_outcome(db, operation(sub), by=by, notify=cfg)
    _sync_lists(db, cfg, reader_id, now)
    return sub


def cancel(db, cfg, reader_id: int, now: datetime, *, immediately: bool = False,
           by: str = "reader") -> Subscription:
    """Cancel at the period end (default) or right away."""
    return change(db, cfg, reader_id, now,
                   lambda sub: billing.cancel(sub, now, immediately=immediately), by)


def resume(db, cfg, reader_id: int, now: datetime, by: str = "reader") -> Subscription:
    """Undo a pending cancel-at-period-end."""
    return change(db, cfg, reader_id, now, lambda sub: billing.resume(sub, now), by)


def pause(db, cfg, reader_id: int, months: int, now: datetime, by: str = "reader") -> Subscription:
    """Pause an active subscription for 1–3 months (subscriber-only newsletters pause with it)."""
    return change(db, cfg, reader_id, now, lambda sub: billing.pause(sub, months, now), by)


def unpause(db, cfg, reader_id: int, now: datetime, by: str = "reader") -> Subscription:
    """End a pause early: a new period starts now and is charged."""
    return change(db, cfg, reader_id, now, lambda sub: billing.unpause(
        sub, plan_terms(cfg, sub.plan_id), policy(cfg), now), by)


def update_card(db, cfg, reader_id: int, card: billing.Card, card_number: str, now: datetime,
                by: str = "reader") -> Subscription:
    """Put a new card on file (and retry a past-due renewal with it)."""
    decline = billing.checkout_decline(card_number)

    def operation(sub):
        return billing.update_card(sub, plan_terms(cfg, sub.plan_id), card, decline, now)

    return change(db, cfg, reader_id, now, operation, by)


def grant(db, cfg, reader_id: int, plan_id: str, now: datetime, by: str) -> Subscription:
    """Start a paid-up subscription on the 4242 test card (CLI and demo accounts)."""
    number = "4242424242424242"
    card = billing.Card(number[-4:], 12, now.year + 5)
    with db.transaction():
        lock_subscription(db, reader_id)
        existing = current(db, reader_id)
        if existing and existing.status in billing.LIVE:
            return existing
        outcome = billing.start(reader_id, replace(plan_terms(cfg, plan_id), trial_days=0),
                                card, None, now)
        sub = apply_outcome(db, outcome, by=by)
    newsletter.enroll_subscriber_lists(db, cfg, reader_id, now, source=by, ip=None)
    return sub


@dataclass(frozen=True)
class GuestCheckout:
    """What an anonymous checkout did. ``outcome`` is ``declined`` (nothing written),
    ``subscribed`` (a new account, subscribed, not signed in), ``known`` (the address has an
    account: nothing charged, its owner is asked to sign in) or ``replayed`` (this form was
    already submitted). The payer is told the same for ``subscribed``, ``known`` and
    ``replayed``, so a checkout never reveals who has an account."""

    outcome: str
    reader: accounts.Reader | None = None
    subscription: Subscription | None = None
    decline: str | None = None


def guest_buyer(db, email: str, password: str | None, idempotency_key: str, now: datetime,
                **signup_event) -> tuple[accounts.Reader, bool]:
    """Who may buy without an account (a subscription or a pass): the reader, and whether they are new.

    A new address gets its account now. A known one is neither charged nor signed in (that
    would be a takeover; its owner gets a link), and the form's key is spent on it, so a
    second submit is a replay rather than a second mail. Runs inside the form's transaction.
    """
    db.lock(f"account:email:{email}")  # two forms for one new address make one account
    reader = accounts.by_email(db, email)
    if reader is not None:
        _save_checkout(db, idempotency_key, reader.id, None, None, now)
        return reader, False
    return accounts.register(db, email, password, now, **signup_event), True


def guest_checkout(db, cfg, email: str, password: str | None, plan_id: str, card: billing.Card,
                   card_number: str, idempotency_key: str, now: datetime, ip: str | None = None,
                   code: str | None = None, **signup_event) -> GuestCheckout:
    """Subscribe an anonymous payer without ever handing them an account they haven't proven.

    A declined card creates nothing (no throwaway account with a free meter); an address
    that already has an account is not charged and not signed in (that would be a
    takeover). All of it happens in one transaction under the form's key lock (and the
    address's), so two submissions of one form (a double click) make one account and
    one charge, and the second is a replay. A promo ``code`` refused now raises
    :class:`gate.services.offers.OfferError` before anything is written or charged.
    """
    terms = plan_terms(cfg, plan_id)
    decline = billing.checkout_decline(card_number)
    visitor = {"visitor_id": signup_event.get("visitor_id")}
    with _recording_refusal(db, code, plan_id, now, **visitor), db.transaction():
        _lock_checkout(db, idempotency_key)
        seen = first(db, "select reader_id from checkouts where idempotency_key = ?", [idempotency_key])
        if seen:
            return GuestCheckout("replayed", accounts.by_id(db, seen["reader_id"]))
        if code:
            offers.claim(db, cfg, code, plan_id, None, now)  # refused before a card or an account is touched
        if decline:
            events.record(db, "checkout_declined", now, plan=terms.id, decline=decline, **signup_event)
            return GuestCheckout("declined", decline=decline)
        reader, new = guest_buyer(db, email, password, idempotency_key, now, **signup_event)
        if not new:
            return GuestCheckout("known", reader)
        sub, _, _ = checkout(db, cfg, reader.id, plan_id, card, card_number, idempotency_key, now, ip=ip,
                             code=code)
    return GuestCheckout("subscribed", reader, sub)
