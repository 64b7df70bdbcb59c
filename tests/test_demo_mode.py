"""Demo mode: personas reset to their state on every switch; the explain drawer and JSON."""

from __future__ import annotations

import html
import re

import pytest
from flask import abort

from gate.services import accounts, orgs
from tests.helpers import BOTH_ENGINES, FREE, METERED, PREMIUM, START, Reader, metered_slugs

pytestmark = BOTH_ENGINES

EXPECTED = {  # persona: (tier, remaining of the wpr meter, subscription status)
    "anonymous": ("anonymous", 0, None),
    "new-reader": ("registered", 3, None),
    "one-left": ("registered", 1, None),
    "none-left": ("registered", 0, None),
    "trialing": ("subscriber", None, "trialing"),
    "active": ("subscriber", None, "active"),
    "past-due": ("subscriber", None, "past_due"),
    "lapsed": ("registered", 3, "canceled"),
    "day-pass": ("registered", 3, None),
    "licensed": ("registered", 3, None),
}


@pytest.fixture
def demo(app):
    app.config["DEMO"] = True
    return Reader(app.test_client())


def become(person, persona, next="/"):
    return person.post("/demo/persona", {"persona": persona, "next": next})


def test_personas_only_exist_in_demo_mode(reader, app):
    assert reader.post("/demo/persona", {"persona": "active"}).status_code == 404
    assert "Demo · view as" not in reader.client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("persona", list(EXPECTED))
def test_each_persona_has_its_defined_state(demo, db, persona):
    response = become(demo, persona, next=f"/articles/{FREE}")
    assert response.status_code == 303 and response.headers["Location"] == f"/articles/{FREE}"
    tier, remaining, status = EXPECTED[persona]
    meter = demo.meter()
    assert meter["tier"] == tier
    if remaining is not None:
        assert meter["remaining"] == remaining
    email = {"new-reader": "persona.new", "one-left": "persona.one-left", "none-left": "persona.none-left",
             "trialing": "persona.trial", "active": "persona.active", "past-due": "persona.past-due",
             "lapsed": "persona.lapsed"}.get(persona)
    if email:
        row = db.execute("select s.status from subscriptions s join readers r on r.id = s.reader_id"
                         " where r.email = ? order by s.id desc limit 1", [f"{email}@meridian.example"]).fetchone()
        assert (row[0] if row else None) == status
    page = demo.client.get("/").get_data(as_text=True)
    assert f'value="{persona}" class="personas__button"' in page


def test_switching_resets_the_persona(demo, db):
    become(demo, "new-reader")
    demo.unlock(metered_slugs(db, 1)[0])
    assert demo.meter()["remaining"] == 2
    become(demo, "active")
    become(demo, "new-reader")
    assert demo.meter()["remaining"] == 3


def test_past_due_persona_has_a_failed_renewal(demo, db):
    become(demo, "past-due")
    outcomes = [r[0] for r in db.execute(
        "select p.outcome from payments p join readers r on r.id = p.reader_id"
        " where r.email = 'persona.past-due@meridian.example' order by p.at")]
    assert outcomes[0] == "succeeded" and "failed" in outcomes[1:]


def test_persona_switch_is_an_event(demo, db):
    become(demo, "lapsed")
    assert db.execute("select count(*) from events where type = 'persona_switched'").fetchone()[0] == 1


def test_unknown_persona_is_a_clear_error(demo):
    assert become(demo, "wizard").status_code == 400


def test_explain_drawer_in_demo_mode_only(demo, app, reader):
    page = demo.client.get(f"/articles/{METERED}").get_data(as_text=True)
    assert '<details class="explain">' in page and "registration_required" in page
    app.config["DEMO"] = False
    assert '<details class="explain">' not in reader.client.get(f"/articles/{METERED}").get_data(as_text=True)


def explain(person, slug):
    data = person.client.get(f"/api/articles/{slug}?explain=1").get_json()
    return data["explain"]


def test_explain_for_every_reason_code(app, runner, db):
    cases = []
    anonymous = Reader(app.test_client())
    cases.append((explain(anonymous, METERED), "registration_required", "register"))
    cases.append((explain(anonymous, FREE), "free_article", None))
    cases.append((explain(anonymous, PREMIUM), "premium_only", "subscribe"))
    member = Reader(app.test_client())
    member.signup("explained@example.com")
    slugs = metered_slugs(db, 4)
    cases.append((explain(member, slugs[0]), "meter_available", "unlock"))
    for slug in slugs[:3]:
        member.unlock(slug)
    cases.append((explain(member, slugs[0]), "already_unlocked", None))
    cases.append((explain(member, slugs[3]), "meter_exhausted", "subscribe"))
    runner.invoke(args=["readers", "add", "paid@example.com", "--password", "paid-pass-123", "--subscriber"])
    paid = Reader(app.test_client())
    paid.login("paid@example.com", "paid-pass-123")
    cases.append((explain(paid, PREMIUM), "subscriber", None))
    link = paid.post_json(f"/api/articles/{PREMIUM}/gift").get_json()["url"].split("meridian.test", 1)[1]
    anonymous.client.get(link)
    anonymous.post(link)  # a gift link opened: this device reads the premium article
    cases.append((explain(anonymous, PREMIUM), "gift", None))
    runner.invoke(args=["preset", "use", "hard"])
    cases.append((explain(member, slugs[3]), "subscribers_only", "subscribe"))
    runner.invoke(args=["preset", "use", "registration-wall"])
    cases.append((explain(member, slugs[3]), "tier_unlimited", None))
    runner.invoke(args=["preset", "use", "metered"])
    auto = explain(Reader(app.test_client()), slugs[0])
    cases.append((auto, "meter_available", None))
    runner.invoke(args=["preset", "use", "metered-verified"])
    unproven = Reader(app.test_client())
    runner.invoke(args=["readers", "add", "unproven@example.com", "--password", "unproven-pass-1"])
    unproven.login("unproven@example.com", "unproven-pass-1")
    cases.append((explain(unproven, slugs[0]), "verification_required", "verify"))
    card = {"card_number": "4242424242424242", "expiry": "12/30", "cvc": "123"}
    assert member.post_json("/api/passes/day", json=card).status_code == 201
    cases.append((explain(member, PREMIUM), "pass", None))
    runner.invoke(args=["orgs", "add", "Explained College", "--seats", "1"])
    orgs.join(db, "explained-college", accounts.by_email(db, "unproven@example.com").id, "invite", START)
    cases.append((explain(unproven, PREMIUM), "licensed", None))
    runner.invoke(args=["preset", "use", "side-doors"])
    searcher = Reader(app.test_client())
    side_door = searcher.client.get(f"/api/articles/{slugs[1]}?explain=1", headers={"Referer": "https://www.bing.com/"})
    cases.append((side_door.get_json()["explain"], "referral", None))
    assert auto["spent"] is True and auto["meter_before"]["used"] == 0 and auto["meter_after"]["used"] == 1
    for data, reason, offer in cases:
        assert (data["reason"], data["offer"]) == (reason, offer)
        assert data["preset"] and data["tier"] and data["offer_why"] and data["trace"]
    seen = {data["reason"] for data, _, _ in cases}
    assert seen == {"registration_required", "free_article", "premium_only", "meter_available",
                    "already_unlocked", "meter_exhausted", "subscriber", "subscribers_only", "tier_unlimited",
                    "verification_required", "pass", "licensed", "referral", "gift"}
    assert seen == engine_reason_codes()  # every code decide() can give, read from its source


def engine_reason_codes() -> set[str]:
    """The reason codes written in paywall.decide: every ``Reason.X`` its source names."""
    import ast
    import inspect

    from gate.rules import paywall

    return {paywall.Reason[node.attr].value for node in ast.walk(ast.parse(inspect.getsource(paywall.decide)))
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "Reason"}


def test_explain_names_the_window_in_the_site_time_zone(reader):
    reader.signup("window@example.com")
    data = explain(reader, METERED)
    assert data["window"] == {"key": "month:2026-11", "start": "2026-11-01T00:00:00-04:00",
                              "end": "2026-12-01T00:00:00-05:00", "resets_at": "2026-12-01T00:00:00-05:00",
                              "timezone": "America/New_York"}
    assert data["rule"] == {"limit": 3, "period": "month", "mode": "choice", "unlock_lasts": "period",
                            "require_verified": False}


# --- "view as": the instructor keeps the console underneath a persona ----------------

BOSS = ("boss@example.com", "boss-pass-123")


@pytest.fixture
def instructor(demo, runner):
    """An admin, signed in on a demo site."""
    runner.invoke(args=["readers", "add", BOSS[0], "--password", BOSS[1], "--admin"])
    assert demo.login(*BOSS).status_code == 303
    return demo


def page(person, path="/"):
    return person.client.get(path).get_data(as_text=True)


def test_an_admin_keeps_the_console_after_switching_persona(instructor):
    become(instructor, "one-left")
    assert instructor.meter()["tier"] == "registered" and instructor.meter()["remaining"] == 1
    front = page(instructor)
    assert "Return to instructor</button>" in front and ">Console</a>" in front
    console = instructor.client.get("/admin/")
    assert console.status_code == 200
    assert BOSS[0] in console.get_data(as_text=True)  # the console acts as the instructor
    assert instructor.meter()["remaining"] == 1  # and the site is still seen as the persona
    become(instructor, "anonymous")  # switching again keeps the instructor underneath
    assert instructor.client.get("/admin/").status_code == 200


def test_return_to_instructor_restores_the_admin(instructor, db):
    become(instructor, "active")
    response = instructor.post("/demo/return", {"next": "/admin/"})
    assert response.status_code == 303 and response.headers["Location"] == "/admin/"
    assert instructor.meter()["tier"] == "registered"  # the admin's own account, not the subscriber
    front = page(instructor)
    assert f">{BOSS[0]}</a>" in front and "Return to instructor" not in front and ">Console</a>" in front
    events = [row[0] for row in db.execute(
        "select type from events where type in ('persona_switched', 'persona_returned') order by id")]
    assert events == ["persona_switched", "persona_returned"]
    switched = db.execute("select data from events where type = 'persona_switched'").fetchone()[0]
    assert '"instructor": true' in switched and '"to": "active"' in switched


def test_admin_actions_under_a_persona_are_recorded_as_the_instructor(instructor, db):
    become(instructor, "new-reader")
    assert instructor.post("/admin/rules", {"preset": "metered"}).status_code == 303
    row = db.execute("select data from events where type = 'admin_action'").fetchone()
    assert f'"admin": "{BOSS[0]}"' in row[0]
    assert instructor.meter()["tier"] == "registered"  # still the persona on the site


@pytest.mark.parametrize("who", ["anonymous student", "registered student", "demoted admin"])
def test_without_an_admin_underneath_nobody_gains_the_console(demo, runner, db, who):
    if who == "registered student":
        runner.invoke(args=["readers", "add", "student@example.com", "--password", "student-pass-1"])
        demo.login("student@example.com", "student-pass-1")
    if who == "demoted admin":
        runner.invoke(args=["readers", "add", BOSS[0], "--password", BOSS[1], "--admin"])
        demo.login(*BOSS)
    become(demo, "one-left")
    if who == "demoted admin":
        db.execute("update readers set is_admin = 0 where email = ?", [BOSS[0]])
    assert demo.post("/demo/return").status_code == 403
    assert demo.client.get("/admin/").status_code == 403
    front = page(demo)
    assert "Return to instructor" not in front and ">Console</a>" not in front
    assert demo.meter()["remaining"] == 1  # still the persona


def test_the_instructor_does_not_survive_logout(instructor):
    become(instructor, "one-left")
    stolen = instructor.client.get_cookie("session", domain="meridian.test").value
    assert instructor.client.get("/admin/").status_code == 200
    assert instructor.logout().status_code == 303
    assert instructor.client.get("/admin/").status_code == 302  # to the login page
    assert "Return to instructor" not in page(instructor)
    instructor.client.set_cookie("session", stolen, domain="meridian.test")  # a copy made before logout
    assert instructor.client.get("/admin/").status_code in (302, 403)
    assert "Return to instructor" not in page(instructor)
    assert instructor.post("/demo/return").status_code == 403


def test_view_as_is_for_demo_mode_only(instructor, app):
    become(instructor, "one-left")
    assert instructor.client.get("/admin/").status_code == 200
    app.config["DEMO"] = False
    assert instructor.client.get("/admin/").status_code == 403


def test_a_forbidden_page_offers_the_way_back(app, runner):
    app.add_url_rule("/forbidden-for-test", "forbidden", lambda: abort(403, description="Not for you."))
    app.config["DEMO"] = True
    runner.invoke(args=["readers", "add", BOSS[0], "--password", BOSS[1], "--admin"])
    instructor = Reader(app.test_client())
    instructor.login(*BOSS)
    become(instructor, "one-left")
    refused = instructor.client.get("/forbidden-for-test")
    assert refused.status_code == 403
    text = refused.get_data(as_text=True)
    assert 'action="/demo/return"' in text and "Return to instructor</button>" in text
    student = Reader(app.test_client())
    student.signup("student@example.com")
    text = student.client.get("/admin/").get_data(as_text=True)
    assert "Return to instructor" not in text and 'href="/login?next=/admin/"' in text


def test_the_demo_bar_shows_the_rules_in_force(demo, runner):
    assert "Rules: <strong>Three of your choice</strong>" in page(demo)
    runner.invoke(args=["preset", "use", "hard"])
    assert "Rules: <strong>Hard paywall</strong>" in page(demo)
    demo.post("/demo/preview", {"preset": "metered", "next": "/"})
    bar = page(demo)
    assert "Previewing <strong>Classic meter</strong>" in bar and "Back to the site's preset</button>" in bar


# --- what the reader sees never contradicts the rules (issue 12) -------------------------

PRESETS = ("wpr", "metered", "metered-ab", "hard", "freemium", "registration-wall", "bypass-lab", "dynamic")
PERSONAS = [persona for persona in EXPECTED]


def visible_text(page: str) -> str:
    """The words a reader sees: no tags, scripts, styles, or the demo drawer's <code> terms."""
    page = re.sub(r"(?s)<(script|style|code)\b.*?</\1>", " ", page)
    return re.sub(r"\s+", " ", re.sub(r"(?s)<[^>]+>", " ", page))


def contradictions(app, preset: str, persona: str, page: str) -> list[str]:
    """Copy on an article page that says something the preset's rules do not do."""
    rules = app.extensions["gate.config"].presets[preset]
    tier = EXPECTED[persona][0]
    text = visible_text(page)
    found = []
    if "You unlocked this article" in text and rules.tier(tier).mode == "auto":
        found.append("'You unlocked this article' where viewing counts by itself (auto mode)")
    if "Sign up to read free articles" in text and not rules.registration_helps:
        found.append("the top bar offers a signup that gives nothing more")
    if "Free access with your account" in text and tier == "anonymous":
        found.append("the top bar speaks of an account an anonymous visitor does not have")
    if 'data-access="teaser"' in page and "Rule unlimited" in text:
        found.append("the drawer says 'Rule: unlimited' above a teaser")
    return found


@pytest.mark.parametrize("preset", PRESETS)
def test_no_page_contradicts_its_rules(demo, app, runner, preset):
    """Every preset × persona × article class: the copy agrees with the rule that applied."""
    runner.invoke(args=["preset", "use", preset])
    problems = []
    for persona in PERSONAS:
        become(demo, persona)
        for slug in (METERED, FREE, PREMIUM, METERED):  # twice: the second view re-reads
            page = demo.client.get(f"/articles/{slug}").get_data(as_text=True)
            problems += [f"{persona} on {slug}: {p}" for p in contradictions(app, preset, persona, page)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("persona", PERSONAS)
def test_no_raw_codes_reach_the_reader(demo, persona):
    """Statuses, charge kinds and reason codes are shown in words: no 'Trial_verification'."""
    become(demo, persona)
    pages = [demo.client.get(f"/articles/{slug}").get_data(as_text=True) for slug in (METERED, PREMIUM)]
    if persona != "anonymous":
        pages.append(demo.client.get("/account").get_data(as_text=True))
    for page in pages:
        text = visible_text(page.split('<details class="explain">')[0])
        assert not re.findall(r"\b[A-Za-z]+_[a-z_]+\b", text), persona


@pytest.mark.parametrize("preset, slug, headline, body", [
    ("hard", METERED, "This article is for subscribers", "get our subscriber newsletters"),
    ("freemium", PREMIUM, "Part of our premium coverage", "Diplomacy and Climate stay free"),
])
def test_subscribe_gates_use_the_presets_own_copy(demo, runner, preset, slug, headline, body):
    """A preset whose gate asks for a subscription says it in its own words, headline and body."""
    runner.invoke(args=["preset", "use", preset])
    page = demo.client.get(f"/articles/{slug}").get_data(as_text=True)
    gate = page.split('<aside class="gate', 1)[1].split("</aside>", 1)[0]
    assert headline in gate and body in gate
    assert "Subscribers read every article, search the archive" not in gate  # the built-in words


def test_a_signup_presets_copy_stays_off_its_subscribe_gate(demo, runner):
    """wpr's copy asks for a signup: its premium gate keeps the built-in subscribe words."""
    page = demo.client.get(f"/articles/{PREMIUM}").get_data(as_text=True)
    gate = page.split('<aside class="gate', 1)[1].split("</aside>", 1)[0]
    assert "Keep reading for free" not in gate and "This article is for subscribers" in gate


def drawer(person, slug) -> str:
    """The explain drawer of an article page, as text."""
    page = person.client.get(f"/articles/{slug}").get_data(as_text=True)
    inside = page.split('<details class="explain">')[1].split("</details>")[0]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", inside)))


def test_drawer_names_the_experiment_arm_and_where_the_copy_comes_from(demo, runner):
    runner.invoke(args=["preset", "use", "metered-ab"])
    text = drawer(demo, PREMIUM)
    assert re.search(r"Experiment gate-pressure , arm (control \(the control|banner-3 \(changes style to banner)", text)
    assert "Gate copy Built-in subscribe copy" in text
    runner.invoke(args=["preset", "use", "hard"])
    assert "Gate copy The preset's own [gate] headline and body (config/presets/hard.toml)" in drawer(demo, METERED)


@pytest.mark.parametrize("persona, says", [
    ("trialing", "Subscription Free trial until December 10, then the first payment is taken"),
    ("past-due", "Subscription Past due: renewal failed November 27; access continues in the grace period "
                 "until December 4, 12:00"),
    ("active", "Subscription Active, renews December 18"),
    ("lapsed", "Subscription Canceled: ended October 28, 2026, so this reader is back to the registered rules"),
])
def test_drawer_names_the_subscription_status(demo, persona, says):
    become(demo, persona)
    assert says in drawer(demo, METERED)


def test_freemium_drawer_does_not_say_unlimited_above_a_teaser(demo, runner):
    runner.invoke(args=["preset", "use", "freemium"])
    text = drawer(demo, PREMIUM)
    assert "Rule premium articles are for subscribers only (the anonymous allowance, unlimited" in text


def test_lapsed_persona_paid_only_for_the_time_it_was_served(demo, db):
    """A lapsed reader's history never shows a paid renewal on or after the day it ended."""
    from gate.rules import billing
    from gate.rules.timeutil import from_iso

    become(demo, "lapsed")
    reader = db.execute("select id from readers where email = 'persona.lapsed@meridian.example'").fetchone()[0]
    ended = from_iso(db.execute("select ended_at from subscriptions where reader_id = ?", [reader]).fetchone()[0])
    paid = [from_iso(row[0]) for row in db.execute(
        "select at from payments where reader_id = ? and outcome = 'succeeded' order by at", [reader])]
    assert len(paid) == 2 and all(at < ended for at in paid)
    assert billing.add_months(paid[-1], 1) == ended  # the last payment covered the time up to the end


def test_every_reason_code_has_words(app):
    from gate.rules import paywall

    assert set(paywall.REASON_LABELS) == set(paywall.Reason) == engine_reason_codes()


def test_a_persona_that_was_mailed_about_its_subscription_still_resets(demo, db):
    become(demo, "active")
    demo.post("/account/subscription/cancel")  # mails a "cancel scheduled" notice
    assert db.execute("select count(*) from notices").fetchone()[0] == 1
    assert become(demo, "active").status_code == 303
    assert db.execute("select count(*) from notices").fetchone()[0] == 0
    assert demo.meter()["tier"] == "subscriber"
