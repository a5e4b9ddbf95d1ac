"""How the portal's forms render: every field of every window is one field group,
templates/portal/_field.html (`{{ field.as_field_group }}`), named here for the whole project by
settings.FORM_RENDERER."""

from django.forms.renderers import TemplatesSetting


class FormRenderer(TemplatesSetting):
    """Django's renderer on the project's own template engine (so templates/ is searched, and
    the widgets come from the `django.forms` app), with the portal's field group."""

    field_template_name = "portal/_field.html"
