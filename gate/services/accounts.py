"""Readers: accounts, signing up, in and out, passwords, magic links and the flask-login user."""

from __future__ import annotations

import json
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from werkzeug.security import check_password_hash, generate_password_hash

from gate.rules.paywall import Licence
from gate.rules.timeutil import from_iso, to_iso
from gate.storage import events
from gate.storage.db import first, rows
from gate.storage.quota import SqlQuotaStore

MIN_PASSWORD = 8


class AccountError(ValueError):
    """A reader-facing problem with an email, a password or an account."""


#: A reader's meter key is this prefix and their id (``Reader.meter_key``; SQL joins spell it the same way).
METER_PREFIX = "reader:"
#: The ``readers`` columns a :class:`Reader` is built from (a join names them instead of ``r.*``).
READER_COLUMNS = ("id", "email", "password_hash", "is_admin", "session_token", "created_at", "comp_until",
                  "email_verified_at", "experiment_unit", "pass_until", "licence")
#: Where a signed-in reader's columns come from in a join through ``reader_sessions d``: the device's
#: own token and last-seen time, the account's everything else.
SIGNED_IN_SOURCES = {**{column: f"r.{column}" for column in READER_COLUMNS},
                     "session_token": "d.token", "seen_at": "d.last_seen_at"}
#: A live session's reader: the device row first, then its account (``d`` and ``r``, as the joins name them).
_LIVE = ("reader_sessions d join readers r on r.id = d.reader_id"
         " where d.token = ? and d.ended_at is null")


@dataclass(frozen=True)
class Reader:
    """A reader account, shaped for flask-login.

    ``get_id`` returns this device's session token (a ``reader_sessions``
    row), not the row id: signing out (or changing the password) ends it, so
    an old session or remember cookie no longer names anyone.
    """

    id: int
    email: str
    password_hash: str | None
    is_admin: bool
    session_token: str
    created_at: datetime
    comp_until: datetime | None = None
    email_verified_at: datetime | None = None
    experiment_unit: str | None = None
    #: When the reader's latest day or week pass ends (kept on the row by gate.services.passes).
    pass_until: datetime | None = None
    #: The group licence the reader is a member of (kept on the row by gate.services.orgs), or None.
    licence: Licence | None = None
    #: Filled in per request by gate.services.subscriptions.refresh: full access right now.
    is_subscriber: bool = False
    #: Filled in with it: when a past-due subscription's access runs out (None: not past due).
    grace_ends: datetime | None = None
    #: When this device was last seen (read with the session; None for an account read without one).
    seen_at: datetime | None = None

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        """The id flask-login keeps in the session."""
        return self.session_token

    def comp_active(self, now: datetime) -> bool:
        """Whether complimentary full access covers ``now``."""
        return comp_covers(self.comp_until, now)

    @property
    def tier(self) -> str:
        """The reader's viewer tier."""
        return "subscriber" if self.is_subscriber else "registered"

    @property
    def meter_key(self) -> str:
        """The key this reader's spends are stored under."""
        return f"{METER_PREFIX}{self.id}"

    @classmethod
    def from_row(cls, row, **access) -> "Reader":
        """Build from a ``readers`` row (``access``: is_subscriber and grace_ends, when already worked out)."""
        return cls(
            id=row["id"], email=row["email"], password_hash=row["password_hash"],
            is_admin=bool(row["is_admin"]), session_token=row["session_token"],
            created_at=from_iso(row["created_at"]),
            comp_until=from_iso(row["comp_until"]) if row.get("comp_until") else None,
            email_verified_at=from_iso(row["email_verified_at"]) if row.get("email_verified_at") else None,
            experiment_unit=row.get("experiment_unit"),
            pass_until=from_iso(row["pass_until"]) if row.get("pass_until") else None,
            licence=licence_from_text(row.get("licence")),
            seen_at=from_iso(row["seen_at"]) if row.get("seen_at") else None,
            **access,
        )


def comp_covers(comp_until: datetime | None, now: datetime) -> bool:
    """Whether a complimentary grant until ``comp_until`` covers ``now``."""
    return bool(comp_until and comp_until > now)


def licence_from_text(text: str | None) -> Licence | None:
    """The licence kept on a reader row (JSON: org, seats, until), or None."""
    if not text:
        return None
    data = json.loads(text)
    return Licence(data["org"], data["seats"], from_iso(data["until"]) if data.get("until") else None,
                   data.get("slug", ""))


#: An RFC 2047 encoded word (=?charset?B|Q?text?=): a mail header decodes it into another address.
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[bq]\?[^?]*\?=", re.IGNORECASE)


def normalize_email(raw: str) -> str:
    """A syntactically valid, normalised address, or an AccountError saying why not.

    Every form, rate limit and lookup uses this one spelling: fullwidth letters,
    capitals and punycode (``xn--``) domains all name the same inbox.
    """
    raw = raw or ""
    if any(unicodedata.category(ch) == "Cc" for ch in raw):
        raise AccountError("An email address can't contain control characters.")
    if _ENCODED_WORD.search(raw):
        raise AccountError("An email address can't contain an encoded word (=?...?=).")
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        raise AccountError(str(error)) from None


def check_password(password: str, *, new: bool = True) -> None:
    """The one password rule, for signup, checkout, the CLI and login alike.

    A password is kept exactly as typed, but spaces around it don't count: one that is
    only spaces is refused everywhere, and a new one needs MIN_PASSWORD other characters.
    """
    if password and not password.strip():
        raise AccountError("A password can't be only spaces.")
    if new and password and len(password.strip()) < MIN_PASSWORD:
        raise AccountError(f"Passwords need at least {MIN_PASSWORD} characters (spaces around them don't count).")


def _one(db, where: str, params) -> Reader | None:
    row = first(db, f"select * from readers where {where}", params)
    return Reader.from_row(row) if row else None


def by_email(db, email: str) -> Reader | None:
    """Find an account by (normalised) email."""
    return _one(db, "email = ?", [email])


def by_id(db, reader_id: int) -> Reader | None:
    """Find an account by id."""
    return _one(db, "id = ?", [reader_id])


def all_ids(db) -> list[int]:
    """Every reader's id, oldest account first (for listings)."""
    return [row["id"] for row in rows(db, "select id from readers order by id")]


def by_session_token(db, token: str) -> Reader | None:
    """Find the account a live session's token names (an ended session names no one)."""
    if not token:
        return None
    columns = ", ".join(f"{source} as {column}" for column, source in SIGNED_IN_SOURCES.items())
    row = first(db, f"select {columns} from {_LIVE}", [token])
    return Reader.from_row(row) if row else None


def search(db, text: str, limit: int = 100) -> list[dict]:
    """Accounts whose email contains ``text``, newest first (the console's reader list)."""
    return rows(db, "select id, email, is_admin, created_at from readers where email like ?"
                " order by id desc limit ?", [f"%{text}%", limit])


def create(db, email: str, password: str | None, now: datetime, *, admin: bool = False) -> Reader:
    """Create an account; the email must be normalised and unused."""
    check_password(password or "")
    # The unique email is the "at most once": of two signups for one address at the same
    # moment one inserts and the other is told, with no error that would abort a transaction.
    if by_email(db, email) or not _insert_reader(db, email, password, now, admin):
        raise AccountError(f"An account for {email} already exists.")
    return by_email(db, email)


def _insert_reader(db, email: str, password: str | None, now: datetime, admin: bool) -> bool:
    """Insert the account unless the address has one; whether it went in."""
    return db.insert_ignore("readers", {
        "email": email,
        "password_hash": generate_password_hash(password) if password else None,
        "is_admin": int(admin),
        "session_token": secrets.token_urlsafe(24), "created_at": to_iso(now),
    })


def authenticate(db, email: str, password: str) -> Reader | None:
    """The account if the password matches, else None (same answer for unknown emails)."""
    reader = by_email(db, email)
    if reader is None or not reader.password_hash:
        generate_password_hash(password or "x")  # spend the same time either way
        return None
    return reader if check_password_hash(reader.password_hash, password or "") else None


def live_sessions(db, reader_id: int) -> list[dict]:
    """A reader's signed-in devices, least recently seen first (the first to go at the limit)."""
    return rows(db, "select id, token, created_at, last_seen_at, user_agent, slot from reader_sessions"
                " where reader_id = ? and ended_at is null order by last_seen_at, created_at, id", [reader_id])


def end_sessions(db, reader_id: int, now: datetime, reason: str, ids=None) -> list[int]:
    """End a reader's live sessions (those with ``ids``, else all) with the device_signed_out event; their ids.

    ``reason`` is ``user`` (signed out there, or from the account page), ``limit`` (a
    sign-in elsewhere went over the device limit) or ``everywhere``.
    """
    with db.transaction():
        live = [row["id"] for row in live_sessions(db, reader_id)]
        ending = [session_id for session_id in live if ids is None or session_id in ids]
        for session_id in ending:
            db.execute("update reader_sessions set ended_at = ?, ended_reason = ? where id = ? and ended_at is null",
                       [to_iso(now), reason, session_id])
        if ending:
            events.record(db, "device_signed_out", now, reader_id=reader_id, reason=reason, sessions=ending,
                          **{"from": len(live), "to": len(live) - len(ending)})
    return ending


def rotate_session(db, reader_id: int, now: datetime) -> None:
    """Invalidate every session and remember cookie of a reader (every device signed out)."""
    end_sessions(db, reader_id, now, "everywhere")


def set_flags(db, reader_id: int, now: datetime, *, admin: bool | None = None,
              password: str | None = None) -> None:
    """Change an account's admin flag or password (a new password signs every device out)."""
    if admin is not None:
        db.execute("update readers set is_admin = ? where id = ?", [int(admin), reader_id])
    if password:
        check_password(password)
        db.execute("update readers set password_hash = ? where id = ?",
                   [generate_password_hash(password), reader_id])
        rotate_session(db, reader_id, now)


def grant_comp(db, reader_id: int, until: datetime | None, by: str) -> None:
    """Give (or, with until=None, take away) complimentary full access."""
    db.execute("update readers set comp_until = ?, comp_by = ? where id = ?",
               [to_iso(until) if until else None, by if until else None, reader_id])


def issue_login_token(db, reader_id: int, now: datetime) -> str:
    """Record a fresh single-use id for a magic link."""
    jti = secrets.token_urlsafe(16)
    db.execute("insert into login_tokens (jti, reader_id, created_at) values (?, ?, ?)",
               [jti, reader_id, to_iso(now)])
    return jti


def consume_login_token(db, jti: str, reader_id: int, now: datetime) -> bool:
    """Mark a magic link used; true only for the first use. Using one proves the address.

    The conditional update is the "at most once": of two concurrent uses one
    updates the row, the other (re-checking ``used_at`` once the first commits) none.
    """
    with db.transaction():
        used = db.execute(
            "update login_tokens set used_at = ? where jti = ? and reader_id = ? and used_at is null",
            [to_iso(now), jti, reader_id],
        ).rowcount == 1
        if used:
            mark_verified(db, reader_id, now)
    return used


def mark_verified(db, reader_id: int, now: datetime) -> None:
    """The reader has proven they receive mail at their address (kept from the first time)."""
    db.execute("update readers set email_verified_at = coalesce(email_verified_at, ?) where id = ?",
               [to_iso(now), reader_id])


def register(db, email: str, password: str | None, now: datetime, **signup_event) -> Reader:
    """Create an account and record its ``signup`` event together (signup and guest checkout alike)."""
    with db.transaction():
        reader = create(db, email, password, now)
        events.record(db, "signup", now, reader_id=reader.id, **signup_event)
    return reader


@dataclass(frozen=True)
class Signup:
    """What a signup form did: made a new account (``created``), or found the one the address has.

    Both are answered alike, so the form can't be used to learn who has an account;
    ``reader`` is None only when the address could not be signed up at all.
    """

    reader: Reader | None
    created: bool = False


def sign_up(db, email: str, password: str | None, now: datetime, **signup_event) -> Signup:
    """A new account for a new address; for a known one, its owner (who is mailed a link, not signed in)."""
    existing = by_email(db, email)
    if existing is not None:
        return Signup(existing)
    try:
        return Signup(register(db, email, password, now, **signup_event), created=True)
    except AccountError:  # created by a concurrent request a moment ago
        return Signup(by_email(db, email))


def sign_in(db, reader: Reader, visitor: str | None, method: str, now: datetime) -> None:
    """Record a sign-in: the visitor's meter and experiment unit move to the account, all or nothing."""
    with db.transaction():
        _adopt_visitor(db, reader, visitor, now)
        events.record(db, "login", now, reader_id=reader.id, visitor_id=visitor, method=method)


def _adopt_visitor(db, reader: Reader, visitor: str | None, now: datetime) -> None:
    """The anonymous visitor becomes the account: its unlocks, its visitor row and its experiment arms."""
    # Experiments stay sticky across login: the account keeps its first visitor's unit.
    db.execute("update readers set experiment_unit = coalesce(experiment_unit, ?) where id = ?",
               [f"visitor:{visitor}" if visitor else f"reader:{reader.id}", reader.id])
    if not visitor:
        return
    moved = SqlQuotaStore(db).merge(f"visitor:{visitor}", reader.meter_key)
    db.execute("update visitors set reader_id = ? where id = ?", [reader.id, visitor])
    if moved:
        events.record(db, "meter_merged", now, reader_id=reader.id, visitor_id=visitor, moved=moved)


def sign_out(db, reader_id: int | None, now: datetime, instructor_id: int | None = None,
             token: str | None = None) -> None:
    """End this device's session (the one ``token`` names; else every device), and the admin's underneath a persona.

    The logout event goes with it, in one transaction.
    """
    if reader_id is None and instructor_id is None:
        return
    with db.transaction():
        if instructor_id is not None:  # a replayed cookie must not bring the admin underneath back
            rotate_session(db, instructor_id, now)
        if reader_id is not None:
            events.record(db, "logout", now, reader_id=reader_id)
            if token is None:
                rotate_session(db, reader_id, now)
            else:
                this = [row["id"] for row in live_sessions(db, reader_id) if row["token"] == token]
                end_sessions(db, reader_id, now, "user", this)
