"""Saved presets on disk: the instance folder read beside config/, reloaded when it changes, written whole."""

from __future__ import annotations

import logging
import os
import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gate import create_app
from gate.conf import presetfile
from gate.conf.settings import Config, ConfigError
from gate.services import presets


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "presets"


def save_file(folder, name: str, text: str) -> None:
    """Put a preset file in place as the studio does (temp file and rename)."""
    presetfile.write_atomic(folder / f"{name}.toml", text)


FIVE = 'title = "Five a week"\n[tiers.registered]\nlimit = 5\nperiod = "week"\n'


def test_saved_presets_join_the_built_in_ones(folder):
    save_file(folder, "five", FIVE)
    cfg = Config(saved_dir=folder)
    assert cfg.preset("five").tiers.registered.limit == 5 and cfg.preset("five").name == "five"
    assert list(cfg.presets)[-1] == "five" and set(cfg.builtin) < set(cfg.presets)
    assert cfg.preset("five").timezone == cfg.publication.timezone


def test_without_a_folder_there_are_only_the_built_in_ones(folder):
    assert Config(saved_dir=folder).presets == Config().builtin
    assert Config().saved.rules == {}


@pytest.mark.parametrize("name, text, problem", [
    ("broken", "title = ", "not valid TOML"),
    ("wrong", 'title = "x"\nteaser_paragraphs = 30\n', "teaser_paragraphs: Input should be less than or equal to 20"),
    ("foreign", 'title = "x"\n[sections]\nSport = "free"\n', "sections.Sport: not a section of this site"),
    ("wpr", 'title = "Mine"\n', "shadows the built-in preset 'wpr'"),
    ("Bad_Name", 'title = "x"\n', "not a preset name"),
])
def test_a_broken_saved_file_is_skipped_by_name_and_the_rest_load(folder, caplog, name, text, problem):
    save_file(folder, "five", FIVE)
    save_file(folder, name, text)
    with caplog.at_level(logging.WARNING, logger="gate.presets"):
        cfg = Config(saved_dir=folder)
    assert "five" in cfg.presets
    assert problem in cfg.saved.problems[name] and str(folder / f"{name}.toml") in cfg.saved.problems[name]
    assert cfg.presets.get(name) == Config().builtin.get(name)  # skipped (a built-in one keeps its own rules)
    assert any(name in record.getMessage() and problem in record.getMessage() for record in caplog.records)


def test_a_broken_saved_file_does_not_stop_the_site(tmp_path, folder):
    save_file(folder, "broken", "title = ")
    app = create_app({"TESTING": True, "DATABASE": str(tmp_path / "g.sqlite"), "SECRET_KEY": "k",
                      "PRESETS_DIR": str(folder)})
    assert "broken" in app.extensions["gate.config"].saved.problems


def test_a_broken_built_in_file_still_stops_the_start(tmp_path, folder):
    import shutil

    config_dir = tmp_path / "config"
    shutil.copytree(Config().dir, config_dir)
    (config_dir / "presets" / "hard.toml").write_text("title = ")
    with pytest.raises(ConfigError, match="hard.toml: not valid TOML"):
        Config(config_dir, folder)


def test_another_process_sees_a_save_and_a_delete_on_its_next_look(folder):
    mine, theirs = Config(saved_dir=folder), Config(saved_dir=folder)
    assert theirs.refresh() is False
    save_file(folder, "five", FIVE)
    assert theirs.refresh() is True and theirs.preset("five").tiers.registered.limit == 5
    save_file(folder, "five", FIVE.replace("limit = 5", "limit = 6"))  # at once: the same clock tick, maybe
    assert theirs.refresh() is True and theirs.preset("five").tiers.registered.limit == 6
    (folder / "five.toml").unlink()
    assert theirs.refresh() is True and "five" not in theirs.presets
    assert mine.refresh() is False  # it never saw five: nothing changed for it


def test_a_quiet_folder_costs_one_stat(folder, monkeypatch):
    save_file(folder, "five", FIVE)
    past = time.time() - 60
    os.utime(folder, (past, past))  # changed long ago: its time can be trusted
    cfg = Config(saved_dir=folder)

    def no_listing(*args):
        raise AssertionError("the folder was listed although it had not changed")

    monkeypatch.setattr(os, "scandir", no_listing)
    assert cfg.refresh() is False and cfg.refresh() is False


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(folder, monkeypatch):
    save_file(folder, "five", FIVE)

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        save_file(folder, "five", "title = \"half")
    assert (folder / "five.toml").read_text() == FIVE
    assert sorted(path.name for path in folder.iterdir()) == ["five.toml"]


def test_every_shipped_preset_survives_the_file_writer():
    cfg = Config()
    for name, rules in cfg.builtin.items():
        text = presetfile.dumps(presets.editable(rules), presets.FILE_HEADER)
        assert text.startswith("# A preset saved by gate")
        again = presets.build(cfg, name, tomllib.loads(text))
        assert again == rules, name


def test_text_no_file_can_hold_is_refused_by_its_key():
    with pytest.raises(presetfile.TomlValueError) as refused:
        presetfile.dumps({"gate": {"headline": "bad \ud800"}})
    assert refused.value.key == "gate.headline"


KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_ .-]{0,8}", fullmatch=True)
SCALARS = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1),
                    st.text(st.characters(exclude_categories=("Cs",)), max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(SCALARS, max_size=3), st.dictionaries(KEYS, inner, min_size=1, max_size=3),
    st.lists(st.dictionaries(KEYS, SCALARS, min_size=1, max_size=3), min_size=1, max_size=2)), max_leaves=12)


@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_tomllib_reads_back_what_the_writer_wrote(data):
    assert tomllib.loads(presetfile.dumps(data, "a header\nof two lines")) == data


def test_the_folder_is_the_instance_folders_presets_unless_gate_presets_dir_moves_it(tmp_path, monkeypatch):
    base = {"TESTING": True, "DATABASE": str(tmp_path / "g.sqlite"), "SECRET_KEY": "k"}
    monkeypatch.delenv("GATE_PRESETS_DIR", raising=False)
    app = create_app(base)
    assert app.extensions["gate.config"].saved.folder == Path(app.instance_path) / "presets"
    monkeypatch.setenv("GATE_PRESETS_DIR", str(tmp_path / "elsewhere"))
    assert create_app(base).extensions["gate.config"].saved.folder == tmp_path / "elsewhere"
