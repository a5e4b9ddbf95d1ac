"""Data centers, clusters, hosts and virtual machines."""

import uuid as uuid_lib

from django.conf import settings
from django.db import models
from django.utils import timezone

from .choices import HostStatus, VMStatus


class DataCenter(models.Model):
    """A data center: the top of the inventory; VM names are unique inside one."""

    name = models.CharField(max_length=255, unique=True)
    description = models.CharField(max_length=1000, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Cluster(models.Model):
    """A set of hosts that share CPU type and policies; VMs belong to a cluster."""

    name = models.CharField(max_length=255)
    description = models.CharField(max_length=1000, blank=True)
    data_center = models.ForeignKey(DataCenter, on_delete=models.PROTECT, related_name="clusters")
    shutdown_reason_enabled = models.BooleanField(
        "Enable to set VM shutdown reason",
        default=False,
        help_text="Shows a Reason field in the Shut down Virtual Machine(s) window.",
    )
    shutdown_timeout = models.PositiveIntegerField(
        "Graceful shutdown timeout (seconds)",
        default=120,
        help_text="How long Shutdown waits for the guest before the VM is left Up.",
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["data_center", "name"], name="cluster_name_unique_in_dc"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Host(models.Model):
    """A hypervisor reached through its libvirt URI."""

    name = models.CharField(max_length=255, unique=True)
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="hosts")
    uri = models.CharField("libvirt URI", max_length=1000, unique=True)
    status = models.CharField(
        max_length=32, choices=HostStatus.choices, default=HostStatus.CONNECTING
    )
    hostname = models.CharField(max_length=255, blank=True)
    cpu_model = models.CharField(max_length=255, blank=True)
    cpus = models.PositiveIntegerField(default=0)
    memory_mb = models.PositiveBigIntegerField(default=0)
    last_seen = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class VirtualMachine(models.Model):
    """A virtual machine; its uuid is the libvirt domain's uuid on its host."""

    uuid = models.UUIDField(default=uuid_lib.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=255, db_index=True)
    description = models.CharField(max_length=1000, blank=True)
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="vms")
    host = models.ForeignKey(
        Host, on_delete=models.SET_NULL, null=True, blank=True, related_name="vms"
    )
    status = models.CharField(
        max_length=32, choices=VMStatus.choices, default=VMStatus.DOWN, db_index=True
    )
    memory_mb = models.PositiveIntegerField("Memory (MB)")
    vcpus = models.PositiveSmallIntegerField("vCPUs")
    started_at = models.DateTimeField(null=True, blank=True)
    shutdown_reason = models.CharField(max_length=1000, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    status_changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = "virtual machine"

    def __str__(self) -> str:
        return self.name

    @property
    def uptime(self):
        if self.started_at and self.status in {
            VMStatus.UP,
            VMStatus.REBOOT_IN_PROGRESS,
            VMStatus.POWERING_DOWN,
        }:
            return timezone.now() - self.started_at
        return None
