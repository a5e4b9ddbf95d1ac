"""The templates (issue item 6): no line longer than 120 characters, and every form field is
rendered by the one field group, templates/portal/_field.html (settings.FORM_RENDERER), never
by markup of a window's own."""

import re
from pathlib import Path

from django import forms
from django.forms.renderers import get_default_renderer
from helpers import html_find, html_one, html_text

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
LONGEST = 120
# The field group itself: the only templates that write a field's label, widget and errors.
FIELD_GROUP = {"portal/_field.html", "portal/_field_errors.html"}
# A window that lays out some choices itself says why in a comment of this form.
OWN_LAYOUT = re.compile(r"Not (a )?field groups?:")
# A field rendered by hand: its widget alone, its label, errors or help text, or the field
# group's own markup (`form.non_field_errors` is the window's, not a field's).
FIELD = r"(field|form\.(?!non_field_errors\b)\w+)"
PER_FIELD = re.compile(
    rf"\{{\{{\s*{FIELD}\s*\}}\}}"
    rf"|\b{FIELD}\.(label|errors|help_text)\b"
    r"|<(label|div) class=\"(field|check)[\" ]"
    r"|portal/_field_errors\.html"
)


def templates() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.html"))


def name(path: Path) -> str:
    return path.relative_to(TEMPLATES).as_posix()


def long_lines(paths) -> list[str]:
    return [
        f"{path.name}:{number}: {len(line)} characters"
        for path in paths
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if len(line) > LONGEST
    ]


def per_field_markup(text: str) -> list[str]:
    """What in a template's text renders a form field by hand (empty when it declares, in a
    comment, that it lays out some choices itself)."""
    if OWN_LAYOUT.search(text):
        return []
    return [match.group(0) for match in PER_FIELD.finditer(text)]


# ---- line length ----------------------------------------------------------------------------


def test_no_template_line_is_longer_than_120_characters():
    found = long_lines(templates())
    assert not found, "\n".join(found)


def test_a_line_of_121_characters_is_found(tmp_path):
    template = tmp_path / "t.html"
    template.write_text("x" * 120 + "\n" + "y" * 121 + "\n")
    assert long_lines([template]) == ["t.html:2: 121 characters"]


# ---- one field group ------------------------------------------------------------------------


def test_no_template_renders_a_form_field_by_hand():
    found = {
        name(path): markup
        for path in templates()
        if name(path) not in FIELD_GROUP and (markup := per_field_markup(path.read_text()))
    }
    assert not found, found


def test_the_old_per_field_markup_is_found():
    for markup in (
        '<label class="field">{{ field.label }} {{ field }}</label>',
        '<label class="field">Name {{ form.name }}</label>',
        '<label class="check">{{ form.sso_enabled }} Single Sign-On</label>',
        '{% if form.vm.errors %}<span class="error">{{ form.vm.errors|join:" " }}</span>{% endif %}',
        '<div class="field">Account Type {% include "portal/_field_errors.html" %}</div>',
        '<label class="field grow">Search <input type="text" name="q"></label>',
    ):
        assert per_field_markup(markup), markup
    assert not per_field_markup("{{ form.description.as_field_group }}{{ form.non_field_errors }}")


class Sample(forms.Form):
    name = forms.CharField(label="Name", help_text="Letters and digits.")
    sso = forms.BooleanField(label="Single Sign-On", required=False)
    kinds = forms.MultipleChoiceField(
        label="Kinds", choices=[("a", "A"), ("b", "B")], widget=forms.CheckboxSelectMultiple
    )


def test_the_field_group_is_the_projects_and_renders_label_widget_hint_and_errors():
    assert get_default_renderer().field_template_name == "portal/_field.html"
    form = Sample({"name": ""})
    html = "".join(field.as_field_group() for field in form)
    name = html_one(html, "label.field")
    assert html_text(name).startswith("Name Letters and digits.")
    widget = html_one(name, "input[name=name]")
    assert widget.get("aria-describedby") == "id_name_helptext id_name_error"
    assert html_text(html_one(name, "span.hint#id_name_helptext")) == "Letters and digits."
    assert html_text(html_one(name, "span.error#id_name_error")) == "This field is required."
    check = html_one(html, "label.check")  # the box before its label text
    assert check[0].get("name") == "sso" and html_text(check) == "Single Sign-On"
    kinds = html_one(html, "div.field")  # a list of choices: each has a label of its own
    assert html_text(kinds).startswith("Kinds")
    assert [box.get("value") for box in html_find(kinds, "input[name=kinds]")] == ["a", "b"]
    assert html_text(html_one(kinds, "span.error#id_kinds_error")) == "This field is required."
