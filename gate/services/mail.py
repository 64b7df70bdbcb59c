"""Outgoing mail: every message is written to the ``outbox`` table."""

from __future__ import annotations

import json
import smtplib
from datetime import datetime, tzinfo
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from gate.rules.timeutil import to_iso
from gate.storage.db import first


def queue(db, *, to: str, subject: str, text: str, html: str | None, kind: str,
          sender: str, now: datetime, tz: tzinfo, headers: dict | None = None) -> int:
    """Write one message to the outbox with its full headers; returns its id.

    ``now`` is the site clock (time travel dates mail too); ``tz`` the site's
    zone, so the ``Date`` header (RFC 5322) reads as the site's local time.
    """
    all_headers = {
        "From": sender, "To": to, "Subject": subject,
        "Date": format_datetime(now.astimezone(tz)), "Message-ID": make_msgid(domain="meridian.example"),
        **(headers or {}),
    }
    return db.insert("outbox", {
        "created_at": to_iso(now), "kind": kind, "to_addr": to, "from_addr": sender,
        "subject": subject, "headers": json.dumps(all_headers), "body_text": text,
        "body_html": html,
    })


def as_email(row: dict) -> EmailMessage:
    """An outbox row as a MIME message (text, plus HTML when there is one)."""
    message = EmailMessage()
    headers = row["headers"] if isinstance(row["headers"], dict) else json.loads(row["headers"] or "{}")
    for key, value in headers.items():
        message[key] = value
    message.set_content(row["body_text"] or "")
    if row["body_html"]:
        message.add_alternative(row["body_html"], subtype="html")
    return message


def raw(row: dict) -> str:
    """The message source as it would go over the wire."""
    return as_email(row).as_string()


def message(db, message_id: int) -> dict | None:
    """One outbox row as stored (headers still JSON text), or None."""
    return first(db, "select * from outbox where id = ?", [message_id])


def deliver(db, settings, message_id: int) -> None:
    """Send one outbox message over SMTP (when ``[mail] smtp_host`` is set)."""
    if not settings.smtp_host:
        return
    row = message(db, message_id)
    email = as_email(row)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password)
        smtp.send_message(email)
    db.execute("update outbox set delivered_at = ? where id = ?", [row["created_at"], message_id])


def messages(db, to: str | None = None, limit: int = 20, offset: int = 0) -> list[dict]:
    """The newest messages by date (as a mail client sorts them), optionally for one address."""
    where, params = ("where to_addr = ?", [to]) if to else ("", [])
    rows = db.query(f"select * from outbox {where} order by created_at desc, id desc limit ? offset ?",
                    [*params, limit, offset])
    return [{**row, "headers": json.loads(row["headers"] or "{}")} for row in rows]
