"""Outgoing mail: every message is written to the ``outbox`` table."""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import format_datetime, make_msgid

from gate.timeutil import to_iso


def queue(db, *, to: str, subject: str, text: str, html: str | None, kind: str,
          sender: str, now: datetime, headers: dict | None = None) -> int:
    """Write one message to the outbox with its full headers; returns its id."""
    all_headers = {
        "From": sender, "To": to, "Subject": subject,
        "Date": format_datetime(now), "Message-ID": make_msgid(domain="meridian.example"),
        **(headers or {}),
    }
    return db["outbox"].insert({
        "created_at": to_iso(now), "kind": kind, "to_addr": to, "from_addr": sender,
        "subject": subject, "headers": json.dumps(all_headers), "body_text": text,
        "body_html": html,
    }).last_pk


def messages(db, to: str | None = None, limit: int = 20) -> list[dict]:
    """The newest messages, optionally for one address."""
    where, params = ("where to_addr = ?", [to]) if to else ("", [])
    rows = db.query(f"select * from outbox {where} order by id desc limit ?", [*params, limit])
    return [{**row, "headers": json.loads(row["headers"] or "{}")} for row in rows]
