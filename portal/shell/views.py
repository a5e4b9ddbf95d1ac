"""The Events and Jobs pages, and the password change page."""

from django.conf import settings
from django.contrib import messages as django_messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.auth.views import PasswordChangeView
from django.shortcuts import redirect, render
from django.urls import reverse_lazy

from accounts.access import admin_portal_required
from accounts.permissions import is_admin
from portal.kernel import selectors
from portal.kernel.models import Event
from portal.kernel.paging import page_get
from portal.kernel.search import SEARCH_MAX, SearchError, search_text


@login_required
def home(request):
    """Administrators land in the Administration Portal, everyone else in the User Portal."""
    return redirect("vms:list" if is_admin(request.user) else "user_portal")


@admin_portal_required
def event_list(request):
    """The Events page: every action as requested, started, succeeded or failed."""
    q = request.GET.get("q", "")
    search_error = None
    try:
        q = search_text(q)
        events = selectors.event_list(request.user, q=q)
    except SearchError as exc:
        search_error, q, events = str(exc), q[:SEARCH_MAX], Event.objects.none()
    page = page_get(events, request.GET.get("page"))
    template = "portal/_event_table.html" if request.htmx else "portal/events.html"
    context = {"page": page, "q": q, "search_error": search_error, "tab": "events"}
    return render(request, template, context)


@admin_portal_required
def job_list(request):
    """Recent jobs with their progress."""
    page = page_get(selectors.job_list(request.user), request.GET.get("page"))
    template = "portal/_job_table.html" if request.htmx else "portal/jobs.html"
    return render(
        request, template, {"page": page, "tab": "jobs", "stale": settings.VIREO_JOB_STALE_SECONDS}
    )


class PasswordForm(PasswordChangeForm):
    """Django's form with the portal's labels. The password validators' rules are shown once
    under the three fields (`password_rules`), not as New Password's help text; Confirm New
    Password needs none."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        labels = {
            "old_password": "Current Password",
            "new_password1": "New Password",
            "new_password2": "Confirm New Password",
        }
        for name, label in labels.items():
            self.fields[name].label = label
        self.password_rules = self.fields["new_password1"].help_text
        self.fields["new_password1"].help_text = self.fields["new_password2"].help_text = ""


class PasswordChange(PasswordChangeView):
    """Change Password (from the user menu): the current password, then the new one twice,
    checked by Django's password validators; the user stays logged in in this browser."""

    form_class = PasswordForm
    template_name = "registration/password_change.html"
    success_url = reverse_lazy("home")

    def form_valid(self, form):
        response = super().form_valid(form)
        django_messages.success(self.request, "Your password was changed.")
        return response
