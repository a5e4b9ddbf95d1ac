"""Storage domains and virtual disks."""

from django.db import models
from django.utils import timezone

from portal.kernel.querysets import RestrictedManager

from .choices import DiskStatus, DomainFunction, StorageDomainStatus


class StorageDomain(models.Model):
    """A storage domain: on every host of its data center it is the libvirt pool `pool_name`."""

    name = models.CharField(max_length=255)
    description = models.CharField(max_length=1000, blank=True)
    data_center = models.ForeignKey(
        "vms.DataCenter", on_delete=models.PROTECT, related_name="storage_domains"
    )
    domain_function = models.CharField(
        max_length=16, choices=DomainFunction.choices, default=DomainFunction.DATA
    )
    storage_type = models.CharField(max_length=64, default="Local on Host")
    pool_name = models.CharField("libvirt pool", max_length=255)
    status = models.CharField(
        max_length=16, choices=StorageDomainStatus.choices, default=StorageDomainStatus.UNKNOWN
    )
    total_bytes = models.PositiveBigIntegerField(default=0)
    used_bytes = models.PositiveBigIntegerField(default=0)
    free_bytes = models.PositiveBigIntegerField(default=0)

    objects = RestrictedManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["data_center", "name"], name="sd_name_unique_in_dc")
        ]

    def __str__(self) -> str:
        return self.name


class Disk(models.Model):
    """A virtual disk: a volume in its storage domain's pool on `host`. With no VM it is a
    floating disk that can be attached to another VM or removed."""

    alias = models.CharField(max_length=255)
    description = models.CharField(max_length=1000, blank=True)
    vm = models.ForeignKey(
        "vms.VirtualMachine", on_delete=models.SET_NULL, null=True, blank=True, related_name="disks"
    )
    storage_domain = models.ForeignKey(
        StorageDomain, on_delete=models.PROTECT, related_name="disks"
    )
    host = models.ForeignKey(
        "vms.Host", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    volume_name = models.CharField(max_length=255)
    size_bytes = models.PositiveBigIntegerField("Virtual size")
    actual_bytes = models.PositiveBigIntegerField("Actual size", default=0)
    sparse = models.BooleanField("Thin provision", default=True)
    status = models.CharField(max_length=16, choices=DiskStatus.choices, default=DiskStatus.OK)
    target = models.CharField(max_length=16, default="vda")
    created_at = models.DateTimeField(default=timezone.now)

    objects = RestrictedManager()

    class Meta:
        ordering = ["alias"]

    def __str__(self) -> str:
        return self.alias

    @property
    def allocation_policy(self) -> str:
        return "Thin Provision" if self.sparse else "Preallocated"
