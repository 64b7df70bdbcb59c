"""Checkout, the account's subscription controls, and renewals driven by the clock."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.helpers import BOTH_ENGINES, CARD, METERED, PREMIUM, Reader, open_checkout, pay, statuses

pytestmark = BOTH_ENGINES


def count(db, table: str) -> int:
    """How many rows a table holds (either engine)."""
    return db.scalar(f"select count(*) from {table}")


def dump(db) -> str:
    """Every row of every table as text (either engine)."""
    if db.dialect == "sqlite":
        return "\n".join(db.conn.iterdump())
    tables = [row["table_name"] for row in db.rows(
        "select table_name from information_schema.tables where table_schema = current_schema()")]
    return "\n".join(str(row) for table in tables for row in db.rows(f"select * from {table}"))


def test_plans_page_lists_plans_and_perks(client):
    page = client.get("/subscribe").get_data(as_text=True)
    for text in ("Monthly", "Annual", "USD 12.00", "USD 120.00", "14-day free trial",
                 "Daily Review", "Weekly Review", "Archive search", "No ads"):
        assert text in page
    assert 'href="/subscribe/monthly"' in page and 'href="/subscribe/annual"' in page


def test_unknown_plan_is_404(client):
    assert client.get("/subscribe/weekly").status_code == 404


def test_registered_reader_subscribes_and_keeps_their_history(reader, db):
    reader.signup("keeper@example.com")
    reader.unlock(METERED)
    response = pay(reader)
    assert response.status_code == 303 and response.headers["Location"] == "/account"
    assert statuses(db) == ["active"]
    assert reader.article(PREMIUM)["reason"] == "subscriber"
    assert db.execute("select amount_cents, outcome, card_last4 from payments").fetchall() == [(1200, "succeeded", "4242")]
    assert db.execute("select count(*) from unlocks").fetchone() == (1,)
    account = reader.client.get("/account").get_data(as_text=True)
    assert "Active" in account and "ending 4242" in account and "USD 12.00" in account


def test_anonymous_visitor_creates_an_account_in_checkout_and_signs_in_by_the_mailed_link(reader, db):
    response = pay(reader, "annual", email="New@Example.com", password="new-pass-123")
    assert response.status_code == 200 and "Check your email" in response.get_data(as_text=True)
    assert db.execute("select email from readers where email = 'new@example.com'").fetchone()
    assert statuses(db) == ["trialing"]
    assert reader.meter()["tier"] == "anonymous"  # signed in only by proving the address
    assert db.execute("select amount_cents, kind from payments").fetchall() == [(0, "trial_verification")]
    text = db.execute("select body_text from outbox where kind = 'magic_link'").fetchone()[0]
    reader.post(re.search(r"http://meridian\.test(/login/magic/\S+)", text).group(1))
    assert reader.meter()["tier"] == "subscriber"


def test_anonymous_checkout_needs_a_valid_email_and_creates_nothing(reader, db):
    before = count(db, "readers")
    response = pay(reader, email="nope")
    assert response.status_code == 400 and "@-sign" in response.get_data(as_text=True)
    assert count(db, "readers") == before and statuses(db) == []


def test_anonymous_checkout_with_a_bad_card_creates_no_account(reader, db):
    before = count(db, "readers")
    response = pay(reader, email="carded@example.com", card_number="4242 4242 4242 4241")
    assert response.status_code == 400
    assert count(db, "readers") == before


@pytest.mark.parametrize("number, message", [
    ("4000 0000 0000 0002", "Your card was declined."),
    ("4000 0000 0000 9995", "insufficient funds"),
])
def test_declined_cards_leave_an_incomplete_subscription_and_no_access(reader, db, number, message):
    reader.signup("declined@example.com")
    response = pay(reader, card_number=number)
    assert response.status_code == 402 and message in response.get_data(as_text=True)
    assert statuses(db) == ["incomplete"]
    assert reader.meter()["tier"] == "registered"
    fixed = pay(reader)  # the re-rendered form has a new key; a good card completes it
    assert fixed.status_code == 303 and statuses(db) == ["active"]
    outcomes = [r[0] for r in db.execute("select outcome from payments order by id")]
    assert outcomes == ["failed", "succeeded"]


@pytest.mark.parametrize("fields, message", [
    ({"card_number": "4242 4242 4242 4241"}, "not valid"),
    ({"card_number": "5555 5555 5555 4444"}, "Unknown test card"),
    ({"expiry": "01/20"}, "expired"),
    ({"cvc": "1"}, "3 or 4 digit"),
    ({"name": ""}, "name on the card"),
])
def test_card_field_errors_change_nothing(reader, db, fields, message):
    reader.signup("fields@example.com")
    response = pay(reader, **fields)
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert statuses(db) == [] and count(db, "payments") == 0


def test_double_submit_charges_once(reader, db):
    reader.signup("twice@example.com")
    key = open_checkout(reader)
    first, second = pay(reader, key=key), pay(reader, key=key)
    assert first.status_code == second.status_code == 303
    assert statuses(db) == ["active"] and count(db, "payments") == 1


def without_csrf(response):
    """The page without its CSRF token, which is time-stamped, so two posts a second apart differ there only."""
    page = response.get_data(as_text=True)
    token = _CSRF_META.search(page)
    return page.replace(token.group(1), "") if token else page


_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def test_anonymous_double_submit_charges_once_and_answers_the_same(app, db):
    reader = Reader(app.test_client())
    key = open_checkout(reader)
    token = reader.token()
    data = {**CARD, "idempotency_key": key, "email": "fast@example.com", "csrf_token": token}
    first = reader.client.post("/subscribe/monthly", data=data)
    second = reader.client.post("/subscribe/monthly", data=data)
    assert first.status_code == second.status_code == 200
    assert without_csrf(first) == without_csrf(second)
    assert statuses(db) == ["active"] and count(db, "payments") == 1
    assert db.execute("select count(*) from outbox where kind = 'magic_link'").fetchone() == (1,)
    assert reader.meter()["tier"] == "anonymous"


def test_checkout_form_key_from_another_session_is_refused(app, reader, db):
    reader.signup("mine@example.com")
    key = open_checkout(reader)
    thief = Reader(app.test_client())
    thief.signup("thief@example.com")
    response = pay(thief, key=key)
    assert response.status_code == 400 and statuses(db) == []


def test_subscriber_cannot_check_out_twice(reader, db):
    reader.signup("again@example.com")
    pay(reader)
    assert reader.client.get("/subscribe/annual").status_code == 302
    pay(reader, "annual", key="made-up")
    assert statuses(db) == ["active"]


def test_renewals_follow_the_clock(reader, db, runner):
    reader.signup("renews@example.com")
    pay(reader)
    result = runner.invoke(args=["clock", "advance", "400d"])
    assert "Billing: settled 1 subscription(s), 13 charge attempt(s)." in result.output
    kinds = [r[0] for r in db.execute("select kind from payments order by at")]
    assert kinds == ["checkout"] + ["renewal"] * 13
    changes = db.execute("select data from events where type = 'subscription_changed' order by at").fetchall()
    assert len(changes) == 14 and all('"from"' in c[0] and '"to"' in c[0] for c in changes)
    assert reader.meter()["tier"] == "subscriber"


def test_0341_card_walks_past_due_to_canceled_and_loses_access(reader, db, runner):
    reader.signup("lapsing@example.com")
    pay(reader, card_number="4000 0000 0000 0341")
    runner.invoke(args=["clock", "advance", "31d"])  # renewal fails
    assert statuses(db) == ["past_due"]
    assert reader.meter()["tier"] == "subscriber"  # grace period
    page = reader.client.get("/account").get_data(as_text=True)
    assert "Past due" in page and "Update card" in page
    runner.invoke(args=["clock", "advance", "10d"])
    assert statuses(db) == ["canceled"]
    assert reader.meter()["tier"] == "registered"
    kinds = [r[0] for r in db.execute("select kind from payments order by at")]
    assert kinds == ["checkout", "renewal", "retry 1", "retry 2", "retry 3"]


def test_site_settles_a_reader_when_it_loads_them(reader, db, clock):
    reader.signup("lazy@example.com")
    pay(reader, card_number="4000 0000 0000 0341")
    clock.advance(timedelta(days=45))  # no CLI tick: the page load settles it
    assert reader.meter()["tier"] == "registered"
    assert statuses(db) == ["canceled"]


def test_update_card_recovers_past_due(reader, db, runner):
    reader.signup("fixer@example.com")
    pay(reader, card_number="4000 0000 0000 0341")
    runner.invoke(args=["clock", "advance", "31d"])
    bad = reader.post("/account/card", {**CARD, "card_number": "4000 0000 0000 0002"})
    assert bad.status_code == 400 and "failed too" in bad.get_data(as_text=True)
    good = reader.post("/account/card", CARD)
    assert good.status_code == 303 and statuses(db) == ["active"]
    assert db.execute("select card_last4 from subscriptions").fetchone() == ("4242",)


def test_cancel_at_period_end_then_resume_then_cancel_now(reader, db, runner):
    reader.signup("canceller@example.com")
    pay(reader)
    reader.post("/account/subscription/cancel")
    page = reader.client.get("/account").get_data(as_text=True)
    assert "Ends on" in page and "Resume" in page
    assert reader.meter()["tier"] == "subscriber"
    reader.post("/account/subscription/resume")
    assert db.execute("select cancel_at_period_end from subscriptions").fetchone() == (0,)
    unconfirmed = reader.post("/account/subscription/cancel", {"when": "now"})
    assert unconfirmed.headers["Location"].endswith("/account/subscription/cancel")
    assert statuses(db) == ["active"]  # one click on "Cancel now" only asks
    page = reader.client.get("/account/subscription/cancel").get_data(as_text=True)
    assert "Cancel your subscription now?" in page and 'name="confirm" value="yes"' in page
    reader.post("/account/subscription/cancel", {"when": "now", "confirm": "yes"})
    assert statuses(db) == ["canceled"] and reader.meter()["tier"] == "registered"


def test_cancel_at_period_end_ends_with_the_period(reader, db, runner):
    reader.signup("leaver@example.com")
    pay(reader)
    reader.post("/account/subscription/cancel")
    runner.invoke(args=["clock", "advance", "32d"])
    assert statuses(db) == ["canceled"] and count(db, "payments") == 1


def test_resubscribing_after_the_end_is_a_new_subscription(reader, db):
    reader.signup("returner@example.com")
    pay(reader)
    reader.post("/account/subscription/cancel", {"when": "now", "confirm": "yes"})
    assert pay(reader).status_code == 303
    assert statuses(db) == ["canceled", "active"]


def test_comp_grants_then_expires(reader, runner, clock):
    reader.signup("guest@example.com")
    result = runner.invoke(args=["readers", "comp", "guest@example.com", "--until", "2026-12-15"])
    assert result.exit_code == 0 and "until 2026-12-15T00:00" in result.output
    assert reader.meter()["tier"] == "subscriber"
    clock.advance(timedelta(days=18))
    assert reader.meter()["tier"] == "registered"


def test_comp_finds_the_account_as_typed_and_never_removes_it(reader, runner):
    reader.signup("guest@example.com")
    granted = runner.invoke(args=["readers", "comp", "  Guest@EXAMPLE.com ", "--until", "2026-12-15"])
    assert granted.exit_code == 0, granted.output
    assert reader.meter()["tier"] == "subscriber"
    removed = runner.invoke(args=["readers", "comp", "guest@example.com", "--until", "never"])
    assert removed.exit_code == 0, removed.output
    assert reader.meter()["tier"] == "registered"


@pytest.mark.parametrize("args, message", [
    (["readers", "comp", "nobody@example.com", "--until", "2027-01-01"], "no account"),
    (["readers", "comp", "not an address", "--until", "2027-01-01"], "email address"),
    (["readers", "comp", "guest@example.com", "--until", "2020-01-01"], "must be in the future"),
    (["readers", "comp", "guest@example.com", "--until", "someday"], "not a date"),
])
def test_comp_errors(reader, runner, args, message):
    reader.signup("guest@example.com")
    result = runner.invoke(args=args)
    assert result.exit_code == 1 and message in result.output


def test_billing_tick(reader, runner, db, clock):
    reader.signup("ticker@example.com")
    pay(reader)
    clock.advance(timedelta(days=62))
    result = runner.invoke(args=["billing", "tick"])
    assert "Settled 1 subscription(s), 2 charge attempt(s)." in result.output
    assert "Settled 0 subscription(s)" in runner.invoke(args=["billing", "tick"]).output


def test_card_numbers_are_never_stored(reader, db):
    reader.signup("private@example.com")
    pay(reader)
    everything = dump(db)
    assert "4242424242424242" not in everything and "4242 4242 4242 4242" not in everything


def test_house_ads_for_everyone_but_subscribers(reader, client):
    for url in ("/", "/articles/southwest-atlantic-squid-rush-treaty"):
        assert 'aria-label="Advertisement"' in client.get(url).get_data(as_text=True)
    assert 'aria-label="Advertisement"' not in client.get(f"/articles/{METERED}").get_data(as_text=True)
    reader.signup("adfree@example.com")
    pay(reader)
    for url in ("/", f"/articles/{METERED}", f"/articles/{PREMIUM}"):
        assert 'aria-label="Advertisement"' not in client.get(url).get_data(as_text=True)


def test_json_ld_marks_the_gated_part(reader, client):
    import json

    def ld(slug):
        page = client.get(f"/articles/{slug}").get_data(as_text=True)
        return json.loads(re.search(r'<script type="application/ld\+json">(.*?)</script>', page, re.S).group(1)), page

    data, page = ld(METERED)
    assert data["@type"] == "NewsArticle" and data["isAccessibleForFree"] is False
    assert data["hasPart"]["cssSelector"] == ".story__gated" and 'class="story__gated"' not in page
    free, _ = ld("southwest-atlantic-squid-rush-treaty")
    assert free["isAccessibleForFree"] is True and "hasPart" not in free
    reader.signup("ld@example.com")
    pay(reader)
    _, page = ld(METERED)
    assert 'class="story__gated"' in page


def test_receipt_dates_are_in_the_site_time_zone(reader, db, clock):
    """At 10 pm in New York it is already tomorrow in UTC: the receipt must say New York's date."""
    clock.advance(timedelta(hours=10))  # 22:00 on November 28 in New York, 03:00 on the 29th in UTC
    reader.signup("late@example.com")
    pay(reader)
    body = db.execute("select body_text from outbox where kind = 'receipt'").fetchone()[0]
    assert "active, renews December 28, 2026" in body
