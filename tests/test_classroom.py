"""The classroom: the tour's try-it buttons, and the bypass lab (unsafe on purpose) next to the safe meter."""

from __future__ import annotations

import pytest

from gate.services import personas
from gate.web.learn import LESSONS
from tests.helpers import BOTH_ENGINES, Reader, leaks, metered_slugs

pytestmark = BOTH_ENGINES


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
    assert response.status_code == 303 and response.headers["Location"] == lesson.landing
    health = classroom.client.get("/api/health").get_json()
    assert health["preset"] == lesson.preset
    expected_tier = "subscriber" if lesson.persona == "gift-giver" else (
        "anonymous" if personas.get(lesson.persona).email is None else "registered")
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


# --- in demo mode, a Try it previews the pattern for one visitor only -----------------

BOSS = ("boss@example.com", "boss-pass-123")


def site_preset(db):
    row = db.execute("select value from settings where key = 'preset'").fetchone()
    return row[0] if row else "wpr"  # the site's default


def test_a_students_try_it_does_not_change_the_site_for_anyone_else(app, classroom, db):
    neighbour = Reader(app.test_client())
    assert classroom.post("/learn/try/metered-view").status_code == 303
    assert classroom.client.get("/api/health").get_json()["preset"] == "metered"
    assert classroom.article(metered_slugs(db, 1)[0])["meter"]["limit"] == 5  # the meter answers by it
    assert site_preset(db) == "wpr"
    assert neighbour.client.get("/api/health").get_json()["preset"] == "wpr"
    assert neighbour.article(metered_slugs(db, 1)[0])["reason"] == "registration_required"
    assert db.execute("select count(*) from events where type = 'preset_changed'").fetchone()[0] == 0


def test_a_preview_survives_persona_switches_and_signup_until_given_back(app, classroom, db):
    classroom.post("/learn/try/hard")
    classroom.post("/demo/persona", {"persona": "none-left", "next": "/"})
    assert classroom.client.get("/api/health").get_json()["preset"] == "hard"
    classroom.logout()
    classroom.post("/demo/preview", {"preset": "registration-wall", "next": "/"})
    classroom.signup("pupil@example.com")
    assert classroom.article(metered_slugs(db, 1)[0])["reason"] == "tier_unlimited"
    assert classroom.post("/demo/preview", {"preset": "", "next": "/learn/"}).headers["Location"] == "/learn/"
    assert classroom.client.get("/api/health").get_json()["preset"] == "wpr"


def test_spends_under_a_preview_follow_the_previewed_rules(classroom, db):
    classroom.post("/demo/preview", {"preset": "metered", "next": "/"})
    slugs = metered_slugs(db, 2)
    for slug in slugs:
        assert classroom.article(slug)["access"] == "full"
    meter = classroom.meter()
    assert (meter["used"], meter["limit"], meter["period"]) == (2, 5, "month")
    unlock = db.execute("select data from events where type = 'unlock'").fetchone()[0]
    assert '"preset": "metered"' in unlock  # the audit checks it by the rules it had


@pytest.mark.parametrize("form", [{"preset": "wizard"}, {"preset": "hard", "csrf_token": "forged"}],
                         ids=["unknown preset", "forged form"])
def test_a_bad_preview_changes_nothing(classroom, form):
    assert classroom.post("/demo/preview", {"next": "/", **form}).status_code == 400
    assert classroom.client.get("/api/health").get_json()["preset"] == "wpr"


def test_a_student_cannot_apply_a_lesson_to_the_site(classroom, db):
    assert classroom.post("/learn/try/hard", {"scope": "site"}).status_code == 403
    assert classroom.post("/learn/try/hard", {"scope": "everyone"}).status_code == 400
    assert site_preset(db) == "wpr"


@pytest.fixture
def admin_in_class(classroom, runner):
    runner.invoke(args=["readers", "add", BOSS[0], "--password", BOSS[1], "--admin"])
    classroom.login(*BOSS)
    return classroom


def test_an_admin_chooses_between_preview_and_applying_to_the_site(app, admin_in_class, db):
    tour = admin_in_class.client.get("/learn/").get_data(as_text=True)
    assert 'value="preview" class="button button--primary">Try it</button>' in tour
    assert 'value="site" class="button">Apply to the site</button>' in tour
    admin_in_class.post("/learn/try/freemium")  # preview: the default
    assert site_preset(db) == "wpr"
    # Now viewing as the lesson's persona, with the admin underneath: they may still apply.
    assert admin_in_class.post("/learn/try/hard", {"scope": "site"}).status_code == 303
    assert site_preset(db) == "hard"
    change = db.execute("select data from events where type = 'preset_changed'").fetchone()[0]
    assert f'"by": "{BOSS[0]}"' in change and '"to": "hard"' in change
    assert Reader(app.test_client()).client.get("/api/health").get_json()["preset"] == "hard"
    assert admin_in_class.client.get("/api/health").get_json()["preset"] == "hard"  # the preview is over
    assert admin_in_class.client.get("/admin/").status_code == 200


def test_the_console_shows_the_sites_preset_not_a_preview(admin_in_class):
    admin_in_class.post("/demo/preview", {"preset": "hard", "next": "/"})
    assert admin_in_class.client.get("/api/health").get_json()["preset"] == "hard"
    rules = admin_in_class.client.get("/admin/rules").get_data(as_text=True)
    assert "Paywall rules: <em>Three of your choice</em>" in rules


def test_outside_demo_mode_an_admins_try_it_applies_to_the_site(app, runner, db):
    runner.invoke(args=["readers", "add", BOSS[0], "--password", BOSS[1], "--admin"])
    admin = Reader(app.test_client())
    admin.login(*BOSS)
    assert admin.post("/learn/try/hard", {"scope": "preview"}).status_code == 400
    assert admin.post("/demo/preview", {"preset": "hard"}).status_code == 404
    assert admin.post("/learn/try/hard").status_code == 303
    assert site_preset(db) == "hard"
