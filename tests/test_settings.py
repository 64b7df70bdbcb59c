"""Configuration: every shipped preset loads, and every broken file is refused clearly.

A broken file must stop the app with one line per problem that names the
file, the dotted key and the reason, so an instructor editing a preset can
fix it without reading gate's source.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from gate import create_app
from gate.conf.resources import resource_dir
from gate.conf.settings import Config, ConfigError, load_preset
from gate.rules.paywall import Rules

CONFIG = resource_dir("config")
SHIPPED = sorted(path.stem for path in (CONFIG / "presets").glob("*.toml"))


def test_the_shipped_presets_are_the_five_teaching_walls_an_experiment_and_a_proven_meter():
    assert SHIPPED == ["bypass-lab", "dynamic", "freemium", "hard", "metered", "metered-ab", "metered-verified",
                       "registration-wall", "side-doors", "wpr"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_loads(name):
    config = Config()
    rules = config.preset(name)
    assert isinstance(rules, Rules)
    assert rules.name == name
    assert rules.timezone == config.publication.timezone == "America/New_York"
    assert rules.title and rules.gate.headline
    assert rules.tiers.subscriber.unlimited
    assert set(rules.sections) <= set(config.publication.sections)
    assert load_preset(CONFIG / "presets" / f"{name}.toml", "UTC").name == name


def test_the_site_file_loads():
    config = Config()
    assert config.publication.default_preset == "wpr"
    assert [plan.id for plan in config.plans] == ["monthly", "annual", "intro-monthly"]
    assert {letter.audience for letter in config.newsletters} == {"registered", "subscriber"}


def test_an_unknown_preset_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"no preset named 'paywall' \(have: bypass-lab, dynamic, freemium, hard,"):
        Config().preset("paywall")


@pytest.fixture
def config_dir(tmp_path) -> Path:
    """A private copy of config/ to break."""
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    """Replace one exact piece of a config file (which must be there)."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not found once in {path}"
    path.write_text(text.replace(old, new))


WPR_REGISTERED = 'limit = 3\nperiod = "month"\nmode = "choice"\nunlock_lasts = "period"\n'
WPR_SUBSCRIBER = '[tiers.subscriber]\nlimit = "unlimited"\n'

#: (id, file, text to replace, replacement, dotted key, reason)
BROKEN = [
    ("unknown top-level key", "presets/wpr.toml", 'teaser_paragraphs = 3\n',
     'teaser_paragraphs = 3\nteaser_length = 3\n', "teaser_length", "unknown key"),
    ("unknown tier key", "presets/wpr.toml", WPR_REGISTERED,
     WPR_REGISTERED + "limt = 4\n", "tiers.registered.limt", "unknown key"),
    ("unknown tier", "presets/wpr.toml", WPR_SUBSCRIBER,
     WPR_SUBSCRIBER + '\n[tiers.lapsed]\nlimit = 1\n', "tiers.lapsed", "unknown key"),
    ("limit is a word", "presets/wpr.toml", "limit = 3\n",
     'limit = "three"\n', "tiers.registered.limit", 'must be a whole number or "unlimited"'),
    ("limit is a float", "presets/wpr.toml", "limit = 3\n",
     "limit = 3.0\n", "tiers.registered.limit", 'must be a whole number or "unlimited"'),
    ("limit is a bool", "presets/wpr.toml", "limit = 3\n",
     "limit = true\n", "tiers.registered.limit", 'must be a whole number or "unlimited"'),
    ("negative limit", "presets/wpr.toml", "limit = 3\n",
     "limit = -1\n", "tiers.registered.limit", "must be between 0 and 100000"),
    ("period fortnight", "presets/wpr.toml", 'period = "month"',
     'period = "fortnight"', "tiers.registered.period", "must be month, week, day, lifetime or rolling:N"),
    ("period rolling:0", "presets/wpr.toml", 'period = "month"',
     'period = "rolling:0"', "tiers.registered.period", "rolling:N (N days, 1-9999)"),
    ("invalid mode", "presets/wpr.toml", 'mode = "choice"',
     'mode = "pick"', "tiers.registered.mode", "'choice' or 'auto'"),
    ("invalid unlock_lasts", "presets/metered.toml", 'unlock_lasts = "period"\n\n[tiers.registered]',
     'unlock_lasts = "always"\n\n[tiers.registered]', "tiers.anonymous.unlock_lasts", "'period' or 'forever'"),
    ("subscriber limited", "presets/wpr.toml", WPR_SUBSCRIBER,
     "[tiers.subscriber]\nlimit = 10\n", "tiers.subscriber", 'subscribers must have limit = "unlimited"'),
    ("teaser_paragraphs 0", "presets/wpr.toml", "teaser_paragraphs = 3",
     "teaser_paragraphs = 0", "teaser_paragraphs", "greater than or equal to 1"),
    ("gate style", "presets/hard.toml", 'style = "inline"',
     'style = "popup"', "gate.style", "'inline', 'modal' or 'banner'"),
    ("preset sets its own timezone", "presets/wpr.toml", "teaser_paragraphs = 3\n",
     'teaser_paragraphs = 3\ntimezone = "UTC"\n', "timezone", "unknown key"),
    ("section the site lacks", "presets/freemium.toml", 'Climate = "free"',
     'Climate = "free"\nSports = "free"', "sections.Sports", "not a section of this site"),
    ("section class unknown", "presets/freemium.toml", 'Climate = "free"',
     'Climate = "paid"', "sections.Climate", "'metered', 'free' or 'premium'"),
    ("site unknown key", "site.toml", 'tagline = "',
     'colour = "red"\ntagline = "', "site.colour", "unknown key"),
    ("site unknown table", "site.toml", "[site]\n",
     "[branding]\nlogo = 'x.png'\n\n[site]\n", "branding", "unknown key"),
    ("site bad timezone", "site.toml", 'timezone = "America/New_York"',
     'timezone = "America/Gotham"', "site.timezone", "unknown IANA time zone 'America/Gotham'"),
    ("site duplicate plan id", "site.toml", 'id = "annual"',
     'id = "monthly"', "plans", "ids must be unique"),
    ("site duplicate newsletter id", "site.toml", 'id = "weekly-review"',
     'id = "daily-review"', "newsletters", "ids must be unique"),
    ("site plan price", "site.toml", 'name = "Monthly"\nprice_cents = 1200\n',
     'name = "Monthly"\nprice_cents = -5\n', "plans.0.price_cents", "greater than 0"),
    ("site plan currency", "site.toml", 'currency = "USD"\ninterval = "month"\ntrial_days = 0',
     'currency = "usd"\ninterval = "month"\ntrial_days = 0', "plans.0.currency", "should match pattern"),
    ("site plan interval", "site.toml", 'interval = "month"\ntrial_days = 0',
     'interval = "week"\ntrial_days = 0', "plans.0.interval", "'month' or 'year'"),
    ("site intro price above list", "site.toml", "intro_price_cents = 100",
     "intro_price_cents = 5000", "plans.2", "intro_price_cents must be below price_cents"),
    ("site intro without periods", "site.toml", "intro_periods = 1\n",
     "intro_periods = 0\n", "plans.2", "go together"),
    ("site offer two discounts", "site.toml", 'percent_off = 20\n',
     'percent_off = 20\namount_off_cents = 100\n', "offers.1", "exactly one of"),
    ("site offer repeating without periods", "site.toml", 'duration = "repeating"\nperiods = 3\n',
     'duration = "repeating"\n', "offers.0", "periods is required"),
    ("site offer unknown plan", "site.toml", 'plans = ["annual"]',
     'plans = ["weekly"]', "offers", "no plan called 'weekly'"),
    ("site offer duplicate code", "site.toml", 'code = "ANNUAL20"',
     'code = "welcome50"', "offers", "codes must be unique"),
    ("site save offer unknown reason", "site.toml", 'reason = "too_expensive"\nkind',
     'reason = "bored"\nkind', "retention", "unknown reason 'bored'"),
    ("site pause too long", "site.toml", "pause_months = [1, 2, 3]",
     "pause_months = [1, 6]", "retention.save_offers.1", "each 1 to 3"),
    ("site plan id", "site.toml", 'id = "monthly"',
     'id = "Monthly Plan"', "plans.0.id", "should match pattern"),
    ("site default preset missing", "site.toml", 'default_preset = "wpr"',
     'default_preset = "paywall"', "site.default_preset", "no preset named 'paywall'"),
]


@pytest.mark.parametrize(
    "file, old, new, key, reason", [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN]
)
def test_a_broken_file_is_refused_naming_file_key_and_reason(config_dir, file, old, new, key, reason):
    path = config_dir / file
    edit(path, old, new)
    with pytest.raises(ConfigError) as caught:
        Config(config_dir)
    message = str(caught.value)
    assert message.splitlines() == [line for line in message.splitlines() if line.startswith(f"{path}: ")]
    assert len(message.splitlines()) == 1, f"one problem, one line:\n{message}"
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message


@pytest.mark.parametrize("file", ["presets/wpr.toml", "site.toml"])
def test_invalid_toml_names_the_file_and_the_line(config_dir, file):
    path = config_dir / file
    text = path.read_text().splitlines()
    text[7] = "limit = = 3"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(ConfigError) as caught:
        Config(config_dir)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid TOML: ")
    assert "line 8" in message


def test_every_broken_preset_is_reported_at_once(config_dir):
    edit(config_dir / "presets/wpr.toml", "limit = 3\n", "limit = -3\n")
    edit(config_dir / "presets/hard.toml", "teaser_paragraphs = 2", "teaser_paragraphs = 99")
    with pytest.raises(ConfigError) as caught:
        Config(config_dir)
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{config_dir / 'presets/hard.toml'}: teaser_paragraphs: Input should be less than or equal to 20",
        f"{config_dir / 'presets/wpr.toml'}: tiers.registered.limit: "
        'must be between 0 and 100000, or "unlimited"',
    ]


def test_a_config_without_presets_is_refused(config_dir):
    for path in (config_dir / "presets").glob("*.toml"):
        path.unlink()
    with pytest.raises(ConfigError, match="no presets"):
        Config(config_dir)


def test_a_missing_site_file_is_refused(config_dir):
    (config_dir / "site.toml").unlink()
    with pytest.raises(ConfigError, match=r"site\.toml: cannot read"):
        Config(config_dir)


def test_a_new_valid_preset_is_picked_up(config_dir):
    (config_dir / "presets/weekly.toml").write_text(
        'title = "Two a week"\n[tiers.registered]\nlimit = 2\nperiod = "week"\nmode = "auto"\n'
    )
    rules = Config(config_dir).preset("weekly")
    assert (rules.tiers.registered.limit, rules.tiers.registered.period) == (2, "week")
    assert rules.tiers.anonymous.limit == 0
    assert rules.tiers.subscriber.unlimited


def app_config(tmp_path, **extra) -> dict:
    """Test settings for create_app on a throwaway database."""
    return {"TESTING": True, "DATABASE": str(tmp_path / "gate.sqlite"), "SECRET_KEY": "k", **extra}


def test_a_bad_gate_preset_stops_the_app(tmp_path):
    with pytest.raises(ConfigError) as caught:
        create_app(app_config(tmp_path, PRESET="paywall"))
    message = str(caught.value)
    assert message.startswith("GATE_PRESET: no preset named 'paywall'")
    assert "wpr" in message


def test_a_bad_gate_preset_from_the_environment_stops_the_app(tmp_path, monkeypatch):
    monkeypatch.setenv("GATE_PRESET", "Hard")
    with pytest.raises(ConfigError, match="GATE_PRESET: no preset named 'Hard'"):
        create_app(app_config(tmp_path))


def test_a_good_gate_preset_starts_the_app(tmp_path):
    app = create_app(app_config(tmp_path, PRESET="hard"))
    assert "hard" in app.extensions["gate.config"].presets


def test_a_broken_config_dir_stops_the_app(tmp_path, config_dir):
    edit(config_dir / "presets/wpr.toml", 'mode = "choice"', 'mode = "pick"')
    with pytest.raises(ConfigError, match=r"wpr\.toml: tiers\.registered\.mode: "):
        create_app(app_config(tmp_path, CONFIG_DIR=str(config_dir)))


# --- GATE_* environment variables: declared once, parsed strictly ------------------


def env_app(tmp_path, monkeypatch, **variables):
    """A site built with these GATE_* variables set (and no others from the shell)."""
    for name in [key for key in os.environ if key.startswith("GATE_")]:
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return create_app(app_config(tmp_path, SERVER_NAME="meridian.test"))


SPELLINGS = [(word, True) for word in ("1", "true", "yes", "on", "TRUE", "Yes", "On")] + \
            [(word, False) for word in ("0", "false", "no", "off", "False", "NO", "Off", "")]


@pytest.mark.parametrize(("word", "expected"), SPELLINGS)
@pytest.mark.parametrize(("variable", "key"), [
    ("GATE_DEMO", "DEMO"), ("GATE_SECURE_COOKIES", "SESSION_COOKIE_SECURE"),
    ("GATE_EVENT_BUFFER", "EVENT_BUFFER"), ("GATE_RATE_LIMITS", "RATELIMIT_ENABLED"),
])
def test_every_boolean_spelling_means_what_it_says(tmp_path, monkeypatch, variable, key, word, expected):
    # Once GATE_DEMO=off turned demo mode (and /dev/mail/) ON, and GATE_SECURE_COOKIES=true left
    # cookies insecure.
    app = env_app(tmp_path, monkeypatch, **{variable: word})
    default = key == "RATELIMIT_ENABLED"  # the one boolean that is on unless turned off
    assert app.config[key] is (expected if word else default)


@pytest.mark.parametrize(("variable", "value", "accepted"), [
    ("GATE_DEMO", "maybe", "1/true/yes/on or 0/false/no/off"),
    ("GATE_SECURE_COOKIES", "enabled", "1/true/yes/on or 0/false/no/off"),
    ("GATE_RATE_LIMITS", "2", "1/true/yes/on or 0/false/no/off"),
    ("GATE_PROXY_COUNT", "-1", "a whole number from 0 to 10"),
    ("GATE_PROXY_COUNT", "one", "a whole number from 0 to 10"),
    ("GATE_PROXY_COUNT", "11", "a whole number from 0 to 10"),
    ("GATE_BASE_URL", "news.example.com", "an origin like"),
    ("GATE_BASE_URL", "https://news.example.com/paper", "an origin like"),
    ("GATE_BASE_URL", "https://user@news.example.com", "an origin like"),
    ("GATE_BASE_URL", "javascript://news.example.com", "an origin like"),
    ("GATE_BASE_URL", "https://news.example.com:99999", "an origin like"),
    ("GATE_BASE_URL", "https://news.example.com?x", "an origin like"),
    ("GATE_RATELIMIT_STORAGE", "localhost:6379", "a storage URI"),
    ("GATE_DEMOO", "1", "not a gate setting"),
])
def test_a_bad_value_stops_the_start_naming_variable_value_and_what_is_accepted(
        tmp_path, monkeypatch, variable, value, accepted):
    from gate.conf.environment import SettingError

    with pytest.raises(SettingError) as refused:
        env_app(tmp_path, monkeypatch, **{variable: value})
    message = str(refused.value)
    assert message.startswith(variable) and accepted in message
    assert variable == "GATE_DEMOO" or f"{variable}={value!r}" in message


def test_the_cli_refuses_a_bad_value_cleanly(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from gate.cli import main

    monkeypatch.setenv("GATE_DATABASE", str(tmp_path / "cli.sqlite"))
    monkeypatch.setenv("GATE_DEMO", "off-ish")
    result = CliRunner().invoke(main, ["db", "init"])
    assert result.exit_code == 1 and "configuration error" in result.output
    assert "GATE_DEMO='off-ish': accepted: 1/true/yes/on or 0/false/no/off" in result.output
    assert not (tmp_path / "cli.sqlite").exists()


@pytest.mark.parametrize(("value", "origin"), [
    ("https://News.Example.com", "https://news.example.com"),
    ("https://news.example.com/", "https://news.example.com"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_an_origin_is_kept_as_scheme_host_and_port(tmp_path, monkeypatch, value, origin):
    app = env_app(tmp_path, monkeypatch, GATE_BASE_URL=value)
    assert app.config["BASE_URL"] == origin


def test_the_site_file_sets_the_origin_and_the_old_mail_key_is_refused(tmp_path, config_dir):
    site_file = config_dir / "site.toml"
    text = site_file.read_text()
    site_file.write_text(text.replace("[site]\n", '[site]\nbase_url = "https://paper.example"\n', 1))
    assert Config(config_dir).publication.base_url == "https://paper.example"
    assert create_app(app_config(tmp_path, CONFIG_DIR=str(config_dir)))
    site_file.write_text(text.replace("[site]\n", '[site]\nbase_url = "paper.example"\n', 1))
    with pytest.raises(ConfigError, match="site.base_url: accepted: an origin like"):
        Config(config_dir)
    site_file.write_text(text.replace("[mail]\n", '[mail]\nbase_url = "https://paper.example"\n', 1))
    with pytest.raises(ConfigError, match=r"mail.base_url: moved to \[site\] base_url"):
        Config(config_dir)


def _environment_rows(document: str) -> list[str]:
    """The variables in the rows of a document's Environment table, in order."""
    text = (Path(__file__).parents[1] / document).read_text()
    section = re.split(r"^#+ Environment$", text, maxsplit=1, flags=re.MULTILINE)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `(GATE_[A-Z_]+)` \|", section, re.MULTILINE)


def test_help_readme_docs_and_code_list_the_same_variables():
    from click.testing import CliRunner

    from gate.cli import main
    from gate.conf.environment import VARIABLES

    declared = [variable.name for variable in VARIABLES]
    assert _environment_rows("README.md") == declared
    assert _environment_rows("docs/cli.md") == declared
    shown = re.findall(r"^\s+(GATE_[A-Z_]+) ", CliRunner().invoke(main, ["--help"]).output, re.MULTILINE)
    assert shown == declared
    package = Path(__file__).parents[1] / "gate"
    used = {name for path in package.rglob("*.py")
            for name in re.findall(r"""["'](GATE_[A-Z_]+)["']""", path.read_text())}
    assert used <= set(declared), f"read but not declared in gate/conf/environment.py: {used - set(declared)}"
