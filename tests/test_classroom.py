"""The classroom: the tour's try-it buttons, and the bypass lab (unsafe on purpose) next to the safe meter."""

from __future__ import annotations

import pytest

from gate.web.learn import LESSONS
from tests.conftest import Reader, metered_slugs
from tests.test_reading import leaks


@pytest.fixture
def classroom(app):
    app.config["DEMO"] = True
    return Reader(app.test_client())


def test_tour_lists_every_pattern(client):
    page = client.get("/learn/").get_data(as_text=True)
    for title in ("Hard paywall", "Metered by view", "Metered by choice", "Freemium", "Registration wall",
                  "Dynamic", "Bypass lab"):
        assert title in page
    assert "Try it</button>" not in page  # not in demo mode, not an admin


def test_try_it_needs_demo_mode_or_an_admin(reader, db):
    assert reader.post("/learn/try/hard").status_code == 403
    assert db.execute("select value from settings where key = 'preset'").fetchone() is None


@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.id for lesson in LESSONS])
def test_try_it_switches_preset_and_persona(classroom, db, lesson):
    response = classroom.post(f"/learn/try/{lesson.id}")
    assert response.status_code == 303 and response.headers["Location"] == f"/articles/{lesson.article}"
    health = classroom.client.get("/api/health").get_json()
    assert health["preset"] == lesson.preset
    expected_tier = "anonymous" if lesson.persona == "anonymous" else "registered"
    assert classroom.meter()["tier"] == expected_tier
    assert "Try it</button>" in classroom.client.get("/learn/").get_data(as_text=True)


def read_three(person, db):
    for slug in metered_slugs(db, 3):
        assert person.article(slug)["access"] == "full"


def test_bypass_lab_is_porous_by_design(app, runner, db):
    runner.invoke(args=["preset", "use", "bypass-lab"])
    visitor = Reader(app.test_client())
    read_three(visitor, db)
    fourth = metered_slugs(db, 4)[3]
    page = visitor.client.get(f"/articles/{fourth}").get_data(as_text=True)
    assert 'data-access="teaser"' in page and "Unsafe teaching preset" in page
    assert leaks(page, fourth), "view-source shows the gated text"
    assert "porous.js" in page and 'class="story__body porous-body"' in page
    cookie = visitor.client.get_cookie("porous_meter", domain="meridian.test")
    assert all(slug in cookie.value for slug in metered_slugs(db, 3))  # a plain, readable cookie
    assert db.execute("select count(*) from unlocks").fetchone()[0] == 0  # nothing on the server
    visitor.client.delete_cookie("porous_meter", domain="meridian.test")
    assert visitor.article(fourth)["access"] == "full"  # clearing cookies refills it
    visitor.client.set_cookie("porous_meter", "[]", domain="meridian.test")
    assert visitor.meter()["used"] == 0  # and so does editing it


def test_the_safe_meter_resists_the_same_tricks(app, runner, db):
    runner.invoke(args=["preset", "use", "metered"])
    visitor = Reader(app.test_client())
    slugs = metered_slugs(db, 6)
    for slug in slugs[:5]:
        assert visitor.article(slug)["access"] == "full"
    page = visitor.client.get(f"/articles/{slugs[5]}").get_data(as_text=True)
    assert 'data-access="teaser"' in page and leaks(page, slugs[5]) == []
    assert "porous" not in page
    visitor.client.set_cookie("porous_meter", "[]", domain="meridian.test")
    assert visitor.article(slugs[5])["access"] == "teaser"  # a forged cookie means nothing
    visitor.client.set_cookie("session", "forged", domain="meridian.test")
    again = visitor.article(slugs[5])  # a new visitor, with the preset's allowance: never more
    assert again["meter"]["used"] <= 1 and again["meter"]["limit"] == 5


def test_porous_cookie_garbage_is_ignored(app, runner):
    runner.invoke(args=["preset", "use", "bypass-lab"])
    visitor = Reader(app.test_client())
    visitor.client.set_cookie("porous_meter", "{not json", domain="meridian.test")
    assert visitor.meter()["used"] == 0


def test_the_lab_keeps_the_api_honest(app, runner, db):
    """Only the page is porous: JSON still never carries a body the viewer may not read."""
    runner.invoke(args=["preset", "use", "bypass-lab"])
    visitor = Reader(app.test_client())
    read_three(visitor, db)
    data = visitor.article(metered_slugs(db, 4)[3])
    assert data["access"] == "teaser" and "body_html" not in data
