"""Group licences: organisations with a number of seats, and the three ways a reader joins one.

A reader joins by their email domain (proven by a mailed, single-use link), from an
address in one of the org's IP ranges, or by an admin's invitation (a mailed link).
Seats are an atomic cap: joining takes a lock on the org, counts its active members
and takes the lowest free seat number; ``(org_id, seat)`` is unique among active
members, the backstop if two joins ever got past the lock. A membership ends when the
reader leaves, which frees the seat. The licence runs from ``active_from`` until
``active_until`` (exclusive) on the site's clock; a member's running licence is kept
on their row (``readers.licence``) in the same transaction as the join or leave, so
every signed-in page reads it with the reader.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from gate.rules import tokens
from gate.rules.paywall import Licence
from gate.rules.timeutil import from_iso, to_iso
from gate.services import accounts, mail
from gate.storage import events

VIA = ("domain", "ip", "invite")
#: Members who read this many distinct articles in 30 days are core readers (the renewal metric).
CORE_READS = 9
READING_DAYS = 30
MAX_SEATS = 100_000
_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_DOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+")


class OrgError(ValueError):
    """An organisation that cannot be made or found as asked, with the reason in words."""


class Refusal(StrEnum):
    """Why a join was refused (the ``reason`` of an ``org_join_refused`` event)."""

    FULL = "full"
    EXPIRED = "expired"
    NOT_STARTED = "not_started"
    NOT_ON_DOMAIN = "not_on_domain"
    NOT_IN_RANGE = "not_in_range"
    LINK_USED = "link_used"
    WRONG_ADDRESS = "wrong_address"


REFUSAL_LABELS = {
    Refusal.FULL: "Every seat of this licence is taken.",
    Refusal.EXPIRED: "This licence has ended.",
    Refusal.NOT_STARTED: "This licence has not started yet.",
    Refusal.NOT_ON_DOMAIN: "Your email address is not on this organisation's domain.",
    Refusal.NOT_IN_RANGE: "Your network address is not in this organisation's ranges.",
    Refusal.LINK_USED: "This link has been used already.",
    Refusal.WRONG_ADDRESS: "This link was sent to another address: sign in with that one.",
}


class JoinRefused(Exception):
    """A join that did not happen, and why (recorded as ``org_join_refused``)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(REFUSAL_LABELS[refusal])
        self.refusal = refusal


@dataclass(frozen=True)
class Org:
    """An organisation holding a group licence."""

    id: int
    slug: str
    name: str
    seats: int
    domain: str | None
    ip_ranges: tuple[str, ...]
    active_from: datetime
    active_until: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict) -> "Org":
        """Build from an ``orgs`` row."""
        return cls(row["id"], row["slug"], row["name"], row["seats"], row["domain"],
                   tuple(filter(None, row["ip_ranges"].split(","))), from_iso(row["active_from"]),
                   from_iso(row["active_until"]) if row["active_until"] else None, from_iso(row["created_at"]))

    def refusal_at(self, now: datetime) -> Refusal | None:
        """Why nobody may join at ``now`` (not started, ended), or None: the licence runs."""
        if now < self.active_from:
            return Refusal.NOT_STARTED
        if self.active_until is not None and now >= self.active_until:
            return Refusal.EXPIRED
        return None

    def covers_address(self, address: str | None) -> bool:
        """Whether a client address lies in one of the org's IP ranges (a bad address is in none)."""
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net) for net in self.ip_ranges)

    def on_domain(self, email: str) -> bool:
        """Whether an address is on the org's email domain (exactly; none when the org has no domain)."""
        return self.domain is not None and email.rpartition("@")[2] == self.domain

    def licence(self) -> Licence:
        """The licence a member holds."""
        return Licence(self.name, self.seats, self.active_until, self.slug)


@dataclass(frozen=True)
class Member:
    """One membership: a reader holding a seat of an org from ``joined_at`` until ``left_at``."""

    id: int
    org_id: int
    reader_id: int
    seat: int
    via: str
    joined_at: datetime
    left_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict) -> "Member":
        """Build from an ``org_members`` row."""
        return cls(row["id"], row["org_id"], row["reader_id"], row["seat"], row["via"], from_iso(row["joined_at"]),
                   from_iso(row["left_at"]) if row["left_at"] else None)


# --- making and finding orgs ---------------------------------------------------------


def parse_ranges(ranges) -> tuple[str, ...]:
    """CIDR ranges in their canonical spelling, or OrgError naming the bad one."""
    parsed = []
    for text in ranges:
        try:
            parsed.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            raise OrgError(f"{text!r} is not an IP range (CIDR, like 203.0.113.0/24).") from None
    return tuple(parsed)


def _checked_domain(domain: str | None) -> str | None:
    """A lower-case domain name, or OrgError."""
    if not domain:
        return None
    domain = domain.strip().lower().lstrip("@")
    if not _DOMAIN.fullmatch(domain):
        raise OrgError(f"{domain!r} is not an email domain (like riverside.example).")
    return domain


def slugify(name: str) -> str:
    """A URL slug from a name."""
    return "-".join(re.findall(r"[a-z0-9]+", name.lower()))[:60]


def create(db, name: str, seats: int, now: datetime, *, slug: str | None = None, domain: str | None = None,
           ip_ranges=(), active_from: datetime | None = None, until: datetime | None = None) -> Org:
    """Make an organisation with a licence of ``seats`` seats, or OrgError; records ``org_created``."""
    name, slug = name.strip(), (slug or slugify(name)).strip()
    if not name or len(name) > 120:
        raise OrgError("An organisation needs a name of 1 to 120 characters.")
    if not _SLUG.fullmatch(slug):
        raise OrgError(f"{slug!r} is not a slug (lower-case letters, digits and dashes).")
    if isinstance(seats, bool) or not isinstance(seats, int) or not 1 <= seats <= MAX_SEATS:
        raise OrgError(f"Seats must be a whole number from 1 to {MAX_SEATS}.")
    starts = active_from or now
    if until is not None and until <= starts:
        raise OrgError("A licence must end after it starts.")
    row = {"slug": slug, "name": name, "seats": seats, "domain": _checked_domain(domain),
           "ip_ranges": ",".join(parse_ranges(ip_ranges)), "active_from": to_iso(starts),
           "active_until": to_iso(until) if until else None, "created_at": to_iso(now)}
    with db.transaction():
        if db.first("select id from orgs where slug = ?", [slug]):
            raise OrgError(f"There is already an organisation {slug!r}.")
        org = Org.from_row({**row, "id": db.insert("orgs", row)})
        events.record(db, "org_created", now, org=slug, seats=seats, domain=org.domain, ip_ranges=list(org.ip_ranges),
                      until=row["active_until"])
    return org


def by_slug(db, slug: str) -> Org | None:
    """An organisation by its slug, or None."""
    row = db.first("select * from orgs where slug = ?", [slug])
    return Org.from_row(row) if row else None


def get(db, slug: str) -> Org:
    """An organisation by its slug, or OrgError."""
    org = by_slug(db, slug)
    if org is None:
        raise OrgError(f"There is no organisation {slug!r}.")
    return org


def all_orgs(db) -> list[Org]:
    """Every organisation, by name."""
    return [Org.from_row(row) for row in db.rows("select * from orgs order by name")]


def seats_used(db, org_id: int) -> int:
    """How many seats are held now (active members)."""
    return db.scalar("select count(*) from org_members where org_id = ? and left_at is null", [org_id])


def members(db, org_id: int) -> list[Member]:
    """An org's active members, by seat."""
    return [Member.from_row(row) for row in db.rows(
        "select * from org_members where org_id = ? and left_at is null order by seat", [org_id])]


def memberships(db, reader_id: int) -> list[tuple[Org, Member]]:
    """A reader's active memberships, with their orgs."""
    found = db.rows("select m.*, o.slug from org_members m join orgs o on o.id = m.org_id"
                    " where m.reader_id = ? and m.left_at is null order by m.joined_at", [reader_id])
    return [(get(db, row["slug"]), Member.from_row(row)) for row in found]


# --- joining and leaving ---------------------------------------------------------------


def _lock(db, org_id: int) -> None:
    """Serialise the joins and leaves of one org: the seat count is read and written under it."""
    db.lock(f"org:{org_id}")


def _sync_licence(db, reader_id: int) -> None:
    """Keep the reader's longest-running licence on their row (None when they hold no seat)."""
    held = [org for org, _ in memberships(db, reader_id)]
    held.sort(key=lambda org: (org.active_until is None, org.active_until or org.active_from))
    licence = held[-1].licence() if held else None
    text = json.dumps({"org": licence.org, "slug": licence.slug, "seats": licence.seats,
                       "until": to_iso(licence.until) if licence.until else None}) if licence else None
    db.execute("update readers set licence = ? where id = ?", [text, reader_id])


def _refuse(db, org: Org, reader_id: int | None, refusal: Refusal, via: str, now: datetime) -> Refusal:
    """Record a refused join (in the caller's transaction) and return why."""
    events.record(db, "org_join_refused", now, reader_id=reader_id, org=org.slug, via=via, reason=refusal)
    return refusal


def _seat(db, org: Org, reader_id: int, via: str, now: datetime) -> Member | Refusal:
    """Give the reader the lowest free seat, under the org's lock (inside the caller's transaction)."""
    held = db.first("select * from org_members where org_id = ? and reader_id = ? and left_at is null",
                    [org.id, reader_id])
    if held is not None:
        return Member.from_row(held)  # joining twice is joining once
    refusal = org.refusal_at(now)
    taken = {row["seat"] for row in db.rows(
        "select seat from org_members where org_id = ? and left_at is null", [org.id])}
    if refusal is None and len(taken) >= org.seats:
        refusal = Refusal.FULL
    if refusal is not None:
        return _refuse(db, org, reader_id, refusal, via, now)
    seat = min(set(range(1, org.seats + 1)) - taken)
    row = {"org_id": org.id, "reader_id": reader_id, "seat": seat, "via": via, "joined_at": to_iso(now),
           "left_at": None}
    member = Member.from_row({**row, "id": db.insert("org_members", row)})
    _sync_licence(db, reader_id)
    events.record(db, "org_joined", now, reader_id=reader_id, org=org.slug, via=via, seat=seat,
                  **{"from": None, "to": "member"})
    return member


def _outcome(result: Member | Refusal) -> Member:
    """The membership, or JoinRefused (raised once the refusal's event is committed)."""
    if isinstance(result, Refusal):
        raise JoinRefused(result)
    return result


def join(db, slug: str, reader_id: int, via: str, now: datetime) -> Member:
    """Seat a reader in an org (one transaction under the org's lock), or JoinRefused."""
    if via not in VIA:
        raise OrgError(f"Unknown way to join {via!r}.")
    org = get(db, slug)
    with db.transaction():
        _lock(db, org.id)
        result = _seat(db, org, reader_id, via, now)
    return _outcome(result)


def join_by_address(db, slug: str, reader_id: int, address: str | None, now: datetime) -> Member:
    """Seat a reader whose client address is in one of the org's ranges, or JoinRefused."""
    org = get(db, slug)
    if not org.covers_address(address):
        with db.transaction():
            _refuse(db, org, reader_id, Refusal.NOT_IN_RANGE, "ip", now)
        raise JoinRefused(Refusal.NOT_IN_RANGE)
    return join(db, slug, reader_id, "ip", now)


def leave(db, slug: str, reader_id: int, now: datetime) -> bool:
    """End a reader's membership and free their seat; whether they held one."""
    org = get(db, slug)
    with db.transaction():
        _lock(db, org.id)
        left = db.execute("update org_members set left_at = ? where org_id = ? and reader_id = ? and left_at is null",
                          [to_iso(now), org.id, reader_id]).rowcount == 1
        if left:
            _sync_licence(db, reader_id)
            events.record(db, "org_left", now, reader_id=reader_id, org=org.slug, **{"from": "member", "to": None})
    return left


# --- join links: domain proof and invitations ------------------------------------------


def ask_by_domain(db, slug: str, reader: accounts.Reader, now: datetime) -> str:
    """A single-use link id proving a reader's address is on the org's domain, or JoinRefused."""
    org = get(db, slug)
    refusal = org.refusal_at(now) or (None if org.on_domain(reader.email) else Refusal.NOT_ON_DOMAIN)
    with db.transaction():
        if refusal is not None:
            _refuse(db, org, reader.id, refusal, "domain", now)
            jti = None
        else:
            jti = _issue(db, org, reader.email, "domain", now)
    if jti is None:
        raise JoinRefused(refusal)
    return jti


def invite(db, slug: str, email: str, now: datetime, by: str) -> str:
    """A single-use invitation link id for an address (an admin's), or OrgError."""
    org = get(db, slug)
    email = accounts.normalize_email(email)
    with db.transaction():
        return _issue(db, org, email, "invite", now, by=by)


def _issue(db, org: Org, email: str, via: str, now: datetime, **details) -> str:
    """Record a fresh link id and its ``org_link_sent`` event (inside the caller's transaction)."""
    jti = secrets.token_urlsafe(16)
    db.execute("insert into org_links (jti, org_id, email, via, created_at) values (?, ?, ?, ?, ?)",
               [jti, org.id, email, via, to_iso(now)])
    events.record(db, "org_link_sent", now, org=org.slug, via=via, **details)
    return jti


#: Where a join link leads (gate.web.orgs.join_link), after the site's origin.
JOIN_PATH = "/orgs/join/"
TOKEN_PURPOSE = "org-join"


def link_id(secret: str, token: str) -> str | None:
    """The link id a signed join token carries (None: tampered, expired or not a join token)."""
    data = tokens.load(secret, TOKEN_PURPOSE, token)
    return data["j"] if isinstance(data, dict) and isinstance(data.get("j"), str) else None


def send_link(db, cfg, secret: str, org: Org, email: str, jti: str, via: str, now: datetime) -> int:
    """Mail a signed, single-use join link (through the outbox) on the configured origin; the message id."""
    url = cfg.origin + JOIN_PATH + tokens.sign(secret, TOKEN_PURPOSE, {"j": jti})
    why = (f"You asked to join {org.name}'s group licence with your {org.domain} address."
           if via == "domain" else f"You are invited to join {org.name}'s group licence.")
    text = (f"{why}\n\nOpen this link and press the button to take a seat; every article of "
            f"{cfg.publication.name} is\nthen open to you. The link works once, within 7 days.\n\n{url}\n\n"
            "If you did not ask for this, ignore this message.\n")
    return mail.queue(db, to=email, subject=f"Join {org.name} on {cfg.publication.name}", text=text, html=None,
                      kind="org_link", sender=cfg.mail.sender, now=now, tz=cfg.publication.tz)


def link(db, jti: str) -> dict | None:
    """A join link's row with its org's slug, or None."""
    return db.first("select l.*, o.slug from org_links l join orgs o on o.id = l.org_id where l.jti = ?", [jti])


def join_by_link(db, jti: str, signed_in: accounts.Reader | None, now: datetime) -> tuple[accounts.Reader, Member]:
    """Use a join link once: seat the account of its address (made if new), or JoinRefused.

    Clicking the link proves the address. A refused join (full, ended) leaves the link
    unused, so it works once a seat is free.
    """
    row = link(db, jti)
    if row is None:
        raise JoinRefused(Refusal.LINK_USED)
    org = get(db, row["slug"])
    with db.transaction():
        _lock(db, org.id)
        result = _use_link(db, org, row, signed_in, now)
    reader, member = result if isinstance(result, tuple) else (None, result)
    return reader, _outcome(member)


def _use_link(db, org: Org, row: dict, signed_in: accounts.Reader | None, now: datetime):
    """Inside the org's lock: spend the link, seat its reader, or put the link back and refuse."""
    if signed_in is not None and signed_in.email != row["email"]:
        return _refuse(db, org, signed_in.id, Refusal.WRONG_ADDRESS, row["via"], now)
    if db.execute("update org_links set used_at = ? where jti = ? and used_at is null",
                  [to_iso(now), row["jti"]]).rowcount != 1:
        return _refuse(db, org, signed_in.id if signed_in else None, Refusal.LINK_USED, row["via"], now)
    reader = signed_in or accounts.by_email(db, row["email"]) or \
        accounts.register(db, row["email"], None, now, method=f"org_{row['via']}")
    accounts.mark_verified(db, reader.id, now)
    member = _seat(db, org, reader.id, row["via"], now)
    if isinstance(member, Refusal):
        db.execute("update org_links set used_at = null where jti = ?", [row["jti"]])
    return reader, member


# --- the console: reading per member, core readers -------------------------------------


@dataclass(frozen=True)
class MemberReading:
    """A member and what they read in the last 30 days."""

    member: Member
    email: str
    reads: int

    @property
    def core(self) -> bool:
        """Whether they are a core reader (9+ articles in 30 days)."""
        return self.reads >= CORE_READS


def reading(db, org: Org, now: datetime) -> list[MemberReading]:
    """Each active member with the distinct articles they read in full in the last 30 days (from the events)."""
    since, access = to_iso(now - timedelta(days=READING_DAYS)), db.json_text("data", "access")
    held = "select reader_id from org_members where org_id = ? and left_at is null"
    reads = {row["reader_id"]: row["reads"] for row in db.rows(
        "select reader_id, count(distinct slug) as reads from events where type = 'article_view'"
        f" and {access} = 'full' and at >= ? and at <= ? and reader_id in ({held}) group by reader_id",
        [since, to_iso(now), org.id])}
    emails = {row["id"]: row["email"] for row in db.rows(f"select id, email from readers where id in ({held})",
                                                         [org.id])}
    return [MemberReading(m, emails[m.reader_id], reads.get(m.reader_id, 0)) for m in members(db, org.id)]


def core_share(readings: list[MemberReading]) -> float | None:
    """The share of members who are core readers (None without members)."""
    return sum(r.core for r in readings) / len(readings) if readings else None


#: The demo's licence: the "Licensed reader" persona is a member (gate.services.personas).
DEMO_ORG = {"name": "Riverside University", "slug": "riverside-university", "seats": 25, "domain": "riverside.example"}


def demo_member(db, reader_id: int, now: datetime) -> Member:
    """Seat a reader in the demo's Riverside University licence, made (for a year) if missing."""
    if by_slug(db, DEMO_ORG["slug"]) is None:
        create(db, DEMO_ORG["name"], DEMO_ORG["seats"], now, slug=DEMO_ORG["slug"], domain=DEMO_ORG["domain"],
               until=now + timedelta(days=365))
    return join(db, DEMO_ORG["slug"], reader_id, "domain", now)


def membership_history(db) -> list[dict]:
    """Every membership ever, with its org's seats (for the audit's seats_over)."""
    return db.rows("select m.id, m.org_id, o.slug, o.seats, m.reader_id, m.joined_at, m.left_at"
                   " from org_members m join orgs o on o.id = m.org_id order by m.org_id, m.id")
