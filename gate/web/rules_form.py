"""The rule studio's form, built by walking the rules model (:class:`gate.rules.paywall.Rules`).

Each field of a preset becomes a form field by its type: text, a whole number
(blank for "not set" where the model allows None), a yes/no box, a choice among
a ``Literal``'s values, several of them for a list of them, a meter size (a
number or unlimited), a period (with N days for rolling), name → value rows for
a table such as ``[sections]``, and a fieldset for each nested table, an
optional table (with a switch) or a list of tables (rows, with an empty one to
add). A new section of the model, such as the dynamic meter's ``[dynamic]``
bands, is in the form without code here; :data:`LABELS` and :data:`HINTS` give
its fields better words. What the form does not show (experiments, the
porous flag, the subscriber tier) is carried over from the preset it started from.

The form only collects text: :func:`values` turns it into the values of a preset
file, and the service checks them with the model, so every refusal is the TOML
loader's own message, placed beside its field by :func:`locate`.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from wtforms import (
    BooleanField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.widgets import CheckboxInput, ListWidget

from gate.rules import periods
from gate.rules.model import Limit
from gate.rules.paywall import Rules
from gate.web.forms import TextForm

#: Keys the form leaves alone: carried over, unchanged, from the preset the edit started from.
CARRIED = ("experiments", "porous", "tiers.subscriber", "tiers.anonymous.require_verified")
#: Texts longer than this are edited in a text area.
LONG_TEXT = 150
#: Field labels by (model, field); otherwise the field's name in words.
LABELS = {
    ("Rules", "teaser_paragraphs"): "Teaser length (paragraphs)",
    ("Rules", "gate"): "The gate",
    ("Rules", "tiers"): "Meters",
    ("Rules", "sections"): "Section overrides",
    ("Rules", "devices"): "Devices",
    ("Rules", "referral"): "Side doors",
    ("Tiers", "anonymous"): "Anonymous visitors",
    ("Tiers", "registered"): "Registered readers",
    ("TierRule", "limit"): "Free articles",
    ("TierRule", "period"): "Counted per",
    ("TierRule", "mode"): "What counts",
    ("TierRule", "unlock_lasts"): "An unlocked article stays open",
    ("TierRule", "require_verified"): "Only once the reader confirms their address",
    ("GateCopy", "style"): "Style",
    ("GateCopy", "body"): "Text",
    ("Devices", "limit"): "Signed-in devices per account",
    ("ReferralRules", "trust_referer"): "Trust the Referer header",
    ("ReferralRules", "search_daily"): "Search arrivals: articles a day outside the meter",
    ("ReferralRules", "search_registration_grant"): "Registered search arrivals: more a day",
    ("ReferralRules", "social"): "Social arrivals read the article they came for",
    ("ReferralRules", "newsletter"): "Signed newsletter links read the article they name",
}
HINTS = {
    ("Rules", "title"): "Shown in the footer, the switcher and gate preset list (up to 80 characters).",
    ("Rules", "teaser_paragraphs"): "Paragraphs everyone reads before the gate, 1 to 20.",
    ("Rules", "sections"): "Make a whole section free or premium, whatever its articles say. "
                           "Show differences adds another empty row.",
    ("TierRule", "limit"): "0 shows the teaser only.",
    ("GateCopy", "headline"): "Up to 120 characters.",
    ("Devices", "limit"): "Blank: no cap (a plan may set its own), else 1 to 100.",
    ("ReferralRules", "trust_referer"): "Search and social side doors need it; anyone can fake a Referer (curl -H).",
}
#: Choices in words, by value.
CHOICE_WORDS = {
    "choice": "Articles the reader chooses to unlock", "auto": "Every distinct article viewed",
    "period": "Until the period ends", "forever": "For good",
    "inline": "Inline, under the teaser", "modal": "Modal, over the page", "banner": "Banner, at the foot of the page",
    "metered": "Metered", "free": "Free", "premium": "Premium",
}
PERIODS = (("month", "Calendar month"), ("week", "Week (Monday to Sunday)"), ("day", "Day"),
           ("rolling", "Any N days (rolling)"), ("lifetime", "Lifetime (never resets)"))
#: A whole number as typed (longer ones go on as text, for the model to refuse).
_WHOLE = re.compile(r"^[+-]?[0-9]{1,15}$")


@dataclass(frozen=True)
class Spec:
    """One field of the rules model as the form shows it."""

    name: str
    kind: str
    label: str
    hint: str = ""
    default: object = None
    #: A blank value means "not set" (the model allows None).
    optional: bool = False
    choices: tuple[str, ...] = ()
    children: tuple[Spec, ...] = ()


# --- walking the model ------------------------------------------------------------


def _unwrap(annotation) -> tuple[object, bool]:
    """``X | None`` → (X, True); anything else → (it, False)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return annotation, False


def _is_model(kind) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _literal(kind) -> tuple[str, ...]:
    """A Literal's values, else ()."""
    return tuple(typing.get_args(kind)) if typing.get_origin(kind) is typing.Literal else ()


def _max_length(info) -> int | None:
    return next((item.max_length for item in info.metadata if hasattr(item, "max_length")), None)


def _default(info):
    """A field's default (None when it has none)."""
    default = info.get_default(call_default_factory=True)
    return None if default is PydanticUndefined else default


def _kind(name: str, kind, info) -> tuple[str, tuple, tuple]:
    """How a field of this type is edited: (kind, choices, children); kind "" when the form cannot."""
    if _is_model(kind):
        return "group", (), walk(kind)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list and args and _is_model(args[0]):
        return "table_rows", (), walk(args[0])
    if origin is list and args and _literal(args[0]):
        return "choices", _literal(args[0]), ()
    if origin is dict and len(args) == 2 and _literal(args[1]):
        return "rows", _literal(args[1]), ()
    if kind == Limit:
        return "limit", (), ()
    if _literal(kind):
        return "choice", _literal(kind), ()
    if kind is bool:
        return "flag", (), ()
    if kind is int:
        return "number", (), ()
    if kind is str and name == "period":
        return "period", (), ()
    if kind is str:
        return ("long_text" if (_max_length(info) or 0) > LONG_TEXT else "text"), (), ()
    return "", (), ()


@lru_cache(maxsize=None)
def walk(model: type[BaseModel]) -> tuple[Spec, ...]:
    """The form's fields for one model of the rules, in the model's order."""
    found = []
    for name, info in model.model_fields.items():
        kind, optional = _unwrap(info.annotation)
        shape, choices, children = _kind(name, kind, info)
        if not shape:
            continue
        if shape == "group" and optional:
            shape = "optional_group"
        label = LABELS.get((model.__name__, name), name.replace("_", " ").capitalize())
        found.append(Spec(name, shape, label, HINTS.get((model.__name__, name), ""), _default(info),
                          optional, choices, children))
    return tuple(found)


def _shown(specs: tuple[Spec, ...], prefix: str) -> tuple[Spec, ...]:
    """The specs the form shows at ``prefix`` (the carried keys left out)."""
    return tuple(spec for spec in specs if prefix + spec.name not in CARRIED and prefix + spec.name not in
                 ("name", "timezone"))


# --- the form class -----------------------------------------------------------------


class GroupField(FormField):
    """A nested table of the preset, shown as a fieldset."""


class OptionalGroupField(FormField):
    """A table a preset may leave out (``Model | None``): a fieldset with a switch to include it."""


class LimitField(FormField):
    """A meter size: a whole number, or unlimited."""


class PeriodField(FormField):
    """A meter period: a calendar period, lifetime, or any N days."""


class RowsField(FieldList):
    """Rows of a table (name → value) or of a list of tables, with an empty row to add one."""


class _LimitForm(Form):
    count = StringField("Number of articles", render_kw={"inputmode": "numeric", "size": 7})
    unlimited = BooleanField("Unlimited")


def options(pairs) -> list[SelectChoice]:
    """(value, words) pairs as a select's options."""
    return [SelectChoice(value, words) for value, words in pairs]


class _PeriodForm(Form):
    every = SelectField("Period", choices=options(PERIODS), validate_choice=False)
    days = StringField("N days (rolling only)", render_kw={"inputmode": "numeric", "size": 5})


def _choices(spec: Spec) -> list[SelectChoice]:
    """A Literal's values as options, in words ("(none)" first where the model allows None)."""
    words = [(value, CHOICE_WORDS.get(value, value.replace("_", " ").capitalize())) for value in spec.choices]
    return options([("", "(none)"), *words] if spec.optional else words)


def _field(spec: Spec, prefix: str, sections: tuple[str, ...]):
    """The WTForms field for one spec (unbound: the form class binds it)."""
    label, hint, key = spec.label, spec.hint, prefix + spec.name
    if spec.kind == "group":
        return GroupField(_table(spec.children, key + ".", sections), label=label, description=hint)
    if spec.kind == "optional_group":
        switch = BooleanField(f"Use {label.lower()}")
        return OptionalGroupField(_table(spec.children, key + ".", sections, included=switch), label=label,
                                  description=hint)
    if spec.kind == "table_rows":
        return RowsField(FormField(_table(spec.children, key + ".*.", sections)), label=label, description=hint)
    if spec.kind == "rows":
        names = options([("", "(choose)"), *((name, name) for name in sections)]) if key == "sections" else None
        row = type("Row", (Form,), {
            "key": SelectField("Section", choices=names, validate_choice=False) if names else StringField("Name"),
            "value": SelectField("Class", choices=_choices(spec), validate_choice=False)})
        return RowsField(FormField(row), label=label, description=hint)
    if spec.kind == "limit":
        return LimitField(_LimitForm, label=label, description=hint)
    if spec.kind == "period":
        return PeriodField(_PeriodForm, label=label, description=hint)
    if spec.kind in ("choice", "choices"):
        many = spec.kind == "choices"
        cls = SelectMultipleField if many else SelectField
        extra = {"widget": ListWidget(prefix_label=False), "option_widget": CheckboxInput()} if many else {}
        return cls(label, choices=_choices(spec), validate_choice=False, description=hint, **extra)
    if spec.kind == "flag":
        return BooleanField(label, description=hint)
    if spec.kind == "number":
        return StringField(label, description=hint, render_kw={"inputmode": "numeric", "size": 7})
    return (TextAreaField if spec.kind == "long_text" else StringField)(label, description=hint)


def _table(specs: tuple[Spec, ...], prefix: str, sections: tuple[str, ...], **extra) -> type[Form]:
    """A form class for one table of the preset."""
    fields = {spec.name: _field(spec, prefix, sections) for spec in _shown(specs, prefix.replace(".*.", "."))}
    return type("Table", (Form,), {**extra, **fields})


class PresetForm(TextForm):
    """The rule studio's editor: the preset's name, the preset it started from, and the rules."""

    name = StringField("Name", description="The file name: lower-case letters, digits and dashes, "
                                           "like registered-five-a-week.")
    source = HiddenField()


@lru_cache(maxsize=8)
def form_class(sections: tuple[str, ...], model: type[BaseModel] = Rules) -> type[PresetForm]:
    """The editor's form class for a site with these sections (built once per site)."""
    fields = {spec.name: _field(spec, "", sections) for spec in _shown(walk(model), "")}
    return type("StudioForm", (PresetForm,), fields)


# --- preset values → form data (to show a preset) -------------------------------------


def form_data(specs: tuple[Spec, ...], values: dict, prefix: str = "") -> dict:
    """What a form shows for a preset's values (a file's keys; defaults where it leaves one out)."""
    data = {}
    for spec in _shown(specs, prefix):
        value = values.get(spec.name, spec.default)
        data[spec.name] = _shown_value(spec, value, prefix + spec.name)
    return data


def _plain(value) -> dict:
    """A table's values as a dict (a model default, or a dict from a file)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=False)
    return value if isinstance(value, dict) else {}


def _shown_value(spec: Spec, value, key: str):
    """One value as its field shows it."""
    if spec.kind == "group":
        return form_data(spec.children, _plain(value), key + ".")
    if spec.kind == "optional_group":
        return {"included": value is not None, **form_data(spec.children, _plain(value), key + ".")}
    if spec.kind == "table_rows":
        return [form_data(spec.children, _plain(item), key + ".") for item in value or []]
    if spec.kind == "rows":
        return [{"key": name, "value": cls} for name, cls in (value or {}).items()]
    if spec.kind == "limit":
        return {"count": "" if value in ("unlimited", None) else str(value), "unlimited": value == "unlimited"}
    if spec.kind == "period":
        days = periods.rolling_days(value or "")
        return {"every": "rolling" if days else value, "days": str(days) if days else ""}
    if spec.kind == "number":
        return "" if value is None else str(value)
    if spec.kind == "choice":
        return "" if value is None else value
    if spec.kind == "choices":
        return list(value or [])
    return value if spec.kind == "flag" else (value or "")


def initial(values: dict, model: type[BaseModel] = Rules) -> dict:
    """What the editor shows for a preset's values (``form_class(...)(data=initial(values))``)."""
    return form_data(walk(model), values)


def add_empty_rows(form) -> None:
    """One empty row at the end of every row list (to add a section or a band without script)."""
    for field in form:
        if isinstance(field, RowsField) and (not field.entries or not _blank(field.entries[-1])):
            field.append_entry()
        elif isinstance(field, FormField):
            add_empty_rows(field.form)


# --- form → preset values (to check and save) -------------------------------------------


def _number(text: str | None, optional: bool):
    """A whole number from text; blank is None where allowed; anything else goes on as typed (the model says why)."""
    text = (text or "").strip()
    if not text:
        return None if optional else ""
    return int(text) if _WHOLE.match(text) else text


def _blank(entry: FormField) -> bool:
    """Whether a row was left empty (its text empty, its choices at the first option, no box ticked)."""
    for field in entry.form:
        if isinstance(field, BooleanField) and field.data:
            return False
        if isinstance(field, (StringField, TextAreaField)) and (field.data or "").strip():
            return False
        if isinstance(field, SelectField) and not isinstance(field, SelectMultipleField) and field.data not in (
                "", None, field.choices[0].value if field.choices else ""):
            return False
    return True


def _entered(spec: Spec, field, key: str, before):
    """The value one field now holds, as a preset file would (``before``: the value it started from)."""
    if spec.kind == "group":
        return values(spec.children, field.form, _plain(before), key + ".")
    if spec.kind == "optional_group":
        return values(spec.children, field.form, _plain(before), key + ".") if field.form.included.data else None
    if spec.kind == "table_rows":
        kept = _without_trailing_blanks(field.entries)
        return [values(spec.children, entry.form, {}, key + ".") for entry in kept]
    if spec.kind == "rows":
        return {entry.form.key.data.strip(): entry.form.value.data for entry in field.entries
                if (entry.form.key.data or "").strip()}
    if spec.kind == "limit":
        return "unlimited" if field.form.unlimited.data else _number(field.form.count.data, spec.optional)
    if spec.kind == "period":
        every = field.form.every.data or ""
        return f"rolling:{(field.form.days.data or '').strip()}" if every == "rolling" else every
    if spec.kind == "number":
        return _number(field.data, spec.optional)
    if spec.kind == "choice":
        return None if spec.optional and not field.data else field.data
    if spec.kind == "choices":
        return list(field.data or [])
    if spec.kind == "flag":
        return bool(field.data)
    return (field.data or "").replace("\r\n", "\n").strip()


def _without_trailing_blanks(entries: list) -> list:
    """Rows up to the last one filled in (an empty row in the middle stays, so row numbers match errors)."""
    kept = list(entries)
    while kept and _blank(kept[-1]):
        kept.pop()
    return kept


def values(specs: tuple[Spec, ...], form, before: dict, prefix: str = "") -> dict:
    """The preset values a filled form describes, on top of ``before`` (what the form does not show stays).

    A key the preset left out stays out while its field holds the model's default, so a
    file keeps only what its author set (the dynamic meter needs that: no limit beside it).
    """
    data = dict(before)
    for spec in _shown(specs, prefix):
        value = _entered(spec, form[spec.name], prefix + spec.name, before.get(spec.name))
        if spec.kind == "optional_group" and value is None:
            data.pop(spec.name, None)
        elif spec.name in before or (value if spec.kind == "group" else value != spec.default):
            data[spec.name] = value
    return data


def edited(form: PresetForm, before: dict, model: type[BaseModel] = Rules) -> dict:
    """The preset values of a submitted editor form, on top of the preset it started from."""
    return values(walk(model), form, before)


# --- errors beside their fields -------------------------------------------------------------


def locate(form: PresetForm, key: str):
    """The field to show the error at dotted ``key`` beside: the deepest one the key reaches (None: none)."""
    parts, field, container = key.split("."), None, form
    for index, part in enumerate(parts):
        if isinstance(field, RowsField):
            entry = _row(field, part)
            if entry is None:
                return field
            field, container = entry, entry.form
            continue
        if container is None or part not in container:
            return field
        field = container[part]
        container = field.form if isinstance(field, FormField) and not isinstance(
            field, (LimitField, PeriodField)) else None
        if isinstance(field, (LimitField, PeriodField)) and index < len(parts) - 1:
            return field
    return field


def _row(rows: RowsField, part: str):
    """The row a key part names: by number in a list of tables, by name in a table of rows."""
    if part.isascii() and part.isdigit():  # a section row is named by its key, which may be any text
        return rows.entries[int(part)] if int(part) < len(rows.entries) else None
    return next((entry for entry in rows.entries if "key" in entry.form and entry.form.key.data == part), None)


def errors_by_field(form: PresetForm, errors: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Each error under the id of the field it is shown beside, and those no field shows (with their keys)."""
    placed: dict[str, str] = {}
    loose = []
    for key, message in errors.items():
        field = locate(form, key)
        if field is None:
            loose.append(f"{key}: {message}")
            continue
        placed[field.id] = f"{placed[field.id]} {message}" if field.id in placed else message
    return placed, loose
