"""Storage domains, their pools on each host, and virtual disks."""

import posixpath

from django.conf import settings
from django.db import models
from django.utils import timezone

from portal.kernel.querysets import RestrictedManager

from .choices import (
    DiskStatus,
    DomainFunction,
    IsoImageStatus,
    PoolStatus,
    StorageDomainStatus,
    StorageType,
)


class StorageDomain(models.Model):
    """A storage domain: on every host of its data center it is the libvirt pool `pool_name`
    (a `dir` pool on `path`, or a `netfs` pool mounting `nfs_server`:`path`)."""

    name = models.CharField(max_length=255)
    description = models.CharField(max_length=1000, blank=True)
    data_center = models.ForeignKey(
        "vms.DataCenter", on_delete=models.PROTECT, related_name="storage_domains"
    )
    domain_function = models.CharField(
        max_length=16, choices=DomainFunction.choices, default=DomainFunction.DATA
    )
    storage_type = models.CharField(
        max_length=16, choices=StorageType.choices, default=StorageType.LOCAL
    )
    # Vireo's own name (vireo-<uuid>), never typed by a user; a domain from before Vireo made
    # its pools names the pool that existed (and has no path).
    pool_name = models.CharField("libvirt pool", max_length=255)
    path = models.CharField(
        "Path",
        max_length=1024,
        blank=True,
        help_text="Local on Host: the directory on each host. NFS: the export path.",
    )
    nfs_server = models.CharField("NFS server", max_length=255, blank=True)
    status = models.CharField(
        max_length=32, choices=StorageDomainStatus.choices, default=StorageDomainStatus.UNKNOWN
    )
    # The domain's space: an NFS domain's one pool, or the sum of a local domain's pools on
    # the hosts where it is Active (each host's own figures are on its StorageDomainHost).
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

    @property
    def staging(self) -> bool:
        """Locked by a browser (or iso_upload) transfer that has not sent every byte yet."""
        return (
            self.upload_id is not None
            and self.status == IsoImageStatus.LOCKED
            and self.uploaded_bytes < self.size_bytes
        )

    @property
    def staged_percent(self) -> int:
        return 100 * self.uploaded_bytes // self.size_bytes if self.size_bytes else 0

    @property
    def shared(self) -> bool:
        """Every host sees the same data (NFS): one pool's figures are the domain's."""
        return self.storage_type == StorageType.NFS

    @property
    def managed(self) -> bool:
        """Vireo defines this domain's pools (it knows their path); False for a domain that
        names a pool made outside Vireo."""
        return bool(self.path)

    @property
    def target_path(self) -> str:
        """Where the pool lives on each host: the directory, or the NFS mount point."""
        if self.shared:
            return posixpath.join(settings.VIREO_NFS_MOUNT_ROOT, self.pool_name)
        return self.path or f"/{self.pool_name}"

    @property
    def location(self) -> str:
        """The Storage tab's Path column: the directory, or server:export."""
        return f"{self.nfs_server}:{self.path}" if self.shared else self.path


class StorageDomainHost(models.Model):
    """A storage domain's pool on one host: its status there, that host's error and its space.
    Each host's pool has its own row, so hosts never overwrite one another's figures."""

    domain = models.ForeignKey(StorageDomain, on_delete=models.CASCADE, related_name="host_pools")
    host = models.ForeignKey("vms.Host", on_delete=models.CASCADE, related_name="storage_pools")
    status = models.CharField(
        max_length=16, choices=PoolStatus.choices, default=PoolStatus.INACTIVE
    )
    error = models.TextField(blank=True)
    # The error came from setting the pool up (a missing or read-only path, an NFS server that
    # does not answer): the monitor keeps it until Activate tries again.
    setup_failed = models.BooleanField(default=False)
    total_bytes = models.PositiveBigIntegerField(default=0)
    used_bytes = models.PositiveBigIntegerField(default=0)
    free_bytes = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["host__name"]
        constraints = [models.UniqueConstraint(fields=["domain", "host"], name="sd_host_unique")]

    def __str__(self) -> str:
        return f"{self.domain_id}@{self.host_id}"


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


class IsoImage(models.Model):
    """An image of an ISO domain: the volume `name` of the domain's pool, uploaded through Vireo
    or found there by the monitor. `guest_tools` marks it as the guest tools ISO (virtio-win,
    or any ISO the administrator marks), which Change CD lists first."""

    domain = models.ForeignKey(StorageDomain, on_delete=models.CASCADE, related_name="images")
    name = models.CharField(max_length=255)
    size_bytes = models.PositiveBigIntegerField("Size", default=0)
    guest_tools = models.BooleanField("Guest tools", default=False)
    status = models.CharField(
        max_length=16, choices=IsoImageStatus.choices, default=IsoImageStatus.OK
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # While Locked by an upload: the staging file's name (VIREO_UPLOAD_DIR/<upload_id>.iso, never
    # from user input), the bytes staged so far (the offset a resumed upload goes on from) and
    # when a chunk last came (an upload left alone expires). None/0 once the image is OK.
    upload_id = models.UUIDField(null=True, blank=True, unique=True)
    uploaded_bytes = models.PositiveBigIntegerField(default=0)
    touched_at = models.DateTimeField(default=timezone.now)

    objects = RestrictedManager()

    class Meta:
        ordering = ["-guest_tools", "name"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "name"], name="iso_image_unique_in_domain")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def staging(self) -> bool:
        """Locked by a browser (or iso_upload) transfer that has not sent every byte yet."""
        return (
            self.upload_id is not None
            and self.status == IsoImageStatus.LOCKED
            and self.uploaded_bytes < self.size_bytes
        )

    @property
    def staged_percent(self) -> int:
        return 100 * self.uploaded_bytes // self.size_bytes if self.size_bytes else 0
