"""Checkout and signup are not a free-account factory, and no answer reveals who has an account."""

from __future__ import annotations

import re
import threading

import pytest

from gate.services import accounts
from tests.helpers import CARD, METERED, Reader, mailed_link, open_checkout, pay, statuses

DECLINED = "4000 0000 0000 0002"
OWNER = "owner@example.com"


@pytest.fixture
def owner(db, clock):
    """An existing account (with a password) that strangers will type into forms."""
    return accounts.create(db, OWNER, "owner-pass-123", clock.now())


def use_preset(runner, name: str) -> None:
    result = runner.invoke(args=["preset", "use", name])
    assert result.exit_code == 0, result.output


# --- a checkout that fails creates nothing ----------------------------------------------------

def test_declined_anonymous_checkout_creates_no_account_and_signs_no_one_in(reader, db):
    response = pay(reader, email="throwaway-1@example.com", card_number=DECLINED)
    assert response.status_code == 402 and "declined" in response.get_data(as_text=True)
    assert db["readers"].count == 0 and statuses(db) == [] and db["payments"].count == 0
    assert reader.meter()["tier"] == "anonymous"
    assert reader.article(METERED)["access"] == "teaser"
    assert db.execute("select count(*) from events where type = 'checkout_declined'").fetchone() == (1,)


def test_declined_checkouts_are_no_free_account_factory(reader, db):
    """The issue's attack: 40 declined checkouts made 40 signed-in accounts with free articles."""
    statuses_seen = [pay(reader, email=f"sybil-{n}@example.com", card_number=DECLINED).status_code
                     for n in range(25)]
    assert statuses_seen[:20] == [402] * 20 and 429 in statuses_seen[20:]
    assert db["readers"].count == 0


def test_checkout_is_limited_per_address(app, db):
    """Ten attempts an hour for one address, from however many browsers."""
    answers = []
    for n in range(11):
        person = Reader(app.test_client())
        person.client.environ_base["REMOTE_ADDR"] = f"10.0.0.{n + 1}"
        answers.append(pay(person, email="Target@ｅxample.com", card_number=DECLINED).status_code)
    assert answers == [402] * 10 + [429]


# --- an anonymous checkout never hands over an account ------------------------------------

def test_anonymous_checkout_for_a_known_address_charges_nothing_and_mails_the_owner(reader, db, owner):
    response = pay(reader, email="OWNER@example.com")
    assert response.status_code == 200 and "Check your email" in response.get_data(as_text=True)
    assert reader.meter()["tier"] == "anonymous"  # not signed in as the owner: no takeover
    assert statuses(db) == [] and db["payments"].count == 0
    mail = db.execute("select to_addr, body_text from outbox").fetchall()
    assert len(mail) == 1 and mail[0][0] == OWNER and "Nothing was charged" in mail[0][1]
    assert pay(reader, email=OWNER).status_code == 200  # the owner, signed in by the link, can then pay
    reader.post(mailed_link(db, OWNER))
    assert pay(reader).status_code == 303 and statuses(db) == ["active"]


def test_anonymous_checkout_for_a_new_address_subscribes_once_the_link_is_used(reader, db):
    response = pay(reader, email="fresh@example.com")
    assert response.status_code == 200 and "Check your email" in response.get_data(as_text=True)
    assert reader.meter()["tier"] == "anonymous" and statuses(db) == ["active"]
    assert reader.post(mailed_link(db, "fresh@example.com")).headers["Location"] == "/account"
    assert reader.meter()["tier"] == "subscriber"
    assert accounts.by_email(db, "fresh@example.com").email_verified_at is not None


def _post_together(app, data: dict, cookie: str) -> list:
    """Post one form from two clients sharing a session, released at the same moment."""
    barrier, answers = threading.Barrier(2), [None, None]

    def post(slot: int) -> None:
        client = app.test_client()
        client.set_cookie("session", cookie, domain="meridian.test")
        barrier.wait()
        try:
            response = client.post("/subscribe/monthly", data=data)
            answers[slot] = (response.status_code, response.get_data(as_text=True))
        except Exception as error:  # TESTING propagates what would be a 500
            answers[slot] = (500, repr(error))

    threads = [threading.Thread(target=post, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.parametrize("round_", range(6))
def test_two_anonymous_checkouts_at_once_make_one_charge_and_the_same_answer(app, db, round_):
    reader = Reader(app.test_client())
    key = open_checkout(reader)
    data = {**CARD, "idempotency_key": key, "email": f"racer-{round_}@example.com", "csrf_token": reader.token()}
    cookie = reader.client.get_cookie("session", domain="meridian.test").value
    first, second = _post_together(app, data, cookie)
    assert first[0] == second[0] == 200, (first[0], second[0])
    assert "Check your email" in first[1] and "Check your email" in second[1]
    assert statuses(db) == ["active"] and db["payments"].count == 1 and db["readers"].count == 1


# --- known and unknown addresses get the same answer on every route -----------------------

def _strip(page: str) -> str:
    """A page without what differs between any two renderings (tokens, keys, the address typed)."""
    page = re.sub(r"[\w.+-]+@example\.com", "ADDRESS", page)
    return re.sub(r'content="[^"]+"|value="[^"]+"', "", page)


def _answer(person: Reader, path: str, email: str, runner) -> tuple:
    """Status, redirect target, the page it lands on (flash included) and the tier, for one address."""
    data = {"email": email, "password": "guess-pass-123", "next": "/sections/Economy"}
    if path.startswith("/subscribe/"):
        data.update(CARD, idempotency_key=open_checkout(person))
    response = person.post(path, data)
    page = response.get_data(as_text=True)
    if response.status_code in (301, 302, 303):
        page = person.client.get(response.headers["Location"]).get_data(as_text=True)
    return response.status_code, response.headers.get("Location"), _strip(page), person.meter()["tier"]


@pytest.mark.parametrize("path", ["/signup", "/login", "/login/magic", "/subscribe/monthly", "/subscribe/annual"])
def test_every_route_answers_a_known_and_an_unknown_address_alike(app, runner, owner, path):
    use_preset(runner, "metered-verified")  # signup signs no one in before the address is proven
    known = _answer(Reader(app.test_client()), path, OWNER, runner)
    unknown = _answer(Reader(app.test_client()), path, "nobody@example.com", runner)
    assert known == unknown
    assert known[3] == "anonymous"


# --- addresses: one spelling per inbox, and no header tricks ------------------------------

SPELLINGS = ["inbox@exämple.com", "INBOX@EXÄMPLE.COM", "inbox@xn--exmple-cua.com", "inbox@XN--EXMPLE-CUA.COM",
             "inbox@ｅxämple.com", "Inbox@ＥＸÄＭＰＬＥ.com"]


def test_sign_in_links_are_limited_per_inbox_whatever_the_spelling(app, db, clock):
    accounts.create(db, accounts.normalize_email(SPELLINGS[0]), None, clock.now())
    person = Reader(app.test_client())
    answers = [person.post("/login/magic", {"email": spelling}).status_code for spelling in SPELLINGS]
    assert answers == [200] * 5 + [429]
    assert db["outbox"].count == 5


def test_signup_and_link_form_share_one_limit_per_inbox(app, db, owner):
    answers = [Reader(app.test_client()).signup("Owner@EXAMPLE.com").status_code for _ in range(3)]
    answers += [Reader(app.test_client()).post("/login/magic", {"email": "owner@ｅxample.com"}).status_code
                for _ in range(3)]
    assert answers == [303, 303, 303, 200, 200, 429]
    assert db["outbox"].count == 5


@pytest.mark.parametrize("email, message", [
    ("=?utf-8?q?victim=40example.com?=@example.com", "encoded word"),
    ("=?UTF-8?B?dmljdGltQGV4YW1wbGUuY29t?=@example.com", "encoded word"),
    ("reader@example.com\r\nBcc: everyone@example.com", "control characters"),
    ("reader@example.com\n", "control characters"),
    ("read\x00er@example.com", "control characters"),
])
@pytest.mark.parametrize("path", ["/signup", "/login", "/login/magic", "/subscribe/monthly"])
def test_encoded_words_and_control_characters_are_refused_at_every_form(app, db, path, email, message):
    person = Reader(app.test_client())
    data = {"email": email, "password": "some-pass-123"}
    if path.startswith("/subscribe/"):
        data.update(CARD, idempotency_key=open_checkout(person))
    response = person.post(path, data)
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert db["readers"].count == 0 and db["outbox"].count == 0


# --- the rule option: the registered meter needs a proven address --------------------------

def test_signup_under_proof_first_mails_a_link_that_opens_the_meter(runner, reader, db):
    use_preset(runner, "metered-verified")
    response = reader.signup("new@example.com", next=f"/articles/{METERED}")
    assert response.status_code == 303 and reader.meter()["tier"] == "anonymous"
    assert db["readers"].count == 1  # the account exists, but nobody is signed in to it
    reader.post(mailed_link(db, "new@example.com"))
    assert reader.meter()["tier"] == "registered"
    assert reader.article(METERED)["access"] == "full"


def test_an_unproven_account_sees_the_confirm_gate_until_it_uses_a_link(runner, reader, db):
    use_preset(runner, "metered-verified")
    runner.invoke(args=["readers", "add", "unproven@example.com", "--password", "unproven-pass-1"])
    reader.login("unproven@example.com", "unproven-pass-1")
    seen = reader.article(METERED)
    assert (seen["access"], seen["reason"], seen["offer"]) == ("teaser", "verification_required", "verify")
    assert reader.unlock(METERED).status_code == 303 and db["unlocks"].count == 0
    page = reader.client.get(f"/articles/{METERED}").get_data(as_text=True)
    assert "Confirm your address" in page and "Email me a new link" in page
    reader.post("/login/magic", {"email": "unproven@example.com", "next": f"/articles/{METERED}"})
    reader.post(mailed_link(db, "unproven@example.com"))
    assert reader.article(METERED)["access"] == "full"


def test_throwaway_persona_reads_under_metered_and_not_under_proof_first(app, db):
    app.config["DEMO"] = True
    person = Reader(app.test_client())
    person.post("/learn/try/throwaway-accounts")
    assert person.article(METERED)["access"] == "full"
    person.post("/learn/try/proven-addresses")
    assert person.article(METERED)["reason"] == "verification_required"
    person.post("/demo/persona", {"persona": "new-reader"})  # the other personas have proven addresses
    assert person.article(METERED)["access"] == "full"
