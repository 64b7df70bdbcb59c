"""Odd input at the edges: file parts, blank passwords, huge ids and dates past the calendar's end
are each a clear 4xx (or a refusal message) that changes nothing, never a 500."""

from __future__ import annotations

import io
import json
from datetime import date
from zoneinfo import ZoneInfo

import pytest

from gate.rules.timeutil import parse_day, parse_moment
from gate.services import accounts
from gate.web.forms import NOT_TEXT
from tests.helpers import Reader

CARD = {"name": "Ada Reader", "card_number": "4242 4242 4242 4242", "expiry": "12/30", "cvc": "123"}
FORMS = [("/signup", {"email": "new@example.com", "password": "a-long-password"}),
         ("/login", {"email": "new@example.com", "password": "a-long-password"}),
         ("/login/magic", {"email": "new@example.com"}),
         ("/subscribe/monthly", {**CARD, "email": "new@example.com"})]
ADMIN = ("console@example.com", "console-pass-1")
HUGE = [str(2**63), str(2**64), "9" * 40, "9" * 5000]


def _state(db):
    """What a refused request must leave alone."""
    tables = ("readers", "unlocks", "subscriptions", "payments", "outbox", "login_tokens")
    counts = {table: db.execute(f"select count(*) from {table}").fetchone()[0] for table in tables}
    counts["comps"] = db.execute("select count(*) from readers where comp_until is not null").fetchone()[0]
    return counts


def _file():
    return (io.BytesIO(b"a@example.com"), "email.txt")


@pytest.fixture
def admin(app, runner):
    """An admin signed in to the console, with 500s shown as statuses."""
    runner.invoke(args=["readers", "add", ADMIN[0], "--password", ADMIN[1], "--admin"])
    person = Reader(app.test_client())
    person.login(*ADMIN)
    app.testing = False
    return person


# --- file parts and non-text bodies ---------------------------------------------------


@pytest.mark.parametrize("path,data", FORMS)
def test_a_file_part_in_any_text_field_is_a_field_error(app, db, path, data):
    app.testing = False
    person = Reader(app.test_client())
    for name in data:
        before = _state(db)
        response = person.client.post(path, data={"csrf_token": person.token(), **data, name: _file()},
                                      content_type="multipart/form-data")
        assert response.status_code == 400, (name, response.status_code)
        assert NOT_TEXT.split(":")[0] in response.get_data(as_text=True) or name == "next"
        assert _state(db) == before


@pytest.mark.parametrize("path", ["/signup", "/login", "/login/magic"])
@pytest.mark.parametrize("body", [{"email": 5}, {"email": "a@example.com", "password": 12345678},
                                  {"email": ["a@example.com"]}, [1], "a@example.com", None])
def test_json_that_is_not_a_text_form_is_refused(app, db, path, body):
    app.testing = False
    person = Reader(app.test_client())
    before = _state(db)
    response = person.client.post(path, data=json.dumps(body),
                                  headers={"Content-Type": "application/json", "X-CSRFToken": person.token()})
    text_email = isinstance(body, dict) and isinstance(body.get("email"), str)
    assert response.status_code == (200 if path == "/login/magic" and text_email else 400)  # it takes no password
    assert _state(db) == before


# --- passwords ------------------------------------------------------------------------


@pytest.mark.parametrize("password", [" ", " " * 7, " " * 8, " " * 30, "\t\n" + " " * 8, "\u3000" * 9])
def test_a_password_of_spaces_is_refused_at_signup_checkout_and_login(app, db, password):
    person = Reader(app.test_client())
    signup = person.signup("spaces@example.com", password)
    assert signup.status_code == 400
    assert "A password can&#39;t be only spaces." in signup.get_data(as_text=True)
    checkout = person.post("/subscribe/monthly", {**CARD, "email": "spaces@example.com", "password": password})
    assert checkout.status_code == 400
    assert "only spaces" in checkout.get_data(as_text=True)
    assert db.execute("select count(*) from readers").fetchone()[0] == 0
    login = person.login("spaces@example.com", password)
    assert login.status_code == 400
    assert "A password can&#39;t be only spaces." in login.get_data(as_text=True)


def test_spaces_around_a_password_do_not_count_but_are_kept(app, db):
    person = Reader(app.test_client())
    short = person.signup("short@example.com", "   seven7   ")
    assert short.status_code == 400 and "spaces around them don" in short.get_data(as_text=True)
    assert person.signup("kept@example.com", "  eight888  ").status_code == 303
    person.logout()
    assert person.login("kept@example.com", "eight888").status_code == 400  # kept exactly as typed
    assert person.login("kept@example.com", "  eight888  ").status_code == 303


@pytest.mark.parametrize("password", [" " * 8, "  short  "])
def test_the_cli_applies_the_same_password_rule(runner, db, password):
    result = runner.invoke(args=["readers", "add", "cli@example.com", "--password", password])
    assert result.exit_code == 1
    assert db.execute("select count(*) from readers").fetchone()[0] == 0


# --- ids, dates and comp ends in the console -------------------------------------------


@pytest.mark.parametrize("number", HUGE + ["0", str(2**63 - 1)])
def test_ids_past_sqlites_range_are_not_found(admin, db, number):
    before = _state(db)
    for path in (f"/admin/readers/{number}", f"/dev/mail/{number}"):
        assert admin.client.get(path).status_code == 404, path
    assert admin.post(f"/admin/readers/{number}/comp", {"until": "2027-01-01"}).status_code == 404
    assert admin.post(f"/admin/readers/{number}/reset-meter").status_code == 404
    assert _state(db) == before


@pytest.mark.parametrize("path", ["/admin/", "/admin/export.csv", "/admin/experiments"])
@pytest.mark.parametrize("start,end", [("9999-12-31", "9999-12-31"), ("0001-01-01", "0001-01-02"),
                                       ("2026-11-01", "2200-01-01"), ("1999-12-31", "2000-01-05")])
def test_date_ranges_outside_the_calendar_window_are_a_400(admin, path, start, end):
    response = admin.client.get(path, query_string={"start": start, "end": end})
    assert response.status_code == 400
    assert "outside the years this site accepts" in response.get_data(as_text=True)


@pytest.mark.parametrize("until", ["9999-12-31T23:59", "9999-12-31", "2200-01-01", "0001-01-01T00:00+14:00"])
def test_comp_ends_past_the_window_change_nothing(admin, db, until):
    rid = db.execute("select id from readers").fetchone()[0]
    before = _state(db)
    response = admin.post(f"/admin/readers/{rid}/comp", {"until": until})
    assert response.status_code == 303
    with admin.client.session_transaction() as session:
        assert any("outside the years" in message for _, message in session["_flashes"])
    assert admin.client.get(f"/admin/readers/{rid}").status_code == 200
    assert _state(db) == before


@pytest.mark.parametrize("until", ["9999-12-31T23:59", "2200-01-01"])
def test_cli_comp_past_the_window_is_refused(runner, db, until):
    runner.invoke(args=["readers", "add", "comp@example.com"])
    result = runner.invoke(args=["readers", "comp", "comp@example.com", "--until", until])
    assert result.exit_code == 1 and "outside the years" in result.output
    assert accounts.by_email(db, "comp@example.com").comp_until is None


@pytest.mark.parametrize("text,ok", [("2000-01-01", True), ("2199-12-31", True), ("1999-12-31", False),
                                     ("2200-01-01", False), ("9999-12-31", False), ("0001-01-01", False)])
def test_the_date_window_is_the_same_for_days_and_moments(text, ok):
    for parse in (parse_day, lambda value: parse_moment(value, ZoneInfo("Pacific/Kiritimati"))):
        if ok:
            assert parse(text).year in (int(text[:4]), int(text[:4]) - 1)
        else:
            with pytest.raises(ValueError, match="outside the years"):
                parse(text)
    assert parse_day(" 2026-11-01 ") == date(2026, 11, 1)
