"""Promo codes at checkout: prices shown before a card is asked, redeemed only with a charge, capped under races."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

import pytest

from gate.app import site
from gate.rules import billing
from gate.rules.offers import OfferTerms
from gate.services import accounts, offers, subscriptions
from tests.helpers import BOTH_ENGINES, KEY, START, Reader, at_once, open_checkout, pay

WELCOME = "$6 a month for your first 3 months, then $12 a month"


def offer_events(db, kind=None):
    """The offer events, oldest first, as (type, data)."""
    rows = db.rows("select type, data from events where type like 'offer_%' order by id")
    return [(row["type"], json.loads(row["data"])) for row in rows if kind in (None, row["type"])]


def money_rows(db):
    """Every payment as (amount, offer code, list price), and every redemption as (code, subscription)."""
    paid = [tuple(row.values()) for row in db.rows("select amount_cents, offer_code, list_cents from payments order by id")]
    redeemed = [tuple(row.values()) for row in db.rows("select code, subscription_id from redemptions order by id")]
    return paid, redeemed


@pytest.fixture
def cfg(app):
    """The test site's configuration."""
    with app.app_context():
        return site.config()


@pytest.fixture
def plant(db, cfg):
    """Plant ``count`` redemptions of a code by readers made for it (a cap reached)."""
    def plant_redemptions(code, count):
        offer = offers.find(db, cfg, code, START)
        for number in range(count):
            reader = accounts.create(db, f"planted-{code}-{number}@example.com".lower(), None, START)
            offers.record_redemption(db, offer, reader.id, START)
    return plant_redemptions


@BOTH_ENGINES
def test_plans_page_shows_intro_price_and_a_codes_price_on_its_plans(client, db):
    page = client.get("/subscribe").get_data(as_text=True)
    assert "$1 for your first month, then $12 a month" in page and "WELCOME50" not in page
    page = client.get("/subscribe?code=welcome50").get_data(as_text=True)
    assert f"WELCOME50</strong>: {WELCOME}" in page
    assert 'href="/subscribe/monthly?code=WELCOME50"' in page and 'href="/subscribe/annual"' in page
    assert offer_events(db) == [("offer_viewed", {"code": "WELCOME50", "plan": None, "plans": ["monthly"]})]
    assert db.scalar("select visitor_id from events where type = 'offer_viewed'")


def test_plans_page_with_a_dead_code_says_why_and_shows_regular_prices(client, db):
    page = client.get("/subscribe?code=spring26").get_data(as_text=True)
    assert "That code has expired." in page and "regular prices" in page
    assert [(kind, data["reason"]) for kind, data in offer_events(db)] == [("offer_refused", "expired")]


def test_checkout_with_a_code_shows_the_discounted_and_regular_price_before_the_card(reader, db):
    reader.signup("priced@example.com")
    page = reader.client.get("/subscribe/monthly?code=Welcome50").get_data(as_text=True)
    assert WELCOME in page and "Regular price: $12 a month" in page
    assert page.index(WELCOME) < page.index("Card number")
    assert 'name="code" type="hidden" value="WELCOME50"' in page
    assert [kind for kind, _ in offer_events(db)] == ["offer_applied"]


@pytest.mark.parametrize(("plan", "code", "message", "reason"), [
    ("monthly", "NOPE-NOPE", "We don't recognise that code", "unknown"),
    ("monthly", "SPRING26", "That code has expired.", "expired"),
    ("monthly", "ANNUAL20", "doesn't apply to this plan", "wrong_plan"),
    ("monthly", "FLASH10", "has been fully redeemed", "exhausted"),
])
def test_unusable_codes_are_explained_beside_the_field_at_the_list_price(reader, db, plant, plan, code, message, reason):
    plant("FLASH10", 10)
    reader.signup("refused@example.com")
    page = html.unescape(reader.client.get(f"/subscribe/{plan}?code={code}").get_data(as_text=True))
    assert message in page and 'id="promo-code-error"' in page and 'aria-invalid="true"' in page
    assert "$12 a month. Cancel any time." in page and 'name="code" type="hidden" value=""' in page
    assert [(kind, data["reason"]) for kind, data in offer_events(db)] == [("offer_refused", reason)]
    assert pay(reader, plan).status_code == 303  # the form still works, at the list price
    assert money_rows(db) == ([(1200, None, 1200)], [("FLASH10", None)] * 10)  # the planted ones


@BOTH_ENGINES
def test_paying_with_a_code_redeems_it_once_and_bills_the_discount_then_the_list_price(reader, db, runner, clock):
    reader.signup("welcome@example.com")
    key = KEY.search(reader.client.get("/subscribe/monthly?code=WELCOME50").get_data(as_text=True)).group(1)
    first = pay(reader, key=key, code="WELCOME50")
    again = pay(reader, key=key, code="WELCOME50")  # a double submit replays, never redeems twice
    assert first.status_code == again.status_code == 303
    sub = subscriptions.current(db, accounts.by_email(db, "welcome@example.com").id)
    assert (sub.offer_code, sub.discount_kind, sub.discount_value, sub.discount_periods) == ("WELCOME50", "percent", 50, 3)
    for _ in range(3):
        clock.set(clock.now() + timedelta(days=31))
        runner.invoke(args=["billing", "tick"])
    paid, redeemed = money_rows(db)
    assert paid == [(600, "WELCOME50", 1200)] * 3 + [(1200, None, 1200)] and redeemed == [("WELCOME50", sub.id)]
    redeemed_event = offer_events(db, "offer_redeemed")
    assert [data for _, data in redeemed_event] == [
        {"code": "WELCOME50", "plan": "monthly", "subscription_id": sub.id, "amount_cents": 600}]


@BOTH_ENGINES
def test_a_declined_card_consumes_nothing_and_keeps_the_code(reader, db):
    reader.signup("declined@example.com")
    declined = pay(reader, code="WELCOME50", card_number="4000 0000 0000 0002")
    page = declined.get_data(as_text=True)
    assert declined.status_code == 402 and WELCOME in page and 'value="WELCOME50"' in page
    assert money_rows(db) == ([(1200, None, 1200)], [])  # the failed attempt, at the list price
    assert pay(reader, code="WELCOME50").status_code == 303
    paid, redeemed = money_rows(db)
    assert paid[-1] == (600, "WELCOME50", 1200) and len(redeemed) == 1


@BOTH_ENGINES
def test_a_code_exhausted_between_showing_and_paying_charges_nothing(reader, db, plant):
    reader.signup("late@example.com")
    key = open_checkout(reader)
    plant("FLASH10", 10)
    response = pay(reader, key=key, code="FLASH10")
    page = response.get_data(as_text=True)
    assert response.status_code == 409 and "has been fully redeemed" in page and "Nothing was charged" in page
    assert money_rows(db)[0] == [] and db.scalar("select count(*) from subscriptions") == 0
    assert [(kind, data["reason"], data["stage"]) for kind, data in offer_events(db)] == [
        ("offer_refused", "exhausted", "payment")]
    assert pay(reader, key=key).status_code == 303  # the same form pays the list price


@BOTH_ENGINES
def test_the_cap_holds_at_the_service_between_check_and_charge(db, cfg, plant):
    """The web re-checks before charging; the service's own claim is what holds under a race."""
    reader = accounts.create(db, "racer@example.com", None, START)
    plant("FLASH10", 10)
    card = billing.Card("4242", 12, 2030)
    with pytest.raises(offers.OfferError, match="fully redeemed"):
        subscriptions.checkout(db, cfg, reader.id, "monthly", card, "4242424242424242", "k-1", START,
                               code="flash10")
    assert money_rows(db)[0] == [] and db.scalar("select count(*) from checkouts") == 0
    assert [data["reason"] for _, data in offer_events(db)] == ["exhausted"]


def test_new_subscribers_only_refuses_a_returning_subscriber(reader, db):
    reader.signup("back@example.com")
    pay(reader)
    reader.post("/account/subscription/cancel", {"when": "now", "confirm": "yes"})  # lapsed: may subscribe again
    page = reader.client.get("/subscribe/monthly?code=WELCOME50").get_data(as_text=True)
    assert "new subscribers only" in page


@BOTH_ENGINES
def test_a_guest_pays_with_a_code_and_a_refused_code_creates_nothing(app, db):
    guest = Reader(app.test_client())
    assert pay(guest, code="NOPE-NOPE", email="nope@example.com").status_code == 409
    assert db.scalar("select count(*) from readers") == 0 and money_rows(db) == ([], [])
    response = pay(guest, code="freemonth", email="guest@example.com")
    assert response.status_code == 200 and "Check your email" in response.get_data(as_text=True)
    paid, redeemed = money_rows(db)
    assert paid == [(0, "FREEMONTH", 1200)] and len(redeemed) == 1


@BOTH_ENGINES
def test_api_prices_a_code_and_says_why_not(client, plant):
    plant("FLASH10", 10)
    ok = client.get("/api/offers/welcome50?plan=monthly")
    assert ok.status_code == 200 and ok.get_json()["usable"] is True
    assert ok.get_json()["price"] == WELCOME and ok.get_json()["regular_price"] == "$12 a month"
    assert ok.get_json()["offer"]["periods"] == 3 and ok.get_json()["refusal"] is None
    full = client.get("/api/offers/FLASH10?plan=monthly").get_json()
    assert full["usable"] is False and full["refusal"]["code"] == "exhausted"
    assert full["price"] == "$12 a month" and "fully redeemed" in full["refusal"]["message"]
    unknown = client.get("/api/offers/NOPE-NOPE?plan=monthly")
    assert unknown.status_code == 404 and unknown.get_json()["refusal"]["code"] == "unknown"
    assert client.get("/api/offers/WELCOME50?plan=weekly").status_code == 400
    assert client.get("/api/offers/WELCOME50").get_json()["plan"] == "monthly"


@BOTH_ENGINES
def test_a_capped_code_gives_exactly_its_cap_under_a_race(app, db, cfg):
    """Twelve checkouts at once, each its own reader and key, race a code capped at 5."""
    offers.add(db, OfferTerms("RACE5", "Race", "percent", 20, "forever", cap=5, source="cli"), START)
    readers = [accounts.create(db, f"r{number}@example.com", None, START).id for number in range(12)]
    card = billing.Card("4242", 12, 2030)

    def one(conn):
        reader_id = readers.pop()
        return subscriptions.checkout(conn, cfg, reader_id, "monthly", card, "4242424242424242",
                                      f"race-{reader_id}", START, code="race5")[0]

    won, lost = at_once(app.config["DATABASE"], 12, one)
    assert len(won) == 5 and len(lost) == 7
    assert all(isinstance(error, offers.OfferError) and error.refusal == "exhausted" for error in lost)
    paid, redeemed = money_rows(db)
    assert paid == [(960, "RACE5", 1200)] * 5
    assert sorted(sub for _, sub in redeemed) == sorted(sub.id for sub in won)
    assert db.scalar("select count(*) from subscriptions where offer_code = 'RACE5'") == 5


@BOTH_ENGINES
def test_cli_adds_lists_shows_and_disables_a_code(runner, reader, db):
    added = runner.invoke(args=["offers", "add", "summer5", "--name", "Summer", "--amount-off", "5",
                                "--duration", "repeating", "--periods", "2", "--plan", "monthly",
                                "--starts", "2026-11-01", "--ends", "2027-01-01", "--cap", "3"])
    assert added.exit_code == 0 and "Added SUMMER5: $5 off, 2 periods, cap 3" in added.output
    reader.signup("summer@example.com")
    assert pay(reader, code="SUMMER5").status_code == 303
    listed = runner.invoke(args=["offers", "list"]).output
    assert re.search(r"SUMMER5 +\$5 off +2 periods +2026-11-01 – 2027-01-01 +3 +1  active", listed)
    assert re.search(r"SPRING26 .* expired", listed) and re.search(r"WELCOME50 .* 100 +0  active", listed)
    shown = runner.invoke(args=["offers", "show", "Summer5"]).output
    assert "redeemed 1; 1 payments charged $7, $5 below list price" in shown and "summer@example.com" in shown
    assert "Disabled SUMMER5 (1 redemptions kept)" in runner.invoke(args=["offers", "disable", "summer5"]).output
    assert re.search(r"SUMMER5 .* disabled", runner.invoke(args=["offers", "list"]).output)


@pytest.mark.parametrize(("args", "message"), [
    (["WELCOME50", "--percent-off", "10"], "already an offer with the code WELCOME50"),
    (["TWO", "--percent-off", "10", "--amount-off", "5"],
     "offer: give exactly one of --percent-off, --amount-off, --free-periods"),
    (["NONE1"], "offer: give exactly one of --percent-off, --amount-off, --free-periods"),
    (["REP1", "--percent-off", "10", "--duration", "repeating"], "--periods: periods is required"),
    (["PCT1", "--percent-off", "150"], "--percent-off: Input should be less than or equal to 100"),
    (["PCT2", "--percent-off", "0"], "--percent-off: Input should be greater than or equal to 1"),
    (["FREE1", "--free-periods", "25"], "--free-periods: Input should be less than or equal to 24"),
    (["AMT1", "--amount-off", "4.999"], "at most two decimals"),
    (["PLAN1", "--percent-off", "10", "--plan", "weekly"], "--plan: there is no plan called 'weekly'"),
    (["WIN1", "--percent-off", "10", "--starts", "2027-01-02", "--ends", "2027-01-01"],
     "--ends: ends must be after starts"),
    (["CAP1", "--percent-off", "10", "--cap", "0"], "--cap: Input should be greater than or equal to 1"),
    (["NAME1", "--percent-off", "10", "--name", "n" * 81], "--name: String should have at most 80 characters"),
    (["BAD CODE", "--percent-off", "10"], "CODE: a code is 3–32 letters"),
    (["DAY1", "--percent-off", "10", "--ends", "tomorrow"], "tomorrow"),
])
def test_cli_refuses_bad_offers_and_changes_nothing(runner, db, args, message):
    result = runner.invoke(args=["offers", "add", *args])
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert not re.search(r"[a-z]+_[a-z_]+", result.output), result.output  # options, never field names
    assert db.scalar("select count(*) from offers where source = 'cli'") == 0


def test_cli_refuses_unknown_codes(runner):
    for command in ("show", "disable"):
        result = runner.invoke(args=["offers", command, "NOPE-NOPE"])
        assert result.exit_code == 1 and "there is no offer with the code NOPE-NOPE" in result.output


def test_audit_accepts_a_save_offer_only_after_it_was_accepted(reader, db, cfg):
    """Save offers (retention) discount a running subscription with no redemption row: the event is the proof."""
    from gate.audit import checks

    reader.signup("saved@example.com")
    pay(reader)
    sub = subscriptions.current(db, accounts.by_email(db, "saved@example.com").id)
    offers.add(db, OfferTerms("SAVE-1", "Stay", "percent", 50, "repeating", 3, reader_id=sub.reader_id,
                              source="save"), START)
    db.execute("update subscriptions set offer_code = 'SAVE-1', discount_kind = 'percent', discount_value = 50,"
               " discount_periods = 3")
    db.insert("payments", {"subscription_id": sub.id, "reader_id": sub.reader_id, "at": START.isoformat(),
                           "amount_cents": 600, "currency": "USD", "outcome": "succeeded", "kind": "renewal",
                           "card_last4": "4242", "offer_code": "SAVE-1", "list_cents": 1200})
    assert [v.kind for v in checks.check_offers(db, cfg)] == ["discount_without_offer"]
    db.execute("insert into events (at, type, reader_id, data) values (?, 'save_offer_accepted', ?, ?)",
               [(START - timedelta(minutes=1)).isoformat(), sub.reader_id, json.dumps({"code": "SAVE-1"})])
    assert checks.check_offers(db, cfg) == []
