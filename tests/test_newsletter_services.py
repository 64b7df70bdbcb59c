"""Newsletter services on both engines: one delivery per (issue, reader) under concurrent senders,
and an enrollment change committed with its consent record and its event, or not at all."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from gate.conf.settings import Config
from gate.rules.timeutil import to_iso
from gate.services import mail, newsletter
from gate.storage import events
from tests.helpers import START, WEEKLY, at_once

CFG = Config()
READERS = 6


def _reader(db, n: int) -> int:
    return db.insert("readers", {"email": f"r{n}@example.com", "session_token": f"token-{n}",
                                 "created_at": to_iso(START)})


def _article(db, slug: str, when) -> None:
    db.insert("articles", {"slug": slug, "title": f"Piece {slug}", "section": "news", "published_at": to_iso(when),
                           "access_class": "metered", "body_md": "One paragraph of text.", "word_count": 4})


def _compose(item, issue, reader) -> newsletter.Message:
    time.sleep(0.01)  # rendering takes a while: widens the window between the check and the insert
    return newsletter.Message(f"{item.name} No. {issue.number}", f"for {reader['email']}", "<p>hi</p>", {})


@pytest.fixture
def weekly(backend):
    """READERS active readers of the free weekly list and one article to send them."""
    for n in range(READERS):
        reader_id = _reader(backend, n)
        newsletter.enroll(backend, CFG, reader_id, WEEKLY, START, source="/signup", ip=None,
                          method="signup", verified=True, has_access=False)
    _article(backend, "fresh", START + timedelta(hours=1))
    return newsletter.get_list(CFG, WEEKLY)


def _concurrently(target: str, senders: int, send) -> list:
    """Run ``send(db)`` in ``senders`` threads released together; their results (no thread may fail)."""
    results, errors = at_once(target, senders, send)
    assert not errors, errors
    return results


def _mailed(db) -> dict[str, int]:
    """Newsletter messages in the outbox, by recipient."""
    return {row["to_addr"]: row["n"] for row in db.rows(
        "select to_addr, count(*) as n from outbox where kind like 'newsletter:%' group by to_addr")}


def test_two_senders_of_one_issue_mail_each_reader_once(backend, backend_target, weekly):
    now = START + timedelta(hours=2)
    issue = newsletter.plan_issue(backend, weekly, now)  # both hold the same plan, not yet stored

    results = _concurrently(backend_target, 2, lambda db: newsletter.send_issue(
        db, CFG, issue, _compose, lambda reader_id: True, now))

    assert sum(result["sent"] for result in results) == READERS
    assert _mailed(backend) == {f"r{n}@example.com": 1 for n in range(READERS)}
    assert backend.scalar("select count(*) from newsletter_issues") == 1
    assert backend.scalar("select count(*) from deliveries where outbox_id is not null") == READERS
    assert backend.scalar("select recipients from newsletter_issues") == READERS


def test_two_nodes_sending_the_next_issue_send_one_issue(backend, backend_target, weekly, monkeypatch):
    """What two `newsletter send` commands do: plan under the list's lock, then send."""
    now = START + timedelta(hours=2)
    plan = newsletter.plan_issue

    def slow_plan(*args):
        planned = plan(*args)
        time.sleep(0.05)  # widens the window between planning an issue and storing it
        return planned

    monkeypatch.setattr(newsletter, "plan_issue", slow_plan)

    def send_next(db):
        issue = newsletter.open_issue(db, weekly, now, now)
        return None if issue is None else newsletter.send_issue(db, CFG, issue, _compose, lambda r: True, now)

    results = [r for r in _concurrently(backend_target, 6, send_next) if r is not None]

    assert [r["issue"] for r in results] == [1] * len(results)
    assert sum(result["sent"] for result in results) == READERS
    assert _mailed(backend) == {f"r{n}@example.com": 1 for n in range(READERS)}
    assert backend.scalar("select count(*) from newsletter_issues") == 1


def test_an_issue_sent_again_renders_and_mails_only_the_missing(backend, weekly):
    now = START + timedelta(hours=2)
    issue = newsletter.plan_issue(backend, weekly, now)
    rendered = []

    def compose(item, this_issue, reader):
        rendered.append(reader["email"])
        return _compose(item, this_issue, reader)

    assert newsletter.send_issue(backend, CFG, issue, compose, lambda r: True, now)["sent"] == READERS
    newsletter.enroll(backend, CFG, _reader(backend, 99), WEEKLY, START, source="/signup", ip=None,
                      method="signup", verified=True, has_access=False)
    assert newsletter.send_issue(backend, CFG, issue, compose, lambda r: True, now)["sent"] == 1
    assert rendered[READERS:] == ["r99@example.com"]


def test_the_schedule_and_its_settings_on_both_engines(backend, weekly):
    newsletter.start_schedule(backend, CFG, START)
    assert newsletter.cursor(backend, WEEKLY) == START
    sent = newsletter.run_schedule(backend, CFG, START + timedelta(days=7), _compose, lambda r: True)
    assert [(r["issue"], r["sent"]) for r in sent if r["list"] == WEEKLY] == [(1, READERS)]
    assert newsletter.cursor(backend, WEEKLY) == START + timedelta(days=7)
    assert newsletter.counts(backend, WEEKLY) == {"active": READERS}
    assert newsletter.last_issue(backend, WEEKLY)["number"] == 1
    assert newsletter.waiting(backend, weekly, START + timedelta(days=7)) == 0
    newsletter.set_preticked_lesson(backend, True, START, by="test")
    newsletter.set_preticked_lesson(backend, True, START, by="test")
    assert newsletter.preticked_lesson(backend)
    assert backend.scalar("select count(*) from events where type = 'consent_lesson_changed'") == 1


def test_two_signups_of_one_reader_to_one_list_enroll_once(backend, backend_target):
    reader_id = _reader(backend, 1)

    statuses = _concurrently(backend_target, 4, lambda db: newsletter.enroll(
        db, CFG, reader_id, WEEKLY, START, source="/signup", ip="203.0.113.9", method="signup",
        verified=False, has_access=False))

    assert statuses == ["pending"] * 4
    assert backend.scalar("select count(*) from enrollments") == 1
    assert backend.scalar("select count(*) from consents") == 1
    assert backend.scalar("select count(*) from events where type = 'newsletter_changed'") == 1


def test_a_change_commits_with_its_consent_and_event_or_not_at_all(backend, monkeypatch):
    reader_id = _reader(backend, 1)
    newsletter.enroll(backend, CFG, reader_id, WEEKLY, START, source="/signup", ip=None,
                      method="signup", verified=False, has_access=False)
    assert newsletter.confirm(backend, reader_id, [WEEKLY], START, ip=None) == [WEEKLY]

    def broken(*args, **kwargs):
        raise RuntimeError("the event store went away")

    monkeypatch.setattr(events, "record", broken)
    with pytest.raises(RuntimeError):
        newsletter.unsubscribe(backend, CFG, reader_id, WEEKLY, START, method="one_click", source="mail", ip=None)
    monkeypatch.undo()

    assert newsletter.enrollments(backend, reader_id)[WEEKLY]["status"] == "active"
    assert [c["action"] for c in newsletter.consents(backend, reader_id)] == ["granted", "confirmed"]
    assert newsletter.unsubscribe(backend, CFG, reader_id, WEEKLY, START, method="one_click",
                                  source="mail", ip=None)
    assert not newsletter.unsubscribe(backend, CFG, reader_id, WEEKLY, START, method="one_click",
                                      source="mail", ip=None)
    assert [c["action"] for c in newsletter.consents(backend, reader_id)] == ["granted", "confirmed", "withdrawn"]


def test_subscriber_lists_pause_and_resume_on_both_engines(backend):
    reader_id = _reader(backend, 1)
    newsletter.enroll_subscriber_lists(backend, CFG, reader_id, START, source="checkout", ip=None)
    subscriber_lists = [item.id for item in CFG.newsletters if item.audience == "subscriber"]
    assert subscriber_lists
    assert {k: v["status"] for k, v in newsletter.enrollments(backend, reader_id).items()} == {
        list_id: "active" for list_id in subscriber_lists}
    newsletter.sync_access(backend, CFG, reader_id, False, START)
    assert {v["status"] for v in newsletter.enrollments(backend, reader_id).values()} == {"paused"}
    newsletter.sync_access(backend, CFG, reader_id, True, START)
    assert {v["status"] for v in newsletter.enrollments(backend, reader_id).values()} == {"active"}


def test_the_outbox_on_both_engines(backend):
    first = mail.queue(backend, to="a@example.com", subject="One", text="t", html=None, kind="test",
                       sender="desk@meridian.example", now=START, tz=START.tzinfo)
    second = mail.queue(backend, to="b@example.com", subject="Two", text="t", html="<p>t</p>", kind="test",
                        sender="desk@meridian.example", now=START + timedelta(minutes=1), tz=START.tzinfo,
                        headers={"X-Gate-List": WEEKLY})
    assert second > first
    assert [m["subject"] for m in mail.messages(backend)] == ["Two", "One"]
    assert [m["id"] for m in mail.messages(backend, to="a@example.com")] == [first]
    assert [m["id"] for m in mail.messages(backend, limit=1, offset=1)] == [first]
    row = mail.message(backend, second)
    assert json.loads(row["headers"])["X-Gate-List"] == WEEKLY
    assert "Content-Type: multipart/alternative" in mail.raw(row)
    assert mail.message(backend, second + 1) is None
