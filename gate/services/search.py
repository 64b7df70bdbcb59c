"""Archive search: FTS5 over titles, deks and bodies, with snippets by tier.

Subscribers search everything and see snippets from the body. Everyone else
searches titles and deks only and sees snippets from the dek, so a snippet
never holds text the searcher could not read. Reader input is never passed
to FTS5 as syntax: it is split into words and quoted phrases, each quoted.
"""

from __future__ import annotations

import html
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from gate.rules.timeutil import to_iso

PER_PAGE = 10
MAX_TERMS = 12
_OPEN, _CLOSE = "\x02", "\x03"  # markers FTS puts around hits; escaped text can't contain them
_TOKENS = re.compile(r'"([^"]*)"|(\w+)', re.UNICODE)


@dataclass(frozen=True)
class Hit:
    """One search result: safe HTML for the title and the snippet."""

    slug: str
    title_html: str
    snippet_html: str
    section: str
    published_at: str
    access_class: str


@dataclass(frozen=True)
class Results:
    """A page of results."""

    query: str
    hits: list[Hit]
    total: int
    page: int
    scope: str
    error: str | None = None

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PER_PAGE))


def match_expression(text: str, body: bool) -> str | None:
    """A safe FTS5 MATCH expression for reader input, or None when it has no words.

    Every word or "quoted phrase" becomes a quoted FTS5 string, so operators
    (AND, OR, NOT, NEAR, *, -, ^, :) in the input are only words.
    """
    terms = []
    for phrase, word in _TOKENS.findall(text or ""):
        words = re.findall(r"\w+", phrase, re.UNICODE) if phrase else [word]
        if words:
            terms.append('"' + " ".join(words) + '"')
    if not terms:
        return None
    expression = " ".join(terms[:MAX_TERMS])
    return expression if body else "{title dek} : (" + expression + ")"


def _mark(text: str | None) -> str:
    """Escape FTS output and turn its hit markers into <mark> elements."""
    plain = re.sub(r"(^|\s)[-+](?=\s)", " ", re.sub(r"[#*_>`]+", " ", text or ""))
    escaped = html.escape(plain)
    return escaped.replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>")


def search(db, text: str, *, body: bool, now: datetime, page: int = 1) -> Results:
    """Search published articles; ``body`` is true for readers with full access."""
    scope = "titles, deks and full text" if body else "titles and summaries"
    page = max(1, page)
    expression = match_expression(text, body)
    if expression is None:
        return Results(text, [], 0, page, scope)
    snippet_column = 2 if body else 1
    sql = f"""
        select a.slug, a.section, a.published_at, a.access_class,
               highlight(articles_fts, 0, '{_OPEN}', '{_CLOSE}') as title,
               snippet(articles_fts, {snippet_column}, '{_OPEN}', '{_CLOSE}', '…', 28) as snip
        from articles_fts join articles a on a.rowid = articles_fts.rowid
        where articles_fts match :q and a.published_at <= :now
        order by bm25(articles_fts, 10.0, 4.0, 1.0), a.published_at desc
        limit :limit offset :offset"""
    params = {"q": expression, "now": to_iso(now), "limit": PER_PAGE, "offset": (page - 1) * PER_PAGE}
    try:
        rows = db.execute(sql, params).fetchall()
        total = db.execute(
            "select count(*) from articles_fts join articles a on a.rowid = articles_fts.rowid"
            " where articles_fts match :q and a.published_at <= :now", params).fetchone()[0]
    except sqlite3.OperationalError:
        return Results(text, [], 0, page, scope, error="That search could not be understood.")
    hits = [Hit(slug, _mark(title), _mark(snip), section, published, cls)
            for slug, section, published, cls, title, snip in rows]
    return Results(text, hits, total, page, scope)
