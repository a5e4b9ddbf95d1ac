"""Reads behind the Events and Tasks pages, restricted to what the user may see."""

from django.db.models import QuerySet

from .models import Event, Job


def event_list(user, *, q: str = "") -> QuerySet:
    """The user's visible Events, newest first; `q` (checked text) narrows to messages holding it."""
    events = Event.objects.select_related("user", "vm").restrict(user, "view")
    return events.filter(message__icontains=q) if q else events


def job_list(user) -> QuerySet:
    """The user's visible jobs (Tasks), newest first."""
    return Job.objects.select_related("user", "vm").restrict(user, "view")
