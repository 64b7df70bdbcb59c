"""The console's forecast: the job (gate.simulate.forecast) and its pages and JSON (gate.web.admin_forecast).

A job is `gate simulate` on the running preset and another, run in a spawned process that writes its
state to <instance>/forecasts/<id>.json; the id is a hash of the rules, the population and the run's
sizes, so an identical request reuses the result and an edited preset does not.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import render_template_string

from gate.cli.simulate import simulate as simulate_command
from gate.conf.settings import Config
from gate.simulate import MAX_DAYS, forecast
from gate.simulate.forecast import ForecastFolder, ForecastJob, ForecastRequest
from gate.storage import events
from gate.web.forms import NOT_TEXT
from tests.helpers import ADMIN, BOTH_ENGINES

SMALL = {"preset": "wpr", "against": "metered", "readers": "500", "days": "10", "seed": "42"}


@pytest.fixture(scope="module")
def cfg():
    return Config()


@pytest.fixture(autouse=True)
def instance(tmp_path, monkeypatch):
    """Each test's site keeps its forecasts in an instance folder of its own."""
    folder = tmp_path / "instance"
    monkeypatch.setenv("GATE_INSTANCE", str(folder))
    return folder


def small_job(cfg, **changes) -> ForecastJob:
    """A job small enough to run in a second: 500 readers over 10 days."""
    values = {**SMALL, **changes}
    return ForecastJob.build(cfg, forecast.parse(values, cfg.presets, "metered"))


def queue(folder: Path, job: ForecastJob, at: float | None = None) -> dict:
    """A job's file as start() writes it before its process starts."""
    return ForecastFolder(folder).write(job.id, forecast.queued(job, time.time() if at is None else at))


def job_files(folder: Path) -> list[str]:
    """The job files in a forecasts folder."""
    return sorted(path.name for path in folder.glob("*.json")) if folder.is_dir() else []


def never(*args):
    raise AssertionError("no process should have been started")


# --- the request --------------------------------------------------------------------------------


def test_a_request_defaults_to_a_small_seeded_population_against_the_running_preset(cfg):
    asked = forecast.parse({"preset": "wpr"}, cfg.presets, "metered")
    assert asked == ForecastRequest("wpr", "metered", 20_000, 60, 42)
    assert forecast.parse({**SMALL, "readers": "1,000,000", "days": str(MAX_DAYS)}, cfg.presets,
                          "hard").readers == forecast.MAX_READERS


@pytest.mark.parametrize("field, value, message", [
    ("readers", "0", "must be from 1 to 1,000,000 (not 0)"),
    ("readers", "1000001", "must be from 1 to 1,000,000"),
    ("readers", "-5", "must be a whole number"),
    ("readers", "2.5", "must be a whole number"),
    ("readers", "lots", "must be a whole number from 1 to 1,000,000, not 'lots'"),
    ("readers", "²", "must be a whole number from 1 to 1,000,000, not '²'"),
    ("readers", "１２", "must be a whole number"),
    ("days", "0", "must be from 1 to 3,650"),
    ("days", "3651", "must be from 1 to 3,650 (not 3,651)"),
    ("seed", "4294967296", "must be from 0 to 4,294,967,295"),
    ("preset", "", "choose a preset to forecast"),
    ("preset", "nope", "no preset named 'nope' (have: bypass-lab,"),
    ("against", "nope", "no preset named 'nope'"),
    ("preset", "metered", "'metered' is the preset it would be compared with: choose another one"),
])
def test_bad_values_are_refused_beside_their_field(cfg, field, value, message):
    with pytest.raises(forecast.ForecastInputError) as refused:
        forecast.parse({**SMALL, field: value}, cfg.presets, "metered")
    assert message in refused.value.errors[field]
    assert set(refused.value.errors) == {field}


def test_every_bad_value_is_named_at_once(cfg):
    with pytest.raises(forecast.ForecastInputError) as refused:
        forecast.parse({"preset": "wpr", "readers": "0", "days": "x", "seed": "-1"}, cfg.presets, "metered")
    assert set(refused.value.errors) == {"readers", "days", "seed"}


# --- the key ------------------------------------------------------------------------------------


def test_the_key_follows_the_rules_not_only_their_names(cfg):
    job = small_job(cfg)
    assert small_job(cfg).key == job.key and re.fullmatch(r"[0-9a-f]{64}", job.key) and job.id == job.key[:16]
    name, rules = job.presets[1]
    limit = rules.tiers.registered.limit
    edited = rules.model_copy(update={"tiers": rules.tiers.model_copy(update={
        "registered": rules.tiers.registered.model_copy(update={"limit": limit + 1})})})
    assert dataclasses.replace(job, presets=(job.presets[0], (name, edited))).key != job.key
    others = [small_job(cfg, readers="501"), small_job(cfg, days="11"), small_job(cfg, seed="7"),
              small_job(cfg, preset="hard"), small_job(cfg, against="hard"),
              dataclasses.replace(job, population_sha256="0" * 64)]
    assert len({other.key for other in others} | {job.key}) == len(others) + 1


# --- running a job ------------------------------------------------------------------------------


def run_here(folder: Path, job: ForecastJob) -> dict:
    """Run a job in this process, as its spawned process does; its final state."""
    queue(folder, job)
    forecast.run(str(folder), job)
    return ForecastFolder(folder).read(job.id)


def test_a_job_gives_what_gate_simulate_gives_and_the_same_seed_gives_the_same_result(cfg, tmp_path):
    job = small_job(cfg)
    first, second = run_here(tmp_path / "a", job), run_here(tmp_path / "b", job)
    assert first["state"] == second["state"] == "done" and first["progress"] == 1.0
    assert first["result"] == second["result"]
    assert [item["scenario"] for item in first["result"]["results"]] == ["metered", "wpr"]
    command = CliRunner().invoke(simulate_command, ["--preset", "metered", "--preset", "wpr", "--readers", "500",
                                                    "--days", "10", "--seed", "42", "--json"])
    assert command.exit_code == 0, command.output
    assert json.loads(command.stdout) == first["result"]
    assert run_here(tmp_path / "c", small_job(cfg, seed="7"))["result"] != first["result"]


def test_progress_goes_from_0_to_1_as_the_days_are_played(cfg, tmp_path, monkeypatch):
    written = []
    real = ForecastFolder.write

    def recording(self, job_id, state):
        written.append((state["state"], state["progress"]))
        return real(self, job_id, state)

    monkeypatch.setattr(ForecastFolder, "write", recording)
    monkeypatch.setattr(forecast, "WRITE_EVERY_S", 0.0)
    run_here(tmp_path, small_job(cfg))
    assert written[0] == ("queued", 0.0) and written[1] == ("running", 0.0) and written[-1] == ("done", 1.0)
    progress = [fraction for _, fraction in written]
    assert progress == sorted(progress)
    assert any(0 < fraction < 1 for fraction in progress)


def test_a_job_that_fails_says_why(cfg, tmp_path):
    job = dataclasses.replace(small_job(cfg), population=tmp_path / "missing.toml")
    state = run_here(tmp_path / "forecasts", job)
    assert state["state"] == "failed" and "missing.toml" in state["error"]
    assert "The forecast failed: " in forecast.describe(state)


def test_a_finished_job_is_reused_and_an_edited_one_is_not(cfg, tmp_path):
    job = small_job(cfg)
    run_here(tmp_path, job)
    state, launched = forecast.start(tmp_path, job, launch=never)
    assert not launched and state["state"] == "done"
    started = []
    other = small_job(cfg, seed="43")
    state, launched = forecast.start(tmp_path, other, launch=lambda folder, job: started.append(job.id))
    assert launched and started == [other.id] and state["state"] == "queued"


def test_a_running_job_is_joined_not_started_twice(cfg, tmp_path):
    job = small_job(cfg)
    state = queue(tmp_path, job)
    ForecastFolder(tmp_path).write(job.id, {**state, "state": "running", "progress": 0.5})
    with forecast._locked(ForecastFolder(tmp_path).lock(job.id)):  # its process is alive
        state, launched = forecast.start(tmp_path, job, launch=never)
    assert not launched and state["progress"] == 0.5


def test_a_job_whose_process_died_is_reported_and_started_again(cfg, tmp_path):
    job, jobs = small_job(cfg), ForecastFolder(tmp_path)
    state = queue(tmp_path, job)
    jobs.write(job.id, {**state, "state": "running", "progress": 0.3})
    assert jobs.status(job.id)["state"] == "failed" and jobs.status(job.id)["error"] == forecast.DIED
    started = []
    forecast.start(tmp_path, job, launch=lambda folder, job: started.append(job.id))
    assert started == [job.id]


def test_a_queued_job_has_a_minute_to_start(cfg, tmp_path):
    job, jobs = small_job(cfg), ForecastFolder(tmp_path)
    queue(tmp_path, job)
    assert jobs.status(job.id)["state"] == "queued" and jobs.active() == [job.id]
    queue(tmp_path, job, at=time.time() - forecast.START_GRACE_S - 1)
    assert jobs.status(job.id)["state"] == "failed"


def test_at_most_AT_ONCE_jobs_run_at_once(cfg, tmp_path):
    jobs = ForecastFolder(tmp_path)
    running = [small_job(cfg, seed=str(seed)) for seed in range(forecast.AT_ONCE)]
    locks = [forecast._locked(jobs.lock(job.id)) for job in running]
    for job, lock in zip(running, locks):
        queue(tmp_path, job, at=time.time() - forecast.START_GRACE_S - 1)  # alive by its lock alone
        lock.__enter__()
    try:
        with pytest.raises(forecast.ForecastBusy, match=f"at most {forecast.AT_ONCE} at once"):
            forecast.start(tmp_path, small_job(cfg, seed="99"), launch=never)
    finally:
        for lock in locks:
            lock.__exit__(None, None, None)
    assert len(job_files(tmp_path)) == forecast.AT_ONCE
    assert forecast.start(tmp_path, small_job(cfg, seed="99"), launch=lambda folder, job: None)[1]


def test_a_slot_is_waited_for(tmp_path):
    jobs = ForecastFolder(tmp_path)
    held = [forecast._locked(tmp_path / f"slot-{number}.lock") for number in range(forecast.AT_ONCE)]
    for lock in held:
        lock.__enter__()
    waiting = jobs.slot(poll_s=0.01)
    try:
        with pytest.raises(TimeoutError):
            _enter_within(waiting, 0.2)
    finally:
        held[0].__exit__(None, None, None)
    with jobs.slot(poll_s=0.01) as number:
        assert number == 0
    for lock in held[1:]:
        lock.__exit__(None, None, None)


def _enter_within(manager, seconds: float) -> None:
    """Enter a context manager in a thread; TimeoutError if it has not within ``seconds``."""
    import threading

    entered = threading.Event()
    thread = threading.Thread(target=lambda: (manager.__enter__(), entered.set()), daemon=True)
    thread.start()
    if not entered.wait(seconds):
        raise TimeoutError


def test_only_the_newest_jobs_are_kept(cfg, tmp_path):
    jobs = ForecastFolder(tmp_path)
    made = [small_job(cfg, seed=str(seed)) for seed in range(forecast.KEEP + 5)]
    for age, job in enumerate(reversed(made)):  # made[0] is the oldest
        path = jobs.file(job.id)
        jobs.write(job.id, {**forecast.queued(job, 0.0), "state": "done"})
        os.utime(path, (time.time() - 100 - age, time.time() - 100 - age))
    with forecast._locked(jobs.lock(made[0].id)):  # the oldest is still running: it stays
        removed = jobs.prune()
    assert sorted(removed) == sorted(job.id for job in made[1:5])
    assert len(job_files(tmp_path)) == forecast.KEEP + 1
    assert not jobs.lock(made[1].id).exists()


# --- the console: pages and JSON ----------------------------------------------------------------


def wait_until_done(client, status_url: str, seconds: float = 120) -> dict:
    """Poll a forecast's status until it is done or failed; every progress seen is between 0 and 1."""
    deadline, seen = time.monotonic() + seconds, []
    while time.monotonic() < deadline:
        body = client.get(status_url).get_json()
        seen.append(body["progress"])
        assert 0 <= body["progress"] <= 1
        if body["state"] in ("done", "failed"):
            assert seen == sorted(seen)
            return body
        time.sleep(0.2)
    raise AssertionError(f"not done within {seconds} s: {body}")


def started_events(db) -> list[dict]:
    """The forecast_started admin actions recorded so far."""
    return [row for row in events.recent(db, 50, "admin_action") if row["data"].get("action") == "forecast_started"]


def test_GATE_INSTANCE_is_where_the_site_keeps_its_forecasts(app, instance):
    assert app.instance_path == str(instance)
    with app.test_request_context():
        from gate.web.admin_forecast import _folder

        assert _folder().path == instance / "forecasts"


def test_the_console_forecast_is_for_admins_only(client, reader, runner, instance):
    assert client.get("/admin/forecast").status_code == 302
    assert reader.post("/admin/forecast", SMALL).status_code == 302
    reader.signup("someone@example.org", "a-long-password-1")
    for path in ("/admin/forecast", "/admin/forecast/0123456789abcdef", "/admin/forecast/0123456789abcdef/view",
                 "/admin/forecast/0123456789abcdef/result"):
        assert client.get(path).status_code == 403
    assert reader.post("/admin/forecast", SMALL).status_code == 403
    assert job_files(instance / "forecasts") == []


@pytest.mark.slow
@BOTH_ENGINES
def test_a_forecast_starts_with_202_is_polled_to_done_and_is_shown_without_javascript(admin, client, db, instance):
    answer = admin.post_json("/admin/forecast", json={**SMALL, "readers": 500, "days": 10})
    assert answer.status_code == 202, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["state"] in ("queued", "running") and not body["reused"]
    assert answer.headers["Location"] == body["status_url"] == f"/admin/forecast/{body['id']}"
    assert (instance / "forecasts" / f"{body['id']}.json").exists()
    done = wait_until_done(client, body["status_url"])
    assert done["state"] == "done" and done["progress"] == 1.0 and done["error"] is None
    assert [item["scenario"] for item in done["result"]["results"]] == ["metered", "wpr"]
    subscriptions = next(row for row in done["comparison"] if row["key"] == "subscriptions")
    assert set(subscriptions) >= {"base", "other", "difference"}
    [event] = started_events(db)
    assert event["data"]["target"] == "wpr" and event["data"]["job"] == body["id"]
    assert event["data"]["admin"] == ADMIN[0] and event["data"]["readers"] == 500

    again = admin.post("/admin/forecast", SMALL, headers={"Accept": "text/html"})
    assert again.status_code == 303 and again.headers["Location"] == f"/admin/forecast/{body['id']}/view"
    assert len(started_events(db)) == 1  # reused: nothing started, nothing recorded
    reused = admin.post_json("/admin/forecast", json=SMALL).get_json()
    assert reused["reused"] and reused["state"] == "done"

    page = client.get(again.headers["Location"]).get_data(as_text=True)
    assert "subscriptions" in page and "Difference" in page and page.count("<svg") == 4
    assert "Gate impressions a day" in page and 'http-equiv="refresh"' not in page
    assert "gate simulate --preset metered --preset wpr --readers 500 --days 10 --seed 42" in page
    assert client.get(f"/admin/forecast?job={body['id']}").get_data(as_text=True).count("<svg") == 4
    fragment = client.get(body["result_url"]).get_data(as_text=True)
    assert "<html" not in fragment and "forecast-table" in fragment and fragment.count("<svg") == 4


@BOTH_ENGINES
def test_a_forecast_is_against_the_running_preset_unless_told(admin, runner, db, instance, monkeypatch):
    launched = []
    monkeypatch.setattr(forecast, "spawn", lambda folder, job: launched.append((Path(folder), job)))
    runner.invoke(args=["preset", "use", "hard"])
    body = admin.post_json("/admin/forecast", json={"preset": "wpr"}).get_json()
    assert body["request"] == {"preset": "wpr", "against": "hard", "readers": 20_000, "days": 60, "seed": 42}
    other = admin.post_json("/admin/forecast", json={"preset": "wpr", "against": "metered"}).get_json()
    assert other["request"]["against"] == "metered"
    assert [(folder, job.id) for folder, job in launched] == [(instance / "forecasts", body["id"]),
                                                             (instance / "forecasts", other["id"])]
    assert [name for name, _ in launched[0][1].presets] == ["hard", "wpr"]
    assert [event["data"]["against"] for event in started_events(db)] == ["metered", "hard"]


def test_a_forecast_under_way_refreshes_its_page_without_javascript(admin, client, cfg, instance):
    job, jobs = small_job(cfg), ForecastFolder(instance / "forecasts")
    state = queue(jobs.path, job)
    jobs.write(job.id, {**state, "state": "running", "progress": 0.4})
    with forecast._locked(jobs.lock(job.id)):
        page = client.get(f"/admin/forecast/{job.id}/view").get_data(as_text=True)
        status = client.get(f"/admin/forecast/{job.id}").get_json()
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page
    assert re.search(r'<progress[^>]*value="0.4"', page) and "40% done" in page
    assert status["state"] == "running" and status["progress"] == 0.4 and "result" not in status
    after = client.get(f"/admin/forecast/{job.id}").get_json()  # its process is gone now
    assert after["state"] == "failed" and after["error"] == forecast.DIED


@BOTH_ENGINES
@pytest.mark.parametrize("sent, field, message", [
    ({"readers": "0"}, "readers", "must be from 1 to 1,000,000"),
    ({"days": "9999"}, "days", "must be from 1 to 3,650"),
    ({"readers": "many"}, "readers", "must be a whole number"),
    ({"preset": "nope"}, "preset", "no preset named 'nope'"),
    ({"preset": "metered"}, "preset", "choose another one"),
])
def test_bad_input_is_400_beside_its_field_and_starts_nothing(admin, client, db, instance, sent, field, message):
    answer = admin.post_json("/admin/forecast", json={**SMALL, **sent})
    assert answer.status_code == 400 and message in answer.get_json()["errors"][field]
    page = admin.post("/admin/forecast", {**SMALL, **sent}, headers={"Accept": "text/html"})
    html = page.get_data(as_text=True)
    assert page.status_code == 400
    assert re.search(rf'<p class="field__error" id="forecast-{field}-error">[^<]*{re.escape(message)}', html.replace("&#39;", "'"))
    assert f'id="forecast-{field}"' in html and 'aria-invalid="true"' in html
    assert job_files(instance / "forecasts") == [] and started_events(db) == []


def test_a_value_that_is_not_text_or_a_number_is_refused(app, admin, instance):
    app.testing = False  # a 500 would be a status here, not an exception
    answer = admin.post_json("/admin/forecast", json={**SMALL, "readers": [500], "days": True})
    assert answer.status_code == 400
    assert set(answer.get_json()["errors"]) == {"readers", "days"}
    for body in ([1], "wpr", None, 5):
        answer = admin.post_json("/admin/forecast", data=json.dumps(body), content_type="application/json")
        assert answer.status_code == 400 and answer.get_json()["errors"] == {"preset": "choose a preset to forecast"}
    page = admin.post("/admin/forecast", {**SMALL, "seed": (io.BytesIO(b"42"), "seed.txt")},
                      content_type="multipart/form-data", headers={"Accept": "text/html"})
    assert page.status_code == 400 and NOT_TEXT.split(":")[0] in page.get_data(as_text=True)
    assert job_files(instance / "forecasts") == []


def test_a_busy_instance_refuses_with_503(admin, cfg, instance):
    jobs = ForecastFolder(instance / "forecasts")
    locks = []
    for seed in range(forecast.AT_ONCE):
        job = small_job(cfg, seed=str(100 + seed))
        queue(jobs.path, job)
        locks.append(forecast._locked(jobs.lock(job.id)))
        locks[-1].__enter__()
    try:
        answer = admin.post_json("/admin/forecast", json=SMALL)
    finally:
        for lock in locks:
            lock.__exit__(None, None, None)
    assert answer.status_code == 503 and "at most 2 at once" in answer.get_json()["message"]
    assert len(job_files(jobs.path)) == forecast.AT_ONCE


def test_unknown_forecasts_and_presets(admin, client):
    for path in ("/admin/forecast/0123456789abcdef", "/admin/forecast/not-a-job", "/admin/forecast/0123456789abcdef/view",
                 "/admin/forecast/0123456789abcdef/result", "/admin/forecast?job=0123456789abcdef"):
        assert client.get(path).status_code == 404, path
    missing = client.get("/admin/forecast/0123456789abcdef")
    assert missing.get_json()["error"] == "not_found" and "Start it again" in missing.get_json()["message"]
    assert client.get("/admin/forecast?preset=nope").status_code == 400


def selected(html: str, name: str) -> str:
    """The value chosen in a select of the page."""
    select = re.search(rf'<select[^>]*name="{name}".*?</select>', html, re.S).group(0)
    return re.search(r'<option selected value="([^"]+)"', select).group(1)


def test_the_page_chooses_the_preset_asked_for(admin, client):
    page = client.get("/admin/forecast?preset=hard").get_data(as_text=True)
    assert selected(page, "preset") == "hard" and selected(page, "against") == "wpr"  # the running one
    running = client.get("/admin/forecast?preset=wpr").get_data(as_text=True)
    assert selected(running, "preset") == "wpr" and selected(running, "against") == "dynamic"  # the first other one
    assert '<script src="/static/forecast.js" defer>' in page
    assert 'aria-current="page">Forecast</a>' in page


def test_the_partial_is_self_contained_for_a_page_that_includes_it(app, admin):
    with app.test_request_context("/admin/rules"):
        html = render_template_string('{% with preset_name = "wpr" %}{% include "admin/_forecast.html" %}{% endwith %}')
    assert 'action="/admin/forecast"' in html and 'name="csrf_token"' in html
    assert selected(html, "preset") == "wpr" and selected(html, "against") == "dynamic"
    with app.test_request_context("/admin/rules?job=0123456789abcdef"):
        html = render_template_string('{% include "admin/_forecast.html" %}')
    assert "There is no forecast <code>0123456789abcdef</code> here any more" in html
