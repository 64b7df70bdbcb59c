"""Demo mode: personas reset to their state on every switch; the explain drawer and JSON."""

from __future__ import annotations

import pytest

from tests.conftest import FREE, METERED, PREMIUM, Reader, metered_slugs

EXPECTED = {  # persona: (tier, remaining of the wpr meter, subscription status)
    "anonymous": ("anonymous", 0, None),
    "new-reader": ("registered", 3, None),
    "one-left": ("registered", 1, None),
    "none-left": ("registered", 0, None),
    "trialing": ("subscriber", None, "trialing"),
    "active": ("subscriber", None, "active"),
    "past-due": ("subscriber", None, "past_due"),
    "lapsed": ("registered", 3, "canceled"),
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
    assert auto["spent"] is True and auto["meter_before"]["used"] == 0 and auto["meter_after"]["used"] == 1
    for data, reason, offer in cases:
        assert (data["reason"], data["offer"]) == (reason, offer)
        assert data["preset"] and data["tier"] and data["offer_why"] and data["trace"]
    seen = {data["reason"] for data, _, _ in cases}
    assert seen == {"registration_required", "free_article", "premium_only", "meter_available",
                    "already_unlocked", "meter_exhausted", "subscriber", "subscribers_only", "tier_unlimited",
                    "verification_required"}
    assert seen == engine_reason_codes()  # every code decide() can give, read from its source


def engine_reason_codes() -> set[str]:
    """The reason codes written in paywall.decide: verdict()'s second argument, and `reason = a if … else b`."""
    import ast
    import inspect

    from gate import paywall

    codes = set()
    for node in ast.walk(ast.parse(inspect.getsource(paywall.decide))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "verdict":
            choices = [node.args[1]]
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "reason" for t in node.targets):
            choices = [node.value.body, node.value.orelse] if isinstance(node.value, ast.IfExp) else [node.value]
        else:
            continue
        codes |= {choice.value for choice in choices if isinstance(choice, ast.Constant)}
    return codes


def test_explain_names_the_window_in_the_site_time_zone(reader):
    reader.signup("window@example.com")
    data = explain(reader, METERED)
    assert data["window"] == {"key": "month:2026-11", "start": "2026-11-01T00:00:00-04:00",
                              "end": "2026-12-01T00:00:00-05:00", "resets_at": "2026-12-01T00:00:00-05:00",
                              "timezone": "America/New_York"}
    assert data["rule"] == {"limit": 3, "period": "month", "mode": "choice", "unlock_lasts": "period",
                            "require_verified": False}
