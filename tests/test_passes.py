"""Passes: buying a day or week of full access, its exact end on the site clock, its expiry, the API."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from gate.rules.offers import OfferTerms
from gate.rules.timeutil import from_iso
from gate.services import offers
from gate.web import passes as web_passes
from tests.helpers import BOTH_ENGINES, CARD, KEY, LINK, METERED, PREMIUM, START, Reader

pytestmark = BOTH_ENGINES
DECLINED = "4000 0000 0000 0002"


def open_pass(reader, kind="day") -> str:
    """The idempotency key of a freshly rendered pass form."""
    return KEY.search(reader.client.get(f"/pass/{kind}").get_data(as_text=True)).group(1)


def buy(reader, kind="day", key=None, **fields):
    """Submit a pass form (a fresh one unless ``key`` replays an old one)."""
    key = key or open_pass(reader, kind)
    return reader.post(f"/pass/{kind}", {**CARD, "idempotency_key": key, **fields})


def main(response) -> str:
    """A page's main content (the CSRF token in its head differs per session)."""
    return response.get_data(as_text=True).split("<main", 1)[1]


def events_of(db, kind: str) -> list[tuple]:
    """Each event of one type: its time and its data."""
    return [(from_iso(row["at"]), json.loads(row["data"]))
            for row in db.rows("select at, data from events where type = ? order by id", [kind])]


def tick(runner) -> str:
    """Run the billing tick (renewals and pass expiry) and return what it said."""
    result = runner.invoke(args=["billing", "tick"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def holder(reader):
    """A signed-up reader who has bought a day pass at START."""
    reader.signup("holder@example.com")
    assert buy(reader, next=f"/articles/{METERED}").headers["Location"] == f"/articles/{METERED}"
    return reader


def test_a_signed_in_reader_buys_a_day_pass_and_reads_everything_at_once(holder, db):
    row = db.first("select * from passes")
    assert (row["kind"], row["status"], row["amount_cents"], row["card_last4"]) == ("day", "active", 300, "4242")
    assert from_iso(row["ends_at"]) - from_iso(row["starts_at"]) == timedelta(hours=24)
    assert from_iso(row["starts_at"]) == START
    pay = db.first("select * from payments")
    assert (pay["kind"], pay["subscription_id"], pay["pass_id"], pay["amount_cents"], pay["outcome"]) == \
        ("pass", None, row["id"], 300, "succeeded")
    assert from_iso(db.scalar("select pass_until from readers where email = 'holder@example.com'")) == START + timedelta(hours=24)
    for slug in (METERED, PREMIUM):
        seen = holder.article(slug)
        assert (seen["access"], seen["reason"], "body_html" in seen) == ("full", "pass", True)
        assert from_iso(seen["pass_ends"]) == START + timedelta(hours=24)
    assert holder.meter()["used"] == 0  # a pass spends nothing from the meter
    [(at, data)] = events_of(db, "pass_purchased")
    assert at == START and (data["from"], data["to"], data["kind"], data["pass_id"]) == (None, "active", "day", row["id"])
    assert "Pass · full access until Sun 29 Nov, 12:00" in holder.client.get("/").get_data(as_text=True)
    account = holder.client.get("/account").get_data(as_text=True)
    assert "Every article is open until" in account and "Sunday, November 29 at 12:00" in account


def test_a_declined_card_creates_and_charges_nothing(reader, db):
    reader.signup("broke@example.com")
    response = buy(reader, card_number=DECLINED)
    assert response.status_code == 402 and "Your card was declined." in response.get_data(as_text=True)
    assert db.scalar("select count(*) from passes") == 0 and db.scalar("select count(*) from payments") == 0
    assert db.scalar("select pass_until from readers") is None
    assert reader.article(METERED)["reason"] != "pass"
    assert [data["decline"] for _, data in events_of(db, "pass_declined")] == ["card_declined"]


def test_a_double_submit_buys_one_pass(reader, db):
    reader.signup("twice@example.com")
    key = open_pass(reader)
    assert buy(reader, key=key).status_code == 303
    assert buy(reader, key=key).status_code == 303
    assert db.scalar("select count(*) from passes") == 1 and db.scalar("select count(*) from payments") == 1
    assert len(events_of(db, "pass_purchased")) == 1


def test_access_ends_exactly_at_the_pass_end(holder, clock):
    clock.advance(timedelta(hours=24) - timedelta(seconds=1))
    assert holder.article(PREMIUM)["reason"] == "pass"
    clock.advance(timedelta(seconds=1))
    after = holder.article(PREMIUM)
    assert (after["access"], after["reason"], "body_html" in after) == ("teaser", "premium_only", False)
    assert holder.article(METERED)["reason"] == "meter_available"


def test_a_second_pass_starts_where_the_first_ends(holder, db, clock):
    clock.advance(timedelta(hours=2))
    page = holder.client.get("/pass/week").get_data(as_text=True)
    assert "This one starts when it ends" in page
    assert buy(holder, "week").status_code == 303
    first, second = db.rows("select starts_at, ends_at from passes order by id")
    assert second["starts_at"] == first["ends_at"]
    assert from_iso(second["ends_at"]) == START + timedelta(hours=24 + 168)
    assert from_iso(db.scalar("select pass_until from readers where pass_until is not null")) == \
        from_iso(second["ends_at"])
    clock.advance(timedelta(hours=100))
    assert holder.article(PREMIUM)["reason"] == "pass"


def test_the_tick_expires_a_pass_at_its_end(holder, db, clock, runner):
    assert "Expired 0 pass(es)." in tick(runner)
    clock.advance(timedelta(days=2))
    assert "Expired 1 pass(es)." in tick(runner)
    assert "Expired 0 pass(es)." in tick(runner)  # once, however often the clock ticks
    assert db.scalar("select status from passes") == "expired"
    [(at, data)] = events_of(db, "pass_expired")
    assert at == START + timedelta(hours=24)  # dated at the end, not when the tick noticed
    assert (data["from"], data["to"], data["kind"]) == ("active", "expired", "day")


def test_the_api_buys_a_pass_for_a_signed_in_reader(reader, db):
    card = {"card_number": "4242424242424242", "expiry": "12/30", "cvc": "123"}
    assert reader.post_json("/api/passes/day", json=card).status_code == 401
    reader.signup("script@example.com")
    assert reader.post_json("/api/passes/month", json=card).status_code == 404
    bad = reader.post_json("/api/passes/day", json={**card, "cvc": "x"})
    assert bad.status_code == 400 and "cvc" in bad.get_json()["fields"]
    assert reader.post_json("/api/passes/day", json=["not", "an", "object"]).status_code == 400
    declined = reader.post_json("/api/passes/day", json={**card, "card_number": "4000000000000002"})
    assert declined.status_code == 402 and declined.get_json()["error"] == "card_declined"
    assert db.scalar("select count(*) from passes") == 0
    bought = reader.post_json("/api/passes/week", json={**card, "idempotency_key": "script-key-1"})
    assert bought.status_code == 201
    assert bought.get_json()["pass"]["kind"] == "week" and bought.get_json()["pass"]["amount_cents"] == 800
    again = reader.post_json("/api/passes/week", json={**card, "idempotency_key": "script-key-1"})
    assert again.status_code == 200 and again.get_json()["replayed"] is True
    assert db.scalar("select count(*) from payments") == 1
    assert reader.client.post("/api/passes/day", json=card).status_code == 400  # no X-CSRFToken


def test_an_anonymous_buyer_follows_the_guest_checkout_rule(app, db):
    stranger = Reader(app.test_client())
    new = buy(stranger, email="walkin@example.com")
    assert new.status_code == 200 and "Check your email" in new.get_data(as_text=True)
    assert stranger.meter()["tier"] == "anonymous"  # signed in only by proving the address
    assert db.scalar("select count(*) from passes") == 1
    known = buy(Reader(app.test_client()), email="walkin@example.com")
    assert main(known) == main(new)  # the same answer: the form never tells who has an account
    assert db.scalar("select count(*) from passes") == 1 and db.scalar("select count(*) from payments") == 1
    mails = db.rows("select body_text from outbox where kind = 'magic_link' order by id")
    assert "Thank you for buying a pass" in mails[0]["body_text"] and "Nothing was charged" in mails[1]["body_text"]
    stranger.post(LINK.search(mails[0]["body_text"]).group(1))
    assert stranger.article(PREMIUM)["reason"] == "pass"


def test_the_gate_offers_a_day_pass_and_explain_says_when_it_ends(holder, app):
    page = Reader(app.test_client()).client.get(f"/articles/{METERED}").get_data(as_text=True)
    assert re.search(r'href="/pass/day\?next=/articles/[^"]+">Just today\? A day pass for \$3</a>', page)
    explained = holder.client.get(f"/api/articles/{PREMIUM}?explain=1").get_json()
    assert explained["explain"]["pass_ends"].startswith("2026-11-29T12:00:00")
    assert any(line.startswith("pass until 2026-11-29T12:00") for line in explained["trace"])


def test_the_gates_pass_offer_is_worked_out_once_per_configuration(app, monkeypatch):
    worked = []
    monkeypatch.setattr(web_passes, "gate_offer", lambda on_sale: worked.append(1) or {"id": "day", "line": "Once"})
    monkeypatch.setattr(web_passes, "_offered", {})
    visitor = app.test_client()
    for _ in range(3):
        assert "Once</a>" in visitor.get(f"/articles/{METERED}").get_data(as_text=True)
    assert worked == [1]
    app.extensions["gate.config"].passes = []  # another configuration's passes: worked out again
    visitor.get(f"/articles/{METERED}")
    assert worked == [1, 1]


def test_the_day_pass_persona_reads_until_the_clock_passes_its_end(app, reader, db, clock, runner):
    app.config["DEMO"] = True
    assert reader.post("/demo/persona", {"persona": "day-pass", "next": "/"}).status_code == 303
    seen = reader.article(PREMIUM)
    assert seen["reason"] == "pass" and from_iso(seen["pass_ends"]) == START + timedelta(hours=4)
    assert "Every article is open until" in reader.client.get("/account").get_data(as_text=True)
    assert reader.post("/demo/persona", {"persona": "day-pass", "next": "/"}).status_code == 303
    assert db.scalar("select count(*) from passes") == 1  # a switch rebuilds the persona from scratch
    assert "Passes: 1 expired." in runner.invoke(args=["clock", "advance", "4h"]).output
    assert reader.article(PREMIUM)["reason"] == "premium_only"


def day_pass_offer(db, cap=None):
    """A half-price code made for the day pass (its offer names the pass id)."""
    offers.add(db, OfferTerms("HALFDAY", "Half-price day pass", "percent", 50, plans=("day",), cap=cap,
                              source="cli"), START)


def test_a_code_made_for_the_pass_sells_it_at_the_offer_price(holder, reader, db, app):
    day_pass_offer(db, cap=2)
    assert buy(holder, code="halfday").status_code == 303
    pay = db.first("select * from payments where offer_code is not null")
    assert (pay["amount_cents"], pay["list_cents"], pay["offer_code"]) == (150, 300, "HALFDAY")
    granted = db.first("select * from passes where offer_code = 'HALFDAY'")
    assert granted["amount_cents"] == 150
    assert db.rows("select code, pass_id, subscription_id from redemptions") == [
        {"code": "HALFDAY", "pass_id": granted["id"], "subscription_id": None}]
    assert [data["amount_cents"] for _, data in events_of(db, "offer_redeemed")] == [150]
    other = Reader(app.test_client())
    other.signup("other@example.com")
    assert buy(other, code="HALFDAY", card_number=DECLINED).status_code == 402  # a decline redeems nothing
    assert buy(other, code="HALFDAY").status_code == 303
    third = Reader(app.test_client())
    third.signup("third@example.com")
    full = buy(third, code="HALFDAY")  # the cap of 2 is spent
    assert full.status_code == 400 and "That code has been fully redeemed." in full.get_data(as_text=True)
    assert db.scalar("select count(*) from redemptions") == 2


def test_a_code_for_subscriptions_is_refused_on_a_pass_and_nothing_is_charged(reader, db):
    reader.signup("wrongcode@example.com")
    refused = buy(reader, code="WELCOME50")
    assert refused.status_code == 400 and "t apply to this plan." in refused.get_data(as_text=True)
    unknown = reader.post_json("/api/passes/day", json={"card_number": "4242424242424242", "expiry": "12/30",
                                                        "cvc": "123", "code": "NOPE123"})
    assert unknown.status_code == 422 and unknown.get_json()["reason"] == "unknown"
    assert db.scalar("select count(*) from passes") == 0 and db.scalar("select count(*) from payments") == 0
    assert [data["reason"] for _, data in events_of(db, "offer_refused")] == ["wrong_plan", "unknown"]
