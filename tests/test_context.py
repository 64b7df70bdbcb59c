"""The request object: each fact worked out once a request, and again only after a named change."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from flask_login import login_user

from gate.app import site
from gate.app.context import cached_property, current
from gate.app.db import get_db
from gate.rules import paywall
from gate.services import accounts, presets, sitestate
from gate.storage.quota import SqlQuotaStore
from tests.helpers import BOTH_ENGINES, METERED, START

pytestmark = BOTH_ENGINES


def test_one_object_per_request_kept_on_g(app):
    with app.test_request_context("/"):
        state = current()
        assert current() is state and state.now == START and state.config is site.config()
    with app.test_request_context("/"):
        assert current() is not state  # a new request starts afresh


def test_after_spend_reads_the_meter_again_and_keeps_the_viewer_before(app, runner):
    runner.invoke(args=["preset", "use", "metered"])  # anonymous visitors have a meter to read
    with app.test_request_context(f"/articles/{METERED}"):
        state = current()
        before = state.viewer
        assert before.spends == () and state.viewer is before
        state.quota.spend(before.meter_key, METERED, "window", state.now, lambda spends: True)
        assert state.viewer is before  # kept: the meter is read once until a spend says otherwise
        state.after_spend(True)
        assert [spend.slug for spend in state.viewer.spends] == [METERED]
        assert state.viewer_before is before and state.viewer is not before
        assert not state.spent_from_cookie  # the database meter: no cookie to send back


def test_a_tier_without_a_meter_reads_no_spends(app):
    with app.test_request_context(f"/articles/{METERED}"):
        state = current()  # wpr: anonymous visitors read teasers, whatever they spent before
        state.quota.spend(f"visitor:{state.visitor_id()}", METERED, "window", state.now, lambda spends: True)
        assert not state.rules.tier("anonymous").metered and state.viewer.spends == ()


def test_after_rules_change_works_the_rules_and_variants_out_again(app):
    with app.test_request_context("/"):
        state = current()
        assert state.rules.name == "wpr" and state.variants == {}
        viewer = state.viewer
        presets.use(get_db(), site.config(), "metered-ab", state.now, by="test")
        assert state.rules.name == "wpr"  # kept until told
        state.after_rules_change()
        assert state.base_rules.name == state.rules.name == "metered-ab"
        assert set(state.variants) == {"gate-pressure"}
        assert state.rules.tiers.anonymous.limit in (3, 5)  # the arm's limit, applied
        assert state.viewer is not viewer


def test_after_sign_in_reads_the_new_readers_meter(app):
    with app.test_request_context("/"):
        state = current()
        assert state.viewer.tier == "anonymous"
        reader = accounts.create(get_db(), "new@example.com", "a-long-password", state.now)
        login_user(reader)
        assert state.viewer.tier == "anonymous"  # kept until told
        state.after_sign_in()
        assert (state.viewer.tier, state.viewer.meter_key) == ("registered", reader.meter_key)


def test_a_spend_from_the_porous_cookie_is_sent_back(app, client, runner):
    runner.invoke(args=["preset", "use", "bypass-lab"])
    with app.test_request_context(f"/articles/{METERED}"):
        state = current()
        assert state.porous and state.viewer_quota is state.cookie_meter
        state.after_spend(False)
        assert not state.spent_from_cookie
        state.after_spend(True)
        assert state.spent_from_cookie
        state.after_rules_change()
        assert "cookie_meter" not in vars(state)  # read from the cookie again under the new rules


@pytest.fixture
def computations(monkeypatch):
    """How often one request decides, reads a meter or reads the site's state (clock and preset)."""
    calls = Counter()
    for owner, name in [(paywall, "decide"), (paywall, "meter_for"), (SqlQuotaStore, "spends"),
                        (sitestate, "read")]:
        real = getattr(owner, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("preset, meters", [("wpr", 0), ("metered", 1)])  # a teaser-only visitor; auto mode re-reading
def test_an_article_is_decided_once_a_request(client, runner, computations, preset, meters):
    """One GET reads the site's state and the meter once and decides once (the header's meter aside).

    Under wpr an anonymous visitor has no meter (a teaser whatever they did), so none is read.
    """
    runner.invoke(args=["preset", "use", preset])
    client.get(f"/articles/{METERED}")  # auto mode spends here; the GET below spends nothing
    computations.clear()
    assert client.get(f"/articles/{METERED}").status_code == 200
    assert (computations["read"], computations["spends"], computations["decide"]) == (1, meters, 1)
    assert computations["meter_for"] == 1  # decide's: the header shows the decision's meter
    computations.clear()
    assert client.get(f"/api/articles/{METERED}").status_code == 200
    assert +computations == +Counter(read=1, spends=meters, decide=1, meter_for=1)


def test_a_field_worked_out_in_one_request_does_not_hold_up_another():
    """Two requests' states work out the same field at once: neither waits on a lock held by the other.

    Python 3.11's ``functools.cached_property`` holds one lock per field for
    every instance while it is worked out, so the second thread would wait
    for the first, which waits for the second: this would time out.
    """
    first_started, second_done = threading.Event(), threading.Event()

    class State:
        def __init__(self, name: str) -> None:
            self.name = name

        @cached_property
        def field(self) -> str:
            if self.name == "first":
                first_started.set()
                assert second_done.wait(5), "the other request's field waited for this one's"
            return self.name

    answers = {}

    def work_out(state: State) -> None:
        answers[state.name] = state.field

    first = threading.Thread(target=work_out, args=(State("first"),))
    first.start()
    assert first_started.wait(5)
    work_out(State("second"))
    second_done.set()
    first.join(5)
    assert answers == {"first": "first", "second": "second"}


def test_a_worked_out_field_is_kept_on_its_instance():
    """Worked out once per instance, then read from the instance (and dropped by deleting it there)."""
    calls = []

    class State:
        @cached_property
        def field(self) -> int:
            """The field's own doc."""
            calls.append(1)
            return len(calls)

    state, other = State(), State()
    assert (state.field, state.field, other.field) == (1, 1, 2)
    del state.__dict__["field"]
    assert state.field == 3
    assert State.field.__doc__ == "The field's own doc."
