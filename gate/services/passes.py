"""Passes: a day or a week of full access, bought once on a test card and never renewed.

A pass is sold on the gate beside signup and subscribe (``[[passes]]`` in
config/site.toml). Buying one is one transaction under a lock on the form's
idempotency key, then the reader's: the ``passes`` row (``active``), its
``payments`` row (kind ``pass``, no subscription) and ``readers.pass_until`` (the
latest end of the reader's passes, which every signed-in page reads already),
with a ``pass_purchased`` event. A second pass bought while one runs starts
where the first ends. A declined card writes no pass and no charge. A promo code
whose offer names the pass id in its ``plans`` sells it at the offer's price, redeemed
in the same transaction (``offers.redeem(..., pass_id=)``).

Access is decided from the end alone (``now < pass_until``, in
:func:`gate.rules.paywall.decide`), so it stops exactly on time; the ``expired``
state and its ``pass_expired`` event, dated at the end, are written when the
clock's tick passes it (:func:`expire_due`, run by ``gate billing tick`` and
every clock move).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from gate.rules import billing
from gate.rules.offers import OfferTerms, Refusal
from gate.rules.timeutil import from_iso, to_iso
from gate.services import accounts, offers, subscriptions
from gate.storage import events

ACTIVE, EXPIRED = "active", "expired"
#: Each state in words, for the account page and the console.
STATUS_LABELS = {ACTIVE: "Active", EXPIRED: "Ended"}
_TIMES = ("created_at", "starts_at", "ends_at")


class PassError(ValueError):
    """A pass that cannot be bought, with the reader-facing reason."""


@dataclass(frozen=True)
class Pass:
    """One bought pass: full access from ``starts_at`` until (not including) ``ends_at``."""

    id: int
    reader_id: int
    kind: str
    status: str
    created_at: datetime
    starts_at: datetime
    ends_at: datetime
    amount_cents: int
    currency: str
    card_last4: str | None = None
    offer_code: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> "Pass":
        """Build from a ``passes`` row."""
        data = {key: row[key] for key in cls.__dataclass_fields__}
        return cls(**{**data, **{key: from_iso(row[key]) for key in _TIMES}})

    def as_dict(self) -> dict:
        """The pass as the JSON API shows it."""
        return {"id": self.id, "kind": self.kind, "status": self.status, "starts_at": self.starts_at.isoformat(),
                "ends_at": self.ends_at.isoformat(), "amount_cents": self.amount_cents, "currency": self.currency}


@dataclass(frozen=True)
class Purchase:
    """What one submission of a pass form did: the pass (None when declined), the decline code, a replay."""

    pass_: Pass | None
    decline: str | None = None
    replayed: bool = False


def product(cfg, kind: str):
    """A configured ``[[passes]]`` entry by id, or PassError."""
    for item in cfg.passes:
        if item.id == kind:
            return item
    raise PassError(f"There is no pass called {kind!r}.")


def _lock_form(db, idempotency_key: str) -> None:
    """Serialise the submissions of one pass form (taken before the reader's lock)."""
    db.lock(f"pass:{idempotency_key}")


def _lock_reader(db, reader_id: int) -> None:
    """Serialise changes to one reader's passes: two passes bought at once chain, not overlap."""
    db.lock(f"pass:reader:{reader_id}")


def _seen(db, idempotency_key: str) -> dict | None:
    """The pass this form key already bought, if any."""
    return db.first("select * from passes where idempotency_key = ?", [idempotency_key])


def priced(db, cfg, kind: str, code: str | None, reader_id: int | None, now: datetime
           ) -> tuple[int, OfferTerms | None]:
    """What a pass costs with a promo code (none: its price), or OfferError when the code can't be used on it.

    A code applies to a pass only when its offer's ``plans`` names the pass id: an
    offer for every plan is an offer on subscriptions.
    """
    item = product(cfg, kind)
    if not code:
        return item.price_cents, None
    offer, refusal = offers.check(db, cfg, code, kind, reader_id, now)
    if refusal is None and kind not in offer.plans:
        refusal = Refusal.WRONG_PLAN
    if refusal is not None:
        raise offers.OfferError(refusal)
    return offer.discount.apply(item.price_cents), offer


def buy(db, cfg, reader_id: int, kind: str, card: billing.Card, card_number: str,
        idempotency_key: str, now: datetime, code: str | None = None) -> Purchase:
    """Charge a test card for a pass and grant it, at most once per form (a double submit is a replay).

    With ``code`` the pass is sold at the offer's price and the code is redeemed in the
    same transaction, under its lock (a cap holds; a declined card redeems nothing), or
    OfferError and nothing is written.
    """
    try:
        return _buy(db, cfg, reader_id, product(cfg, kind), card, card_number, idempotency_key, now, code)
    except offers.OfferError as error:  # rolled back: the refusal is recorded on its own
        _record_refusal(db, reader_id, kind, code, error.refusal, now)
        raise


def check_code(db, cfg, kind: str, code: str, reader_id: int, now: datetime) -> offers.OfferError | None:
    """Why a promo code can't be used on this pass (recorded as ``offer_refused``), or None: it can, for now."""
    try:
        priced(db, cfg, kind, code, reader_id, now)
    except offers.OfferError as error:
        _record_refusal(db, reader_id, kind, code, error.refusal, now)
        return error
    return None


def _record_refusal(db, reader_id: int, kind: str, code: str, refusal: Refusal, now: datetime) -> None:
    """The ``offer_refused`` event of a code tried on a pass."""
    events.record(db, "offer_refused", now, reader_id=reader_id, code=code.strip().upper()[:32], plan=kind,
                  reason=refusal)


def _buy(db, cfg, reader_id: int, item, card: billing.Card, card_number: str, idempotency_key: str,
         now: datetime, code: str | None) -> Purchase:
    """One submission of a pass form, in one transaction (see :func:`buy`)."""
    kind = item.id
    decline = billing.checkout_decline(card_number)
    with db.transaction():
        _lock_form(db, idempotency_key)
        seen = _seen(db, idempotency_key)
        if seen is not None:
            if seen["reader_id"] != reader_id:
                raise PassError("This form belongs to another session. Reload the page.")
            return Purchase(Pass.from_row(seen), replayed=True)
        if decline:
            events.record(db, "pass_declined", now, reader_id=reader_id, kind=item.id, decline=decline)
            return Purchase(None, decline)
        if not code:
            return Purchase(_grant(db, item, reader_id, card, idempotency_key, now))
        price, offer = priced(db, cfg, kind, code, reader_id, now)  # redeem checks it again under the code's lock
        granted = _grant(db, item, reader_id, card, idempotency_key, now, offer, price)
        offers.redeem(db, cfg, offer.code, kind, reader_id, now, pass_id=granted.id)
        events.record(db, "offer_redeemed", now, reader_id=reader_id, code=offer.code, plan=kind,
                      pass_id=granted.id, amount_cents=price)
        return Purchase(granted)


def _grant(db, item, reader_id: int, card: billing.Card, idempotency_key: str, now: datetime,
           offer: OfferTerms | None = None, price: int | None = None) -> Pass:
    """Write the pass, its payment, the reader's new ``pass_until`` and the event (inside a transaction)."""
    price = item.price_cents if price is None else price
    code = offer.code if offer else None
    _lock_reader(db, reader_id)
    latest = db.scalar("select max(ends_at) from passes where reader_id = ? and status = ?", [reader_id, ACTIVE])
    starts = max(now, from_iso(latest)) if latest else now  # a second pass starts where the first ends
    row = {"reader_id": reader_id, "kind": item.id, "status": ACTIVE, "created_at": to_iso(now),
           "starts_at": to_iso(starts), "ends_at": to_iso(starts + timedelta(hours=item.hours)),
           "amount_cents": price, "currency": item.currency, "card_last4": card.last4,
           "offer_code": code, "idempotency_key": idempotency_key}
    granted = Pass.from_row({**row, "id": db.insert("passes", row)})
    db.insert("payments", {
        "subscription_id": None, "pass_id": granted.id, "reader_id": reader_id, "at": row["created_at"],
        "amount_cents": price, "currency": item.currency, "outcome": "succeeded",
        "decline_code": None, "kind": "pass", "card_last4": card.last4, "offer_code": code,
        "list_cents": item.price_cents})
    db.execute("update readers set pass_until = ? where id = ?", [row["ends_at"], reader_id])
    events.record(db, "pass_purchased", now, reader_id=reader_id, pass_id=granted.id, kind=item.id,
                  amount_cents=price, offer_code=code, starts_at=row["starts_at"], ends_at=row["ends_at"],
                  **{"from": None, "to": ACTIVE})
    return granted


def grant(db, cfg, reader_id: int, kind: str, card: billing.Card, at: datetime) -> Pass:
    """A pass bought at ``at`` on a card that pays (demo personas), inside the caller's transaction."""
    return _grant(db, product(cfg, kind), reader_id, card, secrets.token_urlsafe(18), at)


@dataclass(frozen=True)
class GuestPurchase:
    """What an anonymous pass form did: ``declined`` (nothing written), ``bought`` (a new account
    holds the pass, not signed in), ``known`` (the address has an account: nothing charged) or
    ``replayed``. The buyer is told the same for all but ``declined``, as at guest checkout."""

    outcome: str
    reader: accounts.Reader | None = None
    pass_: Pass | None = None
    decline: str | None = None


def guest_buy(db, cfg, email: str, password: str | None, kind: str, card: billing.Card, card_number: str,
              idempotency_key: str, now: datetime, **signup_event) -> GuestPurchase:
    """Sell a pass to an anonymous buyer by the guest-checkout rule (``subscriptions.guest_buyer``).

    A declined card creates nothing; a known address is not charged and not signed
    in (its owner gets a link); a new address gets an account holding the pass.
    """
    item = product(cfg, kind)
    decline = billing.checkout_decline(card_number)
    with db.transaction():
        _lock_form(db, idempotency_key)
        seen = _seen(db, idempotency_key) or db.first(
            "select reader_id from checkouts where idempotency_key = ?", [idempotency_key])
        if seen is not None:
            return GuestPurchase("replayed", accounts.by_id(db, seen["reader_id"]))
        if decline:
            events.record(db, "pass_declined", now, kind=item.id, decline=decline, **signup_event)
            return GuestPurchase("declined", decline=decline)
        reader, new = subscriptions.guest_buyer(db, email, password, idempotency_key, now, **signup_event)
        if not new:
            return GuestPurchase("known", reader)
        return GuestPurchase("bought", reader, _grant(db, item, reader.id, card, idempotency_key, now))


def of_reader(db, reader_id: int) -> list[Pass]:
    """A reader's passes, newest first."""
    return [Pass.from_row(row) for row in db.rows(
        "select * from passes where reader_id = ? order by ends_at desc, id desc", [reader_id])]


def all_passes(db, limit: int = 200) -> list[Pass]:
    """Every pass, newest first (``gate passes list``)."""
    return [Pass.from_row(row) for row in db.rows("select * from passes order by id desc limit ?", [limit])]


def expire_due(db, now: datetime) -> int:
    """Mark every active pass whose end has come ``expired``, each with its event dated at its end.

    Several nodes may tick at once: each pass is re-read under its reader's lock, so it expires once.
    """
    due = db.rows("select id, reader_id from passes where status = ? and ends_at <= ? order by ends_at",
                  [ACTIVE, to_iso(now)])
    return sum(_expire(db, row["id"], row["reader_id"]) for row in due)


def _expire(db, pass_id: int, reader_id: int) -> int:
    """Expire one pass if it is still active (1), else nothing (0)."""
    with db.transaction():
        _lock_reader(db, reader_id)
        row = db.first("select * from passes where id = ? and status = ?", [pass_id, ACTIVE])
        if row is None:
            return 0
        db.execute("update passes set status = ? where id = ?", [EXPIRED, pass_id])
        events.record(db, "pass_expired", from_iso(row["ends_at"]), reader_id=reader_id, pass_id=pass_id,
                      kind=row["kind"], **{"from": ACTIVE, "to": EXPIRED})
    return 1
