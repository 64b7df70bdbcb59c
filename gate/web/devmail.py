"""The local inbox: every message in the outbox, like a mail catcher (demo mode or admins)."""

from __future__ import annotations

import json

import nh3
from flask import Blueprint, abort, current_app, render_template, request
from flask_login import current_user

from gate import mail
from gate.db import first, get_db
from gate.web.access import int_arg

bp = Blueprint("devmail", __name__, url_prefix="/dev/mail")
VIEWS = ("html", "text", "headers", "raw")


@bp.before_request
def _only_demo_or_admins():
    """The inbox shows everyone's mail: demo mode or admin accounts only."""
    if not (current_app.config.get("DEMO") or (current_user.is_authenticated and current_user.is_admin)):
        abort(404)


@bp.get("/")
def inbox():
    """The outbox, newest first, optionally for one recipient."""
    to = (request.args.get("to") or "").strip().lower() or None
    page = int_arg("page", 1, 1, 100_000)
    rows = mail.messages(get_db(), to=to, limit=51, offset=(page - 1) * 50)
    return render_template("devmail/inbox.html", messages=rows[:50], to=to, page=page,
                           has_more=len(rows) > 50)


@bp.get("/<id:message_id>")
def message(message_id: int):
    """One message: its HTML, text, headers or raw source."""
    row = first(get_db(), "select * from outbox where id = ?", [message_id])
    if row is None:
        abort(404, description=f"There is no message #{message_id}.")
    view = request.args.get("view", "html" if row["body_html"] else "text")
    if view not in VIEWS:
        abort(400, description=f"view must be one of {', '.join(VIEWS)}")
    headers = json.loads(row["headers"] or "{}")
    safe_html = nh3.clean(row["body_html"] or "", link_rel="noopener") if row["body_html"] else None
    return render_template("devmail/message.html", message=row, headers=headers, view=view,
                           views=VIEWS, safe_html=safe_html, raw=mail.raw(row))
