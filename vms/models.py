"""Data centers, clusters, hosts and virtual machines."""

import uuid as uuid_lib
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from hypervisor.datatypes import address_text
from portal.kernel.config import MIGRATION_BANDWIDTH, MIGRATION_COMPRESSION, MIGRATION_POLICIES
from portal.kernel.querysets import RestrictedManager

from .choices import (
    BOOT_SEQUENCE_DEFAULT,
    RUNNING_STATUSES,
    AffinityRule,
    BootSequence,
    ConsoleDisconnectAction,
    DeviceCapability,
    FenceAgent,
    HostStatus,
    MemoryOptimization,
    MigrationMode,
    NetworkKind,
    NetworkStatus,
    NicModel,
    SchedulingPolicy,
    SnapshotStatus,
    VMOrigin,
    VMPriority,
    VMStatus,
)


class DataCenter(models.Model):
    """A data center: the top of the inventory; VM names are unique inside one."""

    name = models.CharField(max_length=255, unique=True)
    description = models.CharField(max_length=1000, blank=True)

    objects = RestrictedManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            # Names differ by more than case ("Default" and "default" are one name).
            models.UniqueConstraint(Lower("name"), name="datacenter_name_unique_ci")
        ]

    def __str__(self) -> str:
        return self.name


class MigrationPolicyFields(models.Model):
    """The migration policy settings a cluster (Edit Cluster, Migration Policy tab) and a VM
    (Edit VM, Host tab) each hold: empty / None inherits the level above (a VM its cluster's,
    a cluster engine-config's; vms/migration_policy.py resolves them)."""

    migration_policy = models.CharField(
        "Migration Policy", max_length=32, blank=True, choices=MIGRATION_POLICIES
    )
    auto_converge = models.BooleanField("Auto Converge migrations", null=True, blank=True)
    migration_compression = models.CharField(
        "Enable migration compression", max_length=16, blank=True, choices=MIGRATION_COMPRESSION
    )
    migration_bandwidth = models.CharField(
        "Migration bandwidth", max_length=32, blank=True, choices=MIGRATION_BANDWIDTH
    )
    migration_bandwidth_mbps = models.PositiveIntegerField(
        "Custom migration bandwidth (Mbps)", null=True, blank=True
    )

    class Meta:
        abstract = True


class Cluster(MigrationPolicyFields):
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
    memory_overcommit_percent = models.PositiveSmallIntegerField(
        "Memory Optimization",
        choices=MemoryOptimization.choices,
        default=MemoryOptimization.NONE,
        help_text="How much of a host's physical memory running VMs may commit (the scheduler's memory filter).",
    )
    max_concurrent_migrations = models.PositiveSmallIntegerField(
        "Maximum concurrent outgoing migrations",
        null=True,
        blank=True,
        help_text="How many VMs a host moved to Maintenance migrates at once (empty: "
        "engine-config's MaxNumberOfConcurrentMigrations).",
    )

    # Scheduling Policy tab (vms/balancing.py; the scheduler's weights per policy). The
    # properties keep oVirt's names: HighUtilization, LowUtilization,
    # CpuOverCommitDurationMinutes, MaxFreeMemoryForOverUtilized, MinFreeMemoryForUnderUtilized.
    scheduling_policy = models.CharField(
        "Scheduling Policy",
        max_length=32,
        choices=SchedulingPolicy.choices,
        default=SchedulingPolicy.NONE,
    )
    high_utilization = models.PositiveSmallIntegerField(
        "HighUtilization",
        default=80,
        help_text="Host CPU use (%) at or over which a host is over-utilized.",
    )
    low_utilization = models.PositiveSmallIntegerField(
        "LowUtilization",
        default=20,
        help_text="Host CPU use (%) under which a host is under-utilized (power_saving).",
    )
    cpu_overcommit_duration_minutes = models.PositiveSmallIntegerField(
        "CpuOverCommitDurationMinutes",
        default=2,
        help_text="How long a host stays over- or under-utilized before VMs are migrated.",
    )
    max_free_memory_for_over_utilized = models.PositiveIntegerField(
        "MaxFreeMemoryForOverUtilized",
        null=True,
        blank=True,
        help_text="A host with less free memory (MB) than this is over-utilized (empty: "
        "memory is not considered).",
    )
    min_free_memory_for_under_utilized = models.PositiveIntegerField(
        "MinFreeMemoryForUnderUtilized",
        null=True,
        blank=True,
        help_text="A host with more free memory (MB) than this is under-utilized (empty: "
        "memory is not considered).",
    )

    objects = RestrictedManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["data_center", "name"], name="cluster_name_unique_in_dc"
            ),
            models.UniqueConstraint(
                "data_center", Lower("name"), name="cluster_name_unique_in_dc_ci"
            ),
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
    cores = models.PositiveIntegerField(default=0, help_text="Physical CPU cores")
    memory_mb = models.PositiveBigIntegerField(default=0)
    libvirt_version = models.CharField("libvirt version", max_length=64, blank=True)
    hypervisor_version = models.CharField(
        "QEMU version", max_length=64, blank=True, help_text="The hypervisor's version (QEMU/KVM)"
    )
    link_speed_mbps = models.PositiveIntegerField(
        "link speed (Mbps)",
        default=0,
        help_text="The fastest network link that is up, as libvirt reports it (0: not known); "
        "Auto migration bandwidth reads it.",
    )
    last_seen = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    maintenance_reason = models.TextField(
        blank=True,
        help_text="Why a host Preparing For Maintenance is not empty yet: the VMs that cannot leave.",
    )
    maintenance_since = models.DateTimeField(
        null=True, blank=True, help_text="When the host last went Preparing For Maintenance."
    )
    # Load (the monitor, from libvirt's host CPU times between two polls) and how long the
    # host has been over- or under-utilized by its cluster's Scheduling Policy (the balancer).
    cpu_usage_percent = models.PositiveSmallIntegerField(
        "CPU usage (%)", null=True, blank=True, help_text="Between the monitor's last two polls."
    )
    cpu_usage_at = models.DateTimeField(null=True, blank=True)
    over_utilized_since = models.DateTimeField(null=True, blank=True)
    under_utilized_since = models.DateTimeField(null=True, blank=True)
    # Power Management (Edit Host): the fence agent that powers the host off when it goes
    # Non Responsive (vms/fencing.py). The password is never shown again nor logged.
    pm_enabled = models.BooleanField("Enable Power Management", default=False)
    pm_agent = models.CharField(
        "Type", max_length=32, choices=FenceAgent.choices, default=FenceAgent.IPMILAN
    )
    pm_address = models.CharField("Address", max_length=255, blank=True)
    pm_user = models.CharField("User Name", max_length=64, blank=True)
    pm_password = models.CharField("Password", max_length=255, blank=True)
    pm_options = models.CharField(
        "Options",
        max_length=255,
        blank=True,
        help_text="Comma-separated key=value options of the fence agent (lanplus=1, ipport=623).",
    )
    fence_tried_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the monitor last tried to fence the host (while it is Non Responsive).",
    )
    fenced_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the host was fenced or confirmed rebooted; cleared when it is Up again.",
    )

    objects = RestrictedManager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Lower("name"), name="host_name_unique_ci")]

    def __str__(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        """The Hostname/IP column: the host part of the address, or for a local connection
        the name the host reports (libvirt's test driver reports the portal's own machine for
        every test host, so a test host has none)."""
        parts = urlsplit(self.uri)
        if parts.hostname:
            return parts.hostname
        return "" if parts.scheme == "test" else self.hostname


class HostDevice(models.Model):
    """A device of a host that can be given to a VM (a libvirt node device: pci, usb_device,
    scsi), as the monitor last read it. One no longer on the host stays, not `present`, while a
    VM has it attached (the VM cannot start until it is back or removed)."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="devices")
    name = models.CharField(max_length=255, help_text="libvirt's node device name.")
    capability = models.CharField(max_length=16, choices=DeviceCapability.choices)
    address = models.JSONField(
        default=list,
        help_text="pci [domain, bus, slot, function]; usb_device [bus, device]; "
        "scsi [host, bus, target, lun].",
    )
    vendor_id = models.CharField("Vendor ID", max_length=16, blank=True)
    vendor_name = models.CharField("Vendor", max_length=255, blank=True)
    product_id = models.CharField("Product ID", max_length=16, blank=True)
    product_name = models.CharField("Product", max_length=255, blank=True)
    iommu_group = models.PositiveIntegerField("IOMMU Group", null=True, blank=True)
    driver = models.CharField(max_length=64, blank=True)
    parent = models.CharField(max_length=255, blank=True)
    present = models.BooleanField(default=True)
    seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["host", "capability", "name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "name"], name="host_device_unique_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def address_text(self) -> str:
        return address_text(self.capability, tuple(self.address))


class VmHostDevice(models.Model):
    """A host device attached to a VM (the VM's Host Devices sub-tab): given to the guest as
    <hostdev> when it next starts. All of a VM's devices are of the host it is pinned to."""

    vm = models.ForeignKey("VirtualMachine", on_delete=models.CASCADE, related_name="host_devices")
    device = models.ForeignKey(HostDevice, on_delete=models.CASCADE, related_name="attachments")
    attached_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["device__capability", "device__name"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "device"], name="vm_host_device_unique")
        ]

    def __str__(self) -> str:
        return f"{self.device_id} on {self.vm_id}"


class HostLeftover(models.Model):
    """A libvirt pool or network that Vireo took off the Up hosts of a data center (a storage
    domain detached or removed, a logical network removed) while this host was not Up. The
    monitor takes it off the host once the host is Up again, unless it is wanted again by then;
    only what Vireo recorded here is ever taken off a host."""

    POOL = "pool"
    NETWORK = "network"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="leftovers")
    kind = models.CharField(max_length=16, choices=[(POOL, "Storage pool"), (NETWORK, "Network")])
    name = models.CharField(max_length=255)
    shared = models.BooleanField(default=False, help_text="An NFS mount point Vireo made.")
    what = models.CharField(max_length=1000, help_text="What it was, for the Event.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "kind", "name"], name="host_leftover_unique")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} on {self.host_id}"


class VirtualMachine(MigrationPolicyFields):
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
    cores_per_socket = models.PositiveSmallIntegerField("Cores per Virtual Socket", default=1)
    start_host = models.ForeignKey(
        Host,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="Start Running On",
        help_text="A specific host of the cluster the VM starts on; empty: any host in the cluster.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    shutdown_reason = models.CharField(max_length=1000, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    status_changed_at = models.DateTimeField(default=timezone.now)
    last_known_status = models.CharField(
        max_length=32,
        choices=VMStatus.choices,
        blank=True,
        help_text="The status the VM had when its host stopped answering (while it is Unknown).",
    )
    template = models.ForeignKey(
        "Template", on_delete=models.SET_NULL, null=True, blank=True, related_name="vms"
    )
    resume_memory_volume = models.CharField(
        max_length=255,
        blank=True,
        help_text="A memory state (pool/volume) the next Run restores, chosen in a snapshot preview.",
    )
    origin = models.CharField(max_length=16, choices=VMOrigin.choices, default=VMOrigin.VIREO)
    migrating_to = models.ForeignKey(
        Host,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="incoming_vms",
        help_text="The destination of the live migration under way (status Migrating From).",
    )
    domain_name = models.CharField(
        max_length=255,
        blank=True,
        help_text="An external VM's libvirt domain name on its host (its name in Vireo is external-<name>).",
    )
    unmanaged_disks = models.JSONField(
        default=list,
        blank=True,
        help_text="An external VM's disks that no storage domain holds: [[target, device, source]].",
    )
    migration_mode = models.CharField(
        "Migration Options",
        max_length=16,
        choices=MigrationMode.choices,
        default=MigrationMode.MIGRATABLE,
    )
    custom_migration_downtime = models.PositiveIntegerField(
        "Use custom migration downtime (ms)",
        null=True,
        blank=True,
        help_text="Empty: engine-config's DefaultMaximumMigrationDowntime.",
    )
    cpu_passthrough = models.BooleanField(
        "Pass-Through Host CPU",
        default=False,
        help_text="The guest sees the host's CPU as it is; such a VM cannot migrate.",
    )
    priority = models.PositiveSmallIntegerField(
        "Priority for Run/Migration queue",
        choices=VMPriority.choices,
        default=VMPriority.LOW,
        help_text="A host moved to Maintenance migrates higher-priority VMs first; Highly "
        "Available VMs waiting to be restarted start in this order too.",
    )
    highly_available = models.BooleanField(
        "Highly Available",
        default=False,
        help_text="Vireo restarts the VM when it stops without anyone asking (a crash, its "
        "process killed, its host fenced or confirmed rebooted).",
    )
    sso_enabled = models.BooleanField(
        "Single Sign-On",
        default=True,
        help_text="Log the user in to the guest automatically when they open its console from the User Portal.",
    )
    console_disconnect_action = models.CharField(
        "Console Disconnect Action",
        max_length=16,
        choices=ConsoleDisconnectAction.choices,
        default=ConsoleDisconnectAction.NONE,
        help_text="What happens when the last user closes the VM's console. Lock screen "
        "presses Super+L in the guest (its desktop must lock on it).",
    )

    # Boot Options: the CD in its CD-ROM drive (an image of an ISO domain; SET_NULL: an image
    # that goes leaves the drive empty, with an Event) and the devices it boots from, in order.
    cd_image = models.ForeignKey(
        "storage.IsoImage",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="vms",
        verbose_name="Attach CD",
    )
    boot_sequence = models.CharField(
        "Boot Sequence",
        max_length=32,
        choices=BootSequence.choices,
        default=BOOT_SEQUENCE_DEFAULT,
    )

    objects = RestrictedManager()

    class Meta:
        ordering = ["name"]
        verbose_name = "virtual machine"
        # The search box's `memory > 2048`; `name = web*` has a pattern index on UPPER(name)
        # (PostgreSQL only, made in migration 0004).
        indexes = [models.Index(fields=["memory_mb"], name="vm_memory_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(boot_sequence__in=BootSequence.values),
                name="vm_boot_sequence_valid",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_external(self) -> bool:
        """Defined on its host by someone else; Vireo acts on it but does not manage it yet."""
        return self.origin == VMOrigin.EXTERNAL

    @property
    def agent(self):
        """The guest agent's report while the VM runs and its agent answers; None: "no guest
        agent" (read with select_related("guest") on lists: no query per VM)."""
        try:
            report = self.guest
        except GuestAgentReport.DoesNotExist:
            return None
        return report if report.answering and self.status in RUNNING_STATUSES else None

    @property
    def uptime(self):
        if self.started_at and self.status in {
            VMStatus.UP,
            VMStatus.REBOOT_IN_PROGRESS,
            VMStatus.POWERING_DOWN,
        }:
            return timezone.now() - self.started_at
        return None


class Template(models.Model):
    """A template: the configuration a new virtual machine can be created from."""

    name = models.CharField(max_length=255)
    description = models.CharField(max_length=1000, blank=True)
    data_center = models.ForeignKey(DataCenter, on_delete=models.PROTECT, related_name="templates")
    memory_mb = models.PositiveIntegerField("Memory (MB)", default=1024)
    vcpus = models.PositiveSmallIntegerField("vCPUs", default=1)
    disk_bytes = models.PositiveBigIntegerField("Disk size", default=10 * 1024**3)

    objects = RestrictedManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["data_center", "name"], name="template_name_unique_in_dc"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Network(models.Model):
    """A logical network of a data center, backed on each of its hosts by the libvirt network
    `libvirt_name` (NAT, isolated, or over an existing host bridge); VM network interfaces
    reach it through its vNIC profiles."""

    name = models.CharField(max_length=255)
    description = models.CharField(max_length=1000, blank=True)
    data_center = models.ForeignKey(DataCenter, on_delete=models.PROTECT, related_name="networks")
    vm_network = models.BooleanField("VM network", default=True)
    kind = models.CharField(
        "Type", max_length=16, choices=NetworkKind.choices, default=NetworkKind.ISOLATED
    )
    bridge = models.CharField(
        "Host bridge", max_length=15, blank=True, help_text="An existing bridge on every host."
    )
    vlan = models.PositiveSmallIntegerField("VLAN tag", null=True, blank=True)
    ipv4 = models.CharField(
        "IPv4 address",
        max_length=18,
        blank=True,
        help_text="The hosts' address on a NAT or isolated network, with its prefix "
        "(192.168.150.1/24); DHCP hands out the rest of the subnet.",
    )
    status = models.CharField(
        max_length=16, choices=NetworkStatus.choices, default=NetworkStatus.OPERATIONAL
    )

    objects = RestrictedManager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["data_center", "name"], name="network_name_unique_in_dc"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def libvirt_name(self) -> str:
        """The libvirt network that stands for it on each host (never the user's text)."""
        return f"vireo-{self.pk}"


class VnicProfile(models.Model):
    """A vNIC profile: how interfaces plug into a logical network (port mirroring). A user
    picks one for an interface with VnicProfileUser (attach_vnic) on it."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="profiles")
    name = models.CharField(max_length=255)
    description = models.CharField(max_length=1000, blank=True)
    port_mirroring = models.BooleanField("Port Mirroring", default=False)

    objects = RestrictedManager()

    class Meta:
        ordering = ["network__name", "name"]
        verbose_name = "vNIC profile"
        constraints = [
            models.UniqueConstraint(fields=["network", "name"], name="vnic_profile_unique_in_net")
        ]

    def __str__(self) -> str:
        return self.name


class NetworkInterface(models.Model):
    """A VM's network interface (nic1, nic2 ...) on a vNIC profile, with a MAC from its data
    center's MAC pool (unique), a device model, a link state, and whether it is plugged."""

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="nics")
    name = models.CharField(max_length=64, default="nic1")
    profile = models.ForeignKey(VnicProfile, on_delete=models.PROTECT, related_name="interfaces")
    model = models.CharField(
        "Type", max_length=16, choices=NicModel.choices, default=NicModel.VIRTIO
    )
    mac = models.CharField("MAC", max_length=17, unique=True)
    linked = models.BooleanField("Link State", default=True, help_text="Up when ticked.")
    plugged = models.BooleanField("Plugged", default=True)
    locked = models.BooleanField(default=False, help_text="A job is changing it on the host.")

    class Meta:
        ordering = ["vm", "name"]
        constraints = [models.UniqueConstraint(fields=["vm", "name"], name="nic_name_unique_in_vm")]

    def __str__(self) -> str:
        return f"{self.vm.name}/{self.name}"


class Snapshot(models.Model):
    """A snapshot: the state of a VM's included disks (and, if saved, its memory) and its
    configuration at one point in time."""

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="snapshots")
    description = models.CharField(max_length=1000, blank=True)
    status = models.CharField(
        max_length=16, choices=SnapshotStatus.choices, default=SnapshotStatus.LOCKED
    )
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    memory_volume = models.CharField(
        max_length=255, blank=True, help_text="pool/volume of the saved memory state"
    )
    memory_mb = models.PositiveIntegerField("Memory (MB)")
    vcpus = models.PositiveSmallIntegerField("vCPUs")
    nics = models.JSONField(
        default=list, blank=True, help_text="The VM's network interfaces when taken"
    )
    guest_agent = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the VM's guest agent had reported when the snapshot was taken (OS, kernel, "
        "FQDN, applications); empty: no agent answered.",
    )

    objects = RestrictedManager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.description or f"Snapshot {self.pk}"

    @property
    def memory_saved(self) -> bool:
        return bool(self.memory_volume)


class SnapshotDisk(models.Model):
    """A disk a snapshot includes, and the frozen volume that holds its state."""

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="disks")
    disk = models.ForeignKey(
        "storage.Disk", on_delete=models.CASCADE, related_name="snapshot_volumes"
    )
    volume_name = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "disk"], name="snapshot_disk_unique")
        ]

    def __str__(self) -> str:
        return f"{self.snapshot_id}:{self.volume_name}"


class SnapshotPreview(models.Model):
    """An active (custom) preview of a VM: what to put back on Undo, what to drop on Commit."""

    vm = models.OneToOneField(VirtualMachine, on_delete=models.CASCADE, related_name="preview")
    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="+")
    previous_memory_mb = models.PositiveIntegerField()
    previous_vcpus = models.PositiveSmallIntegerField()
    # disk id -> {"active": volume before the preview, "preview": overlay, "snapshot": snapshot id}
    disks = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"preview of {self.snapshot_id}"


class Quota(models.Model):
    """A user's quota: how many VMs they may create and how much disk their VMs may use.
    An empty limit falls back to the VIREO_QUOTA_* setting (empty there too: no limit)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="vm_quota"
    )
    max_vms = models.PositiveIntegerField("VMs", null=True, blank=True)
    max_disk_gib = models.PositiveIntegerField("Disk space (GiB)", null=True, blank=True)

    class Meta:
        ordering = ["user__username"]

    def __str__(self) -> str:
        return f"quota of {self.user}"


class GuestAgentReport(models.Model):
    """What a running VM's guest agent (qemu-guest-agent) last reported, written by the
    monitor (vms.guest_agent); `answering` False: no agent answers ("no guest agent")."""

    vm = models.OneToOneField(VirtualMachine, on_delete=models.CASCADE, related_name="guest")
    answering = models.BooleanField(default=False)
    ip_addresses = models.JSONField("IP Addresses", default=list, blank=True)
    fqdn = models.CharField("FQDN", max_length=255, blank=True)
    os_name = models.CharField("Operating System", max_length=255, blank=True)
    kernel = models.CharField(max_length=255, blank=True)
    architecture = models.CharField(max_length=32, blank=True)
    timezone = models.CharField("Time Zone", max_length=64, blank=True)
    users = models.JSONField("Logged-in User(s)", default=list, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"guest agent of {self.vm_id}"


class ConsoleTicket(models.Model):
    """A one-time console ticket: the right of one user to open one console of a VM, until it
    expires. The page that asked for it holds the token (only its hash is stored); the graphics
    password set with it is not stored at all."""

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    takeover = models.BooleanField(
        default=False, help_text="Opened to take over a console another user holds."
    )

    def __str__(self) -> str:
        return f"console ticket {self.pk} of {self.vm_id}"


class ConsoleSession(models.Model):
    """Who holds a VM's console now (one user at a time): the websocket that proxies it,
    since when, and when it last said it was alive (a lock whose holder went silent is free)."""

    vm = models.OneToOneField(VirtualMachine, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel_name = models.CharField(max_length=255)
    since = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"console of {self.vm_id} held by {self.user_id}"


class AffinityGroup(models.Model):
    """An affinity group of a cluster (the chapter's "Affinity Groups", as in oVirt 4.x): a VM
    Affinity Rule over its VMs (Positive: on one host; Negative: on different hosts) and a VM
    to host rule over its VMs and hosts (Positive: on those hosts; Negative: off them), each
    Enforcing (hard: the scheduler filters hosts) or not (soft: it weighs them). Written by
    `vms.affinity`, read by `vms.scheduling`."""

    NAME_MAX = 50

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="affinity_groups")
    name = models.CharField(max_length=NAME_MAX)
    description = models.CharField(max_length=1000, blank=True)
    vm_rule = models.CharField(
        "VM Affinity Rule",
        max_length=16,
        choices=AffinityRule.choices,
        default=AffinityRule.POSITIVE,
    )
    vm_enforcing = models.BooleanField("Enforcing", default=True)
    host_rule = models.CharField(
        "VM to host rule",
        max_length=16,
        choices=AffinityRule.choices,
        default=AffinityRule.DISABLED,
    )
    host_enforcing = models.BooleanField("Enforcing", default=False)
    vms = models.ManyToManyField(
        VirtualMachine, related_name="affinity_groups", blank=True, verbose_name="Virtual Machines"
    )
    hosts = models.ManyToManyField(Host, related_name="affinity_groups", blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                "cluster", Lower("name"), name="affinity_group_name_unique_in_cluster_ci"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def vm_rule_text(self) -> str:
        """The VM Affinity Rule in words: "Positive (Enforcing)", "Negative", "Disabled"."""
        return _rule_text(self.vm_rule, self.vm_enforcing)

    def host_rule_text(self) -> str:
        return _rule_text(self.host_rule, self.host_enforcing)


def _rule_text(rule: str, enforcing: bool) -> str:
    label = AffinityRule(rule).label
    return f"{label} (Enforcing)" if enforcing and rule != AffinityRule.DISABLED else label


class HaRestart(models.Model):
    """A Highly Available VM that stopped without anyone asking (or whose host was fenced or
    confirmed rebooted), waiting for the HA watcher (vms.high_availability) to restart it. It
    lives here, not in the monitor's memory, so a monitor restart goes on with it; one per VM,
    so a VM is never restarted twice."""

    vm = models.OneToOneField(VirtualMachine, on_delete=models.CASCADE, related_name="ha_restart")
    reason = models.CharField(max_length=1000, help_text="Why the VM went down.")
    created_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    job = models.ForeignKey(
        "portal.Job",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The Run job of the attempt under way.",
    )
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"HA restart of {self.vm_id}"
