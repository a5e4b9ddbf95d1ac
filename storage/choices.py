"""Statuses and kinds for storage domains and disks, in the chapter's words."""

from django.db import models


class DomainFunction(models.TextChoices):
    DATA = "data", "Data"
    ISO = "iso", "ISO"
    EXPORT = "export", "Export"


class StorageDomainStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    INACTIVE = "inactive", "Inactive"
    UNKNOWN = "unknown", "Unknown"


class DiskStatus(models.TextChoices):
    OK = "ok", "OK"
    LOCKED = "locked", "Locked"
    ILLEGAL = "illegal", "Illegal"
