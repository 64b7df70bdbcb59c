"""The instructor console at /admin: dashboard, clock, readers, events, experiments (rules: gate.web.studio).

Admins only: anonymous visitors are sent to log in, readers get 403. Every
change made here is an event naming the admin.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from gate.app import clockops, site
from gate.app.context import current
from gate.app.db import get_db
from gate.conf.settings import ConfigError
from gate.rules import billing, paywall, periods
from gate.rules import experiments as exp_stats
from gate.rules.timeutil import parse_day, parse_moment
from gate.services import accounts, charts, engagement, newsletter, newsletter_mail, presets, subscriptions
from gate.services import dashboard as stats
from gate.storage import events
from gate.storage.clock import REACH_YEARS, Clock, ClockError, parse_step
from gate.web import login_manager
from gate.web.forms import ConfirmForm

bp = Blueprint("admin", __name__, url_prefix="/admin")
EVENT_PAGE = 100


@bp.before_request
def _admins_only():
    """Log in first; then only admin accounts may pass (in demo mode, the admin underneath a persona).

    The console always shows the site's own preset, never the session's preview.
    """
    if not (current_user.is_authenticated and current_user.is_admin or current().act_as_instructor()):
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        abort(403, description="The console is for admin accounts.")
    current().show_site_preset()
    return None


def _record(action: str, target: str | None = None, reader_id: int | None = None, **details) -> None:
    """Every admin change is an event naming the admin."""
    events.record(get_db(), "admin_action", current().now, reader_id=reader_id,
                  admin=current_user.email, action=action, target=target, **details)


def _posted() -> bool:
    """A POST with a valid CSRF token (CSRFProtect has already refused bad ones)."""
    return request.method == "POST" and ConfirmForm().validate_on_submit()


# --- dashboard ------------------------------------------------------------------


def _range() -> stats.Range:
    """The chosen range of simulated time (local days), by default the last 30 days."""
    tz = current().rules.tz
    today = current().now.astimezone(tz).date()
    try:
        first = parse_day(request.args.get("start") or (today - timedelta(days=29)).isoformat())
        last = parse_day(request.args.get("end") or today.isoformat())
        return stats.Range.days(first, last, tz)
    except ValueError as error:
        abort(400, description=f"Bad range: {error}. Use dates like 2026-11-01.")


def _audience(default: str) -> str:
    """Whose events count (?include=people|synthetic|all), refused clearly if unknown."""
    try:
        return stats.parse_audience(request.args.get("include"), default)
    except ValueError as error:
        abort(400, description=f"Bad audience: {error}.")


def _csv(body: str, name: str):
    """A CSV download."""
    return body, 200, {"Content-Type": "text/csv; charset=utf-8",
                       "Content-Disposition": f'attachment; filename="{name}"'}


@bp.get("/")
def dashboard():
    """Headline numbers, the cohort funnel and daily activity over a range of simulated time."""
    span, audience = _range(), _audience("people")
    db, cfg = get_db(), site.config()
    plans = {plan.id: plan for plan in cfg.plans}
    funnel = stats.funnel(db, span, audience)
    daily = stats.daily(db, span, current().rules.tz, audience)
    return render_template(
        "admin/dashboard.html", span=span, metrics=stats.metrics(db, span, plans, audience),
        funnel=funnel, funnel_svg=charts.funnel(funnel, "Funnel: visit to subscription"),
        reading_svg=charts.lines(daily, ["views", "gate_impressions", "unlocks"], "Reading per day"),
        money_svg=charts.lines(daily, ["signups", "new_subscriptions", "cancellations"], "Accounts per day"),
        currency=cfg.plans[0].currency, audience=audience, audiences=stats.AUDIENCES,
        redemptions=stats.redemptions(db, span, audience),
    )


@bp.get("/export.csv")
def export():
    """The daily series of the chosen range, as CSV."""
    span, audience = _range(), _audience("people")
    body = stats.to_csv(stats.daily(get_db(), span, current().rules.tz, audience))
    return _csv(body, f"gate-{span.first_day}-{span.last_day}.csv")


# --- rules: the rule studio (gate.web.studio) ------------------------------------


@bp.route("/rules", methods=["GET", "POST"])
def rules():
    """Every preset (built-in and saved, the running one marked), a new one, and two compared in words."""
    from gate.web import studio  # the studio's views live beside its editor (studio imports this module)

    return studio.index()


# --- clock ----------------------------------------------------------------------


@bp.route("/clock", methods=["GET", "POST"])
def clock():
    """Show the clock; advance it, or jump to the next period boundary."""
    if not _posted():
        return _clock_page()
    if request.form.get("action") == "boundary":
        return _jump_to_boundary()
    duration = request.form.get("duration", "")
    try:
        step = parse_step(duration)
        done = clockops.advance(step, current().rules.tz, current_user.email)
    except (ValueError, ClockError) as error:
        return _clock_page(duration, f"The clock did not move: {error}"), 400
    return _clock_moved("advance", done, str(step))


@bp.route("/clock/reset", methods=["GET", "POST"])
def reset_demo():
    """Ask first; then back to real time and the default preset, for the next class."""
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit() and request.form.get("confirm") == "yes":
        clockops.reset_demo(current_user.email)
        _record("demo_reset", "clock")
        current().after_rules_change()
        flash("The demo is reset: real time, the site's default preset, no lesson on. "
              "Readers and their history are kept.", "success")
        return redirect(url_for("admin.clock"), code=303)
    return render_template("admin/reset_confirm.html", form=form,
                           default=site.config().publication.default_preset)


def _jump_to_boundary():
    """Jump to the next meter reset, or say why there is none."""
    try:
        done = clockops.jump_to_boundary(current().rules, current_user.email)
        if done is None:
            raise ClockError("these rules have no fixed period boundary (rolling or lifetime)")
    except (ValueError, ClockError) as error:
        flash(f"The clock did not move: {error}", "warning")
        return redirect(url_for("admin.clock"), code=303)
    return _clock_moved("boundary", done)


def _clock_moved(action: str, done: dict, duration: str | None = None):
    """Record the admin's move, say what ran while time passed, and show the clock again."""
    _record("clock_moved", action, duration=duration, **done)
    moved = f"Time moved forward {duration}." if duration else "Time moved."
    flash(f"{moved} Billing settled {done['subscriptions']} subscription(s) "
          f"({done['charges']} charge attempts); {done['issues']} newsletter issue(s) sent.", "success")
    return redirect(url_for("admin.clock"), code=303)


def _clock_page(duration: str = "1d", error: str | None = None):
    """The clock page; a refused move shows its duration again with the reason beside it."""
    db = get_db()
    state = Clock(db).state()
    boundary = clockops.next_boundary(current().rules, current().now)
    recent = events.recent(db, limit=10, type="clock_changed")
    return render_template("admin/clock.html", state=state, boundary=boundary, recent=recent,
                           form=ConfirmForm(), duration=duration, error=error, reach_years=REACH_YEARS)


# --- readers --------------------------------------------------------------------


@bp.get("/readers")
def readers():
    """Find readers by email."""
    query = (request.args.get("q") or "").strip().lower()
    return render_template("admin/readers.html", rows=accounts.search(get_db(), query), query=query)


def _reader_or_404(reader_id: int) -> accounts.Reader:
    reader = accounts.by_id(get_db(), reader_id)
    if reader is None:
        abort(404, description=f"There is no reader #{reader_id}.")
    return subscriptions.refresh(get_db(), site.config(), reader, current().now)


@bp.get("/readers/<id:reader_id>")
def reader(reader_id: int):
    """One reader: tier, meter and its articles, subscription, payments, newsletters, timeline."""
    db, now = get_db(), current().now
    person = _reader_or_404(reader_id)
    rules = current().rules_for(person)
    grants = current().quota.grants(person.meter_key)  # each spend with a dynamic meter's score and allowance
    viewer = paywall.Viewer(person.tier, person.meter_key, tuple(paywall.Spend(g.slug, g.at) for g in grants),
                            signals=engagement.read(db, rules, person.tier, person.meter_key, "direct", now))
    meter = paywall.meter_for(rules, viewer, now)
    in_window = [g for g in grants if meter.window_key and _in_window(rules, viewer.tier, g.at, now)]
    return render_template(
        "admin/reader.html", person=person, meter=meter, spends=in_window,
        sub=subscriptions.current(db, reader_id), payments=subscriptions.payments(db, reader_id),
        enrollments=newsletter.enrollments(db, reader_id), timeline=stats.timeline(db, reader_id), form=ConfirmForm(),
    )


def _in_window(rules, tier, moment: datetime, now: datetime) -> bool:
    rule = rules.tier(tier)
    return periods.period_window(rule.period, now, rules.tz).contains(moment)


@bp.post("/readers/<id:reader_id>/<action>")
def reader_action(reader_id: int, action: str):
    """Reset the meter, grant complimentary access, or cancel the subscription."""
    person = _reader_or_404(reader_id)
    back = redirect(url_for("admin.reader", reader_id=reader_id), code=303)
    if not _posted():
        return back
    db, cfg, now = get_db(), site.config(), current().now
    try:
        if action == "reset-meter":
            removed = current().quota.reset(person.meter_key)
            _record("meter_reset", person.email, reader_id, removed=removed)
            flash(f"Meter reset: {removed} unlock(s) forgotten.", "success")
        elif action == "comp":
            until = parse_moment(request.form.get("until", ""), current().rules.tz)
            if until <= now:
                raise ValueError("the end of complimentary access must be in the future")
            accounts.grant_comp(db, reader_id, until, by=current_user.email)
            _record("comp_granted", person.email, reader_id, until=until.isoformat())
            flash(f"Complimentary access until {until.astimezone(current().rules.tz):%B %-d, %Y}.", "success")
        elif action == "cancel":
            subscriptions.cancel(db, cfg, reader_id, now, immediately=True, by=current_user.email)
            _record("subscription_canceled", person.email, reader_id)
            flash("Subscription canceled.", "success")
        else:
            abort(404)
    except (ValueError, billing.BillingError) as error:
        flash(f"Nothing changed: {error}", "warning")
    return back


# --- events ---------------------------------------------------------------------


def _event_rows(after_id: int = 0):
    """Events newest first, filtered by type, reader email or slug."""
    return stats.event_stream(
        get_db(), after_id, type=request.args.get("type") or None,
        email=(request.args.get("email") or "").strip().lower() or None,
        slug=(request.args.get("slug") or "").strip() or None, limit=EVENT_PAGE)


@bp.get("/events")
def events_view():
    """A filterable stream of the events table; ?live=1 refreshes it every few seconds."""
    return render_template("admin/events.html", rows=_event_rows(), types=sorted(events.TYPES),
                           live=request.args.get("live") == "1", args=request.args)


@bp.get("/events.json")
def events_json():
    """Events newer than ?after=ID, for polling."""
    from gate.web.access import int_arg

    rows = _event_rows(int_arg("after", 0, 0, 2**62))
    return jsonify(events=rows)


# --- experiments ------------------------------------------------------------------


def _experiment_span() -> tuple[stats.Range, date | None]:
    """The chosen range; by default, from the day the active preset's experiments started to today."""
    db, cfg = get_db(), site.config()
    starts = [moment for exp in cfg.preset(presets.active_name(db, cfg)).experiments
              if (moment := stats.experiment_start(db, exp)) is not None]
    if request.args.get("start") or request.args.get("end") or not starts:
        return _range(), None
    tz = current().rules.tz
    today = current().now.astimezone(tz).date()
    began = min(min(starts).astimezone(tz).date(), today)
    return stats.Range.days(began, today, tz), began


def _experiment_reports(span: stats.Range, audience: str) -> list[dict]:
    """Every experiment of every preset (the active preset's first), with its arms' funnels."""
    cfg, db = site.config(), get_db()
    active = presets.active_name(db, cfg)
    reports = []
    for name, preset in sorted(cfg.presets.items(), key=lambda item: item[0] != active):
        for experiment in preset.experiments:
            counts = stats.experiment_counts(db, experiment, span, audience)
            rows = exp_stats.summarize(counts, list(stats.EXPERIMENT_STEPS), experiment.metric)
            reports.append({"preset": name, "active": name == active, "experiment": experiment,
                            "rows": rows, "variants": {v.id: v for v in experiment.variants},
                            "chart": charts.intervals(rows, experiment.metric, "of visitors",
                                                      f"{experiment.id}: {stats.FUNNEL_LABELS[experiment.metric]}"
                                                      " rate per arm, 95% intervals")})
    return reports


@bp.get("/experiments")
def experiments():
    """Per-variant cohort funnels, the primary metric's intervals and its test against control."""
    from gate.simulate import traffic  # NumPy is loaded only when the experiments are looked at

    span, began = _experiment_span()
    audience = _audience("synthetic")
    return render_template("admin/experiments.html", reports=_experiment_reports(span, audience), span=span,
                           began=began, steps=stats.EXPERIMENT_STEPS, labels=stats.FUNNEL_LABELS,
                           audience=audience, audiences=stats.AUDIENCES, form=ConfirmForm(),
                           max_visitors=traffic.MAX_VISITORS, max_days=traffic.MAX_DAYS)


@bp.get("/experiments.csv")
def experiments_export():
    """The experiments page's numbers, as CSV."""
    span, _ = _experiment_span()
    body = stats.experiments_csv(_experiment_reports(span, _audience("synthetic")))
    return _csv(body, f"gate-experiments-{span.first_day}-{span.last_day}.csv")


def _whole(name: str, default: int) -> int:
    """A whole number from the posted form, or a clear error."""
    text = (request.form.get(name) or str(default)).strip()
    if not text.isdigit() or len(text) > 6:
        raise ValueError(f"{name} must be a whole number, not {text[:20]!r}")
    return int(text)


@bp.post("/experiments/traffic")
def generate_traffic():
    """Run a simulated population through the live site's engine into the database (tagged synthetic)."""
    from gate.simulate import traffic

    back = redirect(url_for("admin.experiments"), code=303)
    if not _posted():
        return back
    cfg, db = site.config(), get_db()
    try:
        visitors, days = _whole("visitors", 1000), _whole("days", 14)
        done = traffic.generate(db, cfg, current().base_rules, current().now, visitors=visitors, days=days,
                                seed=_whole("seed", 42), people=traffic.population(cfg.dir))
    except (ValueError, ConfigError) as error:  # TrafficError is a ValueError
        flash(f"No traffic was generated: {error}", "warning")
        return back
    _record("traffic_generated", done.batch, asked=visitors, days=days, **done.counts)
    flash(f"Traffic generated: {done.summary()}. Counted here; left out of the dashboard unless chosen.",
          "success")
    return back


# --- newsletters ----------------------------------------------------------------


@bp.route("/newsletters", methods=["GET", "POST"])
def newsletters():
    """Each list's readers and last issue; send the next issue now, without moving the clock."""
    if _posted():
        list_id = request.form.get("list", "")
        try:
            done = newsletter_mail.send_next(get_db(), site.config(), current_app.secret_key, list_id, current().now)
        except newsletter.NewsletterError as error:
            flash(f"Nothing was sent: {error}.", "warning")
        else:
            if done is None:
                flash("Nothing new to send: no articles were published since the last issue.", "info")
            else:
                _record("newsletter_sent", list_id, issue=done["issue"], sent=done["sent"],
                        skipped=done["skipped"], articles=done["articles"])
                flash(f"Sent issue No. {done['issue']} ({done['articles']} article(s)) to "
                      f"{done['sent']} reader(s); {done['skipped']} paused.", "success")
        return redirect(url_for("admin.newsletters"), code=303)
    return render_template("admin/newsletters.html", form=ConfirmForm(),
                           lists=newsletter.overview(get_db(), site.config(), current().now))
