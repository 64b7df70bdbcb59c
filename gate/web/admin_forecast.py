"""The console's forecast: the running preset against another one, on a seeded population, in the background.

``POST /admin/forecast`` starts a job (:mod:`gate.simulate.forecast`), or finds an
identical one, and answers 202 with its id and status URL; a browser's plain form
post goes to the job's page instead. ``GET /admin/forecast/<id>`` is the job's state
as JSON, for polling. The job's page and its result are rendered on the server, so
everything works without JavaScript; ``forecast.js`` starts it in place, shows its
progress and swaps the result in. Admins only, like every /admin page.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from wtforms import SelectField, StringField

from gate.app import site
from gate.app.db import get_db
from gate.services import presets
from gate.simulate import MAX_DAYS, forecast, report
from gate.web.admin import _admins_only, _record
from gate.web.forms import TextForm

bp = Blueprint("admin_forecast", __name__, url_prefix="/admin")
bp.before_request(_admins_only)


def _number(label: str, low: int, high: int) -> StringField:
    """A whole-number field: text, so the forecast's own check words every refusal."""
    return StringField(label, render_kw={"type": "number", "min": low, "max": high, "inputmode": "numeric"})


class ForecastForm(TextForm):
    """The forecast's fields; :func:`gate.simulate.forecast.parse` checks them, as it checks JSON."""

    preset = SelectField("Preset to forecast", validate_choice=False)
    against = SelectField("Against", validate_choice=False)
    readers = _number("Readers", 1, forecast.MAX_READERS)
    days = _number("Days", 1, MAX_DAYS)
    seed = _number("Seed", 0, forecast.MAX_SEED)

    def _submitted_text(self) -> MultiDict | None:
        """The form's fields, or a JSON object whose whole numbers count as text: scripts send ``"readers": 500``."""
        text = super()._submitted_text()
        body = request.get_json(silent=True) if request.is_json else None
        for name in sorted(self.not_text):
            value = body.get(name) if isinstance(body, dict) else None
            if isinstance(value, int) and not isinstance(value, bool):
                text[name] = str(value)
                self.not_text.discard(name)
        return text


def _folder() -> forecast.ForecastFolder:
    """This instance's forecasts (shared by every process and node that shares the instance folder)."""
    return forecast.ForecastFolder(Path(current_app.instance_path) / forecast.FOLDER)


def _running() -> str:
    """The preset the site runs now: what a forecast is compared with by default."""
    return presets.active_name(get_db(), site.config())


def _form(running: str, values: dict | None = None) -> ForecastForm:
    """The form with every preset to choose from, filled with ``values``, or with what was posted."""
    cfg = site.config()
    form = ForecastForm(formdata=None, data=values) if values is not None else ForecastForm()
    names = sorted(cfg.presets)
    form.preset.choices = [(name, f"{cfg.presets[name].title} ({name})") for name in names]
    form.against.choices = [(name, f"{cfg.presets[name].title} ({name}){' · running' if name == running else ''}")
                            for name in names]
    return form


def _defaults(preset_name: str | None, running: str) -> dict:
    """A fresh form's values: the preset given (else the first one not running), against the running one.

    The running preset itself is forecast against the first other one.
    """
    cfg = site.config()
    names = sorted(cfg.presets)
    others = [name for name in names if name != running and not cfg.presets[name].porous] or [running]
    chosen = preset_name if preset_name in names else others[0]
    against = running if chosen != running else others[0]
    return {"preset": chosen, "against": against, "readers": str(forecast.DEFAULT_READERS),
            "days": str(forecast.DEFAULT_DAYS), "seed": str(forecast.DEFAULT_SEED)}


def _panel(form: ForecastForm, running: str, state: dict | None = None, missing: str | None = None) -> dict:
    """What the forecast partial shows: the form, and a job's progress, error or result."""
    panel = {"form": form, "running": running, "job": state, "missing": missing, "message": "",
             "rows": [], "charts": [], "at_once": forecast.AT_ONCE}
    if state is None:
        return panel
    panel["message"] = forecast.describe(state)
    panel["urls"] = _urls(state["id"])
    if state["state"] == forecast.DONE:
        against, preset = state["request"]["against"], state["request"]["preset"]
        panel["rows"] = report.compare(state["result"], against, preset)
        panel["charts"] = report.compared_daily(state["result"], [against, preset])
        panel["ignored"] = {item["preset"]: item["experiments_ignored"] for item in state["result"]["results"]
                            if item["experiments_ignored"]}
    return panel


@bp.app_template_global("forecast_panel")
def forecast_panel(preset_name: str | None = None) -> dict:
    """The partial's content when a page includes it with ``preset_name`` set (the forecast of ``?job=`` too)."""
    running = _running()
    job_id = request.args.get("job")
    state = _folder().status(job_id) if job_id else None
    values = state["request"] if state else _defaults(preset_name, running)
    return _panel(_form(running, values), running, state, job_id if job_id and state is None else None)


def _urls(job_id: str) -> dict:
    """Where a job's state, page and result fragment are."""
    return {"status_url": url_for("admin_forecast.status", job_id=job_id),
            "view_url": url_for("admin_forecast.view", job_id=job_id),
            "result_url": url_for("admin_forecast.result", job_id=job_id)}


#: What an id that is no job (or one removed since) gets.
MISSING = f"There is no such forecast here (only the newest {forecast.KEEP} are kept). Start it again."


def _job(job_id: str) -> dict:
    """A job's state, or 404."""
    state = _folder().status(job_id)
    if state is None:
        abort(404, description=MISSING)
    return state


def _status_json(state: dict) -> dict:
    """A job as JSON: its state, progress (0 to 1) and message; its result and comparison once done."""
    body = {key: state[key] for key in ("id", "state", "progress", "error", "request", "queued_at", "started_at",
                                        "finished_at", "elapsed_s")}
    body.update(message=forecast.describe(state), **_urls(state["id"]))
    if state["state"] == forecast.DONE:
        body["result"] = state["result"]
        body["comparison"] = report.compare(state["result"], state["request"]["against"], state["request"]["preset"])
    return body


def _wants_json() -> bool:
    """A script or forecast.js (JSON, or JSON preferred to HTML), rather than a browser's form post."""
    return request.is_json or request.accept_mimetypes.best_match(["application/json", "text/html"]) == "application/json"


def _refused(form: ForecastForm, running: str, errors: dict, code: int, message: str):
    """Nothing started: each problem beside its field (or in JSON), the form kept as sent."""
    if _wants_json():
        return jsonify(error="invalid" if code == 400 else "busy", message=message, errors=errors), code
    for name, problem in errors.items():
        form[name].errors = [problem]
    panel = _panel(form, running)
    panel["message"] = message
    return render_template("admin/forecast.html", forecast=panel), code


@bp.get("/forecast")
def page():
    """The forecast form (``?preset=NAME`` chooses the preset), with the forecast of ``?job=ID`` if any."""
    preset_name = request.args.get("preset")
    if preset_name is not None and preset_name not in site.config().presets:
        abort(400, description=f"There is no preset named {preset_name[:60]!r}.")
    if request.args.get("job") is not None:
        _job(request.args["job"])
    return render_template("admin/forecast.html", forecast=forecast_panel(preset_name))


@bp.post("/forecast")
def start():
    """Start a forecast, or find an identical one: 202 with its status URL (a form post goes to its page)."""
    cfg, running = site.config(), _running()
    form = _form(running)
    if not form.validate_on_submit():  # a value sent as a file or a JSON object
        return _refused(form, running, {name: " ".join(form[name].errors) for name in form.not_text
                                        if name in form}, 400, "Nothing was started: fix the values marked.")
    try:
        asked = forecast.parse(form.data, cfg.presets, running)
        state, launched = forecast.start(_folder().path, forecast.ForecastJob.build(cfg, asked))
    except forecast.ForecastInputError as error:
        return _refused(form, running, error.errors, 400, "Nothing was started: fix the values marked.")
    except forecast.ForecastBusy as error:
        return _refused(form, running, {}, 503, f"Nothing was started: {error}.")
    if launched:
        _record("forecast_started", asked.preset, job=state["id"], against=asked.against, readers=asked.readers,
                days=asked.days, seed=asked.seed)
    if _wants_json():
        body = {**_status_json(state), "reused": not launched}
        return jsonify(body), 202, {"Location": body["status_url"]}
    return redirect(url_for("admin_forecast.view", job_id=state["id"]), code=303)


@bp.get("/forecast/<job_id>")
def status(job_id: str):
    """A forecast's state as JSON, for polling: state, progress 0 to 1, and the result when done."""
    state = _folder().status(job_id)
    if state is None:
        return jsonify(error="not_found", message=MISSING), 404
    return jsonify(_status_json(state))


@bp.get("/forecast/<job_id>/view")
def view(job_id: str):
    """A forecast's page: its progress (refreshing itself without JavaScript), then its table and charts."""
    state, running = _job(job_id), _running()
    panel = _panel(_form(running, state["request"]), running, state)
    return render_template("admin/forecast.html", forecast=panel)


@bp.get("/forecast/<job_id>/result")
def result(job_id: str):
    """A forecast's result as an HTML fragment, which forecast.js swaps into the page."""
    state, running = _job(job_id), _running()
    return render_template("admin/_forecast_result.html", forecast=_panel(_form(running, {}), running, state))
