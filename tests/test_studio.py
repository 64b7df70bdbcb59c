"""The rule studio: saved presets through the service, the console's editor, `gate preset` and the JSON API.

Saving writes a file in the instance folder and an event (on either engine); the
editor's form is built from the rules model and refuses a value with the TOML
loader's own words, beside its field; nothing is saved on a refusal.
"""

from __future__ import annotations

import json
import os
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gate import audit, create_app
from gate.app.site import config as site_config
from gate.conf import presetfile, saved
from gate.conf.settings import Config, ConfigError, load_preset
from gate.services import presets
from gate.storage.db import open_database
from tests.helpers import ADMIN, BOTH_ENGINES, METERED, START, Reader, metered_slugs

pytestmark = BOTH_ENGINES


@pytest.fixture
def cfg(app) -> Config:
    return app.extensions["gate.config"]


@pytest.fixture
def folder(app) -> Path:
    return Path(app.config["PRESETS_DIR"])


def saved_events(db, kind: str = "preset_saved") -> list[dict]:
    return [json.loads(row[0]) for row in db.execute(f"select data from events where type = '{kind}' order by id")]


def changes(db) -> int:
    """Events that record a change of presets (a refused request must add none)."""
    return db.execute("select count(*) from events where type in ('preset_saved', 'preset_deleted', "
                      "'preset_changed')").fetchone()[0]


# --- the service ------------------------------------------------------------------------


def test_save_writes_the_file_and_records_who_and_the_rules_before_and_after(db, cfg, folder):
    presets.create(db, cfg, "five-a-week", START, "tester", source="wpr", title="Five a week")
    presets.edit(db, cfg, "five-a-week", ["tiers.registered.limit=5", "tiers.registered.period=week"], START, "tester")
    rules = load_preset(folder / "five-a-week.toml", cfg.publication.timezone)
    assert (rules.title, rules.tiers.registered.limit, rules.tiers.registered.period) == ("Five a week", 5, "week")
    assert cfg.preset("five-a-week") == rules
    first, second = saved_events(db)
    assert (first["by"], first["name"], first["created"], first["from"]) == ("tester", "five-a-week", True, None)
    assert first["to"]["tiers"]["registered"]["limit"] == 3 and second["from"] == first["to"]
    assert second["to"]["tiers"]["registered"] == {"limit": 5, "period": "week", "mode": "choice",
                                                   "unlock_lasts": "period"}
    assert second["created"] is False


@pytest.mark.parametrize("name, problem", [
    ("wpr", "'wpr' is a built-in preset: save your copy under another name"),
    ("Five", "a preset name is 1-40 lower-case letters, digits or dashes"),
    ("../escape", "a preset name is"),
    ("", "a preset name is"),
    ("new", "'new' is the studio's own page: choose another name"),
])
def test_a_saved_preset_needs_a_name_of_its_own(db, cfg, folder, name, problem):
    with pytest.raises(presets.PresetInvalid) as refused:
        presets.create(db, cfg, name, START, "tester", source="metered")
    assert problem in refused.value.errors["name"]
    assert changes(db) == 0 and not folder.exists()


def test_a_new_preset_does_not_overwrite_a_saved_one(db, cfg):
    presets.create(db, cfg, "mine", START, "tester")
    with pytest.raises(presets.PresetInvalid, match="there is already a saved preset called 'mine'"):
        presets.create(db, cfg, "mine", START, "tester", source="hard")
    assert cfg.preset("mine").title == "New preset" and len(saved_events(db)) == 1


def test_delete_refuses_the_running_and_built_in_ones_then_deletes(db, cfg, folder):
    presets.create(db, cfg, "mine", START, "tester", source="metered")
    presets.use(db, cfg, "mine", START, "tester")
    with pytest.raises(presets.PresetRefused, match="mine is running: switch the site to another preset first"):
        presets.delete(db, cfg, "mine", START, "tester")
    with pytest.raises(presets.PresetRefused, match="wpr is a built-in preset"):
        presets.delete(db, cfg, "wpr", START, "tester")
    with pytest.raises(ConfigError, match="no saved preset named 'nope'"):
        presets.delete(db, cfg, "nope", START, "tester")
    assert (folder / "mine.toml").exists() and saved_events(db, "preset_deleted") == []
    presets.use(db, cfg, "wpr", START, "tester")
    presets.delete(db, cfg, "mine", START, "tester")
    assert not (folder / "mine.toml").exists() and "mine" not in cfg.presets
    (deleted,) = saved_events(db, "preset_deleted")
    assert (deleted["by"], deleted["name"], deleted["to"]) == ("tester", "mine", None)
    assert deleted["from"]["tiers"]["anonymous"]["limit"] == 5


def test_a_failed_write_records_nothing(db, cfg, folder, monkeypatch):
    presets.create(db, cfg, "mine", START, "tester")

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(presetfile, "write_atomic", full_disk)
    with pytest.raises(OSError):
        presets.edit(db, cfg, "mine", ["teaser_paragraphs=5"], START, "tester")
    assert len(saved_events(db)) == 1 and cfg.preset("mine").teaser_paragraphs == 3


@pytest.mark.parametrize("setting, key, message", [
    ("tiers.registered.limit=-1", "tiers.registered.limit", 'must be between 0 and 100000, or "unlimited"'),
    ("tiers.registered.limit=lots", "tiers.registered.limit", 'must be a whole number or "unlimited"'),
    ("tiers.anonymous.period=fortnight", "tiers.anonymous.period", "must be month, week, day, lifetime or rolling:N"),
    ("teaser_paragraphs=0", "teaser_paragraphs", "Input should be greater than or equal to 1"),
    ("gate.style=popup", "gate.style", "Input should be 'inline', 'modal' or 'banner'"),
    ("sections.Sport=free", "sections.Sport", "not a section of this site"),
    ("referral.social=true", "referral.social", "social = true needs trust_referer = true"),
    ("tiers.anonymous.require_verified=true", "tiers.anonymous", "require_verified applies to the registered tier"),
    ("colour=red", "colour", "unknown key"),
    ("title.x=1", "title.x", "title is a value, not a table"),
])
def test_a_refused_setting_names_its_key_as_the_toml_loader_does(db, cfg, tmp_path, setting, key, message):
    presets.create(db, cfg, "mine", START, "tester", source="wpr")
    with pytest.raises(presets.PresetInvalid) as refused:
        presets.edit(db, cfg, "mine", [setting], START, "tester")
    assert message in refused.value.errors[key]
    assert cfg.preset("mine") == cfg.preset("wpr").model_copy(update={"name": "mine"}) and len(saved_events(db)) == 1
    if "." in setting.split("=")[0] and key != "title.x":  # the loader says the same of the same file
        data = presets.editable(cfg.preset("mine"))
        presets.assign(data, *setting.split("=", 1))
        data = json.loads(json.dumps(data).replace('"-1"', "-1").replace('"0"', "0").replace('"true"', "true"))
        path = tmp_path / "mine.toml"
        path.write_text(presetfile.dumps(data))
        with pytest.raises(ConfigError) as loaded:
            cfg._checked(path)
        assert f"{path}: {key}: {refused.value.errors[key]}" in str(loaded.value)


def test_the_audit_checks_spends_against_the_saved_rules(app, db, cfg, client):
    """preset_saved keeps the rules, so a site's saved preset is audited even where the file is gone."""
    presets.create(db, cfg, "two-free", START, "tester", source="metered")
    presets.edit(db, cfg, "two-free", ["tiers.anonymous.limit=2"], START, "tester")
    presets.use(db, cfg, "two-free", START, "tester")
    visitor = Reader(client)
    slugs = metered_slugs(db, 3)
    assert [visitor.article(slug)["access"] for slug in slugs] == ["full", "full", "teaser"]
    assert audit.run(db, Config()) == []  # no saved folder: the rules come from the events
    meter, window, at = db.execute("select meter_key, window_key, unlocked_at from unlocks limit 1").fetchone()
    db.execute("insert into unlocks (meter_key, slug, window_key, unlocked_at) values (?, ?, ?, ?)",
               [meter, slugs[2], window, at])  # a third spend, as if the meter had let it through
    event = db.execute("select at, visitor_id, data from events where type = 'unlock' limit 1").fetchone()
    db.execute("insert into events (at, type, visitor_id, slug, data) values (?, 'unlock', ?, ?, ?)",
               [event[0], event[1], slugs[2], event[2]])
    assert {violation.kind for violation in audit.run(db, Config())} == {"quota_exceeded"}


def test_another_app_on_the_site_sees_a_save_on_its_next_request(app, admin, db):
    other = create_app({**{key: app.config[key] for key in ("TESTING", "DATABASE", "SECRET_KEY", "SERVER_NAME",
                                                              "PRESETS_DIR")}})
    before = [p["name"] for p in other.test_client().get("/api/presets").get_json()["presets"]]
    assert admin.post("/admin/rules/new", editor_form(admin, "/admin/rules/new?from=hard", name="hard-copy",
                                                      action="save")).status_code == 303
    after = [p["name"] for p in other.test_client().get("/api/presets").get_json()["presets"]]
    assert after == [*before, "hard-copy"]


def _other_process(app) -> tuple:
    """What another process of the site holds: its own database connection and its own view of the folder."""
    return open_database(app.config["DATABASE"]), Config(saved_dir=app.config["PRESETS_DIR"])


def _stats_of(folder: Path, monkeypatch) -> list:
    """A list that grows by one each time anything stats ``folder``."""
    seen, real_stat = [], os.stat

    def counting(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(folder):
            seen.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting)
    return seen


def test_an_article_page_looks_at_the_presets_only_when_the_site_moved(app, client, folder, monkeypatch):
    monkeypatch.setattr(saved, "LOOK_SECONDS", 3600.0)
    client.get(f"/articles/{METERED}")  # the site's state read and kept, the folder looked at
    looks = _stats_of(folder, monkeypatch)
    for _ in range(3):
        assert client.get(f"/articles/{METERED}").status_code == 200
    assert client.get(f"/api/articles/{METERED}").status_code == 200
    assert looks == []
    client.get("/")  # any other page looks, once
    assert len(looks) == 1
    db, cfg = _other_process(app)
    presets.create(db, cfg, "quiet-copy", START, "tester", source="wpr")
    db.close()
    looks.clear()  # the other process's own looks
    client.get(f"/articles/{METERED}")  # the save moved the site's version: this page looks
    assert looks and "quiet-copy" in app.extensions["gate.config"].presets


def test_an_article_page_uses_a_preset_another_process_just_saved(app, reader, folder, monkeypatch):
    monkeypatch.setattr(saved, "LOOK_SECONDS", 3600.0)  # no look by the clock: only a moved version makes one
    db, cfg = _other_process(app)
    presets.create(db, cfg, "five-a-month", START, "tester", source="wpr")
    presets.edit(db, cfg, "five-a-month", ["tiers.registered.limit=5"], START, "tester")
    presets.use(db, cfg, "five-a-month", START, "tester")
    reader.signup("counting@example.com")
    assert reader.article(METERED)["meter"]["limit"] == 5
    presets.edit(db, cfg, "five-a-month", ["tiers.registered.limit=6"], START, "tester")  # the file only
    assert reader.article(METERED)["meter"]["limit"] == 6
    assert reader.client.get(f"/articles/{METERED}").status_code == 200
    presets.use(db, cfg, "wpr", START, "tester")
    presets.delete(db, cfg, "five-a-month", START, "tester")
    db.close()
    assert reader.article(METERED)["meter"]["limit"] == 3
    assert "five-a-month" not in reader.client.get("/api/presets").get_data(as_text=True)


def test_a_file_put_in_the_folder_by_hand_is_seen_within_a_look(app, client, folder, monkeypatch):
    client.get(f"/articles/{METERED}")
    folder.mkdir(parents=True, exist_ok=True)
    presetfile.write_atomic(folder / "by-hand.toml", presets.file_text(app.extensions["gate.config"].preset("wpr")))
    looks = _stats_of(folder, monkeypatch)
    client.get(f"/articles/{METERED}")
    assert looks == [] and "by-hand" not in app.extensions["gate.config"].presets  # the last look was just now
    monkeypatch.setattr(saved, "LOOK_SECONDS", 0.0)  # the second since the last look has passed
    client.get(f"/articles/{METERED}")
    assert looks and "by-hand" in app.extensions["gate.config"].presets


# --- the console's editor --------------------------------------------------------------------


class _Form(HTMLParser):
    """The named controls of one form of a page and the values a browser would send."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action, self.inside, self.values = action, False, {}
        self.select = self.textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("action") == self.action and attrs.get("method") == "post"
        if not self.inside:
            return
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") != "submit":
            if attrs.get("type") != "checkbox" or "checked" in attrs:
                self.values[name] = attrs.get("value", "")
        elif tag == "select":
            self.select = name
        elif tag == "option" and self.select and ("selected" in attrs or self.select not in self.values):
            self.values[self.select] = attrs.get("value", "")
        elif tag == "textarea":
            self.textarea, self.values[name] = name, ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None

    def handle_data(self, data):
        if self.textarea:
            self.values[self.textarea] += data.lstrip("\r\n") if not self.values[self.textarea] else data


def editor_form(person: Reader, url: str, **changes) -> dict:
    """The editor's form at ``url`` as a browser would send it, with ``changes`` typed in."""
    page = person.client.get(url)
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    action = url.split("?")[0]
    parser = _Form(action)
    parser.feed(page.get_data(as_text=True))
    values = {**parser.values, **changes}
    values.pop("csrf_token", None)
    return {name: value for name, value in values.items() if value is not None}


def error_beside(html: str, field_id: str) -> str:
    """The error shown beside a field (its id + '-error'), or ''."""
    found = re.search(rf'<p class="field__error" id="{re.escape(field_id)}-error">([^<]*)</p>', html)
    return unescape(found.group(1)) if found else ""


def test_the_dynamic_meter_is_designed_in_the_studio_like_any_rule(admin, app):
    form = editor_form(admin, "/admin/rules/new?from=dynamic", name="gentler", **{"dynamic-bands-0-allowance": "6"})
    assert form["dynamic-included"] == "y" and form["dynamic-bands-2-offer"] == "subscribe"
    shown = admin.post("/admin/rules/new", {**form, "action": "check"}).get_data(as_text=True)
    assert "Dynamic meter: none → score ≤ 30: 6, ≤ 70: 3, higher: 1 and a subscribe offer (anonymous visitors)" in (
        unescape(shown))  # the edited bands, in words, against the running preset (no dynamic meter)
    assert admin.post("/admin/rules/new", {**form, "action": "save"}).status_code == 303
    with app.app_context():
        saved = site_config().preset("gentler")
    assert [band.allowance for band in saved.dynamic.bands] == [6, 3, 1] and saved.dynamic.tiers == ["anonymous"]
    refused = admin.post("/admin/rules/new", {**form, "name": "broken", "dynamic-bands-1-up_to": "10",
                                              "action": "save"})
    listed = [preset["name"] for preset in admin.client.get("/api/presets").get_json()["presets"]]
    assert refused.status_code == 400 and "broken" not in listed and "gentler" in listed

def test_a_new_preset_from_an_existing_one_is_shown_filled_in(admin):
    page = admin.client.get("/admin/rules/new?from=wpr").get_data(as_text=True)
    assert 'value="wpr-copy"' in page and "Three of your choice (copy)" in page
    form = editor_form(admin, "/admin/rules/new?from=wpr")
    assert form["tiers-registered-limit-count"] == "3" and form["tiers-registered-mode"] == "choice"
    assert form["tiers-anonymous-limit-count"] == "0" and "tiers-registered-limit-unlimited" not in form
    assert form["sections-0-key"] == ""  # an empty row to add an override
    assert "Nothing: these rules are the running preset's." not in page  # its title differs
    assert "Title: “Three of your choice” → “Three of your choice (copy)”" in page


def test_a_refused_value_is_named_beside_its_field_and_nothing_is_saved(admin, db, folder):
    form = editor_form(admin, "/admin/rules/new?from=metered", name="mine", teaser_paragraphs="30",
                       **{"tiers-registered-limit-count": "lots", "tiers-anonymous-period-every": "rolling",
                          "tiers-anonymous-period-days": "0", "action": "save"})
    response = admin.post("/admin/rules/new", form)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert error_beside(page, "teaser_paragraphs") == "Input should be less than or equal to 20"
    assert error_beside(page, "tiers-registered-limit") == 'Must be a whole number or "unlimited"'
    assert error_beside(page, "tiers-anonymous-period").startswith("Must be month, week, day, lifetime or rolling:N")
    assert 'aria-describedby="teaser_paragraphs-hint teaser_paragraphs-error" aria-invalid="true"' in page
    assert 'value="30"' in page and 'value="lots"' in page  # the form comes back as typed
    assert "Fix the values marked in the form" in page
    assert changes(db) == 0 and not folder.exists()


def test_show_differences_checks_and_compares_without_saving(admin, db, folder):
    form = editor_form(admin, "/admin/rules/new?from=wpr", name="five-a-week", title="Five a week",
                       **{"tiers-registered-limit-count": "5", "tiers-registered-mode": "auto",
                          "tiers-registered-period-every": "week", "sections-0-key": "Economy",
                          "sections-0-value": "free", "action": "check"})
    response = admin.post("/admin/rules/new", form)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    for sentence in ("Registered readers: 3 of their choice a month → 5 counted views a week",
                     "Section Economy: as each article is marked → free",
                     "Title: “Three of your choice” → “Five a week”"):
        assert f"<li>{sentence}</li>" in page
    assert 'name="sections-1-key"' in page  # another empty row to add one more
    assert changes(db) == 0 and not folder.exists()


@pytest.mark.parametrize("section", ["Sport", "²"])
def test_an_unknown_section_is_refused_beside_its_row(admin, db, folder, section):
    form = editor_form(admin, "/admin/rules/new?from=wpr", name="sections-test",
                       **{"sections-0-key": section, "sections-0-value": "free", "action": "save"})
    response = admin.post("/admin/rules/new", form)
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "Not a section of this site (have: Diplomacy," in page
    assert changes(db) == 0 and not folder.exists()

def test_save_and_use_ships_the_preset_and_names_the_admin(admin, client, db, folder):
    form = editor_form(admin, "/admin/rules/new?from=metered", name="two-free",
                       **{"tiers-anonymous-limit-count": "2", "action": "use"})
    response = admin.post("/admin/rules/new", form)
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/rules/two-free")
    assert load_preset(folder / "two-free.toml", "UTC").tiers.anonymous.limit == 2
    (saved,) = saved_events(db)
    assert saved["by"] == ADMIN[0] and saved["to"]["tiers"]["anonymous"]["limit"] == 2
    changed = json.loads(db.execute("select data from events where type = 'preset_changed'").fetchone()[0])
    assert (changed["from"], changed["to"], changed["by"]) == ("wpr", "two-free", ADMIN[0])
    visitor = Reader(client.application.test_client())
    assert visitor.article(METERED)["meter"]["limit"] == 2
    edit = admin.client.get("/admin/rules/two-free").get_data(as_text=True)
    assert "Saved two-free. The site now applies it." in edit and "Nothing: these rules are the running preset" in edit


def test_editing_a_saved_preset_keeps_what_the_form_does_not_show(admin, db, cfg):
    presets.create(db, cfg, "ab-copy", START, "tester", source="metered-ab")
    form = editor_form(admin, "/admin/rules/ab-copy", **{"referral-trust_referer": "y",
                                                               "referral-search_daily": "3", "action": "save"})
    assert admin.post("/admin/rules/ab-copy", form).status_code == 303
    rules = cfg.preset("ab-copy")
    assert rules.referral.search_daily == 3 and rules.experiments == cfg.preset("metered-ab").experiments
    assert saved_events(db)[-1]["to"]["experiments"][0]["id"] == "gate-pressure"
    assert saved_events(db)[-1]["to"]["tiers"]["subscriber"] == {"limit": "unlimited"}  # as its file had it


def test_a_rolling_period_and_an_unlimited_tier_come_from_their_pairs(admin, cfg):
    form = editor_form(admin, "/admin/rules/new", name="rolling", title="Rolling",
                       **{"tiers-registered-limit-count": "4", "tiers-registered-period-every": "rolling",
                          "tiers-registered-period-days": "30", "tiers-anonymous-limit-unlimited": "y",
                          "devices-limit": "2", "action": "save"})
    assert admin.post("/admin/rules/new", form).status_code == 303
    rules = cfg.preset("rolling")
    assert (rules.tiers.registered.period, rules.tiers.anonymous.limit, rules.devices.limit) == ("rolling:30",
                                                                                                 "unlimited", 2)
    again = editor_form(admin, "/admin/rules/rolling")
    assert again["tiers-registered-period-every"] == "rolling" and again["tiers-registered-period-days"] == "30"
    assert again["tiers-anonymous-limit-unlimited"] == "y"


def test_a_built_in_preset_is_copied_before_it_is_edited(admin):
    page = admin.client.get("/admin/rules").get_data(as_text=True)
    assert 'href="/admin/rules/new?from=hard">Copy and edit' in page
    response = admin.client.get("/admin/rules/hard")  # a built-in preset's page is the list
    assert response.status_code == 303 and response.headers["Location"].endswith("/admin/rules")
    assert admin.client.get("/admin/rules/nope").status_code == 404
    assert admin.client.get("/admin/rules/new?from=nope").status_code == 404


def test_a_forged_name_on_edit_is_ignored(admin, db, cfg):
    presets.create(db, cfg, "mine", START, "tester")
    form = editor_form(admin, "/admin/rules/mine", name="wpr", title="Changed", action="save")
    assert admin.post("/admin/rules/mine", form).status_code == 303
    assert cfg.preset("mine").title == "Changed" and cfg.preset("wpr").title == "Three of your choice"


def test_the_list_shows_built_in_and_saved_presets_and_the_broken_files(admin, db, cfg, folder):
    presets.create(db, cfg, "mine", START, "tester", title="My rules")
    (folder / "broken.toml").write_text("title = ")
    cfg.refresh()
    page = admin.client.get("/admin/rules").get_data(as_text=True)
    assert "My rules</strong> <code>mine</code>" in page and '<span class="tag tag--free">saved</span>' in page
    assert "Active: Three of your choice <code>wpr</code>" in page
    assert "<code>broken</code>" in page and "not valid TOML" in page
    assert 'href="/admin/rules/mine/delete"' in page and 'href="/admin/rules/wpr/delete"' not in page
    assert 'href="/admin/rules/mine.toml"' in page and 'href="/admin/rules/mine">Edit' in page


def test_compare_tells_the_differences_in_words_and_keeps_the_settings(admin):
    page = admin.client.get("/admin/rules?a=wpr&b=metered").get_data(as_text=True)
    assert "<li>Registered readers: 3 of their choice a month → 10 counted views a month</li>" in page
    assert "<code>tiers.registered.limit</code>" in page and "diff--changed" in page
    assert admin.client.get("/admin/rules?a=wpr&b=nope").status_code == 400


def test_export_downloads_the_file(admin, db, cfg, folder):
    presets.create(db, cfg, "mine", START, "tester", source="side-doors")
    response = admin.client.get("/admin/rules/mine.toml")
    assert response.headers["Content-Disposition"] == 'attachment; filename="mine.toml"'
    assert response.get_data(as_text=True) == (folder / "mine.toml").read_text()
    shipped = admin.client.get("/admin/rules/wpr.toml").get_data(as_text=True)
    assert shipped.startswith("# The default:")
    assert admin.client.get("/admin/rules/nope.toml").status_code == 404


def test_delete_asks_first_and_refuses_the_running_preset(admin, db, cfg, folder):
    presets.create(db, cfg, "mine", START, "tester")
    assert "Yes, delete mine" in admin.client.get("/admin/rules/mine/delete").get_data(as_text=True)
    admin.post("/admin/rules/mine/delete")  # no confirmation: nothing happens
    assert (folder / "mine.toml").exists()
    presets.use(db, cfg, "mine", START, "tester")
    assert "cannot be deleted" in admin.client.get("/admin/rules/mine/delete").get_data(as_text=True)
    response = admin.post("/admin/rules/mine/delete", {"confirm": "yes"})
    assert response.status_code == 303 and (folder / "mine.toml").exists()
    with admin.client.session_transaction() as session:
        assert session["_flashes"][-1] == ("warning", "Nothing was deleted: mine is running: switch the site to "
                                                      "another preset first, then delete it.")
    admin.post("/admin/rules", {"preset": "wpr"})
    admin.post("/admin/rules/mine/delete", {"confirm": "yes"})
    assert not (folder / "mine.toml").exists() and saved_events(db, "preset_deleted")[0]["by"] == ADMIN[0]
    assert admin.client.get("/admin/rules/wpr/delete").status_code == 404


STUDIO_PAGES = ("/admin/rules/new", "/admin/rules/new?from=wpr", "/admin/rules/wpr.toml")


@pytest.mark.parametrize("url", STUDIO_PAGES)
def test_the_studio_is_for_admins(client, reader, url):
    response = client.get(url)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    reader.signup("nosy@example.com")
    assert reader.client.get(url).status_code == 403


def test_readers_cannot_save_or_delete(reader, db, cfg, folder):
    presets.create(db, cfg, "mine", START, "tester")
    reader.signup("sneaky@example.com")
    assert reader.post("/admin/rules/new", {"name": "evil", "title": "Evil", "action": "save"}).status_code == 403
    assert reader.post("/admin/rules/mine/delete", {"confirm": "yes"}).status_code == 403
    assert sorted(path.name for path in folder.iterdir()) == ["mine.toml"]


def test_a_save_without_the_form_token_is_refused(admin, folder):
    form = editor_form(admin, "/admin/rules/new?from=wpr", name="mine", action="save")
    assert admin.client.post("/admin/rules/new", data=form).status_code == 400
    assert not folder.exists()


# --- `gate preset` ----------------------------------------------------------------------------


def gate(runner, *args):
    result = runner.invoke(args=["preset", *args])
    return result.exit_code, result.output


def test_the_cli_makes_edits_exports_and_deletes_a_preset(runner, db, folder, tmp_path):
    assert gate(runner, "new", "five", "--from", "wpr", "--title", "Five a week")[0] == 0
    code, out = gate(runner, "edit", "five", "--set", "tiers.registered.limit=5", "--set",
                     'tiers.registered.period="week"', "--set", "tiers.registered.mode=auto")
    assert code == 0 and "Registered readers: 3 of their choice a month → 5 counted views a week" in out
    assert "  five                 Five a week  (saved)" in gate(runner, "list")[1]
    code, out = gate(runner, "export", "five")
    assert code == 0 and out == (folder / "five.toml").read_text()
    assert gate(runner, "export", "five", "-o", str(tmp_path / "out.toml"))[0] == 0
    assert load_preset(tmp_path / "out.toml", "UTC").tiers.registered.limit == 5
    assert gate(runner, "use", "five")[0] == 0
    code, out = gate(runner, "delete", "five")
    assert code == 1 and "five is running" in out
    gate(runner, "use", "wpr")
    assert gate(runner, "delete", "five") == (0, "Preset five deleted.\n")
    assert [event["by"] for event in saved_events(db)] == ["cli", "cli"]



def test_a_saved_preset_runs_in_gate_simulate_as_the_forecast_says(runner, folder):
    assert gate(runner, "new", "weekly", "--from", "wpr")[0] == 0
    gate(runner, "edit", "weekly", "--set", "tiers.registered.limit=5", "--set", 'tiers.registered.period="week"')
    result = runner.invoke(args=["simulate", "--preset", "wpr", "--preset", "weekly", "--readers", "300",
                                 "--days", "7", "--json"])
    assert result.exit_code == 0, result.output
    assert '"presets": [\n    "wpr",\n    "weekly"\n  ]' in result.output  # the JSON, after the progress line

@pytest.mark.parametrize("args, message", [
    (("edit", "wpr", "--set", "title=x"), "wpr is a built-in preset: copy it first"),
    (("edit", "nope", "--set", "title=x"), "no preset named 'nope'"),
    (("edit", "mine", "--set", "tiers.registered.limit=-2"), 'tiers.registered.limit: must be between 0 and 100000'),
    (("edit", "mine", "--set", "teaser_paragraphs"), "teaser_paragraphs: write key=value"),
    (("new", "mine"), "name: there is already a saved preset called 'mine'"),
    (("new", "other", "--from", "nope"), "no preset named 'nope'"),
    (("delete", "hard"), "hard is a built-in preset"),
    (("export", "nope"), "no preset named 'nope'"),
])
def test_the_cli_refuses_clearly(runner, args, message):
    gate(runner, "new", "mine")
    code, out = gate(runner, *args)
    assert code == 1 and message in out and "Traceback" not in out


# --- the JSON API -------------------------------------------------------------------------------


def send(person: Reader, method: str, url: str, body=None):
    return person.client.open(url, method=method, json=body, headers={"X-CSRFToken": person.token()})


def test_anyone_reads_the_presets(client, db, cfg):
    presets.create(db, cfg, "mine", START, "tester", source="metered", title="Mine")
    listed = client.get("/api/presets").get_json()["presets"]
    assert listed[-1] == {"name": "mine", "title": "Mine", "description": cfg.preset("metered").description,
                          "kind": "saved", "running": False}
    assert {"name": "wpr", "kind": "built-in", "running": True}.items() <= listed[-2].items()
    one = client.get("/api/presets/mine").get_json()
    assert one["rules"]["tiers"]["anonymous"] == {"limit": 5, "period": "month", "mode": "auto",
                                                  "unlock_lasts": "period"}
    assert "Anonymous visitors: a teaser only → 5 counted views a month" in one["differences_from_running"]
    assert {"rule": "Registered readers", "words": "10 counted views a month"} in one["in_words"]
    assert client.get("/api/presets/nope").status_code == 404


def test_admins_save_replace_and_delete_presets_with_json(admin, db, cfg):
    rules = {"title": "By API", "tiers": {"registered": {"limit": 4, "period": "day"}}}
    response = send(admin, "POST", "/api/presets/by-api", rules)
    assert response.status_code == 201 and response.get_json()["rules"] == rules
    assert send(admin, "POST", "/api/presets/by-api", rules).get_json() == {
        "errors": {"name": "there is already a saved preset called 'by-api': choose another name, or edit it"}}
    replaced = send(admin, "PUT", "/api/presets/by-api?use=1", {**rules, "teaser_paragraphs": 1})
    assert replaced.status_code == 200 and replaced.get_json()["running"] is True
    assert cfg.preset("by-api").teaser_paragraphs == 1
    assert send(admin, "DELETE", "/api/presets/by-api").status_code == 409
    admin.post("/admin/rules", {"preset": "wpr"})
    assert send(admin, "DELETE", "/api/presets/by-api").get_json() == {"deleted": "by-api"}
    assert send(admin, "DELETE", "/api/presets/by-api").status_code == 404
    assert [event["by"] for event in saved_events(db)] == [ADMIN[0], ADMIN[0]]


@pytest.mark.parametrize("body, errors", [
    ({"title": "x", "tiers": {"registered": {"limit": "lots"}}},
     {"tiers.registered.limit": 'must be a whole number or "unlimited"'}),
    ({"title": "x", "teaser_paragraphs": 2.5}, {"teaser_paragraphs": "Input should be a valid integer"}),
    ({"title": "x", "name": "other"}, {"name": "unknown key (set by gate, not the preset)"}),
    ({"tiers": {"registered": {"limit": 3, "colour": "red"}}},
     {"title": "Field required", "tiers.registered.colour": "unknown key"}),
    (["not", "rules"], {"(top level)": "must be a table of preset keys"}),
    (None, {"(top level)": "must be a table of preset keys"}),
])
def test_bad_json_rules_are_refused_by_key(admin, db, folder, body, errors):
    response = send(admin, "PUT", "/api/presets/mine", body)
    assert response.status_code == 400 and response.get_json() == {"errors": errors}
    assert changes(db) == 0 and not folder.exists()


def test_only_admins_change_presets_with_json(app, admin, db, cfg):
    body = {"title": "x"}
    anonymous, nosy = Reader(app.test_client()), Reader(app.test_client())
    assert send(anonymous, "PUT", "/api/presets/mine", body).status_code == 401
    nosy.signup("nosy@example.com")
    assert send(nosy, "PUT", "/api/presets/mine", body).status_code == 403
    assert send(nosy, "DELETE", "/api/presets/wpr").status_code == 403
    no_token = admin.client.put("/api/presets/mine", json=body)
    assert no_token.status_code == 400 and no_token.get_json()["error"] == "csrf_failed"
    assert send(admin, "PUT", "/api/presets/mine?use=maybe", body).get_json()["errors"]["use"].startswith("accepted")
    assert changes(db) == 0 and "mine" not in cfg.presets
