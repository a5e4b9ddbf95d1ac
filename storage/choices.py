"""Statuses and kinds for storage domains and disks, in the chapter's words."""

from django.db import models


class DomainFunction(models.TextChoices):
    DATA = "data", "Data"
    ISO = "iso", "ISO"
    EXPORT = "export", "Export"


class StorageType(models.TextChoices):
    """What backs a domain: a directory on each host (a libvirt `dir` pool, one per host and
    each host's own data) or one NFS export that every host mounts (a `netfs` pool)."""

    LOCAL = "local", "Local on Host"
    NFS = "nfs", "NFS"


class StorageDomainStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    INACTIVE = "inactive", "Inactive"
    MAINTENANCE = "maintenance", "Maintenance"
    UNATTACHED = "unattached", "Unattached"
    LOCKED = "locked", "Locked"
    PREPARING_FOR_MAINTENANCE = "preparing_for_maintenance", "Preparing For Maintenance"
    ACTIVATING = "activating", "Activating"
    DETACHING = "detaching", "Detaching"
    UNKNOWN = "unknown", "Unknown"


SD = StorageDomainStatus

# Statuses a job holds a domain in; only that job (or its on_fail) moves the domain out.
DOMAIN_BUSY_STATUSES = frozenset(
    {SD.LOCKED, SD.PREPARING_FOR_MAINTENANCE, SD.ACTIVATING, SD.DETACHING}
)
# Attached and in use: the monitor moves these between Active and Inactive from what the
# hosts report (Unknown: never reported yet).
DOMAIN_IN_USE_STATUSES = frozenset({SD.ACTIVE, SD.INACTIVE, SD.UNKNOWN})


class PoolStatus(models.TextChoices):
    """A domain's pool on one host."""

    ACTIVE = "active", "Active"
    INACTIVE = "inactive", "Inactive"


class DiskStatus(models.TextChoices):
    OK = "ok", "OK"
    LOCKED = "locked", "Locked"
    ILLEGAL = "illegal", "Illegal"


class IsoImageStatus(models.TextChoices):
    """An image of an ISO domain: OK once whole on the pool; Locked while an upload writes it."""

    OK = "ok", "OK"
    LOCKED = "locked", "Locked"
