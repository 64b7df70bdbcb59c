"""Newsletters: enrollment with recorded consent, double opt-in, unsubscribe, issues.

Statuses of an enrollment: ``pending`` (waiting for the confirmation link),
``active``, ``paused`` (a subscriber-only list whose reader lost access; it
resumes by itself when access returns) and ``unsubscribed`` (only the reader
can undo it). Every consent given or withdrawn is a row in ``consents`` with
the time, the page, the exact wording and the IP, kept for good.

Issues are planned here and rendered by the caller (``compose``), so this
module needs neither Flask nor templates. Each delivery is recorded before
its message is queued, with a unique key on (issue, reader): running a send
twice never mails anyone twice, nor do two nodes sending the same issue at
once (each delivery takes the issue's lock, then checks, then inserts).

Every change of one reader's enrollments holds that reader's lock
(:func:`_lock_reader`) and commits with its consent record and its event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from typing import Callable
from zoneinfo import ZoneInfo

from gate.rules.timeutil import from_iso, to_iso
from gate.services import accounts, mail
from gate.services.content import Article
from gate.storage import events

STATUSES = ("pending", "active", "paused", "unsubscribed")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class NewsletterError(ValueError):
    """An unknown list, or a change the list's audience does not allow."""


def get_list(cfg, list_id: str):
    """A configured list by id."""
    for item in cfg.newsletters:
        if item.id == list_id:
            return item
    known = ", ".join(item.id for item in cfg.newsletters)
    raise NewsletterError(f"no newsletter called {list_id!r} (have: {known})")


def enrollments(db, reader_id: int) -> dict[str, dict]:
    """The reader's enrollment rows, by list id."""
    return {row["list_id"]: row for row in
            db.rows("select * from enrollments where reader_id = ?", [reader_id])}


def _status(db, reader_id: int, list_id: str) -> str | None:
    return db.scalar("select status from enrollments where reader_id = ? and list_id = ?",
                     [reader_id, list_id])


def _lock_reader(db, reader_id: int) -> None:
    """Serialise changes to one reader's enrollments (inside a transaction; read the status after it)."""
    db.lock(f"enrollments:{reader_id}")


def _set(db, reader_id: int, list_id: str, status: str, now: datetime, reason: str, **stamps) -> None:
    """Move an enrollment to a status (creating it if needed) and record the change.

    Called inside a transaction holding :func:`_lock_reader`, so the read and
    the write cannot interleave with another change of the same enrollment.
    """
    before = _status(db, reader_id, list_id)
    row = {"reader_id": reader_id, "list_id": list_id, "status": status, "updated_at": to_iso(now),
           **{key: to_iso(value) for key, value in stamps.items()}}
    if before is None:
        db.insert("enrollments", {**row, "created_at": to_iso(now)})
    else:
        assignments = ", ".join(f"{key} = :{key}" for key in row if key not in ("reader_id", "list_id"))
        db.execute(f"update enrollments set {assignments} where reader_id = :reader_id"
                   " and list_id = :list_id", row)
    if before != status:
        events.record(db, "newsletter_changed", now, reader_id=reader_id, list=list_id,
                      reason=reason, **{"from": before, "to": status})


def record_consent(db, reader_id: int, list_id: str, action: str, now: datetime, *,
                   wording: str, source: str, ip: str | None, method: str) -> None:
    """Keep what the reader agreed to (or withdrew), when, where and from which address."""
    db.insert("consents", {"reader_id": reader_id, "list_id": list_id, "action": action,
                           "at": to_iso(now), "wording": wording, "source": source, "ip": ip,
                           "method": method})


def consents(db, reader_id: int) -> list[dict]:
    """The reader's consent history, oldest first."""
    return db.rows("select * from consents where reader_id = ? order by id", [reader_id])


LESSON_KEY = "consent_lesson"


def preticked_lesson(db) -> bool:
    """Whether the /learn lesson has signup boxes pre-ticked on the running site."""
    return db.scalar("select value from settings where key = ?", [LESSON_KEY]) == "on"


def set_preticked_lesson(db, on: bool, at: datetime, by: str) -> None:
    """Turn the pre-ticked consent lesson on or off for the whole site (an event if it changed)."""
    with db.transaction():
        db.lock(LESSON_KEY)
        before = preticked_lesson(db)
        db.upsert("settings", {"key": LESSON_KEY, "value": "on" if on else "off"}, ["key"])
        if before != on:
            events.record(db, "consent_lesson_changed", at, by=by, **{"from": before, "to": on})


def ticked_by_default(item, lesson_on: bool) -> bool:
    """Whether a list's signup box starts ticked: its setting, or the dark-pattern lesson."""
    return lesson_on or item.consent_default == "ticked"


def enroll(db, cfg, reader_id: int, list_id: str, now: datetime, *, source: str, ip: str | None,
           method: str, verified: bool, has_access: bool) -> str:
    """Join a list with recorded consent; returns the new status.

    Without a verified address (and with double opt-in on) the enrollment
    waits as ``pending`` for the confirmation link.
    """
    item = get_list(cfg, list_id)
    if item.audience == "subscriber" and not has_access:
        raise NewsletterError(f"{item.name} is for subscribers")
    status = "pending" if cfg.mail.double_opt_in and not verified else "active"
    with db.transaction():
        _lock_reader(db, reader_id)
        current = _status(db, reader_id, list_id)
        if current in ("active", "pending"):
            return current
        record_consent(db, reader_id, list_id, "granted", now, wording=item.consent_wording,
                       source=source, ip=ip, method=method)
        stamps = {"confirmed_at": now} if status == "active" else {}
        _set(db, reader_id, list_id, status, now, f"joined via {method}", **stamps)
    return status


def confirm(db, reader_id: int, list_ids: list[str], now: datetime, *, ip: str | None) -> list[str]:
    """Confirm pending enrollments (double opt-in); returns the lists confirmed."""
    done = []
    with db.transaction():
        _lock_reader(db, reader_id)
        for list_id in list_ids:
            if _status(db, reader_id, list_id) == "pending":
                _set(db, reader_id, list_id, "active", now, "confirmed", confirmed_at=now)
                record_consent(db, reader_id, list_id, "confirmed", now, wording="confirmation link",
                               source="confirmation email", ip=ip, method="double_opt_in")
                done.append(list_id)
        accounts.mark_verified(db, reader_id, now)
    return done


def unsubscribe(db, cfg, reader_id: int, list_id: str, now: datetime, *, method: str,
                source: str, ip: str | None) -> bool:
    """Leave a list; returns whether anything changed. It never re-subscribes by itself."""
    item = get_list(cfg, list_id)
    with db.transaction():
        _lock_reader(db, reader_id)
        if _status(db, reader_id, list_id) in (None, "unsubscribed"):
            return False
        _set(db, reader_id, list_id, "unsubscribed", now, f"unsubscribed via {method}",
             unsubscribed_at=now)
        record_consent(db, reader_id, list_id, "withdrawn", now,
                       wording=f"Unsubscribe from {item.name}", source=source, ip=ip, method=method)
    return True


def sync_access(db, cfg, reader_id: int, has_access: bool, now: datetime) -> None:
    """Pause subscriber-only lists when access ends; resume them when it returns."""
    with db.transaction():
        _lock_reader(db, reader_id)
        for item in cfg.newsletters:
            if item.audience != "subscriber":
                continue
            status = _status(db, reader_id, item.id)
            if status == "active" and not has_access:
                _set(db, reader_id, item.id, "paused", now, "subscription ended", paused_at=now)
            elif status == "paused" and has_access:
                _set(db, reader_id, item.id, "active", now, "subscription resumed")


def enroll_subscriber_lists(db, cfg, reader_id: int, now: datetime, *, source: str,
                            ip: str | None) -> None:
    """A new subscription includes the subscriber lists (unless the reader left them)."""
    with db.transaction():
        _lock_reader(db, reader_id)
        for item in cfg.newsletters:
            if item.audience == "subscriber" and _status(db, reader_id, item.id) is None:
                record_consent(db, reader_id, item.id, "granted", now, wording=item.consent_wording,
                               source=source, ip=ip, method="subscription")
                _set(db, reader_id, item.id, "active", now, "included with subscription",
                     confirmed_at=now)
        sync_access(db, cfg, reader_id, True, now)


# --- issues ---------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """One issue of a list: its number, its moment and the articles it carries."""

    list_id: str
    number: int
    scheduled_for: datetime
    articles: tuple[Article, ...]
    id: int | None = None


@dataclass(frozen=True)
class Message:
    """A rendered email for one reader."""

    subject: str
    text: str
    html: str
    headers: dict


Compose = Callable[[object, Issue, dict], Message]


def slots(item, after: datetime, until: datetime, tz: ZoneInfo) -> list[datetime]:
    """The send times of a list in (after, until]: weekdays for daily lists, one day for weekly."""
    hour, minute = (int(part) for part in item.send_time.split(":"))
    found, day = [], after.astimezone(tz).date()
    while True:
        moment = datetime.combine(day, time(hour, minute)).replace(tzinfo=tz).astimezone(after.tzinfo)
        if moment > until:
            return found
        wanted = day.weekday() < 5 if item.cadence == "daily" else DAYS[day.weekday()] == item.send_day
        if wanted and moment > after:
            found.append(moment)
        day += timedelta(days=1)


def last_issue(db, list_id: str) -> dict | None:
    """The newest issue row of a list."""
    return db.first("select * from newsletter_issues where list_id = ? order by number desc limit 1",
                    [list_id])


def _since(previous: dict | None, item, slot: datetime) -> datetime:
    """Where the next issue's articles start: the previous issue, else one cadence back."""
    if previous:
        return from_iso(previous["scheduled_for"])
    return slot - timedelta(days=1 if item.cadence == "daily" else 7)


def plan_issue(db, item, slot: datetime) -> Issue | None:
    """The next issue at ``slot``: articles published since the previous one, or None if none."""
    previous = last_issue(db, item.id)
    since = _since(previous, item, slot)
    rows = db.rows("select * from articles where published_at > ? and published_at <= ?"
                   " order by published_at", [to_iso(since), to_iso(slot)])
    articles = tuple(Article.from_row(row) for row in rows)
    if not articles:
        return None
    return Issue(item.id, (previous["number"] if previous else 0) + 1, slot, articles)


def waiting(db, item, now: datetime) -> int:
    """How many articles the next issue of a list would carry if it went out now."""
    since = _since(last_issue(db, item.id), item, now)
    return db.scalar("select count(*) from articles where published_at > ? and published_at <= ?",
                     [to_iso(since), to_iso(now)])


def counts(db, list_id: str) -> dict[str, int]:
    """How many readers a list has in each enrollment status (statuses with none are absent)."""
    return dict(db.execute("select status, count(*) from enrollments where list_id = ? group by status",
                           [list_id]).fetchall())


def overview(db, cfg, now: datetime) -> list[dict]:
    """Each list with its readers by status, its last issue and what the next one would carry."""
    found = []
    for item in cfg.newsletters:
        found.append({"list": item, "counts": counts(db, item.id), "last": last_issue(db, item.id),
                      "waiting": waiting(db, item, now)})
    return found


def recipients(db, list_id: str, at: datetime | None = None) -> list[dict]:
    """Readers with an active enrollment in a list (confirmed by ``at``, for a past issue)."""
    sql = ("select r.id, r.email from enrollments e join readers r on r.id = e.reader_id"
           " where e.list_id = ? and e.status = 'active'")
    params = [list_id]
    if at is not None:  # a reader who joined after an issue's time never gets that issue
        sql += " and e.confirmed_at <= ?"
        params.append(to_iso(at))
        # nor one whose enrollment was paused then and resumed since (a clock jump over a pause's end)
        sql += " and not (e.paused_at is not null and e.paused_at <= ? and e.updated_at > ?)"
        params += [to_iso(at), to_iso(at)]
    return db.rows(sql + " order by r.id", params)


def _lock_issues(db, list_id: str) -> None:
    """Serialise planning and storing the issues of one list (inside a transaction)."""
    db.lock(f"issues:{list_id}")


def _stored(db, issue: Issue, now: datetime) -> Issue:
    """The issue with its id: the row of its (list, number), written on first use."""
    if issue.id is not None:
        return issue
    with db.transaction():
        _lock_issues(db, issue.list_id)
        issue_id = db.scalar("select id from newsletter_issues where list_id = ? and number = ?",
                             [issue.list_id, issue.number])
        if issue_id is None:
            issue_id = db.insert("newsletter_issues", {
                "list_id": issue.list_id, "number": issue.number,
                "scheduled_for": to_iso(issue.scheduled_for), "created_at": to_iso(now),
                "slugs": json.dumps([a.slug for a in issue.articles]),
            })
    return replace(issue, id=issue_id)


def open_issue(db, item, slot: datetime, now: datetime) -> Issue | None:
    """Plan the next issue of a list at ``slot`` and store it, or None if nothing is new.

    One planner per list at a time: a second sender (another node, the
    scheduler) plans after the first one's issue is stored, so it finds
    nothing new rather than a second issue with the same articles.
    """
    with db.transaction():
        _lock_issues(db, item.id)
        issue = plan_issue(db, item, slot)
        return None if issue is None else _stored(db, issue, now)


def delivered(db, issue_id: int, reader_id: int) -> bool:
    """Whether a reader already has an issue."""
    return db.scalar("select count(*) from deliveries where issue_id = ? and reader_id = ?",
                     [issue_id, reader_id]) > 0


def _deliver_once(db, cfg, item, issue: Issue, reader: dict, message: Message) -> int | None:
    """Record one reader's delivery and queue its mail, unless they have the issue; the outbox id.

    Under the issue's lock, with the unique (issue, reader) key as the backstop:
    two senders of one issue mail each reader once between them.
    """
    with db.transaction():
        db.lock(f"issue:{issue.id}")
        if not db.insert_ignore("deliveries", {"issue_id": issue.id, "reader_id": reader["id"],
                                               "at": to_iso(issue.scheduled_for)}):
            return None
        message_id = mail.queue(db, to=reader["email"], subject=message.subject,
                                text=message.text, html=message.html, kind=f"newsletter:{item.id}",
                                sender=cfg.mail.sender, now=issue.scheduled_for, tz=cfg.publication.tz,
                                headers=message.headers)
        db.execute("update deliveries set outbox_id = ? where issue_id = ? and reader_id = ?",
                   [message_id, issue.id, reader["id"]])
    return message_id


def send_issue(db, cfg, issue: Issue, compose: Compose, has_access: Callable[[int], bool],
               now: datetime, deliver: Callable[[int], None] | None = None) -> dict:
    """Store the issue (once) and mail every active reader who has not had it yet."""
    item = get_list(cfg, issue.list_id)
    issue = _stored(db, issue, now)
    sent = skipped = 0
    for reader in recipients(db, item.id, issue.scheduled_for):
        if item.audience == "subscriber" and not has_access(reader["id"]):
            sync_access(db, cfg, reader["id"], False, issue.scheduled_for)
            skipped += 1
            continue
        if delivered(db, issue.id, reader["id"]):  # a resent issue: render only what is missing
            continue
        message_id = _deliver_once(db, cfg, item, issue, reader, compose(item, issue, reader))
        if message_id is None:
            continue
        if deliver:
            deliver(message_id)
        sent += 1
    db.execute("update newsletter_issues set sent_at = ?, recipients = "
               "(select count(*) from deliveries where issue_id = ?) where id = ?",
               [to_iso(now), issue.id, issue.id])
    events.record(db, "newsletter_sent", issue.scheduled_for, list=item.id, issue=issue.number,
                  sent=sent, skipped=skipped, articles=len(issue.articles))
    return {"list": item.id, "issue": issue.number, "sent": sent, "skipped": skipped,
            "articles": len(issue.articles)}


CURSOR = "newsletter_cursor:"


def cursor(db, list_id: str) -> datetime | None:
    """The last moment the schedule was run up to for a list."""
    value = db.scalar("select value from settings where key = ?", [CURSOR + list_id])
    return from_iso(value) if value else None


def set_cursor(db, list_id: str, moment: datetime) -> None:
    """Remember how far the schedule has run for a list."""
    db.upsert("settings", {"key": CURSOR + list_id, "value": to_iso(moment)}, ["key"])


def start_schedule(db, cfg, now: datetime) -> None:
    """Start the schedule of every list that has none yet (a new site sends no backlog)."""
    for item in cfg.newsletters:
        if cursor(db, item.id) is None:
            set_cursor(db, item.id, now)


def run_schedule(db, cfg, now: datetime, compose: Compose, has_access: Callable[[int], bool],
                 deliver=None) -> list[dict]:
    """Send every issue whose time has come since the schedule last ran, in order."""
    tz = cfg.publication.tz
    results = []
    for item in cfg.newsletters:
        start = cursor(db, item.id)
        if start is None:
            set_cursor(db, item.id, now)
            continue
        for slot in slots(item, start, now, tz):
            issue = open_issue(db, item, slot, slot)
            if issue is not None:
                results.append(send_issue(db, cfg, issue, compose, has_access, slot, deliver))
            set_cursor(db, item.id, slot)
        set_cursor(db, item.id, now)
    return results
