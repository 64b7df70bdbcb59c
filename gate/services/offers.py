"""Offers in the database: every promo code, checking one for a checkout, and redeeming it under its cap.

The pricing rules live in :mod:`gate.rules.offers` (pure). Codes come from
config/site.toml (``[[offers]]``, copied into the ``offers`` table the first time
they are looked up, their terms kept in step with the file), from ``gate offers
add`` and the console, and from win-back mail (a personal code, one reader, cap 1).

A redemption is counted under a lock on its code, inside the caller's transaction
(the checkout's): with a cap of N, exactly N checkouts get it under any concurrency,
on either engine, and the unique key on ``redemptions.subscription_id`` is the
backstop. A declined card never reaches :func:`redeem`, so it consumes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time

from pydantic import ValidationError

from gate.conf.settings import PromoOffer
from gate.rules import offers as rules
from gate.rules.offers import Discount, OfferTerms, Refusal
from gate.rules.timeutil import from_iso, parse_day, to_iso
from gate.storage import events

_TIMES = ("starts_at", "ends_at")


class OfferError(ValueError):
    """A code that cannot be used, with its refusal code and the reader-facing message."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(rules.REFUSAL_MESSAGES[refusal])
        self.refusal = refusal


def from_config(offer, tz) -> OfferTerms:
    """A ``[[offers]]`` entry as terms; its dates are midnights in the site's time zone."""
    kind, value = next((kind, value) for kind, value in (
        ("percent", offer.percent_off), ("amount", offer.amount_off_cents), ("free", offer.free_periods))
        if value is not None)

    def midnight(day):
        return datetime.combine(day, time(), tz) if day else None

    return OfferTerms(rules.normalize_code(offer.code), offer.name, kind, value, offer.duration, offer.periods,
                      tuple(offer.plans), midnight(offer.starts), midnight(offer.ends), offer.cap,
                      offer.new_subscribers_only)


def _from_row(row: dict) -> OfferTerms:
    return OfferTerms(
        row["code"], row["name"], row["kind"], row["value"], row["duration"], row["periods"],
        tuple(plan for plan in row["plans"].split(",") if plan),
        *(from_iso(row[key]) if row[key] else None for key in _TIMES),
        row["cap"], bool(row["new_only"]), bool(row["enabled"]), row["reader_id"], row["source"])


def _to_row(offer: OfferTerms) -> dict:
    return {"code": offer.code, "name": offer.name, "kind": offer.kind, "value": offer.value,
            "duration": offer.duration, "periods": offer.periods, "plans": ",".join(offer.plans),
            "starts_at": to_iso(offer.starts_at) if offer.starts_at else None,
            "ends_at": to_iso(offer.ends_at) if offer.ends_at else None, "cap": offer.cap,
            "new_only": int(offer.new_only), "enabled": int(offer.enabled), "reader_id": offer.reader_id,
            "source": offer.source}


def _configured(cfg) -> dict[str, OfferTerms]:
    """The offers config/site.toml declares, by code."""
    tz = cfg.publication.tz
    return {terms.code: terms for terms in (from_config(offer, tz) for offer in cfg.offers)}


def _store_config(db, terms: OfferTerms, now: datetime, row: dict | None) -> dict:
    """A configured offer's row, copied into the table or brought in step with the file (``enabled`` is kept).

    ``row`` is its row as read (None: none yet); nothing is written when it already matches,
    so looking a code up takes no write lock.
    """
    wanted = _to_row(terms)
    if row is None:
        db.insert_ignore("offers", {**wanted, "created_at": to_iso(now)})
        return db.first("select * from offers where code = ?", [terms.code])
    del wanted["enabled"]
    if row["source"] != "config" or all(row[key] == value for key, value in wanted.items()):
        return row
    assignments = ", ".join(f"{key} = :{key}" for key in wanted if key != "code")
    db.execute(f"update offers set {assignments} where code = :code and source = 'config'", wanted)
    return {**row, **wanted}


def find(db, cfg, code: str, now: datetime) -> OfferTerms | None:
    """The offer a code names (case-insensitive), or None."""
    code = rules.normalize_code(code)
    if not rules.valid_code(code):
        return None
    row = db.first("select * from offers where code = ?", [code])
    configured = _configured(cfg).get(code)
    if configured is not None:
        row = _store_config(db, configured, now, row)
    return _from_row(row) if row else None


def all_offers(db, cfg, now: datetime) -> list[OfferTerms]:
    """Every offer, configured ones included, in code order."""
    stored = {row["code"]: row for row in db.rows("select * from offers")}
    with db.transaction():
        for terms in _configured(cfg).values():
            _store_config(db, terms, now, stored.get(terms.code))
    return [_from_row(row) for row in db.rows("select * from offers order by code")]


def redeemed(db, code: str) -> int:
    """How many times a code has been redeemed."""
    return db.scalar("select count(*) from redemptions where code = ?", [code]) or 0


def has_subscribed(db, reader_id: int | None) -> bool:
    """Whether a reader ever had a subscription that got past its first payment."""
    if reader_id is None:
        return False
    return db.first("select 1 from subscriptions where reader_id = ? and status != 'incomplete' limit 1",
                    [reader_id]) is not None


def check(db, cfg, code: str, plan_id: str, reader_id: int | None, now: datetime
          ) -> tuple[OfferTerms | None, Refusal | None]:
    """A code for a checkout of ``plan_id``: the offer and why it cannot be used (None: it can)."""
    offer = find(db, cfg, code, now)
    if offer is None:
        return None, Refusal.UNKNOWN
    return offer, rules.refusal(offer, plan_id, now, redeemed(db, offer.code), has_subscribed(db, reader_id),
                                reader_id)


def claim(db, cfg, code: str, plan_id: str, reader_id: int | None, now: datetime) -> OfferTerms:
    """Lock a code and check it for this checkout (inside the caller's transaction), or raise :class:`OfferError`.

    A checkout claims before it charges (the reader has no subscription yet, so
    "new subscribers only" still reads true) and records the redemption after.
    """
    db.lock(f"offer:{rules.normalize_code(code)}")
    offer, refusal = check(db, cfg, code, plan_id, reader_id, now)
    if refusal is not None:
        raise OfferError(refusal)
    return offer


def record_redemption(db, offer: OfferTerms, reader_id: int, now: datetime, *,
                      subscription_id: int | None = None, pass_id: int | None = None) -> None:
    """The redemption row of a claimed code (same transaction as :func:`claim`)."""
    db.insert("redemptions", {"code": offer.code, "reader_id": reader_id, "subscription_id": subscription_id,
                              "pass_id": pass_id, "at": to_iso(now)})
    if offer.source == "winback":  # the win-back mail worked: the retention funnel counts it
        events.record(db, "winback_redeemed", now, reader_id=reader_id, code=offer.code,
                      subscription_id=subscription_id)


def redeem(db, cfg, code: str, plan_id: str, reader_id: int, now: datetime, *,
           subscription_id: int | None = None, pass_id: int | None = None) -> OfferTerms:
    """Count one redemption of a code (inside the caller's transaction), or raise :class:`OfferError`.

    The lock on the code makes check-then-insert safe: a cap of N gives exactly N.
    """
    offer = claim(db, cfg, code, plan_id, reader_id, now)
    record_redemption(db, offer, reader_id, now, subscription_id=subscription_id, pass_id=pass_id)
    return offer


def price_in_words(plan, discount: Discount | None = None) -> str:
    """A configured plan's price in words, with its intro price and an offer's discount."""
    return rules.describe(discount, plan.price_cents, plan.currency, plan.interval,
                          plan.intro_price_cents, plan.intro_periods)


@dataclass(frozen=True)
class Quote:
    """A code priced for one plan: the offer, why it can't be used (None: it can), and the prices in words."""

    code: str
    plan_id: str
    offer: OfferTerms | None
    refusal: Refusal | None
    price: str
    regular: str

    @property
    def usable(self) -> bool:
        """Whether the checkout would take the code."""
        return self.refusal is None

    @property
    def message(self) -> str | None:
        """The refusal in the reader's words (None: usable)."""
        return rules.REFUSAL_MESSAGES[self.refusal] if self.refusal else None

    @property
    def discount(self) -> Discount | None:
        """The discount a checkout with this code would keep (None: refused)."""
        return self.offer.discount if self.usable else None

    def as_dict(self) -> dict:
        """The quote for the JSON API."""
        offer = self.offer
        return {"code": self.code, "plan": self.plan_id, "usable": self.usable, "price": self.price,
                "regular_price": self.regular,
                "refusal": {"code": str(self.refusal), "message": self.message} if self.refusal else None,
                "offer": None if offer is None else {
                    "code": offer.code, "name": offer.name, "kind": offer.kind, "value": offer.value,
                    "duration": offer.duration, "periods": rules.covered_periods(offer),
                    "plans": list(offer.plans), "starts_at": to_iso(offer.starts_at) if offer.starts_at else None,
                    "ends_at": to_iso(offer.ends_at) if offer.ends_at else None, "cap": offer.cap,
                    "new_subscribers_only": offer.new_only}}


def quote(db, cfg, code: str, plan, reader_id: int | None, now: datetime, *, applied: bool = False,
          refused: bool = False, **who) -> Quote:
    """Price ``code`` for ``plan`` for this reader, recording ``offer_applied`` (usable) and ``offer_refused``
    (with the reason) when asked, in the same transaction as the look-up."""
    code = rules.normalize_code(code)
    with db.transaction():
        offer, refusal = check(db, cfg, code, plan.id, reader_id, now)
        shown = Quote(code, plan.id, offer, refusal,
                      price_in_words(plan, offer.discount if offer and not refusal else None),
                      price_in_words(plan))
        if shown.usable and applied:
            events.record(db, "offer_applied", now, code=code, plan=plan.id, reader_id=reader_id, **who)
        elif not shown.usable and refused:
            events.record(db, "offer_refused", now, code=code, plan=plan.id, reason=str(refusal),
                          reader_id=reader_id, **who)
    return shown


def viewed(db, cfg, code: str, reader_id: int | None, now: datetime, **who) -> dict[str, Quote]:
    """The plans page with a code: each plan's quote, and one ``offer_viewed`` (or ``offer_refused``) event."""
    code = rules.normalize_code(code)
    with db.transaction():  # one transaction for the page: the look-ups join it
        quotes = {plan.id: quote(db, cfg, code, plan, reader_id, now) for plan in cfg.plans}
        usable = [plan_id for plan_id, shown in quotes.items() if shown.usable]
        if usable:
            events.record(db, "offer_viewed", now, code=code, plan=None, plans=usable, reader_id=reader_id, **who)
        else:
            why = next((shown.refusal for shown in quotes.values() if shown.refusal is not Refusal.WRONG_PLAN),
                       Refusal.WRONG_PLAN)
            events.record(db, "offer_refused", now, code=code, plan=None, reason=str(why), reader_id=reader_id,
                          **who)
    return quotes


def refused(db, code: str, plan_id: str, error: OfferError, now: datetime, **who) -> None:
    """Record a code refused at payment (its checkout rolled back, so this is its own transaction)."""
    with db.transaction():
        events.record(db, "offer_refused", now, code=rules.normalize_code(code), plan=plan_id,
                      reason=str(error.refusal), stage="payment", **who)


def add(db, terms: OfferTerms, now: datetime) -> OfferTerms:
    """Store a new offer (CLI, console, win-back); a code that exists is refused."""
    if not rules.valid_code(terms.code):
        raise ValueError("a code is 3–32 letters, digits, - or _")
    if not db.insert_ignore("offers", {**_to_row(terms), "created_at": to_iso(now)}):
        raise ValueError(f"there is already an offer with the code {terms.code}")
    return terms


def create(db, cfg, terms: OfferTerms, now: datetime) -> OfferTerms:
    """Store a new offer from the CLI or console; a code taken by config/site.toml or the table is refused."""
    with db.transaction():
        db.lock(f"offer:{terms.code}")
        if find(db, cfg, terms.code, now) is not None:
            raise ValueError(f"there is already an offer with the code {terms.code}")
        return add(db, terms, now)


def status(offer: OfferTerms, redeemed_count: int, now: datetime) -> str:
    """An offer's standing now: active, disabled, scheduled, expired or exhausted."""
    why = rules.refusal(offer, offer.plans[0] if offer.plans else "", now, redeemed_count, False, None)
    return {None: "active", Refusal.NOT_STARTED: "scheduled"}.get(why, str(why))


def revenue(db, code: str) -> dict:
    """What a code's payments took: successful charges naming it, their total and the list price given up."""
    row = db.first("select count(*) as payments, coalesce(sum(amount_cents), 0) as charged,"
                   " coalesce(sum(list_cents - amount_cents), 0) as discounted from payments"
                   " where offer_code = ? and outcome = 'succeeded'", [rules.normalize_code(code)])
    return {key: int(row[key]) for key in ("payments", "charged", "discounted")}


def set_enabled(db, cfg, code: str, enabled: bool, now: datetime) -> OfferTerms:
    """Disable (or enable again) a code; redemptions already made keep their price."""
    offer = find(db, cfg, code, now)
    if offer is None:
        raise ValueError(f"there is no offer with the code {rules.normalize_code(code)}")
    db.execute("update offers set enabled = ? where code = ?", [int(enabled), offer.code])
    return find(db, cfg, code, now)


# --- an offer from the console's form or the CLI's options ---------------------------


class OfferInputError(ValueError):
    """A bad value for a new offer; ``field`` names the form field (or CLI option) it came from."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_TRUE, _FALSE = ("1", "on", "true", "yes"), ("", "0", "off", "false", "no")


def _whole(field: str, value) -> int | None:
    """A whole number from the CLI (an int) or a form (digits); blank is None."""
    if value is None or isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        raise OfferInputError(field, f"must be a whole number, not {text[:20]!r}")
    return int(text)


def _day(field: str, value) -> date | None:
    """A date (2027-01-31) in the site's time zone; blank is None."""
    if value is None or isinstance(value, date):
        return value
    if not str(value).strip():
        return None
    try:
        return parse_day(str(value))
    except ValueError as error:
        raise OfferInputError(field, str(error)) from None


def _flag(field: str, value) -> bool:
    """A yes/no from the CLI (a bool) or a form (a checkbox's "on", or absent)."""
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    if text not in _TRUE + _FALSE:
        raise OfferInputError(field, f"must be yes or no, not {text[:20]!r}")
    return text in _TRUE


def _plan_list(value) -> list[str]:
    """Plan ids, from a list or a comma-separated string; blank is every plan."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return [item.strip() for item in items if item.strip()]


def _validated(fields: dict) -> PromoOffer:
    """The values checked exactly as a ``[[offers]]`` entry in config/site.toml is."""
    try:
        return PromoOffer(**fields)
    except ValidationError as error:
        problem = error.errors()[0]
        message = problem["msg"].removeprefix("Value error, ")
        # A check across fields names no field: its message starts with the one at fault, if any.
        first = message.split(" ", 1)[0]
        field = str(problem["loc"][0]) if problem["loc"] else first if first in fields else "discount"
        raise OfferInputError(field, message) from None


def build(*, code: str, name: str, percent_off=None, amount_off_cents=None, free_periods=None,
          duration="once", periods=None, plans=(), starts=None, ends=None, cap=None, new_only=False,
          tz, known_plans=None, source: str = "cli") -> OfferTerms:
    """A new offer from plain values (the console's form, ``gate offers add``), checked like the config file.

    Raises :class:`OfferInputError` (a ValueError) naming the field at fault.
    """
    fields = {"code": rules.normalize_code(code), "name": (name or "").strip(),
              "duration": (duration or "once").strip() if isinstance(duration, str) else duration,
              "plans": _plan_list(plans), "new_subscribers_only": _flag("new_only", new_only),
              "starts": _day("starts", starts), "ends": _day("ends", ends)}
    for field, value in (("percent_off", percent_off), ("amount_off_cents", amount_off_cents),
                         ("free_periods", free_periods), ("periods", periods), ("cap", cap)):
        fields[field] = _whole(field, value)
    if not rules.valid_code(fields["code"]):
        raise OfferInputError("code", "a code is 3–32 letters, digits, - or _")
    unknown = [plan for plan in fields["plans"] if known_plans is not None and plan not in known_plans]
    if unknown:
        raise OfferInputError("plans", f"there is no plan called {unknown[0]!r}")
    return replace(from_config(_validated(fields), tz), source=source)


def redemptions(db, code: str) -> list[dict]:
    """Every redemption of a code, oldest first: who, when, and the subscription or pass it bought."""
    return db.rows("select r.code, r.at, r.reader_id, readers.email, r.subscription_id, s.plan_id, r.pass_id"
                   " from redemptions r left join readers on readers.id = r.reader_id"
                   " left join subscriptions s on s.id = r.subscription_id"
                   " where r.code = ? order by r.at, r.id", [rules.normalize_code(code)])


def redeemed_counts(db) -> dict[str, int]:
    """How many times each code has been redeemed (codes never redeemed are absent)."""
    return dict(db.execute("select code, count(*) from redemptions group by code").fetchall())
