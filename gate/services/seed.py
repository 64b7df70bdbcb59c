"""Demo content and demo accounts, loaded into a site database."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from gate.conf.resources import PACKAGE
from gate.services import accounts, content, subscriptions

ARTICLES_DIR = PACKAGE / "demo" / "articles"
SCHEDULE_DIR = PACKAGE / "demo" / "schedule"

#: Demo accounts: (email, password, subscriber, admin). Printed by `gate demo`.
DEMO_ACCOUNTS = (
    ("reader@meridian.example", "reader-pass-1", False, False),
    ("subscriber@meridian.example", "subscriber-pass-1", True, False),
    ("admin@meridian.example", "admin-pass-1", True, True),
)


def load_articles(directory: Path = ARTICLES_DIR) -> list[dict]:
    """Parse and validate every article file, all or nothing."""
    return [content.parse_article_file(path) for path in sorted(directory.glob("*.md"))]


def seed_articles(db, directory: Path = ARTICLES_DIR) -> int:
    """Insert or update the demo articles, all in one transaction; returns how many there are."""
    rows = load_articles(directory)
    with db.transaction():
        for row in rows:  # one statement per article: an upsert on the unique slug needs no lock
            db.upsert("articles", row, ["slug"])
    return len(rows)


def insert_new_articles(db, rows) -> int:
    """Insert the articles whose slugs are not taken yet, in one transaction; how many went in."""
    with db.transaction():
        return sum(db.insert_ignore("articles", row) for row in rows)


def needs_articles(db) -> bool:
    """Whether the site has no articles yet (a fresh demo database is seeded once)."""
    return db.first("select 1 from articles limit 1") is None


def seed_schedule(db, now: datetime, tz, directory: Path = SCHEDULE_DIR) -> int:
    """Add the upcoming articles, dated from today (site time); existing slugs are kept."""
    start = now.astimezone(tz).date()
    rows = [content.parse_scheduled_file(path, start, tz) for path in sorted(directory.glob("*.md"))]
    return insert_new_articles(db, rows)


def seed_synthetic(db, count: int, sections: list[str], now: datetime, seed: int = 42) -> int:
    """Add ``count`` generated articles; slugs already present are kept as they are."""
    return insert_new_articles(db, content.synthetic_articles(count, sections, now, seed=seed))


def seed_demo_accounts(db, cfg, now: datetime) -> list[tuple[str, str, str]]:
    """Create the demo accounts that are missing; returns (email, password, role)."""
    created = []
    for email, password, subscriber, admin in DEMO_ACCOUNTS:
        if accounts.by_email(db, email) is None:
            reader = accounts.create(db, email, password, now, admin=admin)
            if subscriber:
                subscriptions.grant(db, cfg, reader.id, cfg.plans[0].id, now, by="demo")
        role = "admin" if admin else "subscriber" if subscriber else "registered reader"
        created.append((email, password, role))
    return created
