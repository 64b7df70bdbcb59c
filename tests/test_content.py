"""Articles: the demo set, Markdown rendering, sanitising and the teaser cut."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest

from gate.services import content, seed
from gate.services.content import ContentError, render, split_teaser, validate_article

MD = "One para.\n\nTwo para.\n\nThree para.\n\n## Heading\n\nFour para.\n\n- a list\n"


def test_demo_articles_meet_the_brief():
    rows = seed.load_articles()
    assert len(rows) >= 12
    assert len({row["section"] for row in rows}) >= 4
    classes = [row["access_class"] for row in rows]
    assert classes.count("free") >= 1 and classes.count("premium") >= 1
    assert classes.count("metered") > len(rows) / 2
    for row in rows:
        assert 600 <= row["word_count"] <= 1200, row["slug"]
        assert row["author"] and row["dek"]


def test_no_sentence_is_repeated_across_articles():
    """The leak tests look for gated sentences, so each must be unique."""
    seen = {}
    for row in seed.load_articles():
        for sentence in row["body_md"].replace("\n", " ").split(". "):
            if len(sentence.split()) >= 8:
                assert sentence not in seen, (row["slug"], seen.get(sentence))
                seen[sentence] = row["slug"]


@pytest.mark.parametrize("count, expected", [(1, "One para."), (2, "One para.\n\nTwo para."),
                                             (3, "One para.\n\nTwo para.\n\nThree para."),
                                             (9, "One para.\n\nTwo para.\n\nThree para.")])
def test_teaser_takes_leading_paragraphs_only(count, expected):
    teaser, more = split_teaser(MD, count)
    assert teaser == expected
    assert more is True


def test_teaser_of_a_short_article_says_nothing_more():
    assert split_teaser("Only one.\n", 3) == ("Only one.", False)


@pytest.mark.parametrize("payload", [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    '<a href="#" onclick="alert(1)">x</a>',
    "<iframe src='https://evil.example'></iframe>",
])
def test_rendering_leaves_no_active_content(payload):
    elements = _elements(render(f"Text before.\n\n{payload}\n"))
    assert not {tag for tag, _ in elements} & {"script", "img", "iframe"}
    for _tag, attrs in elements:
        assert not [name for name, _ in attrs if name.startswith("on")]
        assert all("javascript:" not in (value or "").lower() for _, value in attrs)


def _elements(html: str) -> list[tuple[str, list]]:
    """The real elements of an HTML fragment (escaped text is not an element)."""
    found = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collector().feed(html)
    return found


def test_element_collector_sees_live_markup():
    """Guard the check above: it does flag a live handler."""
    assert _elements('<img src=x onerror="alert(1)">') == [("img", [("src", "x"), ("onerror", "alert(1)")])]


def test_rendering_keeps_structure():
    html = render("Para *em* and **strong**.\n\n## Sub\n\n> quote\n\n- item\n")
    for tag in ("<em>", "<strong>", "<h2>", "<blockquote>", "<li>"):
        assert tag in html


def _article(**changes):
    data = {"slug": "a-piece", "title": "T", "section": "Economy",
            "published_at": "2026-11-01T10:00:00-05:00", "body_md": "Body.\n"}
    data.update(changes)
    return data


@pytest.mark.parametrize("changes, message", [
    ({"slug": "Bad Slug"}, "slug"),
    ({"access": "vip"}, "access"),
    ({"published_at": "2026-11-01T10:00:00"}, "published_at"),
    ({"title": ""}, "title: missing"),
    ({"colour": "red"}, "colour: unknown key"),
])
def test_article_validation_names_the_problem(changes, message):
    with pytest.raises(ContentError, match=message):
        validate_article(_article(**changes), source="x.md")


def test_article_file_without_front_matter(tmp_path):
    path = tmp_path / "loose.md"
    path.write_text("Just text.\n")
    with pytest.raises(ContentError, match="front matter"):
        content.parse_article_file(path)


def test_synthetic_articles_are_reproducible_and_valid():
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    first = list(content.synthetic_articles(50, ["A", "B"], start))
    again = list(content.synthetic_articles(50, ["A", "B"], start))
    assert first == again
    assert len({row["slug"] for row in first}) == 50
    for row in first:
        validate_article({k: row[k] for k in ("slug", "title", "section", "published_at", "body_md",
                                               "dek", "author")} | {"access": row["access_class"]})
        assert split_teaser(row["body_md"], 3)[1]


# --- the articles table, on both engines (backend) -----------------------------------------

NOW = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)


def _row(slug, published, section="Economy", title="T"):
    return validate_article({"slug": slug, "title": title, "section": section, "published_at": published,
                             "body_md": "Body.\n"})


def test_published_latest_and_by_slugs(backend):
    for slug, days, section in [("old", 3, "Economy"), ("mid", 2, "Climate"), ("new", 1, "Economy"),
                                ("future", -1, "Economy")]:
        backend.insert("articles", _row(slug, NOW - timedelta(days=days), section))
    assert content.published(backend, "new", NOW).title == "T"
    assert content.published(backend, "future", NOW) is None  # not out yet: it does not exist
    assert content.published(backend, "nowhere", NOW) is None
    assert content.published(backend, "future", NOW + timedelta(days=2)).slug == "future"
    assert [a.slug for a in content.latest(backend, NOW)] == ["new", "mid", "old"]
    assert [a.slug for a in content.latest(backend, NOW, section="Economy")] == ["new", "old"]
    assert [a.slug for a in content.latest(backend, NOW, limit=1, offset=1)] == ["mid"]
    assert sorted(content.by_slugs(backend, ["old", "future", "nowhere"])) == ["future", "old"]
    assert content.by_slugs(backend, []) == {}


def test_seeding_is_idempotent_and_updates_edited_articles(backend, tmp_path):
    assert seed.needs_articles(backend)
    count = seed.seed_articles(backend)
    assert count == len(seed.load_articles()) and not seed.needs_articles(backend)
    assert seed.seed_articles(backend) == count
    assert backend.scalar("select count(*) from articles") == count
    source = sorted(seed.ARTICLES_DIR.glob("*.md"))[0]
    edited = tmp_path / source.name
    edited.write_text(source.read_text(encoding="utf-8").replace('title = "', 'title = "Edited: ', 1))
    before = backend.first("select id, title from articles where slug = ?", [source.stem])
    seed.seed_articles(backend, tmp_path)
    after = backend.first("select id, title from articles where slug = ?", [source.stem])
    assert after == {"id": before["id"], "title": "Edited: " + before["title"]}
    assert backend.scalar("select count(*) from articles") == count


def test_schedule_synthetic_and_desk_add_only_new_slugs(backend):
    from gate.conf.settings import Config
    from gate.services import desk

    tz = ZoneInfo("America/New_York")
    scheduled = seed.seed_schedule(backend, NOW, tz)
    assert scheduled == len(list(seed.SCHEDULE_DIR.glob("*.md"))) and seed.seed_schedule(backend, NOW, tz) == 0
    assert seed.seed_synthetic(backend, 7, ["Economy"], NOW) == 7
    assert seed.seed_synthetic(backend, 9, ["Economy"], NOW) == 2  # the first seven are kept as they are
    assert backend.scalar("select count(*) from articles where synthetic = 1") == 9
    cfg = Config()
    assert desk.publish_through(backend, cfg, NOW) == 0  # the schedule has not run out yet
    later = NOW + timedelta(days=90)
    added = desk.publish_through(backend, cfg, later)
    assert added > 0 and desk.publish_through(backend, cfg, later) == 0
    assert backend.scalar("select count(*) from articles where slug like 'desk-%'") == added
