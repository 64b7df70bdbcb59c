"""The rule studio at /admin/rules: every preset, a new one from scratch or from any other, the editor, ship.

Part of the instructor console (admins only). Built-in presets (config/presets/)
are read-only; *Edit* on one starts a copy. Saved presets are files in the
instance folder (gate.services.presets), each save or delete an event naming the
admin. The editor's form is built from the rules model (gate.web.rules_form) and
checked by it, so a refused value reads as the TOML loader says it, beside its
field; beside the form, the differences from the running preset, in words
(gate.rules.describe). Forecast and Try act on a saved preset by name: they go in
the editor's ``studio_tools`` block (templates/admin/rule_editor.html). The list
itself is the console's ``admin.rules`` (/admin/rules), served by :func:`index`.
"""

from __future__ import annotations

import json

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from gate.app import site
from gate.app.context import current
from gate.app.db import get_db
from gate.conf.settings import ConfigError
from gate.rules import describe
from gate.rules.paywall import Rules
from gate.services import presets
from gate.web import rules_form
from gate.web.admin import _admins_only, _posted, _record
from gate.web.forms import ConfirmForm

bp = Blueprint("studio", __name__, url_prefix="/admin/rules")
bp.before_request(_admins_only)
#: What the editor's buttons do: show the differences only, save, or save and switch the site to it.
ACTIONS = ("check", "save", "use")


# --- the list -------------------------------------------------------------------------


def index():
    """The studio's list (served as ``admin.rules``, the console's Rules): every preset, New, Compare; POST uses one."""
    if request.method == "POST":
        return _switch()
    cfg, db = site.config(), get_db()
    listed = presets.catalogue(db, cfg)
    active = next(info.name for info in listed if info.running)
    left = request.args.get("a") or active
    right = request.args.get("b") or next(info.name for info in listed if info.name != left)
    if left not in cfg.presets or right not in cfg.presets:
        abort(400, description="Choose two presets to compare.")
    before, after = cfg.presets[left], cfg.presets[right]
    return render_template(
        "admin/rules.html", listed=listed, active=cfg.presets[active], active_name=active,
        summary=describe.summary(cfg.presets[active], without=("title", "description")), broken=sorted(cfg.saved.problems.items()),
        left=left, right=right, sentences=describe.differences(before, after),
        table=_settings_table(before, after), folder=cfg.saved.folder)


def _settings_table(before: Rules, after: Rules) -> list[tuple[str, object, object]]:
    """Every setting of two presets by dotted key, for reference under the sentences."""
    old, new = describe.settings(before), describe.settings(after)
    return [(key, _cell(old.get(key, "—")), _cell(new.get(key, "—"))) for key in sorted(old.keys() | new.keys())]


def _cell(value) -> object:
    """A setting as the table shows it (a list as JSON, as a file would write it)."""
    return json.dumps(value) if isinstance(value, list) else value


def _switch():
    """Use: switch the running site to a preset (applied at once, recorded as an event)."""
    if _posted():
        try:
            before, after = presets.use(get_db(), site.config(), request.form.get("preset", ""), current().now,
                                        by=current_user.email)
        except ConfigError as error:
            flash(str(error), "warning")
        else:
            _record("preset_switched", after, **{"from": before, "to": after})
            current().after_rules_change()
            flash(f"The site now applies {after}.", "success")
    return redirect(url_for("admin.rules"), code=303)


# --- the editor -----------------------------------------------------------------------


@bp.route("/new", methods=["GET", "POST"])
def new():
    """A new preset: from scratch, or a copy of ``?from=`` any preset; nothing is saved until Save."""
    cfg = site.config()
    source = request.values.get("from") or request.values.get("source") or ""
    if source and source not in cfg.presets:
        abort(404, description=f"There is no preset named {source[:40]!r} to start from.")
    start = presets.editable(cfg.presets[source]) if source else presets.scratch()
    if request.method == "POST":
        return _submit(None, source, start)
    suggested = f"{source}-copy"[:40] if source else ""
    if source:
        start = {**start, "title": f"{start['title'][:73]} (copy)"}
    form = _form(data={**rules_form.initial(start), "name": suggested, "source": source})
    return _editor(form, None, source, presets.build(cfg, suggested or "new", start))


@bp.route("/<name>", methods=["GET", "POST"])
def edit(name: str):
    """A preset's page in the studio: the editor of a saved preset (a built-in one's is the list, with Copy and edit)."""
    cfg = site.config()
    if name not in cfg.presets:
        abort(404, description=f"There is no preset named {name[:40]!r}.")
    if not presets.is_saved(cfg, name):
        return redirect(url_for("admin.rules"), code=303)
    start = presets.editable(cfg.presets[name])
    if request.method == "POST":
        return _submit(name, name, start)
    form = _form(data={**rules_form.initial(start), "name": name, "source": name})
    return _editor(form, name, name, cfg.presets[name])


def _form(**kwargs) -> rules_form.PresetForm:
    """The editor's form for this site's sections, an empty row ready at the end of each row list."""
    form = rules_form.form_class(tuple(site.config().publication.sections))(**kwargs)
    rules_form.add_empty_rows(form)
    return form


def _submit(editing: str | None, source: str, start: dict):
    """Check the posted preset; show its differences, or save it (and use it), or show each error by its field."""
    form = _form()
    if not form.validate_on_submit():  # a field sent as a file, say: nothing to read, nothing changes
        flash("Nothing was saved: the form could not be read. Open the editor again and retry.", "warning")
        return redirect(url_for("admin.rules"), code=303)
    cfg, db = site.config(), get_db()
    name = editing or (form.name.data or "").strip()
    action = request.form.get("action", "check")
    data = rules_form.edited(form, start)
    try:
        if action not in ACTIONS or action == "check":
            return _editor(form, editing, source, presets.checked(cfg, name, data, new=editing is None))
        presets.save(db, cfg, name, data, current().now, current_user.email, new=editing is None,
                     then_use=action == "use")
    except presets.PresetInvalid as invalid:
        return _editor(form, editing, source, None, invalid.errors), 400
    if action == "use":
        current().after_rules_change()
    flash(f"Saved {name}." + (" The site now applies it." if action == "use" else ""), "success")
    return redirect(url_for("studio.edit", name=name), code=303)


def _editor(form, editing: str | None, source: str, edited: Rules | None, errors: dict | None = None):
    """The editor page: the form (errors beside their fields) and, beside it, the differences from the running preset.

    ``edited`` is the rules the form holds (None when they do not validate: ``errors`` says why).
    """
    cfg, db = site.config(), get_db()
    running_name = presets.active_name(db, cfg)
    running = cfg.presets[running_name]
    placed, loose = rules_form.errors_by_field(form, errors or {})
    carried = cfg.presets.get(source) if source else None
    return render_template(
        "admin/rule_editor.html", form=form, editing=editing, source=source, errors=placed, loose=loose,
        running=running, running_name=running_name, edited=edited,
        sentences=describe.differences(running, edited) if edited else [],
        aspects=describe.aspects(running, edited) if edited else [], carried=carried,
        saved=presets.is_saved(cfg, editing) if editing else False)


# --- export and delete ---------------------------------------------------------------------


@bp.get("/<name>.toml")
def export(name: str):
    """A preset's TOML file (built-in or saved), as a download."""
    try:
        text = presets.export(site.config(), name)
    except ConfigError:
        abort(404, description=f"There is no preset named {name[:40]!r}.")
    return text, 200, {"Content-Type": "application/toml; charset=utf-8",
                       "Content-Disposition": f'attachment; filename="{name}.toml"'}


@bp.route("/<name>/delete", methods=["GET", "POST"])
def delete(name: str):
    """Ask first; then delete a saved preset that is not running (the event keeps its rules)."""
    cfg, db = site.config(), get_db()
    if not presets.is_saved(cfg, name):
        abort(404, description=f"There is no saved preset named {name[:40]!r}.")
    form = ConfirmForm()
    if not (request.method == "POST" and form.validate_on_submit() and request.form.get("confirm") == "yes"):
        return render_template("admin/preset_delete.html", form=form, name=name, rules=cfg.presets[name],
                               running=presets.active_name(db, cfg) == name)
    try:
        presets.delete(db, cfg, name, current().now, current_user.email)
    except (presets.PresetRefused, ConfigError) as refused:
        flash(f"Nothing was deleted: {refused}.", "warning")
        return redirect(url_for("admin.rules"), code=303)
    flash(f"Deleted {name}. Its rules are kept in the preset_deleted event.", "success")
    return redirect(url_for("admin.rules"), code=303)
