"""Gift links: a subscriber shares one article as a link that reads in full, outside the reader's meter.

Two atomic caps, both meters of the quota store (gate.storage.quota): the
giver's allowance (meter ``gift:<reader id>``, one spend per link, counted in
the ``[gifts]`` period's window) and each link's devices (meter
``giftlink:<link id>``, one spend per device: a visitor id, or a signed-in
reader's meter key). A link expires on the site's clock, not by its token's
age: the token only names the row, and moving the simulated clock past
``expires_at`` ends it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from gate.rules import periods, tokens
from gate.rules.paywall import GiftGrant
from gate.rules.timeutil import from_iso, to_iso
from gate.storage import events
from gate.storage.quota import SqlQuotaStore

GIVER_PREFIX, LINK_PREFIX = "gift:", "giftlink:"
#: The token's purpose (its own itsdangerous salt, gate.rules.tokens).
PURPOSE = "gift-link"
#: The one window a link's devices are counted in: a link's cap is for its whole life.
LINK_WINDOW = "link"


class GiftRefused(Exception):
    """A gift that cannot be made: ``code`` says why (``allowance_exhausted``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Allowance:
    """A giver's gifts in the period that contains now."""

    used: int
    limit: int
    resets_at: datetime | None
    period: str = "month"

    @property
    def left(self) -> int:
        """Gifts the giver may still make this period."""
        return max(0, self.limit - self.used)

    def as_dict(self) -> dict:
        """The allowance as the JSON API shows it."""
        return {"used": self.used, "limit": self.limit, "left": self.left, "period": self.period,
                "resets_at": self.resets_at.isoformat() if self.resets_at else None}


@dataclass(frozen=True)
class Link:
    """One gift link: who gave which article, until when, for how many devices."""

    id: int
    giver_id: int
    giver_email: str
    slug: str
    created_at: datetime
    expires_at: datetime
    devices: int
    opened: int

    @property
    def giver(self) -> str:
        """The giver as the recipient sees them: a masked address."""
        return masked(self.giver_email)

    @property
    def opens_left(self) -> int:
        """New devices the link still opens for."""
        return max(0, self.devices - self.opened)

    def live(self, now: datetime) -> bool:
        """Whether the link still reads (it ends at exactly ``expires_at``, on the site's clock)."""
        return now < self.expires_at

    def grant(self) -> GiftGrant:
        """What decide reads: this link's article, until it expires."""
        return GiftGrant(self.slug, self.id, self.giver, self.expires_at, self.opens_left)


@dataclass(frozen=True)
class Opened:
    """What opening a link did: ``status`` is opened, reopened, expired or exhausted."""

    link: Link
    status: str

    @property
    def reads(self) -> bool:
        """Whether this device reads the gifted article now."""
        return self.status in ("opened", "reopened")


def masked(email: str) -> str:
    """An address a stranger may see: its first letter and its domain (``l***@example.org``)."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "a subscriber"


def giver_meter(reader_id: int) -> str:
    """The meter a giver's gifts are counted on."""
    return f"{GIVER_PREFIX}{reader_id}"


def link_meter(link_id: int) -> str:
    """The meter a link's devices are counted on."""
    return f"{LINK_PREFIX}{link_id}"


def _window(cfg, now: datetime) -> periods.Window:
    """The allowance's window that contains now, in the site's time zone."""
    return periods.period_window(cfg.gifts.period, now, cfg.publication.tz)


def allowance(db, cfg, reader_id: int, now: datetime) -> Allowance:
    """How many gifts a reader has made this period, of how many."""
    window = _window(cfg, now)
    spends = SqlQuotaStore(db).spends(giver_meter(reader_id))
    inside = [spend.at for spend in spends if window.contains(spend.at)]
    return Allowance(len(inside), cfg.gifts.per_period, periods.resets_at(window, inside), cfg.gifts.period)


def make(db, cfg, giver, slug: str, now: datetime) -> tuple[Link, Allowance]:
    """Make a gift link of ``slug``, spending one of the giver's gifts: one transaction, or GiftRefused."""
    window, limit = _window(cfg, now), cfg.gifts.per_period

    def admit(spends) -> bool:
        return sum(window.contains(spend.at) for spend in spends) < limit

    expires = now + timedelta(days=cfg.gifts.days)
    with db.transaction():
        link_id = db.insert("gift_links", {"giver_id": giver.id, "slug": slug, "created_at": to_iso(now),
                                           "expires_at": to_iso(expires), "devices": cfg.gifts.devices,
                                           "window_key": window.key})
        spent, spends = SqlQuotaStore(db).spend(giver_meter(giver.id), f"link:{link_id}", window.key, now, admit)
        if not spent:
            raise GiftRefused("allowance_exhausted", f"You have made all {limit} of your gifts "
                              f"{periods.describe(cfg.gifts.period)}.")
        used = sum(window.contains(spend.at) for spend in spends)
        events.record(db, "gift_made", now, reader_id=giver.id, slug=slug, link_id=link_id,
                      expires_at=to_iso(expires), devices=cfg.gifts.devices, **{"from": used - 1, "to": used})
    link = Link(link_id, giver.id, giver.email, slug, now, expires, cfg.gifts.devices, 0)
    inside = [spend.at for spend in spends if window.contains(spend.at)]
    return link, Allowance(used, limit, periods.resets_at(window, inside), cfg.gifts.period)


def token(secret_key: str, link_id: int) -> str:
    """The signed token of a link's URL (it names the row; the row says when it ends)."""
    return tokens.sign(secret_key, PURPOSE, {"gift": link_id})


def link_id(secret_key: str, value: str) -> int | None:
    """The link a token names, or None for a tampered or foreign token."""
    payload = tokens.load(secret_key, PURPOSE, value)
    gift = payload.get("gift") if isinstance(payload, dict) else None
    return gift if isinstance(gift, int) and not isinstance(gift, bool) and gift > 0 else None


_LINK_SQL = ("select g.id, g.giver_id, r.email, g.slug, g.created_at, g.expires_at, g.devices,"
             " (select count(*) from unlocks u where u.meter_key = 'giftlink:' || cast(g.id as text)) as opened"
             " from gift_links g join readers r on r.id = g.giver_id")


def _link(row: dict) -> Link:
    return Link(row["id"], row["giver_id"], row["email"], row["slug"], from_iso(row["created_at"]),
                from_iso(row["expires_at"]), row["devices"], row["opened"])


def get(db, gift_id: int) -> Link | None:
    """One link with its devices counted, or None."""
    row = db.first(f"{_LINK_SQL} where g.id = ?", [gift_id])
    return _link(row) if row else None


def of_giver(db, reader_id: int, limit: int = 100) -> list[Link]:
    """A giver's links, newest first."""
    rows = db.rows(f"{_LINK_SQL} where g.giver_id = ? order by g.id desc limit ?", [reader_id, limit])
    return [_link(row) for row in rows]


def open_link(db, gift_id: int, device: str, now: datetime, **who) -> Opened | None:
    """Count this device on the link (at most ``devices`` devices, atomically); None for no such link.

    A device already counted reopens for free; an expired link counts nothing.
    """
    link = get(db, gift_id)
    if link is None:
        return None
    if not link.live(now):
        return Opened(link, "expired")

    def admit(spends) -> bool:
        return len(spends) < link.devices

    with db.transaction():
        spent, spends = SqlQuotaStore(db).spend(link_meter(link.id), device, LINK_WINDOW, now, admit)
        if spent:
            events.record(db, "gift_opened", now, slug=link.slug, link_id=link.id, device=device, **who,
                          **{"from": len(spends) - 1, "to": len(spends)})
    counted = spent or any(spend.slug == device for spend in spends)
    link = replace(link, opened=len(spends))
    return Opened(link, "opened" if spent else "reopened" if counted else "exhausted")


def grants(db, devices: list[str], now: datetime) -> tuple[GiftGrant, ...]:
    """The live gifts these devices opened (the device's grant, whichever URL it reads from)."""
    if not devices:
        return ()
    marks = ", ".join("?" for _ in devices)
    rows = db.rows(f"{_LINK_SQL} where g.id in (select cast(substr(d.meter_key, {len(LINK_PREFIX) + 1}) as integer)"
                   f" from unlocks d where d.meter_key like 'giftlink:%' and d.slug in ({marks}))"
                   " and g.expires_at > ?", [*devices, to_iso(now)])
    return tuple(_link(row).grant() for row in rows)


def reset_giver(db, reader_id: int) -> None:
    """Forget a giver's links and their meters (a demo persona rebuilt)."""
    ids = [row["id"] for row in db.rows("select id from gift_links where giver_id = ?", [reader_id])]
    for gift_id in ids:
        db.execute("delete from unlocks where meter_key = ?", [link_meter(gift_id)])
    db.execute("delete from unlocks where meter_key = ?", [giver_meter(reader_id)])
    db.execute("delete from gift_links where giver_id = ?", [reader_id])
