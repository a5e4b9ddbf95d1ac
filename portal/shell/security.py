"""HTTP hardening that Django does not do by itself: the Content-Security-Policy header, and
the page a locked-out login gets (django-axes, see settings "Login throttling")."""

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.shortcuts import render

from portal.kernel.validators import control_character


class ContentSecurityPolicyMiddleware:
    """Adds settings.CONTENT_SECURITY_POLICY to every response that has none (no inline
    script: the portal's behaviour lives in static/vireo.js and htmx attributes)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response


def lockout_minutes() -> int:
    return max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))


def lockout_response(request, original_response=None, credentials=None):
    """The login page again, saying why the login is refused (429 Too Many Requests)."""
    context = {
        "form": LoginForm(request),  # the fields again, empty, for a later try
        "locked_out": True,
        "lockout_minutes": lockout_minutes(),
        "next": request.POST.get("next", request.GET.get("next", "")),
    }
    return render(request, "registration/login.html", context, status=429)


class LoginForm(AuthenticationForm):
    """Django's login form, refusing a control character in anything posted before it reaches
    authentication: the lockout records each attempt's user name and data in PostgreSQL, which
    cannot store NUL (the attempt would fail with a server error instead of a message)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["username"].label = "User Name"

    @property
    def invalid_login(self) -> bool:
        """The user name and password did not match (the page says so in its own words)."""
        return self.has_error(forms.forms.NON_FIELD_ERRORS, "invalid_login")

    def clean(self):
        for _name, values in self.data.lists():
            if any(control_character(str(v)) for v in values):
                raise forms.ValidationError(
                    "The user name or password contains a control character.", code="invalid"
                )
        return super().clean()
