"""The console's offers: building a code from plain values, the Offers page, its funnel and CSV, the
dashboard's money counted as charged, the offer personas and the /learn lesson."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from gate.rules import billing
from gate.rules.offers import Discount
from gate.rules.timeutil import to_iso
from gate.services import dashboard, offers, subscriptions
from gate.storage import events
from tests.helpers import ADMIN, BOTH_ENGINES, NY, START, Reader

pytestmark = BOTH_ENGINES

OFFERS = "/admin/offers"
NEW = {"code": "autumn", "name": "Autumn sale", "percent_off": "25", "duration": "repeating", "periods": "2",
       "plans": "monthly", "starts": "", "ends": "2027-01-01", "cap": "5", "new_only": "on"}


def offer_rows(db):
    return {row[0]: row[1:] for row in db.execute("select code, enabled, source, cap from offers")}


def admin_actions(db):
    return [json.loads(row[0])["action"] for row in db.execute(
        "select data from events where type = 'admin_action' order by id")]


# --- offers.build: the console's form and `gate offers add` -------------------------


def test_build_parses_plain_values_like_the_config_file():
    terms = offers.build(**NEW, tz=NY, known_plans={"monthly", "annual"})
    assert (terms.code, terms.kind, terms.value, terms.duration, terms.periods, terms.plans, terms.cap,
            terms.new_only, terms.source) == ("AUTUMN", "percent", 25, "repeating", 2, ("monthly",), 5, True, "cli")
    assert terms.ends_at.isoformat() == "2027-01-01T00:00:00-05:00" and terms.starts_at is None
    typed = offers.build(code="Flash-2", name="x", amount_off_cents=500, duration="forever", new_only=False, tz=NY)
    assert (typed.kind, typed.value, typed.discount.periods, typed.plans) == ("amount", 500, None, ())


@pytest.mark.parametrize("change, field", [
    ({"code": "a!"}, "code"),
    ({"name": " "}, "name"),
    ({"percent_off": "ten"}, "percent_off"),
    ({"percent_off": "101"}, "percent_off"),
    ({"amount_off_cents": "500"}, "discount"),  # two discounts
    ({"percent_off": ""}, "discount"),  # none
    ({"duration": "weekly"}, "duration"),
    ({"periods": ""}, "periods"),  # repeating needs its periods
    ({"ends": "2027-13-01"}, "ends"),
    ({"starts": "2027-02-01"}, "ends"),  # ends before it starts
    ({"cap": "0"}, "cap"),
    ({"cap": "-3"}, "cap"),
    ({"plans": "monthly,gold"}, "plans"),
    ({"new_only": "maybe"}, "new_only"),
])
def test_build_refuses_bad_values_naming_the_field(change, field):
    with pytest.raises(offers.OfferInputError) as refused:
        offers.build(**{**NEW, **change}, tz=NY, known_plans={"monthly", "annual"})
    assert refused.value.field == field and str(refused.value).startswith(f"{field}: ")


# --- the Offers page ---------------------------------------------------------------


def test_offers_page_lists_every_offer_with_its_status(admin):
    page = admin.client.get(OFFERS).get_data(as_text=True)
    for code in ("WELCOME50", "ANNUAL20", "FREEMONTH", "FLASH10", "SPRING26"):
        assert f'id="offer-{code}"' in page
    assert "0 of 10" in page and "50% off, 3 periods" in page and "$5 off, forever" in page
    spring = page.split('id="offer-SPRING26"')[1].split("</tr>")[0]
    assert "Expired" in spring and "until 1 Jun 2026" in spring
    assert 'aria-current="page"' in page.split('href="/admin/offers"')[1][:30]


def test_readers_cannot_see_or_change_offers(client, reader, db):
    for url in (OFFERS, f"{OFFERS}.csv", f"{OFFERS}.json", f"{OFFERS}/FLASH10/redemptions.csv"):
        assert "/login" in client.get(url).headers.get("Location", "")
    reader.signup("plain@example.com")
    assert reader.client.get(OFFERS).status_code == 403
    assert reader.post(OFFERS, NEW).status_code == 403
    assert reader.post("/admin/offers/FLASH10/enabled", {"enabled": "0"}).status_code == 403
    assert "AUTUMN" not in offer_rows(db)


def test_adding_an_offer_through_the_form(admin, db):
    response = admin.post(OFFERS, NEW)
    assert response.status_code == 303 and response.headers["Location"].endswith("#offer-AUTUMN")
    assert offer_rows(db)["AUTUMN"] == (1, "console", 5)
    assert admin_actions(db) == ["offer_added"]
    page = admin.client.get(OFFERS).get_data(as_text=True)
    assert 'id="offer-AUTUMN"' in page and "25% off, 2 periods" in page and "0 of 5" in page


@pytest.mark.parametrize("change, field, message", [
    ({"percent_off": "ten"}, "percent_off", "Must be a whole number"),
    ({"amount_off_cents": "300"}, "discount", "Give exactly one of percent_off"),
    ({"code": "welcome50"}, "code", "There is already an offer with the code WELCOME50"),
    ({"plans": "gold"}, "plans", "There is no plan called"),
])
def test_a_refused_offer_changes_nothing_and_says_why_beside_the_field(admin, db, change, field, message):
    response = admin.post(OFFERS, {**NEW, **change})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert f'<p class="field__error" id="offer-{field}-error">{message}' in page
    assert 'value="Autumn sale"' in page  # the form comes back filled in
    assert "AUTUMN" not in offer_rows(db) and "offer_added" not in admin_actions(db)


def test_a_form_without_its_csrf_token_is_refused(admin, db):
    response = admin.client.post(OFFERS, data=NEW)
    assert response.status_code == 400 and "AUTUMN" not in offer_rows(db)


def test_disable_and_enable_a_code(admin, db):
    admin.client.get(OFFERS)  # the configured codes are stored when first listed
    assert admin.post("/admin/offers/flash10/enabled", {"enabled": "0"}).status_code == 303
    assert offer_rows(db)["FLASH10"][0] == 0
    row = admin.client.get(OFFERS).get_data(as_text=True).split('id="offer-FLASH10"')[1].split("</tr>")[0]
    assert "Disabled" in row and ">Enable<" in row
    assert admin.post("/admin/offers/FLASH10/enabled", {"enabled": "1"}).status_code == 303
    assert offer_rows(db)["FLASH10"][0] == 1
    assert admin_actions(db) == ["offer_disabled", "offer_enabled"]
    assert admin.post("/admin/offers/FLASH10/enabled", {"enabled": "maybe"}).status_code == 400
    assert admin.post("/admin/offers/NOPE99/enabled", {"enabled": "0"}).status_code == 404
    assert admin_actions(db) == ["offer_disabled", "offer_enabled"]


# --- the funnel per offer, CSV and JSON ------------------------------------------------


def plant_funnel(db):
    """Three viewers of WELCOME50, two shown its price, one redeemer; refusals; a typo; one event outside."""
    at = START - timedelta(hours=1)
    for n in range(3):
        events.record(db, "offer_viewed", at, visitor_id=f"v{n}", code="WELCOME50", plan="monthly")
    events.record(db, "offer_viewed", at, visitor_id="v0", code="WELCOME50", plan="monthly")  # again: one person
    for n in range(2):
        events.record(db, "offer_applied", at, visitor_id=f"v{n}", code="WELCOME50", plan="monthly")
    events.record(db, "offer_redeemed", at, reader_id=7, code="WELCOME50", plan="monthly", subscription_id=1,
                  amount_cents=600)
    events.record(db, "offer_refused", at, visitor_id="v5", code="FLASH10", plan="monthly", reason="exhausted")
    events.record(db, "offer_refused", at, visitor_id="v6", code="FLASH10", plan="annual", reason="wrong_plan")
    events.record(db, "offer_refused", at, visitor_id="v7", code="welcom50", plan="monthly", reason="unknown")
    events.record(db, "offer_viewed", START - timedelta(days=90), visitor_id="v9", code="WELCOME50", plan="monthly")


def test_offer_funnel_on_both_engines(backend):
    plant_funnel(backend)
    span = dashboard.Range.days((START - timedelta(days=6)).date(), START.date(), NY)
    funnel = dashboard.offer_funnel(backend, span, "all")
    assert funnel["WELCOME50"] == {"viewed": 3, "applied": 2, "redeemed": 1, "refused": {}}
    assert funnel["FLASH10"] == {"viewed": 0, "applied": 0, "redeemed": 0,
                                 "refused": {"exhausted": 1, "wrong_plan": 1}}
    assert funnel["WELCOM50"]["refused"] == {"unknown": 1}


def test_offers_csv_json_and_page_show_the_funnel(admin, db):
    plant_funnel(db)
    rows = list(csv.DictReader(io.StringIO(admin.client.get(f"{OFFERS}.csv").get_data(as_text=True))))
    by_code = {row["code"]: row for row in rows}
    assert (by_code["WELCOME50"]["viewed"], by_code["WELCOME50"]["applied"], by_code["WELCOME50"]["redeemed"],
            by_code["WELCOME50"]["status"]) == ("3", "2", "1", "Live")
    assert by_code["FLASH10"]["refused_exhausted"] == "1" and by_code["WELCOM50"]["status"] == "not an offer"
    answer = admin.client.get(f"{OFFERS}.json?include=all").get_json()
    assert answer["funnel"]["WELCOME50"]["viewed"] == 3
    assert {offer["code"]: offer["status"] for offer in answer["offers"]}["SPRING26"] == "Expired"
    page = admin.client.get(OFFERS).get_data(as_text=True)
    welcome = page.split("<code>WELCOME50</code></td>")[-1].split("</tr>")[0]
    assert [cell.split("</td>")[0] for cell in welcome.split("<td>")[1:5]] == ["3", "2", "1", "50%"]
    assert admin.client.get(f"{OFFERS}.csv?start=tomorrow").status_code == 400
    assert admin.client.get(f"{OFFERS}.json?include=robots").status_code == 400


def test_redemptions_csv(admin, db, app):
    cfg = app.extensions["gate.config"]
    reader_id = db.execute("select id from readers where email = ?", [ADMIN[0]]).fetchone()[0]
    with db.transaction():
        offers.redeem(db, cfg, "flash10", "monthly", reader_id, START)
    rows = list(csv.DictReader(io.StringIO(
        admin.client.get("/admin/offers/FLASH10/redemptions.csv").get_data(as_text=True))))
    assert [(row["code"], row["email"], row["at"]) for row in rows] == [("FLASH10", ADMIN[0], to_iso(START))]
    assert "1 of 10" in admin.client.get(OFFERS).get_data(as_text=True)
    assert admin.client.get("/admin/offers/NOPE99/redemptions.csv").status_code == 404


# --- the dashboard counts money as charged ------------------------------------------------

PLANS = {plan.id: plan for plan in (
    SimpleNamespace(id="monthly", price_cents=1200, currency="USD", interval="month", trial_days=0,
                    intro_price_cents=None, intro_periods=0),
    SimpleNamespace(id="annual", price_cents=12000, currency="USD", interval="year", trial_days=14,
                    intro_price_cents=None, intro_periods=0),
    SimpleNamespace(id="intro-monthly", price_cents=1200, currency="USD", interval="month", trial_days=0,
                    intro_price_cents=100, intro_periods=1))}
HALF = Discount("WELCOME50", "percent", 50, 3)


def plant_subscription(db, n, plan, status, period_index, discount=None, charges=()):
    """A reader with one subscription in a given state and period, and its charges."""
    reader_id = db.insert("readers", {"email": f"r{n}@example.com", "session_token": f"t{n}",
                                      "created_at": to_iso(START)})
    card = billing.Card("4242", 12, 2030)
    sub = billing.start(reader_id, billing.PlanTerms(plan, 1200, "USD", "month"), card, None, START).subscription
    sub = replace(sub, status=status, period_index=period_index).with_discount(discount)
    charged = tuple(billing.Charge(at, amount, "USD", outcome, None, "renewal", "4242", None, 1200)
                    for at, amount, outcome in charges)
    subscriptions.apply_outcome(db, billing.Outcome(sub, (), charged), by="test")


def test_mrr_revenue_and_discounted_share_count_what_is_charged(backend):
    day = START - timedelta(days=2)
    plant_subscription(backend, 1, "monthly", "active", 1, HALF, [(day, 600, "succeeded")])  # $6 now
    plant_subscription(backend, 2, "intro-monthly", "active", 0, None, [(day, 100, "succeeded")])  # $1 now
    plant_subscription(backend, 3, "intro-monthly", "past_due", 1, None, [(day, 1200, "failed")])  # $12
    plant_subscription(backend, 4, "annual", "active", 0, None, [(START - timedelta(days=60), 12000, "succeeded")])
    plant_subscription(backend, 5, "annual", "trialing", -1, HALF)  # no charge yet, not discounted yet
    plant_subscription(backend, 6, "monthly", "active", 3, HALF)  # WELCOME50's three months are over: $12
    plant_subscription(backend, 7, "monthly", "canceled", 1, HALF, [(day, 600, "succeeded")])  # not live
    span = dashboard.Range.days((START - timedelta(days=6)).date(), START.date(), NY)
    numbers = dashboard.metrics(backend, span, PLANS, "all")
    assert numbers["mrr_cents"] == 600 + 100 + 1200 + 1000 + 1200
    assert numbers["revenue_cents"] == 600 + 100 + 600  # succeeded charges in the range only
    assert numbers["discounts_cents"] == 3 * 1200 - 1300
    assert (numbers["active_subscribers"], numbers["discounted"]) == (6, 2)
    assert numbers["discounted_share"] == pytest.approx(2 / 6)


def test_redemptions_per_offer_in_the_range(backend):
    readers = [backend.insert("readers", {"email": f"x{n}@example.com", "session_token": f"x{n}",
                                          "created_at": to_iso(START)}) for n in range(4)]
    backend.insert_ignore("offers", {"code": "A1A", "name": "a", "kind": "percent", "value": 10, "duration": "once",
                              "source": "cli", "created_at": to_iso(START)})
    backend.insert_ignore("offers", {"code": "B2B", "name": "b", "kind": "percent", "value": 10, "duration": "once",
                              "source": "cli", "created_at": to_iso(START)})
    for reader_id, code, at in ((readers[0], "A1A", START), (readers[1], "A1A", START), (readers[2], "B2B", START),
                                (readers[3], "B2B", START - timedelta(days=40))):
        backend.insert("redemptions", {"code": code, "reader_id": reader_id, "at": to_iso(at)})
    span = dashboard.Range.days((START - timedelta(days=6)).date(), START.date(), NY)
    assert dashboard.redemptions(backend, span, "all") == [("A1A", 2), ("B2B", 1)]


def test_dashboard_shows_money_and_redemptions(admin, db, app):
    cfg = app.extensions["gate.config"]
    reader_id = db.execute("select id from readers where email = ?", [ADMIN[0]]).fetchone()[0]
    with db.transaction():
        offers.redeem(db, cfg, "FLASH10", "monthly", reader_id, START)
    page = admin.client.get("/admin/?include=all").get_data(as_text=True)
    assert "Revenue" in page and "Still discounted" in page
    assert "<td><code>FLASH10</code></td><td>1</td>" in page


# --- personas and the lesson -------------------------------------------------------------


@pytest.fixture
def demo(app):
    app.config["DEMO"] = True
    return Reader(app.test_client())


def test_holding_code_persona_lands_on_the_code(demo):
    response = demo.post("/demo/persona", {"persona": "holding-code", "next": "/"})
    assert response.status_code == 303 and response.headers["Location"] == "/subscribe?code=WELCOME50"
    assert demo.meter()["tier"] == "registered"


def test_intro_ending_persona_renews_at_the_list_price(demo, db, clock):
    response = demo.post("/demo/persona", {"persona": "intro-ending", "next": "/"})
    assert response.headers["Location"] == "/account" and demo.meter()["tier"] == "subscriber"
    row = db.execute("select s.plan_id, s.period_index, s.current_period_end from subscriptions s join readers r"
                     " on r.id = s.reader_id where r.email = 'persona.intro@meridian.example'").fetchone()
    assert row[0] == "intro-monthly" and row[1] == 0
    ends = datetime.fromisoformat(row[2])
    assert START < ends <= START + timedelta(days=3)
    paid = [r[0] for r in db.execute("select amount_cents from payments p join readers r on r.id = p.reader_id"
                                     " where r.email = 'persona.intro@meridian.example' order by p.id")]
    assert paid == [100]
    clock.advance(timedelta(days=7))
    demo.client.get("/account")  # settles the subscription
    paid = [r[0] for r in db.execute("select amount_cents from payments p join readers r on r.id = p.reader_id"
                                     " where r.email = 'persona.intro@meridian.example' order by p.id")]
    assert paid == [100, 1200]  # the cliff


def test_offers_lesson_is_in_the_tour(client):
    page = client.get("/learn/").get_data(as_text=True)
    assert 'id="offers"' in page and "FLASH10" in page and "Intro ending" in page
