"""Gift links: a subscriber's allowance, a link's device cap, expiry on the site's clock, and no leaks."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest

from gate.conf.settings import Config
from gate.rules.paywall import GiftGrant, Viewer, decide
from gate.services import gifts
from gate.storage.db import open_database
from tests.helpers import BOTH_ENGINES, FREE, METERED, PREMIUM, START, TEST_POOL, Reader, leaks, metered_slugs

pytestmark = BOTH_ENGINES
GIVER = ("giver@example.org", "gift-pass-123")


@pytest.fixture
def giver(runner, app):
    """A subscriber signed in on their own client."""
    runner.invoke(args=["readers", "add", GIVER[0], "--password", GIVER[1], "--subscriber"])
    person = Reader(app.test_client())
    person.login(*GIVER)
    return person


def gift_path(giver, slug=METERED) -> str:
    """Gift ``slug`` through the API; the link's path."""
    answer = giver.post_json(f"/api/articles/{slug}/gift")
    assert answer.status_code == 201, answer.get_json()
    return urlsplit(answer.get_json()["url"]).path


def open_gift(reader, path: str):
    """Open a gift link as a browser does: its page, then Read the gift."""
    page = reader.client.get(path)
    if page.status_code != 200:
        return page
    return reader.post(path)


def test_a_subscriber_gifts_and_a_visitor_reads_in_full_outside_the_meter(giver, reader, db):
    answer = giver.post_json(f"/api/articles/{METERED}/gift").get_json()
    assert answer["gifts"] == {**answer["gifts"], "used": 1, "limit": 10, "left": 9}
    assert answer["devices"] == 10 and datetime.fromisoformat(answer["expires_at"]) == START + timedelta(days=14)
    path = urlsplit(answer["url"]).path
    assert reader.article(METERED)["access"] == "teaser"
    landing = reader.client.get(path)
    assert "A gift from g***@example.org" in landing.get_data(as_text=True) and not leaks(
        landing.get_data(as_text=True), METERED)
    assert db.scalar("select count(*) from unlocks where meter_key like 'giftlink:%'") == 0  # GET counts nothing
    assert reader.post(path).headers["Location"].endswith(f"/articles/{METERED}")
    data = reader.article(METERED)
    assert data["access"] == "full" and data["reason"] == "gift" and "body_html" in data
    grant = data["grant"]
    assert grant == {**grant, "kind": "gift", "giver": "g***@example.org", "opens_left": 9}
    assert datetime.fromisoformat(grant["expires_at"]) == START + timedelta(days=14)
    assert data["meter"]["used"] == 0
    page = reader.client.get(f"/articles/{METERED}").get_data(as_text=True)
    assert "A gift from <strong>g***@example.org</strong>" in page and "Subscribe to read every article" in page
    ld = re.search(r'<script type="application/ld\+json">(.*?)</script>', page, re.S).group(1)
    assert '"isAccessibleForFree": false' in ld
    explained = reader.client.get(f"/api/articles/{METERED}?explain=1").get_json()["explain"]
    assert explained["grant"]["opens_left"] == 9 and explained["reason_label"].startswith("A gift")


def test_reopening_is_free_and_the_grant_belongs_to_the_device(giver, reader, app, db):
    path = gift_path(giver)
    open_gift(reader, path)
    open_gift(reader, path)
    assert reader.client.get(path).headers["Location"].endswith(f"/articles/{METERED}")  # straight in
    assert db.scalar("select count(*) from unlocks where meter_key like 'giftlink:%'") == 1
    other = Reader(app.test_client())
    assert other.article(METERED)["access"] == "teaser"  # the URL of the article alone opens nothing
    opened = [row["data"] for row in db.rows("select data from events where type = 'gift_opened'")]
    assert len(opened) == 1 and '"from": 0' in opened[0] and '"to": 1' in opened[0]



def test_a_gift_reader_who_signs_up_or_signs_in_reads_on(giver, reader, app, db):
    path = gift_path(giver)
    open_gift(reader, path)
    reader.signup("gifted@example.org", "gifted-pass-123")  # a fresh session: the gift comes with it
    data = reader.article(METERED)
    assert data["tier"] == "registered" and data["reason"] == "gift" and data["meter"]["used"] == 0
    reader.logout()
    assert reader.article(METERED)["access"] == "teaser"  # signing out leaves the device behind
    other = Reader(app.test_client())
    other.login("gifted@example.org", "gifted-pass-123")
    assert other.article(METERED)["reason"] != "gift"  # the account alone holds no gift: the device does
    assert db.scalar("select count(*) from unlocks where meter_key like 'giftlink:%'") == 1

def test_the_allowance_runs_out_and_refuses_cleanly(giver, app, db):
    for _ in range(10):
        gift_path(giver)
    refused = giver.post_json(f"/api/articles/{METERED}/gift")
    assert refused.status_code == 403 and refused.get_json()["error"] == "allowance_exhausted"
    assert db.scalar("select count(*) from gift_links") == 10
    assert db.scalar("select count(*) from unlocks where meter_key like 'gift:%'") == 10
    page = giver.post(f"/articles/{METERED}/gift", follow_redirects=True).get_data(as_text=True)
    assert "You have made all 10 of your gifts this month." in page
    assert "0 of 10 gifts left this month" in re.sub(r"<[^>]+>", "", giver.client.get("/gifts").get_data(as_text=True))


def test_only_subscribers_gift(reader):
    reader.signup("plain@example.org", "plain-pass-123")
    assert reader.post_json(f"/api/articles/{METERED}/gift").status_code == 403
    assert 'action="/articles/' + METERED + '/gift"' not in reader.client.get(f"/articles/{METERED}").get_data(
        as_text=True)


def test_expiry_runs_on_the_site_clock_and_ends_at_exactly_the_end(giver, reader, clock):
    path = gift_path(giver)
    open_gift(reader, path)
    clock.set(START + timedelta(days=14) - timedelta(microseconds=1), freeze=True)
    assert reader.article(METERED)["reason"] == "gift"
    clock.set(START + timedelta(days=14), freeze=True)
    assert reader.article(METERED)["access"] == "teaser"
    page = reader.client.get(path, follow_redirects=True).get_data(as_text=True)
    assert "This gift link has expired" in page and not leaks(page, METERED)


def test_a_tampered_or_foreign_token_falls_back_with_a_note(giver, reader):
    path = gift_path(giver)
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    page = reader.client.get(tampered, follow_redirects=True).get_data(as_text=True)
    assert "That gift link is not valid" in page
    assert reader.client.post(tampered).status_code in (303, 400)
    assert reader.article(METERED)["access"] == "teaser"


def test_a_gift_for_one_article_never_opens_another(giver, reader, db):
    open_gift(reader, gift_path(giver, METERED))
    other = next(slug for slug in metered_slugs(db, 2) if slug != METERED)
    for slug in (PREMIUM, other):
        data = reader.article(slug)
        assert data["access"] == "teaser" and "body_html" not in data and data["grant"] is None
        assert not leaks(reader.client.get(f"/articles/{slug}").get_data(as_text=True), slug)


def test_a_premium_article_may_be_gifted(giver, reader):
    open_gift(reader, gift_path(giver, PREMIUM))
    data = reader.article(PREMIUM)
    assert data["access"] == "full" and data["reason"] == "gift"
    assert reader.article(FREE)["reason"] == "free_article"


def test_an_exhausted_link_falls_back_to_the_gate(giver, app, db):
    path = gift_path(giver)
    gift_id = gifts.link_id(app.secret_key, path.rsplit("/", 1)[1])
    db.execute("update gift_links set devices = 1 where id = ?", [gift_id])
    first, second = Reader(app.test_client()), Reader(app.test_client())
    open_gift(first, path)
    assert first.article(METERED)["reason"] == "gift"
    page = second.client.get(path, follow_redirects=True).get_data(as_text=True)
    assert "opened on its 1 devices already" in page and second.article(METERED)["access"] == "teaser"


def test_concurrent_opens_never_pass_the_device_cap(giver, app):
    """Twenty devices open one link capped at ten at once: exactly ten are counted (each engine)."""
    path = gift_path(giver)
    gift_id = gifts.link_id(app.secret_key, path.rsplit("/", 1)[1])
    gun, results = threading.Barrier(20, timeout=60), []

    def device(number):
        db = open_database(app.config["DATABASE"], TEST_POOL)  # every thread holds a connection at the gun
        try:
            gun.wait()
            results.append(gifts.open_link(db, gift_id, f"visitor:v{number}", START).status)
        finally:
            db.close()

    threads = [threading.Thread(target=device, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db = open_database(app.config["DATABASE"])
    try:
        assert db.scalar("select count(*) from unlocks where meter_key = ?", [gifts.link_meter(gift_id)]) == 10
        assert db.scalar("select count(*) from events where type = 'gift_opened'") == 10
    finally:
        db.close()
    assert sorted(results) == ["exhausted"] * 10 + ["opened"] * 10


def test_the_gift_giver_persona_has_a_link_in_hand(app, db):
    app.config["DEMO"] = True
    demo = Reader(app.test_client())
    demo.post("/demo/persona", {"persona": "gift-giver", "next": "/gifts"})
    page = re.sub(r"<[^>]+>", "", demo.client.get("/gifts").get_data(as_text=True))
    assert "9 of 10 gifts left this month" in page and "1 of 1" not in page
    demo.post("/demo/persona", {"persona": "gift-giver", "next": "/gifts"})  # rebuilt: still one link
    assert db.scalar("select count(*) from gift_links") == 1
    assert "Gift links" in demo.client.get("/learn/").get_data(as_text=True)


@dataclass(frozen=True)
class Piece:
    """What decide reads of an article."""

    slug: str
    section: str
    access_class: str


@pytest.mark.parametrize("tier, piece, moment, reason", [
    ("anonymous", Piece(METERED, "Economy", "metered"), START, "gift"),
    ("registered", Piece(PREMIUM, "Economy", "premium"), START, "premium_only"),  # the gift is for one article
    ("anonymous", Piece(METERED, "Economy", "metered"), START + timedelta(days=14), "registration_required"),
    ("subscriber", Piece(METERED, "Economy", "metered"), START, "subscriber"),
])
def test_decide_grants_a_gift_for_its_article_until_exactly_its_end(tier, piece, moment, reason):
    gift = GiftGrant(METERED, 1, "g***@example.org", START + timedelta(days=14), 9)
    decision = decide(Config().preset("wpr"), Viewer(tier, "visitor:v", gifts=(gift,)), piece, moment)
    assert decision.reason == reason and (decision.grant is gift) == (reason == "gift")


def test_the_console_reader_page_lists_their_gifts(giver, admin, db):
    gift_path(giver)
    giver_id = db.scalar("select id from readers where email = ?", [GIVER[0]])
    page = admin.client.get(f"/admin/readers/{giver_id}").get_data(as_text=True)
    assert "Gift links</h3>" in page and "0 of 10 devices" in page and METERED in page
