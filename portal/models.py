"""The portal app's models are the kernel's (portal/kernel/models.py); imported here so that Django
finds them under the app label "portal" and the migrations stay as they are. Import them from
portal.kernel.models."""

from portal.kernel.models import ConfigValue, Event, Job, JobKind, JobStatus, Phase, Severity

__all__ = ["ConfigValue", "Event", "Job", "JobKind", "JobStatus", "Phase", "Severity"]
