"""Articles: Markdown in, sanitised HTML out, and the teaser split.

The teaser is cut from the Markdown source before rendering, so the gated
remainder is never part of what a teaser response is built from.
"""

from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path

import nh3
from markdown_it import MarkdownIt

from gate.rules.timeutil import from_iso, to_iso
from gate.storage.db import first, rows

ACCESS_CLASSES = ("metered", "free", "premium")
#: What an Article is read from (never ``select *``: on PostgreSQL that drags the search tsvector along).
COLUMNS = "id, slug, title, dek, author, section, published_at, access_class, body_md, word_count, synthetic"
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": True})
_markdown.enable(["replacements", "smartquotes"])
ALLOWED_TAGS = {"p", "h2", "h3", "h4", "ul", "ol", "li", "blockquote", "em", "strong", "a",
                "code", "pre", "hr", "br"}


class ContentError(ValueError):
    """An article file that cannot be published as it is."""


@dataclass(frozen=True)
class Article:
    """An article as the site and the engine see it."""

    slug: str
    title: str
    dek: str
    author: str
    section: str
    published_at: datetime
    access_class: str
    body_md: str
    word_count: int = 0

    @classmethod
    def from_row(cls, row: dict) -> "Article":
        """Build from an ``articles`` row."""
        return cls(
            slug=row["slug"], title=row["title"], dek=row["dek"] or "", author=row["author"] or "",
            section=row["section"], published_at=from_iso(row["published_at"]),
            access_class=row["access_class"], body_md=row["body_md"],
            word_count=row["word_count"] or 0,
        )

    def summary(self) -> dict:
        """The public listing fields (never any body text)."""
        return {
            "slug": self.slug, "title": self.title, "dek": self.dek, "author": self.author,
            "section": self.section, "published_at": self.published_at.isoformat(),
            "access_class": self.access_class,
        }


def published(db, slug: str, now: datetime) -> Article | None:
    """The article at ``slug`` if it is out by ``now``, else None (a future article does not exist yet)."""
    row = first(db, f"select {COLUMNS} from articles where slug = ?", [slug])
    return out_by(Article.from_row(row) if row else None, now)


def out_by(article: Article | None, now: datetime) -> Article | None:
    """The article if it is published by ``now``, else None."""
    return article if article and article.published_at <= now else None


def latest(db, now: datetime, limit: int = 20, section: str | None = None, offset: int = 0) -> list[Article]:
    """Published articles, newest first, optionally of one section."""
    where, params = "published_at <= ?", [to_iso(now)]
    if section:
        where += " and section = ?"
        params.append(section)
    found = rows(db, f"select {COLUMNS} from articles where {where} order by published_at desc, id desc"
                 " limit ? offset ?", [*params, limit, offset])
    return [Article.from_row(row) for row in found]


def by_slugs(db, slugs: list[str]) -> dict[str, Article]:
    """The articles with these slugs (published or not), by slug: what a meter was spent on."""
    if not slugs:
        return {}
    marks = ",".join("?" * len(slugs))
    found = rows(db, f"select {COLUMNS} from articles where slug in ({marks})", slugs)
    return {row["slug"]: Article.from_row(row) for row in found}


def render(markdown_text: str) -> str:
    """Markdown to HTML, then sanitised: no raw HTML, scripts or handlers survive."""
    html = _markdown.render(markdown_text)
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}},
                     url_schemes={"http", "https", "mailto"}, link_rel="noopener nofollow")


def split_teaser(markdown_text: str, paragraphs: int) -> tuple[str, bool]:
    """The Markdown of the first ``paragraphs`` top-level paragraphs, and whether more follows."""
    teaser, rest = split_parts(markdown_text, paragraphs)
    return teaser, bool(rest)


def split_parts(markdown_text: str, paragraphs: int) -> tuple[str, str]:
    """The Markdown of the first ``paragraphs`` top-level paragraphs, and the rest.

    The cut is made at a block boundary from markdown-it's source map, so a
    teaser never ends mid-sentence or inside a list.
    """
    lines = markdown_text.splitlines()
    seen, end = 0, 0
    for token in _markdown.parse(markdown_text):
        if token.level != 0 or token.map is None or token.nesting == -1:
            continue
        if token.type != "paragraph_open":
            break
        seen += 1
        end = token.map[1]
        if seen == paragraphs:
            break
    return "\n".join(lines[:end]).strip(), "\n".join(lines[end:]).strip()


@lru_cache(maxsize=4096)
def _rendered(body_md: str) -> str:
    return render(body_md)


@lru_cache(maxsize=4096)
def _teaser(body_md: str, paragraphs: int) -> str:
    return render(split_teaser(body_md, paragraphs)[0])


def body_html(article: Article) -> str:
    """The full article, rendered and sanitised (only for viewers with full access)."""
    return _rendered(article.body_md)


def teaser_html(article: Article, paragraphs: int) -> str:
    """The first paragraphs only, rendered from the teaser's own source."""
    return _teaser(article.body_md, paragraphs)


@lru_cache(maxsize=4096)
def _gated(body_md: str, paragraphs: int) -> str:
    return render(split_parts(body_md, paragraphs)[1])


def gated_html(article: Article, paragraphs: int) -> str:
    """Everything after the teaser (only for viewers with full access)."""
    return _gated(article.body_md, paragraphs)


def json_ld(article: Article, access_class: str, publisher: str, url: str) -> dict:
    """schema.org NewsArticle metadata, marking the gated part for search engines."""
    data = {
        "@context": "https://schema.org", "@type": "NewsArticle", "headline": article.title,
        "description": article.dek, "datePublished": article.published_at.isoformat(),
        "author": {"@type": "Person", "name": article.author}, "articleSection": article.section,
        "publisher": {"@type": "Organization", "name": publisher}, "url": url,
        "isAccessibleForFree": access_class == "free",
    }
    if access_class != "free":
        data["hasPart"] = {"@type": "WebPageElement", "isAccessibleForFree": False,
                           "cssSelector": ".story__gated"}
    return data


def _front_matter(path: Path) -> tuple[dict, str]:
    """Split a file into its TOML front matter (between '+++' lines) and Markdown body."""
    text = path.read_text(encoding="utf-8")
    parts = text.split("+++", 2)
    if len(parts) != 3 or parts[0].strip():
        raise ContentError(f"{path}: must start with TOML front matter between +++ lines")
    try:
        return tomllib.loads(parts[1]), parts[2].strip() + "\n"
    except tomllib.TOMLDecodeError as error:
        raise ContentError(f"{path}: front matter is not valid TOML: {error}") from None


def parse_article_file(path: Path) -> dict:
    """Read an article file: TOML front matter between '+++' lines, then Markdown."""
    meta, body = _front_matter(path)
    return validate_article({**meta, "slug": path.stem, "body_md": body}, source=str(path))


def parse_scheduled_file(path: Path, start: date, tz) -> dict:
    """Read an upcoming article, dated relative to ``start`` (a local date).

    ``weekday = N`` publishes on the N-th weekday after ``start``; ``saturday = N``
    on the N-th Saturday; ``at = "HH:MM"`` is the local time.
    """
    meta, body = _front_matter(path)
    weekday, saturday, at = meta.pop("weekday", None), meta.pop("saturday", None), meta.pop("at", None)
    if (weekday is None) == (saturday is None):
        raise ContentError(f"{path}: give exactly one of weekday = N or saturday = N")
    if not isinstance(at, str) or not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", at):
        raise ContentError(f"{path}: at: must be a local time like \"07:30\"")
    count, wanted = (weekday, lambda d: d.weekday() < 5) if weekday else (saturday, lambda d: d.weekday() == 5)
    if not isinstance(count, int) or count < 1:
        raise ContentError(f"{path}: weekday/saturday must be a whole number from 1")
    day = start
    while count:
        day += timedelta(days=1)
        count -= wanted(day)
    hour, minute = (int(part) for part in at.split(":"))
    published = datetime.combine(day, time(hour, minute)).replace(tzinfo=tz)
    return validate_article({**meta, "slug": path.stem, "body_md": body, "published_at": published},
                            source=str(path))


def validate_article(data: dict, source: str = "article") -> dict:
    """Check an article's fields and return the row to store."""
    required = ("slug", "title", "section", "published_at", "body_md")
    known = set(required) | {"dek", "author", "access"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ContentError(f"{source}: {unknown[0]}: unknown key")
    for key in required:
        if not str(data.get(key, "")).strip():
            raise ContentError(f"{source}: {key}: missing")
    if not _SLUG.match(data["slug"]):
        raise ContentError(f"{source}: slug: use lowercase words joined by hyphens")
    access = data.get("access", "metered")
    if access not in ACCESS_CLASSES:
        raise ContentError(f"{source}: access: must be one of {', '.join(ACCESS_CLASSES)}")
    published = data["published_at"]
    if isinstance(published, str):
        published = datetime.fromisoformat(published)
    if not isinstance(published, datetime) or published.tzinfo is None:
        raise ContentError(f"{source}: published_at: must be a date-time with an offset")
    return {
        "slug": data["slug"], "title": data["title"].strip(), "dek": data.get("dek", "").strip(),
        "author": data.get("author", "").strip(), "section": data["section"],
        "published_at": to_iso(published), "access_class": access, "body_md": data["body_md"],
        "word_count": len(data["body_md"].split()),
    }


_WORDS = (
    "policy trade border alliance budget ministry treaty harbour grid tariff reserve "
    "coalition mandate summit export pipeline frontier ledger council charter forecast "
    "inflation corridor tender bond subsidy drought monsoon reactor satellite cable "
    "ceasefire census quota refinery aquifer parliament envoy lender audit doctrine"
).split()


def synthetic_articles(count: int, sections: list[str], start: datetime, seed: int = 42):
    """Generate ``count`` plausible articles for load tests, reproducibly from a seed."""
    rng = random.Random(seed)
    for number in range(1, count + 1):
        words = [rng.choice(_WORDS) for _ in range(6)]
        paragraphs = []
        for p in range(6):
            sentences = []
            for s in range(4):
                body = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 14)))
                sentences.append(f"{body.capitalize()} (piece {number}, part {p}.{s}).")
            paragraphs.append(" ".join(sentences))
        body_md = "\n\n".join(paragraphs[:3]) + "\n\n## Analysis\n\n" + "\n\n".join(paragraphs[3:])
        roll = rng.random()
        yield {
            "slug": f"synthetic-{number:06d}",
            "title": " ".join(words).capitalize(),
            "dek": f"Synthetic article {number} for load testing.",
            "author": "Synthetic Desk",
            "section": sections[number % len(sections)],
            "published_at": to_iso(start - timedelta(minutes=number)),
            "access_class": "free" if roll < 0.1 else "premium" if roll < 0.2 else "metered",
            "body_md": body_md + "\n",
            "word_count": len(body_md.split()),
            "synthetic": 1,
        }
