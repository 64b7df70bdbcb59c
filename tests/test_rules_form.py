"""The rule studio's form is built by walking the rules model: a new section needs no form code.

A model like the dynamic meter's (an optional table holding a list of choices,
a list of tables and a nested table) gets fieldsets, rows and switches of its
own; what is posted comes back as the keys a preset file would hold, and an
error by dotted key finds its field.
"""

from __future__ import annotations

import pytest
from flask import render_template_string
from werkzeug.datastructures import MultiDict

from gate.web import rules_form
from tests.helpers import DynamicRules

START = {"title": "Dynamic", "dynamic": {"tiers": ["anonymous"],
                                         "bands": [{"up_to": 30, "allowance": 5}, {"allowance": 1}]}}
SECTIONS = ("Economy", "Climate")


def test_the_new_section_is_drawn_with_its_rows_and_switch(app):
    cls = rules_form.form_class(SECTIONS, DynamicRules)
    with app.test_request_context("/"):
        form = cls(data=rules_form.initial(START, DynamicRules), meta={"csrf": False})
        rules_form.add_empty_rows(form)
        html = render_template_string(
            '{% import "admin/_rules_form.html" as f with context %}{% for x in form %}{{ f.field(x) }}{% endfor %}',
            form=form, errors={"dynamic-bands-1": "Input should be less than or equal to 100",
                               "dynamic-bands": "up_to must increase from band to band, got [80, 70]"})
    assert "<legend>Dynamic</legend>" in html and 'name="dynamic-included" type="checkbox" value="y"' in html
    assert 'id="dynamic-tiers-0" name="dynamic-tiers" type="checkbox" value="anonymous"' in html
    assert 'name="dynamic-bands-0-up_to" size="7" type="text" value="30"' in html
    assert 'name="dynamic-bands-2-allowance"' in html  # an empty row to add a band
    assert '<p class="field__error" id="dynamic-bands-1-error">Input should be less than or equal to 100</p>' in html
    assert '<option value="subscribe">Subscribe</option>' in html
    assert '<p class="field__error" id="dynamic-bands-error">up_to must increase' in html  # a key stays as written


def test_what_is_posted_comes_back_as_a_files_keys(app):
    cls = rules_form.form_class(SECTIONS, DynamicRules)
    posted = MultiDict([("dynamic-included", "y"), ("dynamic-tiers", "anonymous"), ("dynamic-tiers", "registered"),
                        ("dynamic-bands-0-up_to", "30"), ("dynamic-bands-0-allowance", "5"),
                        ("dynamic-bands-0-offer", ""), ("dynamic-bands-1-up_to", ""),
                        ("dynamic-bands-1-allowance", "1"), ("dynamic-bands-1-offer", "subscribe"),
                        ("dynamic-bands-2-up_to", ""), ("dynamic-bands-2-allowance", ""),
                        ("dynamic-bands-2-offer", ""), ("dynamic-weights-visits", "2")])
    with app.test_request_context("/", method="POST", data=posted):
        form = cls(meta={"csrf": False})
        data = rules_form.edited(form, START, DynamicRules)
        assert data["dynamic"] == {"tiers": ["anonymous", "registered"],
                                   "bands": [{"up_to": 30, "allowance": 5}, {"allowance": 1, "offer": "subscribe"}]}
        rules = DynamicRules.model_validate({"title": "x", "dynamic": data["dynamic"], "name": "d"})
        assert rules.dynamic.bands[1].offer == "subscribe" and rules.dynamic.weights.visits == 2
        assert rules_form.locate(form, "dynamic.bands.1.allowance").id == "dynamic-bands-1-allowance"
        assert rules_form.locate(form, "dynamic.tiers.0").id == "dynamic-tiers"


def test_switching_a_section_off_leaves_it_out(app):
    cls = rules_form.form_class(SECTIONS, DynamicRules)
    with app.test_request_context("/", method="POST", data={"dynamic-bands-0-allowance": "5"}):
        assert "dynamic" not in rules_form.edited(cls(meta={"csrf": False}), START, DynamicRules)


@pytest.mark.parametrize("key, field_id", [
    ("teaser_paragraphs", "teaser_paragraphs"),
    ("tiers.registered.limit", "tiers-registered-limit"),
    ("tiers.subscriber", "tiers"),  # not in the form: the nearest fieldset says it
    ("sections.Economy", "sections-0"),
    ("(top level)", None),
])
def test_an_error_finds_its_field(app, key, field_id):
    with app.test_request_context("/"):
        form = rules_form.form_class(SECTIONS)(data=rules_form.initial({"title": "t", "sections": {"Economy": "free"}}),
                                               meta={"csrf": False})
        found = rules_form.locate(form, key)
    assert (found.id if found is not None else None) == field_id
