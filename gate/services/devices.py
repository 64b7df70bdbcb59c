"""Signed-in devices: one session per device, a cap per account, and signing any of them out.

Every sign-in makes a ``reader_sessions`` row with its own token (what the
session cookie names). Under a device limit the sign-in that would go over it
signs out the least recently seen device, in the same transaction: the
reader's lock serialises concurrent sign-ins, and each live session's
``slot`` (unique below the limit) is the backstop. The limit is the
subscriber's plan's ``device_limit`` when it sets one, else the preset's
``[devices] limit`` (none: no cap). See docs/devices.md.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from gate.rules.paywall import Rules
from gate.rules.timeutil import from_iso, to_iso
from gate.services import accounts, subscriptions
from gate.storage import events

#: A device's last-seen time is written at most this often (not on every request).
SEEN_EVERY = timedelta(minutes=1)
#: How long a user-agent summary may be.
SUMMARY_MAX = 60
#: The old device's notice on its next request, by why it was signed out.
ENDED_NOTICES = {
    "limit": "You were signed out because your account signed in on another device.",
    "user": "You were signed out of this device from another one.",
    "everywhere": "You were signed out everywhere.",
}
_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chromium/", "Chromium"),
             ("Chrome/", "Chrome"), ("Safari/", "Safari"), ("curl/", "curl"), ("python-requests", "Python"),
             ("Werkzeug/", "Test client"), ("locust", "Locust"))
_SYSTEMS = (("iPhone", "iPhone"), ("iPad", "iPad"), ("Android", "Android"), ("Windows", "Windows"),
            ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"))


@dataclass(frozen=True)
class Device:
    """One signed-in device as the account page shows it."""

    id: int
    user_agent: str
    created_at: datetime
    last_seen_at: datetime
    current: bool = False

    @classmethod
    def from_row(cls, row, token: str | None = None) -> "Device":
        """Build from a ``reader_sessions`` row (``current`` when it is the session ``token`` names)."""
        return cls(row["id"], row["user_agent"], from_iso(row["created_at"]), from_iso(row["last_seen_at"]),
                   row["token"] == token)


@dataclass(frozen=True)
class SignedIn:
    """A sign-in: the reader as this device's session names them, and the devices it signed out."""

    reader: accounts.Reader
    ended: tuple[Device, ...] = ()


def summary(user_agent: str | None) -> str:
    """A short, readable name for a browser ("Firefox on Windows"), from its User-Agent header."""
    text = re.sub(r"[\x00-\x1f\x7f]", "", user_agent or "")
    browser = next((name for marker, name in _BROWSERS if marker.lower() in text.lower()), None)
    system = next((name for marker, name in _SYSTEMS if marker in text), None)
    if browser and system:
        return f"{browser} on {system}"
    return (browser or system or text.split(" ")[0] or "Unknown device")[:SUMMARY_MAX]


def limit_for(db, cfg, rules: Rules, reader: accounts.Reader, now: datetime) -> int | None:
    """How many devices this reader may have signed in: their plan's limit if subscribed and it sets one, else the preset's."""
    if subscriptions.has_access(db, cfg, reader, now):
        sub = subscriptions.current(db, reader.id)
        plan = next((plan for plan in cfg.plans if sub is not None and plan.id == sub.plan_id), None)
        if plan is not None and plan.device_limit is not None:
            return plan.device_limit
    return rules.devices.limit


def sign_in(db, reader: accounts.Reader, visitor: str | None, method: str, now: datetime, *,
            user_agent: str, limit: int | None) -> SignedIn:
    """Sign a reader in on a new device in one transaction: meter moved, session started, the oldest past ``limit`` out."""
    device = summary(user_agent)
    with db.transaction():
        db.lock(f"devices:{reader.id}")  # concurrent sign-ins of one account count one at a time
        accounts.sign_in(db, reader, visitor, method, now)
        live = accounts.live_sessions(db, reader.id)  # least recently seen first
        over = live[:max(0, len(live) + 1 - limit)] if limit is not None else []
        accounts.end_sessions(db, reader.id, now, "limit", [row["id"] for row in over])
        token = _start(db, reader.id, device, now, _free_slot(live, over, limit))
        kept = len(live) - len(over)
        events.record(db, "device_signed_in", now, reader_id=reader.id, method=method, limit=limit, device=device,
                      **{"from": kept, "to": kept + 1})
    return SignedIn(replace(reader, session_token=token, seen_at=now), tuple(Device.from_row(row) for row in over))


def _free_slot(live: list[dict], over: list[dict], limit: int | None) -> int | None:
    """The lowest slot below the limit that no session still live holds (None: no limit, no slot)."""
    if limit is None:
        return None
    ending = {row["id"] for row in over}
    held = {row["slot"] for row in live if row["id"] not in ending}
    return min(slot for slot in range(limit) if slot not in held)


def _start(db, reader_id: int, user_agent: str, now: datetime, slot: int | None) -> str:
    """Insert a live session for a device; its token."""
    token = secrets.token_urlsafe(24)
    db.insert("reader_sessions", {"token": token, "reader_id": reader_id, "created_at": to_iso(now),
                                  "last_seen_at": to_iso(now), "user_agent": user_agent, "slot": slot})
    return token


def plant(db, reader_id: int, now: datetime, seen: tuple[tuple[str, timedelta], ...], limit: int | None) -> None:
    """Replace a reader's devices with ones signed in elsewhere, each last seen ``ago`` before now (a demo persona's)."""
    accounts.end_sessions(db, reader_id, now, "everywhere")
    for slot, (user_agent, ago) in enumerate(seen):
        token = _start(db, reader_id, user_agent, now - ago, slot if limit is not None else None)
        db.execute("update reader_sessions set created_at = ? where token = ?", [to_iso(now - ago - ago), token])


def listing(db, reader: accounts.Reader) -> list[Device]:
    """The reader's signed-in devices, most recently seen first, this one marked."""
    found = [Device.from_row(row, reader.session_token) for row in accounts.live_sessions(db, reader.id)]
    return sorted(reversed(found), key=lambda device: not device.current)  # stable: this one, then the rest


def sign_out_device(db, reader: accounts.Reader, device_id: int, now: datetime) -> bool:
    """Sign one of the reader's other devices out from the account page; whether one was."""
    if any(device.id == device_id and device.current for device in listing(db, reader)):
        return False  # this device signs out through /logout
    return bool(accounts.end_sessions(db, reader.id, now, "user", [device_id]))


def sign_out_everywhere(db, reader: accounts.Reader, now: datetime) -> int:
    """Sign every device of the reader out, this one too; how many."""
    with db.transaction():
        events.record(db, "logout", now, reader_id=reader.id, everywhere=True)
        return len(accounts.end_sessions(db, reader.id, now, "everywhere"))


def seen(db, reader: accounts.Reader, now: datetime) -> None:
    """Note that this device was seen now, at most once a ``SEEN_EVERY`` (one cheap update, no transaction)."""
    if reader.seen_at is not None and abs(now - reader.seen_at) < SEEN_EVERY:
        return
    at = to_iso(now)
    db.execute("update reader_sessions set last_seen_at = ? where token = ? and ended_at is null",
               [at, reader.session_token])
    subscriptions.seen(reader.session_token, at)  # kept with the reader: their version does not change


def ended_reason(db, token: str) -> str | None:
    """Why the session a token names was ended (``limit``, ``user``, ``everywhere``), or None."""
    row = db.rows("select ended_reason from reader_sessions where token = ?", [token])
    return row[0]["ended_reason"] if row else None

