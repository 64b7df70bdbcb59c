"""Try (issue 18): an admin previews a preset as a persona in one browser, without switching the site."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ADMIN, BOTH_ENGINES, METERED, Reader

pytestmark = BOTH_ENGINES

BANNER = ("Trying preset <strong>Hard paywall</strong> as <strong>{who}</strong> — the site still runs "
          "<strong>Three of your choice</strong>")


@pytest.fixture
def demo_app(app):
    app.config["DEMO"] = True
    return app


@pytest.fixture
def studio(demo_app, runner):
    """An admin signed in on a demo site, on the rules page."""
    runner.invoke(args=["readers", "add", ADMIN[0], "--password", ADMIN[1], "--admin"])
    admin = Reader(demo_app.test_client())
    assert admin.login(*ADMIN).status_code == 303
    return admin


def try_preset(person, preset="hard", persona="new-reader", **form):
    return person.post(f"/admin/rules/{preset}/try", {"persona": persona, **form})


def preset_of(person) -> str:
    return person.client.get("/api/health").get_json()["preset"]


def page(person, path="/") -> str:
    return person.client.get(path).get_data(as_text=True)


def events_of(db, kind: str) -> list[dict]:
    return [json.loads(row[0]) for row in db.execute("select data from events where type = ? order by id", [kind])]


def site_preset(db) -> str:
    row = db.execute("select value from settings where key = 'preset'").fetchone()
    return row[0] if row else "wpr"


def test_the_rules_page_offers_try_as_each_persona(studio):
    rules = page(studio, "/admin/rules?a=wpr&b=hard")
    assert 'action="/admin/rules/hard/try"' in rules
    assert "Try <code>hard</code> as a persona" in rules
    assert 'value="one-left" required>' in rules and "A registered reader with one free article left." in rules
    assert "More personas (9)" in rules  # folded as in the demo bar


def test_try_previews_the_preset_as_the_persona_on_a_metered_article(studio, db):
    response = try_preset(studio)
    assert response.status_code == 303 and response.headers["Location"].startswith("/articles/")
    landed = studio.client.get(response.headers["Location"])
    assert 'data-access="teaser"' in landed.get_data(as_text=True)  # the hard paywall's gate, for a new reader
    assert preset_of(studio) == "hard"
    assert studio.meter()["tier"] == "registered"
    assert studio.client.get("/account").get_data(as_text=True).count("persona.new@meridian.example") >= 1
    switched = events_of(db, "persona_switched")[-1]
    assert (switched["to"], switched["tried"], switched["preset"], switched["instructor"]) == (
        "new-reader", "hard", "hard", True)


def test_the_site_and_everyone_else_keep_the_sites_preset(studio, demo_app, db):
    try_preset(studio)
    neighbour = Reader(demo_app.test_client())
    assert preset_of(neighbour) == "wpr" and site_preset(db) == "wpr"
    assert neighbour.article(METERED)["reason"] == "registration_required"  # the site's rules, not hard's
    assert "Trying preset" not in page(neighbour)
    assert events_of(db, "preset_changed") == []


def test_every_page_shows_the_try_banner_the_console_too(studio):
    try_preset(studio)
    for path in ("/", f"/articles/{METERED}", "/admin/", "/admin/rules"):
        assert BANNER.format(who="New reader") in page(studio, path), path
    front = page(studio)
    assert 'action="/demo/studio"' in front and "Back to the studio</button>" in front
    assert "Stop trying</button>" in front and '<label for="try-persona">Switch persona</label>' in front
    # The personas row below names the rules without a second way out of the Try, or a Preview badge.
    assert "Rules: <strong>Hard paywall</strong>" in front and "Back to the site's preset" not in front
    assert "personas__badge" not in front


def test_switching_persona_keeps_the_try(studio, db):
    try_preset(studio, persona="anonymous")
    assert studio.meter()["tier"] == "anonymous"
    assert studio.post("/demo/persona", {"persona": "active", "next": "/"}).status_code == 303
    assert preset_of(studio) == "hard" and studio.meter()["tier"] == "subscriber"
    assert BANNER.format(who="Subscriber") in page(studio)
    assert studio.client.get("/admin/").status_code == 200  # the admin is still underneath
    assert events_of(db, "persona_switched")[-1]["preset"] == "hard"


def test_a_second_try_from_the_console_replaces_the_first(studio, db):
    try_preset(studio)
    assert studio.client.get("/admin/rules").status_code == 200  # the console, as the admin underneath
    assert try_preset(studio, preset="metered", persona="active").status_code == 303
    assert preset_of(studio) == "metered" and studio.meter()["tier"] == "subscriber"
    assert "Trying preset <strong>Classic meter</strong> as <strong>Subscriber</strong>" in page(studio)
    assert events_of(db, "persona_switched")[-1]["instructor"] is True


def test_stop_trying_ends_the_preview_and_keeps_the_persona(studio):
    try_preset(studio, persona="one-left")
    assert studio.post("/demo/preview", {"preset": "", "next": "/"}).status_code == 303
    assert preset_of(studio) == "wpr" and studio.meter()["tier"] == "registered"
    front = page(studio)
    assert "Trying preset" not in front and "persona.one-left@meridian.example</a>" in front


def test_another_preview_ends_the_try(studio):
    try_preset(studio)
    studio.post("/demo/preview", {"preset": "metered", "next": "/"})
    front = page(studio)
    assert preset_of(studio) == "metered" and "Trying preset" not in front
    assert "Previewing <strong>Classic meter</strong>" in front and "Back to the site's preset</button>" in front


def test_back_to_the_studio_returns_to_the_admin_and_the_rules_page(studio, db):
    try_preset(studio, persona="active")
    response = studio.post("/demo/studio", {"next": "/admin/rules"})
    assert response.status_code == 303 and response.headers["Location"] == "/admin/rules"
    assert preset_of(studio) == "wpr" and studio.meter()["tier"] == "registered"  # the admin's own account
    rules = page(studio, "/admin/rules")
    assert f">{ADMIN[0]}</a>" in rules and "Trying preset" not in rules and "Return to instructor" not in rules
    returned = events_of(db, "persona_returned")[-1]
    assert (returned["from"], returned["tried"], returned["preset"]) == ("active", "hard", "hard")


def test_back_to_the_studio_opens_the_presets_own_page_when_the_studio_has_one(demo_app, runner):
    demo_app.add_url_rule("/admin/rules/<name>", "studio_page", lambda name: f"studio of {name}")
    runner.invoke(args=["readers", "add", ADMIN[0], "--password", ADMIN[1], "--admin"])
    admin = Reader(demo_app.test_client())
    admin.login(*ADMIN)
    try_preset(admin)
    assert '<input type="hidden" name="next" value="/admin/rules/hard">' in page(admin)


def test_events_during_a_try_are_tagged_with_the_tried_preset(studio, db):
    try_preset(studio, preset="metered", persona="new-reader")
    assert studio.article(METERED)["access"] == "full"  # metered counts views: the first is free
    assert events_of(db, "unlock")[-1]["preset"] == "metered"
    assert events_of(db, "article_view")[-1]["preset"] == "metered"


def test_try_goes_to_the_page_asked_for_else_the_personas_own(studio):
    assert try_preset(studio, next="/sections/Economy").headers["Location"] == "/sections/Economy"
    assert try_preset(studio, next="https://evil.example/").headers["Location"] == "/"
    assert try_preset(studio, persona="intro-ending").headers["Location"] == "/account"


@pytest.mark.parametrize(("preset", "persona", "says"), [
    ("wizard", "new-reader", "There is no preset called &#39;wizard&#39;."),
    ("hard", "wizard", "There is no persona called &#39;wizard&#39;"),
    ("hard", "", "Choose a persona to try the preset as."),
], ids=["unknown preset", "unknown persona", "no persona"])
def test_a_bad_try_is_refused_and_changes_nothing(studio, db, preset, persona, says):
    switched = len(events_of(db, "persona_switched"))
    response = try_preset(studio, preset, persona)
    assert response.status_code == 400 and says in response.get_data(as_text=True)
    assert preset_of(studio) == "wpr" and studio.meter()["tier"] == "registered"
    assert "Trying preset" not in page(studio) and "Return to instructor" not in page(studio)
    assert len(events_of(db, "persona_switched")) == switched


def test_a_forged_try_is_refused(studio):
    response = studio.client.post("/admin/rules/hard/try", data={"persona": "active", "csrf_token": "forged"})
    assert response.status_code == 400 and preset_of(studio) == "wpr"


def test_only_admins_may_try(demo_app, runner, db):
    visitor = Reader(demo_app.test_client())
    assert try_preset(visitor).status_code == 302  # to the login page
    runner.invoke(args=["readers", "add", "pupil@example.com", "--password", "pupil-pass-1"])
    pupil = Reader(demo_app.test_client())
    pupil.login("pupil@example.com", "pupil-pass-1")
    assert try_preset(pupil).status_code == 403
    assert preset_of(pupil) == "wpr" and events_of(db, "persona_switched") == []


def test_a_persona_without_an_admin_underneath_cannot_go_back_to_the_studio(demo_app):
    student = Reader(demo_app.test_client())
    student.post("/demo/persona", {"persona": "one-left", "next": "/"})
    assert student.post("/demo/studio", {"next": "/admin/rules"}).status_code == 403


def test_outside_demo_mode_try_explains_and_refuses(admin, app):
    rules = page(admin, "/admin/rules")
    assert "Try needs demo mode" in rules and "/try" not in rules
    response = try_preset(admin)
    assert response.status_code == 400 and "needs demo mode" in response.get_data(as_text=True)
    assert preset_of(admin) == "wpr" and admin.meter()["tier"] == "registered"
