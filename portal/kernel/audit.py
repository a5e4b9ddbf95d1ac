"""Writing Events: every action is recorded as requested, started, succeeded or failed."""

from .live import broadcast
from .models import Event, Phase, Severity


def actor(user) -> str:
    """How a user is named in Event messages (the system itself when nobody asked)."""
    if user is None or not user.is_authenticated:
        return "The system"
    return user.get_username()


def event_record(
    *,
    action: str,
    phase: str,
    message: str,
    user=None,
    vm=None,
    host=None,
    cluster=None,
    job=None,
    object_type: str = "vm",
    object_name: str = "",
    reason: str = "",
    error: str = "",
    severity: str | None = None,
) -> Event:
    """Record one Event and tell open Events views about it."""
    if severity is None:
        severity = Severity.ERROR if phase == Phase.FAILED else Severity.NORMAL
    if vm is not None:
        object_name = object_name or vm.name
        cluster = cluster or vm.cluster_id and vm.cluster
        host = host or vm.host
    event = Event.objects.create(
        action=action,
        phase=phase,
        message=message[:1000],
        user=user if user is not None and user.is_authenticated else None,
        vm=vm,
        host=host,
        cluster=cluster,
        job=job,
        object_type=object_type,
        object_name=object_name[:255],
        reason=reason[:1000],
        error=error,
        severity=severity,
    )
    topics = ["events"]
    if vm is not None:
        topics.append(f"vm.{vm.pk}.events")
    broadcast(*topics)
    return event
