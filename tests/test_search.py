"""Archive search: ranking, snippets by tier, hostile queries, pagination.

The service tests (``backend``) run on SQLite's FTS5 and on PostgreSQL's
tsvector. The site tests run on SQLite; their PostgreSQL runs are expected to
fail until ``create_app`` accepts a database URL (SITE_ENGINES, strict: they
report as passing unexpectedly once it does, and the mark comes off).
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone

import pytest

from gate.services import content, search, seed
from gate.storage.db import open_database
from tests.helpers import START, articles, gated_sentences

SUBSCRIBER = ("searcher@example.com", "search-pass-1")
SITE_ENGINES = pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.xfail(
    reason="the site starts on PostgreSQL once create_app accepts a URL (i14-core)", strict=True))],
    indirect=True)
HOSTILE = ['"', '""', "AND", "OR NOT", "NEAR(a b)", "*", "-", "col:umn", "^start", "{title}: x",
           "a AND", '"unterminated phrase', "((", "))", "'; drop table articles; --", "\x00", "ü∂ƒ ©",
           "x" * 500, "x" * 5000, "debt\x00 <b>", "-debt or !drones & (water | ':*)", "the of and", "x:*"]


# --- the service, on both engines ---------------------------------------------------------


@pytest.fixture
def archive(backend):
    """A database of either engine holding the demo articles."""
    seed.seed_articles(backend)
    return backend


def find(db, query, body, page=1, now=START):
    return search.search(db, query, body=body, now=now, page=page)


def plain(marked_html: str) -> str:
    """The text of a title or snippet, without its <mark> elements."""
    return html.unescape(marked_html.replace("<mark>", "").replace("</mark>", ""))


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def plant(db, slug, title, dek="", body="Nothing to see here.", published=START - timedelta(days=1)):
    """Add one article (validated as a file would be)."""
    db.insert("articles", content.validate_article({
        "slug": slug, "title": title, "dek": dek, "section": "Economy", "published_at": published,
        "body_md": body + "\n"}))


def test_subscribers_find_body_words_and_others_do_not(archive):
    found = find(archive, "seamanship", body=True)  # only in the body of the Baltic seabed piece
    assert [hit.slug for hit in found.hits] == ["baltic-seabed-natos-exposed-frontier"] and found.total == 1
    assert "<mark>" in found.hits[0].snippet_html and "seamanship" in found.hits[0].snippet_html.lower()
    assert found.scope == "titles, deks and full text"
    nothing = find(archive, "seamanship", body=False)
    assert nothing.hits == [] and nothing.total == 0 and nothing.scope == "titles and summaries"


def test_others_find_titles_and_deks(archive):
    assert [hit.slug for hit in find(archive, "Baltic", body=False).hits] == ["baltic-seabed-natos-exposed-frontier"]


def test_snippets_for_others_hold_only_title_and_dek_words(archive):
    """Nothing a non-subscriber sees in a result comes from a body, however the query matched."""
    demo, checked = articles(), set()
    for query in ("debt", "drones", "carbon border", "semiconductor", "water", "election", "the", "Baltic"):
        for hit in find(archive, query, body=False).hits:
            checked.add(hit.slug)
            public = words(demo[hit.slug]["title"] + " " + demo[hit.slug]["dek"])
            shown = plain(hit.title_html) + " " + plain(hit.snippet_html)
            assert words(shown) <= public, (query, hit.slug, words(shown) - public)
            assert not [s for s in gated_sentences(hit.slug, paragraphs=1) if s in shown], (query, hit.slug)
    assert len(checked) >= 4  # the queries found articles: the check ran on real snippets


def test_a_title_match_ranks_above_body_matches(archive):
    plant(archive, "zeppelins-return", "Zeppelins return to the skies", published=START - timedelta(days=9))
    plant(archive, "airships-everywhere", "Airships everywhere",
          body="Zeppelin rides over the bay are back. " + "Tourists queue for hours at the mast. " * 6)
    plant(archive, "dek-only", "Lighter than air", dek="A zeppelin story.", published=START - timedelta(days=5))
    assert [hit.slug for hit in find(archive, "zeppelin", body=True).hits] == [
        "zeppelins-return", "dek-only", "airships-everywhere"]
    assert [hit.slug for hit in find(archive, "zeppelin", body=False).hits] == ["zeppelins-return", "dek-only"]
    assert find(archive, "drones", body=True).hits[0].slug == "mid-sized-militaries-buying-drones-faster"


def test_all_words_must_match_and_phrases_keep_their_order(archive):
    plant(archive, "grid-story", "Grid batteries for evening peaks")
    assert [hit.slug for hit in find(archive, '"grid batteries"', body=False).hits] == ["grid-story"]
    assert find(archive, '"batteries grid"', body=False).total == 0
    assert find(archive, "grid seamanship", body=False).total == 0


def test_hostile_queries_are_only_words(archive):
    before = archive.scalar("select count(*) from articles")
    for query in HOSTILE:  # one database for them all: a schema per query would cost seconds
        for body in (True, False):
            found = find(archive, query, body=body)
            assert found.error is None and found.total >= len(found.hits), query
            for hit in found.hits:
                assert "<" not in hit.snippet_html.replace("<mark>", "").replace("</mark>", ""), query
    assert archive.scalar("select count(*) from articles") == before
    assert find(archive, "drones", body=False).total == 1  # the connection is still usable


def test_future_articles_are_not_found_until_their_time(archive):
    plant(archive, "future-zeppelins", "Zeppelins return", published=START + timedelta(days=30))
    assert find(archive, "zeppelins", body=True).total == 0
    later = find(archive, "zeppelins", body=True, now=START + timedelta(days=31))
    assert [hit.slug for hit in later.hits] == ["future-zeppelins"]


def test_pages_split_the_results(archive):
    assert seed.seed_synthetic(archive, 25, ["Economy"], datetime(2026, 11, 1, tzinfo=timezone.utc)) == 25
    first, third = find(archive, "synthetic", body=False), find(archive, "synthetic", body=False, page=3)
    assert first.total == 25 and len(first.hits) == 10 and first.pages == 3
    assert third.total == 25 and len(third.hits) == 5
    pages = [hit.slug for page in (1, 2, 3) for hit in find(archive, "synthetic", body=False, page=page).hits]
    assert len(set(pages)) == 25
    assert find(archive, "synthetic", body=False, page=4).hits == []


def test_highlight_markup_around_escaped_article_text(archive):
    plant(archive, "markup", 'Zeppelin <img src=x onerror="alert(1)"> & co',
          dek="<script>alert(1)</script> zeppelin dek", body="zeppelin <b>bold</b> body")
    for body in (True, False):
        hit = find(archive, "zeppelin", body=body).hits[0]
        for part in (hit.title_html, hit.snippet_html):
            assert set(re.findall(r"<[^>]*>", part)) <= {"<mark>", "</mark>"}, part
        assert hit.title_html.startswith("<mark>Zeppelin</mark>")


def test_article_text_cannot_forge_hit_markers(pg_database):
    """ts_headline returns the text it was given: hit markers inside an article are dropped first."""
    db = open_database(pg_database)
    try:
        plant(db, "forged", "Zeppelin \x02forged\x03 and \x02open", dek="\x03zeppelin\x02",
              body="zeppelin \x02body\x03")
        for body in (True, False):
            hit = find(db, "zeppelin", body=body).hits[0]
            for part in (hit.title_html, hit.snippet_html):
                assert part.count("<mark>") == part.count("</mark>") == 1, part
    finally:
        db.close()


# --- the site ------------------------------------------------------------------------------


@pytest.fixture
def subscriber(reader, runner):
    runner.invoke(args=["readers", "add", SUBSCRIBER[0], "--password", SUBSCRIBER[1], "--subscriber"])
    reader.login(*SUBSCRIBER)
    return reader


def results(client, query, page=1):
    response = client.get("/search", query_string={"q": query, "page": page})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def slugs(page: str) -> list[str]:
    return re.findall(r'<h2 class="result__title"><a href="/articles/([a-z0-9-]+)"', page)


@SITE_ENGINES
def test_subscriber_searches_full_text_with_body_snippets(subscriber, client):
    page = results(client, "seamanship")  # only in the body of the Baltic seabed piece
    assert "baltic-seabed-natos-exposed-frontier" in slugs(page)
    assert "<mark>" in page and "full text" in page


@SITE_ENGINES
def test_others_search_titles_and_deks_only(client):
    assert slugs(results(client, "seamanship")) == []
    page = results(client, "Baltic")
    assert slugs(page) == ["baltic-seabed-natos-exposed-frontier"]
    assert "titles and summaries" in page


@SITE_ENGINES
def test_snippets_for_non_subscribers_never_hold_gated_text(client, reader):
    reader.signup("curious@example.com")
    checked = set()
    for query in ("debt", "drones", "carbon border", "semiconductor", "water", "election"):
        page = results(client, query)
        text = re.sub(r"<[^>]+>|[\"'’“”]|&#\d+;|&\w+;", "", page)
        for slug in slugs(page):
            checked.add(slug)
            for sentence in gated_sentences(slug, paragraphs=1):
                assert sentence not in text, (query, slug)
    assert len(checked) >= 4  # the queries found articles: the check above ran on real snippets


@SITE_ENGINES
def test_results_are_ranked_title_first(subscriber, client):
    hits = slugs(results(client, "drones"))
    assert hits[0] == "mid-sized-militaries-buying-drones-faster"


@SITE_ENGINES
def test_hostile_queries_never_fail(client, subscriber):
    for query in HOSTILE:
        response = client.get("/search", query_string={"q": query})
        assert response.status_code == 200, query


def test_quoted_phrases_and_operators_are_words():
    assert search.match_expression('debt "common framework" AND', True) == '"debt" "common framework" "AND"'
    assert search.match_expression("-*^", True) is None
    assert search.match_expression("debt", False) == '{title dek} : ("debt")'
    assert search.quoted_terms("\x00or -debt ':*") == '"or" "debt"'
    assert search.quoted_terms(" ".join(f"w{n}" for n in range(20))).count('"') == 2 * search.MAX_TERMS


@SITE_ENGINES
def test_future_articles_are_not_found(db, subscriber, client):
    plant(db, "future-zeppelins", "Zeppelins return", published=datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert "future-zeppelins" not in slugs(results(client, "zeppelins"))


@SITE_ENGINES
def test_pagination(db, client):
    seed.seed_synthetic(db, 25, ["Economy"], datetime(2026, 11, 1, tzinfo=timezone.utc))
    first, third = results(client, "synthetic"), results(client, "synthetic", page=3)
    assert "25 results" in first and len(slugs(first)) == 10
    assert len(slugs(third)) == 5 and "Page 3 of 3" in third
    assert set(slugs(first)).isdisjoint(slugs(third))


def test_snippet_html_is_escaped():
    from gate.services.search import _mark

    marked = _mark('<img src=x onerror="y">\x02x\x03')
    assert "<img" not in marked and marked.endswith("<mark>x</mark>")


@SITE_ENGINES
def test_empty_query_shows_the_form(client):
    page = results(client, "")
    assert 'name="q"' in page and "result" not in page.split("</form>")[1].split("<footer")[0].lower().replace("results", "")
