"""Bad input, generated: every form, query string and JSON body answers 4xx or a page, never 500,
and invalid input never changes state."""

from __future__ import annotations

import io
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.storage import events
from tests.helpers import METERED, Reader

NASTY = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    st.sampled_from(["", " ", "\x00", "\ud7ff", "💥" * 50, "a" * 10_000, '"', "'", "AND", "NEAR(", "*", "-",
                     "{title}:", "1e309", "-1", "0", "9" * 40, "2026-02-30", "99999-01-01", "-5d", "1d-2h",
                     "../../etc/passwd", "%00", "<script>", "null", "[]", "{}", "true"]),
)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
#: A form field sent as a multipart file part (curl -F name=@file): (content, filename).
FILE_PART = st.tuples(st.binary(max_size=40), st.text(max_size=20))
HUGE_INT = st.one_of(st.integers(min_value=-(2**80), max_value=2**80),
                     st.sampled_from([0, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**40])).map(str)
EXTREME_DATE = st.one_of(
    st.dates().map(lambda day: day.isoformat()),
    st.builds(lambda moment, offset: moment.isoformat(timespec="minutes") + offset,
              st.datetimes(), st.sampled_from(["", "Z", "+14:00", "-23:59"])),
    st.sampled_from(["9999-12-31", "9999-12-31T23:59", "0001-01-01", "0001-01-01T00:00+14:00", "1999-12-31",
                     "2000-01-01", "2199-12-31T23:59", "2200-01-01", "10000-01-01"]))
EXTREME_DURATION = st.builds(lambda number, unit: f"{number}{unit}", st.integers(-10, 10**15),
                             st.sampled_from(["w", "d", "h", "m", "s", "min", "mo", ""]))
VALUE = st.one_of(NASTY, HUGE_INT, EXTREME_DATE, EXTREME_DURATION, FILE_PART)
ONE_ID = st.just("1")
CARD_FIELDS = ("name", "card_number", "expiry", "cvc", "idempotency_key")
#: Every form a visitor can post, with its fields; readers and admins have these and more.
VISITOR_FORMS = {
    "/signup": ("email", "password", "next", "list_meridian_weekly"),
    "/login": ("email", "password", "next", "remember"),
    "/login/magic": ("email", "next"),
    "/subscribe/monthly": (*CARD_FIELDS, "email", "password"),
    f"/articles/{METERED}/unlock": ("next",),
    "/demo/persona": ("persona", "next"),
    "/learn/try/hard": (),
}
READER_FORMS = {
    "/account/card": CARD_FIELDS,
    "/account/newsletters": ("list", "action"),
    "/account/subscription/cancel": ("when",),
    "/account/subscription/resume": (),
}
#: The admin clock's durations are fuzzed in tests/test_clock.py.
ADMIN_FORMS = {
    "/admin/rules": ("preset",),
    "/admin/rules/new": ("name", "title", "teaser_paragraphs", "tiers-registered-limit-count",
                         "tiers-registered-period-every", "tiers-registered-period-days", "sections-0-key",
                         "sections-0-value", "devices-limit", "action"),
    "/admin/readers/{id}/comp": ("until",),
    "/admin/readers/{id}/reset-meter": (),
    "/admin/readers/{id}/cancel": (),
}
#: Event types that record a change; a refused request must add none of them.
CHANGES = sorted(set(events.TYPES) - {"article_view", "gate_impression", "unlock_refused"})


def _state(db):
    """Everything a request could change."""
    tables = ("readers", "unlocks", "subscriptions", "payments", "enrollments", "consents", "outbox", "settings")
    counts = {table: db.execute(f"select count(*) from {table}").fetchone()[0] for table in tables}
    counts["changes"] = db.execute(f"select count(*) from events where type in ({','.join('?' * len(CHANGES))})",
                                   CHANGES).fetchone()[0]
    counts["accounts"] = db.execute("select group_concat(coalesce(password_hash, '') || is_admin || "
                                    "coalesce(comp_until, '')) from readers").fetchone()[0]
    counts["clock"] = db.execute("select * from clock").fetchall()
    return counts


def _multipart(values: dict) -> dict:
    """Form data with each FILE_PART drawn turned into an upload."""
    return {name: (io.BytesIO(value[0]), value[1]) if isinstance(value, tuple) else value
            for name, value in values.items()}


def _refused(person: Reader, response) -> bool:
    """A 4xx, or a redirect that flashed a warning (the console's way of saying no)."""
    if 400 <= response.status_code < 500:
        return True
    with person.client.session_transaction() as session:
        return any(category == "warning" for category, _ in session.get("_flashes", []))


def _post_drawn(person: Reader, db, data, forms: dict, path_ids=ONE_ID) -> None:
    """Post one drawn form with drawn values: never a 5xx, and nothing changed if refused."""
    path = data.draw(st.sampled_from(sorted(forms)), label="form")
    values = {name: data.draw(VALUE, label=name) for name in forms[path]}
    url = path.format(id=data.draw(path_ids, label="id"))
    token = person.token()
    with person.client.session_transaction() as session:
        session.pop("_flashes", None)
    before = _state(db)
    response = person.client.post(url, data=_multipart({"csrf_token": token, **values}),
                                  content_type="multipart/form-data")
    assert response.status_code < 500, (url, values)
    if _refused(person, response):
        assert _state(db) == before, (url, values)


@pytest.fixture
def people(app, runner):
    """A signed-in reader and a signed-in admin, with 500s shown as statuses."""
    runner.invoke(args=["readers", "add", "fuzz-reader@example.com", "--password", "fuzz-reader-1"])
    runner.invoke(args=["readers", "add", "fuzz-admin@example.com", "--password", "fuzz-admin-1", "--admin"])
    reader, admin = Reader(app.test_client()), Reader(app.test_client())
    reader.login("fuzz-reader@example.com", "fuzz-reader-1")
    admin.login("fuzz-admin@example.com", "fuzz-admin-1")
    app.testing = False
    return {"reader": reader, "admin": admin}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_visitor_form_with_file_parts_and_extremes(app, db, people, data):
    _post_drawn(Reader(app.test_client()), db, data, VISITOR_FORMS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_reader_form_with_file_parts_and_extremes(db, people, data):
    forms = {**READER_FORMS, **{path: VISITOR_FORMS[path] for path in ("/subscribe/monthly", f"/articles/{METERED}/unlock")}}
    _post_drawn(people["reader"], db, data, forms)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_admin_form_with_file_parts_huge_ids_and_extreme_dates(db, people, data):
    _post_drawn(people["admin"], db, data, ADMIN_FORMS, path_ids=st.one_of(st.just("1"), HUGE_INT))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=HUGE_INT, start=EXTREME_DATE, end=EXTREME_DATE, role=st.sampled_from(["anonymous", "reader", "admin"]))
def test_admin_pages_with_huge_ids_and_extreme_ranges(app, db, people, number, start, end, role):
    client = people[role].client if role in people else app.test_client()
    before = _state(db)
    for path in (f"/admin/readers/{number}", f"/dev/mail/{number}", f"/admin/events.json?after={number}"):
        assert client.get(path).status_code < 500, path
    for path in ("/admin/", "/admin/export.csv", "/admin/experiments"):
        assert client.get(path, query_string={"start": start, "end": end}).status_code < 500, (path, start, end)
    assert _state(db) == before


@FUZZ
@given(email=NASTY, password=NASTY, next_=NASTY)
def test_signup_and_login_forms(app, db, email, password, next_):
    person = Reader(app.test_client())
    for path in ("/signup", "/login", "/login/magic"):
        response = person.post(path, {"email": email, "password": password, "next": next_})
        assert response.status_code < 500


@FUZZ
@given(q=NASTY, page=NASTY, section=NASTY)
def test_query_strings(app, q, page, section):
    client = app.test_client()
    client.application.testing = False  # a 500 must show as a status, not an exception
    for path, params in (("/search", {"q": q, "page": page}), ("/api/articles", {"limit": page, "offset": q, "section": section}),
                         (f"/sections/{quote(section, safe='')}", {"page": page}), ("/", {"x": q}), (f"/api/articles/{METERED}", {"explain": q})):
        assert client.get(path, query_string=params).status_code < 500


@FUZZ
@given(name=NASTY, number=NASTY, expiry=NASTY, cvc=NASTY, key=NASTY)
def test_checkout_with_garbage_changes_nothing(app, db, name, number, expiry, cvc, key):
    person = Reader(app.test_client())
    before = _state(db)
    response = person.post("/subscribe/monthly", {"name": name, "card_number": number, "expiry": expiry,
                                                   "cvc": cvc, "idempotency_key": key, "email": "nope"})
    assert response.status_code in (400, 402)
    assert _state(db) == before


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), st.text(max_size=200)), content_type=st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]))
def test_json_and_binary_bodies(app, db, body, content_type):
    person = Reader(app.test_client())
    before = _state(db)
    token = person.token()
    for path in (f"/api/articles/{METERED}/unlock", "/signup", "/login", f"/articles/{METERED}/unlock",
                 "/newsletter/unsubscribe/garbage", "/demo/persona"):
        response = person.client.post(path, data=body, headers={"Content-Type": content_type, "X-CSRFToken": token})
        assert response.status_code < 500
    assert _state(db) == before


@FUZZ
@given(token=NASTY)
def test_signed_links_with_garbage_tokens(app, db, token):
    client = app.test_client()
    before = _state(db)
    safe = token.replace("/", "_").replace("?", "_").replace("#", "_") or "x"
    for path in (f"/login/magic/{safe}", f"/newsletter/confirm/{safe}", f"/newsletter/unsubscribe/{safe}"):
        assert client.get(path).status_code < 500
        assert client.post(path).status_code < 500
    assert _state(db) == before


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(duration=NASTY, until=NASTY, preset=NASTY, start=NASTY)
def test_admin_inputs(app, runner, db, duration, until, preset, start):
    runner.invoke(args=["readers", "add", "fuzz-admin@example.com", "--password", "fuzz-admin-1", "--admin"])
    admin = Reader(app.test_client())
    admin.login("fuzz-admin@example.com", "fuzz-admin-1")
    now = admin.client.get("/api/health").get_json()["now"]
    for path, data in (("/admin/clock", {"action": "advance", "duration": duration}),
                       ("/admin/readers/1/comp", {"until": until}), ("/admin/rules", {"preset": preset})):
        assert admin.post(path, data).status_code < 500
    for path in ("/admin/", "/admin/export.csv", "/admin/experiments"):
        assert admin.client.get(path, query_string={"start": start, "end": until}).status_code < 500
    valid_move = duration.strip().rstrip("wdhms").isdigit() and int(duration.strip().rstrip("wdhms") or 0) > 0
    if not valid_move:
        assert admin.client.get("/api/health").get_json()["now"] == now


@pytest.mark.parametrize("path", ["/search?q=debt&page=", "/api/articles?offset=", "/api/articles?limit=",
                                  "/sections/Economy?page=", "/admin/events.json?after="])
@pytest.mark.parametrize("number", ["9" * 40, "-9" * 20, "1e309", "0x10"])
def test_huge_numbers_in_query_strings(app, client, runner, path, number):
    if path.startswith("/admin/"):  # behind the login: ask as an admin, so the number is parsed
        runner.invoke(args=["readers", "add", "numbers-admin@example.com", "--password", "numbers-admin-1",
                            "--admin"])
        admin = Reader(app.test_client())
        admin.login("numbers-admin@example.com", "numbers-admin-1")
        assert admin.client.get(path + number).status_code == 200
        return
    assert client.get(path + number).status_code in (200, 302)


@pytest.mark.parametrize("args", [
    ["clock", "advance", "-3d"], ["clock", "set", "99999-01-01"], ["clock", "set", "\x00"],
    ["readers", "add", "\ud7ff@x"], ["readers", "comp", "x@example.com", "--until", "2026-02-30"],
    ["preset", "use", ""], ["newsletter", "send", "💥"], ["db", "seed", "--synthetic", "abc"],
])
def test_cli_rejects_garbage_cleanly(runner, db, args):
    before = _state(db)
    result = runner.invoke(args=args)
    assert result.exit_code in (1, 2)
    assert result.exception is None or isinstance(result.exception, SystemExit)  # refused, not crashed
    assert _state(db) == before
