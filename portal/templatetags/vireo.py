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
