"""Archive search: full text over titles, deks and bodies, with snippets by tier.

Subscribers search everything and see snippets from the body. Everyone else
searches titles and deks only and sees snippets from the dek, so a snippet
never holds text the searcher could not read. Reader input is never passed
to the engine as syntax: it is split into words and quoted phrases, each quoted.

SQLite uses the FTS5 table ``articles_fts``; PostgreSQL the weighted
``articles.search`` tsvector (title A, dek B, body C; see migration m008)
with ``websearch_to_tsquery``, ``ts_rank`` and ``ts_headline``.
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


def quoted_terms(text: str) -> str | None:
    """Reader input as its first MAX_TERMS words and "quoted phrases", each quoted; None without words.

    Only word characters survive inside the quotes, so operators (AND, OR,
    NOT, NEAR, *, -, ^, :), stray quotes and control characters are only
    words or nothing, for FTS5 and for ``websearch_to_tsquery`` alike.
    """
    terms = []
    for phrase, word in _TOKENS.findall(text or ""):
        words = re.findall(r"\w+", phrase, re.UNICODE) if phrase else [word]
        if words:
            terms.append('"' + " ".join(words) + '"')
    return " ".join(terms[:MAX_TERMS]) if terms else None


def match_expression(text: str, body: bool) -> str | None:
    """A safe FTS5 MATCH expression for reader input, or None when it has no words."""
    expression = quoted_terms(text)
    if expression is None or body:
        return expression
    return "{title dek} : (" + expression + ")"


def _mark(text: str | None) -> str:
    """Escape FTS output and turn its hit markers into <mark> elements."""
    plain = re.sub(r"(^|\s)[-+](?=\s)", " ", re.sub(r"[#*_>`]+", " ", text or ""))
    escaped = html.escape(plain)
    return escaped.replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>")


def search(db, text: str, *, body: bool, now: datetime, page: int = 1) -> Results:
    """Search published articles; ``body`` is true for readers with full access."""
    scope = "titles, deks and full text" if body else "titles and summaries"
    page = max(1, page)
    if getattr(db, "dialect", "sqlite") == "postgresql":
        return _search_postgres(db, text, body=body, now=now, page=page, scope=scope)
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


#: ts_rank's weights for D, C (body), B (dek) and A (title): the title counts most, as in bm25 above.
_PG_WEIGHTS = "{0, 0.1, 0.4, 1.0}"
_PG_TITLE = f"StartSel={_OPEN}, StopSel={_CLOSE}, HighlightAll=true"
_PG_SNIPPET = f'StartSel={_OPEN}, StopSel={_CLOSE}, MaxWords=28, MinWords=12, MaxFragments=2, FragmentDelimiter=" … "'


def _search_postgres(db, text: str, *, body: bool, now: datetime, page: int, scope: str) -> Results:
    """The same search on PostgreSQL's weighted tsvector ``articles.search``.

    The query is :func:`quoted_terms` given to ``websearch_to_tsquery``, which
    never raises. For non-subscribers the match and the rank use only the A
    (title) and B (dek) lexemes (``ts_filter``) and the snippet is cut from the
    dek: the body is neither searched nor read. The text given to
    ``ts_headline`` loses any hit markers of its own, so only the engine's mark hits.
    """
    terms = quoted_terms(text)
    if terms is None:
        return Results(text, [], 0, page, scope)
    vector = "a.search" if body else "ts_filter(a.search, '{a,b}')"
    snippet_source = "a.body_md" if body else "a.dek"
    matches = f"""from articles a where a.search @@ websearch_to_tsquery('english', :q)
        and {vector} @@ websearch_to_tsquery('english', :q) and a.published_at <= :now"""
    params = {"q": terms, "now": to_iso(now), "limit": PER_PAGE, "offset": (page - 1) * PER_PAGE,
              "markers": _OPEN + _CLOSE, "title_options": _PG_TITLE, "snippet_options": _PG_SNIPPET}
    found = db.rows(f"""
        select a.slug, a.section, a.published_at, a.access_class,
               ts_headline('english', translate(a.title, :markers, ''), websearch_to_tsquery('english', :q),
                           :title_options) as title,
               ts_headline('english', translate({snippet_source}, :markers, ''),
                           websearch_to_tsquery('english', :q), :snippet_options) as snip
        from (select a.id, ts_rank('{_PG_WEIGHTS}', {vector}, websearch_to_tsquery('english', :q)) as rank
              {matches}
              order by rank desc, a.published_at desc, a.id desc limit :limit offset :offset) hit
        join articles a on a.id = hit.id
        order by hit.rank desc, a.published_at desc, a.id desc""", params)
    total = db.scalar(f"select count(*) {matches}", params)
    hits = [Hit(row["slug"], _mark(row["title"]), _mark(row["snip"]), row["section"], row["published_at"],
                row["access_class"]) for row in found]
    return Results(text, hits, total, page, scope)
