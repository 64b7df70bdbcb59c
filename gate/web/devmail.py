"""The local inbox: every message in the outbox, like a mail catcher (demo mode or admins)."""

from __future__ import annotations

import json
import re

import nh3
from flask import Blueprint, abort, current_app, render_template, request
from flask_login import current_user
from markupsafe import Markup, escape

from gate.app import site
from gate.app.db import get_db
from gate.services import mail
from gate.web.access import int_arg

bp = Blueprint("devmail", __name__, url_prefix="/dev/mail")
VIEWS = ("html", "text", "headers", "raw")


@bp.before_request
def _only_demo_or_admins():
    """The inbox shows everyone's mail: demo mode or admin accounts only."""
    if not (current_app.config.get("DEMO") or (current_user.is_authenticated and current_user.is_admin)):
        abort(404)


def _recipient() -> str | None:
    """Whose mail to list: ?to=, else everyone's (?all=1, anonymous or admin), else the reader's own."""
    to = (request.args.get("to") or "").strip().lower()
    if to or request.args.get("all") == "1" or not current_user.is_authenticated:
        return to or None
    return None if current_user.is_admin else current_user.email


@bp.get("/")
def inbox():
    """The outbox, newest first: the signed-in reader's own mail unless they ask for all."""
    to = _recipient()
    page = int_arg("page", 1, 1, 100_000)
    rows = mail.messages(get_db(), to=to, limit=51, offset=(page - 1) * 50)
    mine = current_user.is_authenticated and to == current_user.email
    return render_template("devmail/inbox.html", messages=rows[:50], to=to, page=page,
                           has_more=len(rows) > 50, mine=mine, scope={"to": to} if to else {"all": 1})


#: A URL in a text mail, up to whitespace or a character that cannot end one.
_URL = re.compile(r"https?://[^\s<>\"'()\[\]]+")


def linkify(text: str, origin: str) -> Markup:
    """Escape a text mail, then make the site's own links (``origin``) clickable.

    The text is split on URLs first and every piece escaped on its own, so
    nothing in a message can become markup; other sites' URLs stay text.
    """
    out, last = [], 0
    for match in _URL.finditer(text):
        url = match.group(0).rstrip(".,;:!?")
        if url != origin and not url.startswith(origin + "/"):
            continue
        out += [escape(text[last:match.start()]),
                Markup('<a href="{0}" rel="noopener">{0}</a>').format(url)]
        last = match.start() + len(url)
    out.append(escape(text[last:]))
    return Markup("").join(out)


def one_click_path(headers: dict, origin: str) -> str | None:
    """The site path a mail provider would POST to for RFC 8058 one-click unsubscribe."""
    if headers.get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click":
        return None
    for url in re.findall(r"<([^>]+)>", headers.get("List-Unsubscribe", "")):
        if url.startswith(origin + "/"):
            return url[len(origin):]  # same site: the form posts to it under CSP form-action 'self'
    return None


@bp.get("/<id:message_id>")
def message(message_id: int):
    """One message: its HTML, text, headers or raw source."""
    row = mail.message(get_db(), message_id)
    if row is None:
        abort(404, description=f"There is no message #{message_id}.")
    view = request.args.get("view", "html" if row["body_html"] else "text")
    if view not in VIEWS:
        abort(400, description=f"view must be one of {', '.join(VIEWS)}")
    headers = json.loads(row["headers"] or "{}")
    safe_html = nh3.clean(row["body_html"] or "", link_rel="noopener") if row["body_html"] else None
    origin = site.origin()
    return render_template("devmail/message.html", message=row, headers=headers, view=view,
                           views=VIEWS, safe_html=safe_html, raw=mail.raw(row),
                           text_html=linkify(row["body_text"] or "", origin),
                           one_click=one_click_path(headers, origin))
