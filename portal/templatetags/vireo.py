"""Small display filters shared by the templates."""

from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    """An uptime as "3d 4h", "5h 12m" or "42s"."""
    if not value:
        return ""
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


@register.filter
def gib(value: int | None) -> str:
    """Bytes as GiB with one decimal (storage tables)."""
    if value is None:
        return ""
    return f"{value / 1024**3:,.1f} GiB"


@register.filter
def css(value: str) -> str:
    """A status value as a CSS class fragment."""
    return str(value).replace("_", "-")


# The badge colours of each kind of object: `static/vireo.css` styles `<prefix>-<status>`.
# Keyed by model name so the UI shell's tags import no domain app.
BADGE_PREFIXES = {
    "virtualmachine": "st",
    "snapshot": "snap",
    "host": "host",
    "storagedomain": "sd",
    "job": "job",
}


@register.inclusion_tag("portal/_status_badge.html")
def status_badge(obj) -> dict:
    """The one status badge: a VM's, snapshot's, host's, storage domain's or job's status."""
    prefix = BADGE_PREFIXES[obj._meta.model_name]
    return {"css_class": f"{prefix}-{css(obj.status)}", "label": obj.get_status_display()}


@register.inclusion_tag("portal/_progress_bar.html")
def progress_bar(job, place: str = "row") -> dict:
    """The one progress bar of a job. `place` picks its width and words: "row" (VM list,
    the step in its tooltip), "card" (User Portal), "pane" (VM details) or "task" (Tasks)."""
    percent = f"{job.progress}%"
    title = ""
    if place == "row":
        label, title = percent, f"{job.description}: {job.step}"
    elif place == "card":
        label = f"{job.description} ({percent})"
    elif place == "pane":
        label = f"{job.description} — {job.step or job.get_status_display()} ({percent})"
    else:
        label = f"{percent} — {job.step}" if job.is_active and job.step else percent
    return {"job": job, "wide": place in {"card", "pane"}, "label": label, "title": title}


@register.filter
def yes_no(value) -> str:
    """A boolean as the portal shows it everywhere: Yes or No."""
    return "Yes" if value else "No"


@register.filter
def sort_toggle(sort: str, key: str) -> str:
    """The sort a column header asks for: `key` ascending, or descending when it is already."""
    return f"-{key}" if sort == key else key
