"""The statuses of virtual machines, hosts and snapshots, in the chapter's words.

Which action may start from which status, and the busy status it holds, is part of each
action's entry in the catalogue (`vms.actions`).
"""

from itertools import permutations

from django.db import models


class VMStatus(models.TextChoices):
    DOWN = "down", "Down"
    UP = "up", "Up"
    POWERING_UP = "powering_up", "Powering Up"
    POWERING_DOWN = "powering_down", "Powering Down"
    RESTORING_STATE = "restoring_state", "Restoring State"
    SAVING_STATE = "saving_state", "Saving State"
    SUSPENDED = "suspended", "Suspended"
    PAUSED = "paused", "Paused"
    REBOOT_IN_PROGRESS = "reboot_in_progress", "Reboot In Progress"
    IMAGE_LOCKED = "image_locked", "Image Locked"
    NOT_RESPONDING = "not_responding", "Not Responding"
    UNKNOWN = "unknown", "Unknown"
    # A live migration: the VM's row holds Migrating From (its host is the source, its
    # `migrating_to` the destination); the destination host's list shows it Migrating To.
    MIGRATING_FROM = "migrating_from", "Migrating From"
    MIGRATING_TO = "migrating_to", "Migrating To"


class VMOrigin(models.TextChoices):
    """Who made the VM: Vireo, or someone else on its host (adopted by the monitor, shown as
    `external-<name>` until an administrator imports it, as oVirt does)."""

    VIREO = "vireo", "Vireo"
    EXTERNAL = "external", "External"


S = VMStatus

# Statuses a job holds a VM in while it works on it. Only the job that set one (or the
# monitor's reconcile when that job is gone) moves the VM out of it.
BUSY_STATUSES = frozenset(
    {
        S.POWERING_UP,
        S.POWERING_DOWN,
        S.RESTORING_STATE,
        S.SAVING_STATE,
        S.REBOOT_IN_PROGRESS,
        S.IMAGE_LOCKED,
        S.MIGRATING_FROM,
    }
)

# Statuses in which the guest is running on a host (Remove and Clone VM are disabled).
RUNNING_STATUSES = frozenset(
    {
        S.UP,
        S.POWERING_UP,
        S.POWERING_DOWN,
        S.REBOOT_IN_PROGRESS,
        S.PAUSED,
        S.NOT_RESPONDING,
        S.MIGRATING_FROM,
    }
)


class VMPriority(models.IntegerChoices):
    """A VM's Priority for Run/Migration queue (oVirt's High Availability tab): a host moved
    to Maintenance migrates its higher-priority VMs first."""

    LOW = 1, "Low"
    MEDIUM = 50, "Medium"
    HIGH = 100, "High"


class MigrationMode(models.TextChoices):
    """A VM's Migration Options (oVirt's Host tab): the scheduler's migration_allowed filter
    reads it when the purpose is migration."""

    MIGRATABLE = "migratable", "Allow manual and automatic migration"
    USER_MIGRATABLE = "user_migratable", "Allow manual migration only"
    PINNED = "pinned", "Do not allow migration"


class SchedulingPolicy(models.TextChoices):
    """A cluster's Scheduling Policy (Edit Cluster's Scheduling Policy tab), named as oVirt
    names them: none (no load balancing), evenly_distributed (VMs spread so no host is
    over-utilized), power_saving (VMs packed onto fewer hosts, under-utilized hosts emptied).
    The scheduler's weights and the balancer (vms/balancing.py) read it."""

    NONE = "none", "none"
    EVENLY_DISTRIBUTED = "evenly_distributed", "evenly_distributed"
    POWER_SAVING = "power_saving", "power_saving"


class AffinityRule(models.TextChoices):
    """An affinity group's VM Affinity Rule, or its VM to host rule (oVirt 4.x): Positive runs
    the VMs together (on the group's hosts), Negative apart (off them), Disabled not at all."""

    POSITIVE = "positive", "Positive"
    NEGATIVE = "negative", "Negative"
    DISABLED = "disabled", "Disabled"


class DeviceCapability(models.TextChoices):
    """The kinds of host device a VM may be given (the Add Host Devices window's Capability)."""

    PCI = "pci", "pci"
    SCSI = "scsi", "scsi"
    USB_DEVICE = "usb_device", "usb_device"


# A VM in any of these holds its host devices (a Suspended guest's saved state has them too);
# another VM may be given them but cannot start while one of these holds them.
NOT_HOLDING_DEVICES = frozenset({VMStatus.DOWN, VMStatus.IMAGE_LOCKED})


class MemoryOptimization(models.IntegerChoices):
    """A cluster's Memory Optimization: how much of a host's physical memory the scheduler
    lets running VMs commit (oVirt: None 100%, for Server Load 150%, for Desktop Load 200%)."""

    NONE = 100, "None - Disable memory overcommit"
    SERVER = 150, "For Server Load - Allow scheduling of 150% of physical memory"
    DESKTOP = 200, "For Desktop Load - Allow scheduling of 200% of physical memory"


class ConsoleDisconnectAction(models.TextChoices):
    """What happens to a VM when the last user closes its console (Console Disconnect Action)."""

    NONE = "none", "No action"
    LOCK_SCREEN = "lock_screen", "Lock screen"
    SHUTDOWN = "shutdown", "Shutdown virtual machine"


class FenceAgent(models.TextChoices):
    """A host's Power Management fence agent type (Debian's fence-agents)."""

    IPMILAN = "ipmilan", "ipmilan"


class HostStatus(models.TextChoices):
    UP = "up", "Up"
    CONNECTING = "connecting", "Connecting"
    NON_RESPONSIVE = "non_responsive", "Non Responsive"
    PREPARING_FOR_MAINTENANCE = "preparing_for_maintenance", "Preparing For Maintenance"
    MAINTENANCE = "maintenance", "Maintenance"


# A host an administrator took out of service: new VMs are not placed on it, its VMs are not
# run, and the monitor neither polls it nor moves its status (only Activate brings it back).
# Preparing For Maintenance is the status a host will hold while its VMs migrate away, once
# migration lands; until then Maintenance is refused while VMs run on the host.
HOST_MAINTENANCE_STATUSES = frozenset(
    {HostStatus.MAINTENANCE, HostStatus.PREPARING_FOR_MAINTENANCE}
)

# VM statuses that keep a host from Maintenance (and from being removed): anything but a
# guest at rest. A Suspended VM's memory lies saved on the host; it runs nowhere.
VM_AT_REST_STATUSES = frozenset({S.DOWN, S.SUSPENDED})


# Where the hypervisor's own domain state leads (hypervisor.DomainState -> VMStatus).
DOMAIN_STATE_TO_STATUS = {
    "running": S.UP,
    "blocked": S.UP,
    "paused": S.PAUSED,
    "shutdown": S.POWERING_DOWN,
    "shutoff": S.DOWN,
    "crashed": S.DOWN,
    "pmsuspended": S.SUSPENDED,
    "nostate": S.UNKNOWN,
}


def status_from_domain(state: str, has_managed_save: bool) -> str:
    """The VM status that a domain in `state` shows; a stopped domain with a saved memory
    image is Suspended (hibernated)."""
    if state in {"shutoff", "crashed"} and has_managed_save:
        return S.SUSPENDED
    return DOMAIN_STATE_TO_STATUS.get(state, S.UNKNOWN)


class SnapshotStatus(models.TextChoices):
    LOCKED = "locked", "Locked"
    OK = "ok", "Ok"
    IN_PREVIEW = "in_preview", "Preview Mode"


class NetworkKind(models.TextChoices):
    """What backs a logical network on each host of its data center."""

    NAT = "nat", "NAT (libvirt network)"
    ISOLATED = "isolated", "Isolated (libvirt network)"
    BRIDGE = "bridge", "Existing host bridge"


class NetworkStatus(models.TextChoices):
    """Locked while a job defines, changes or removes it on the hosts."""

    OPERATIONAL = "operational", "Operational"
    LOCKED = "locked", "Locked"


class NicModel(models.TextChoices):
    """A network interface's device type, as the New Network Interface window names it."""

    VIRTIO = "virtio", "VirtIO"
    E1000 = "e1000", "e1000"
    RTL8139 = "rtl8139", "rtl8139"


class BootDevice(models.TextChoices):
    """A device a VM boots from, as the Boot Options tab names it (libvirt's <boot dev=...>)."""

    HARD_DISK = "hd", "Hard Disk"
    CDROM = "cdrom", "CD-ROM"
    NETWORK = "network", "Network (PXE)"


def _boot_sequences() -> list[tuple[str, tuple[str, str]]]:
    """Every order of one, two or three distinct boot devices ("cdrom,hd": CD-ROM first)."""
    devices = list(BootDevice)
    found = []
    for length in (1, 2, 3):
        for order in permutations(devices, length):
            value = ",".join(d.value for d in order)
            found.append(
                (value.upper().replace(",", "_"), (value, ", ".join(d.label for d in order)))
            )
    return found


# A VM's boot sequence: its devices in the order the firmware tries them, stored as one value
# of this table (so a stored sequence is always a valid one: no repeats, known devices only).
BootSequence = models.TextChoices("BootSequence", _boot_sequences())
BOOT_SEQUENCE_DEFAULT = "hd"


def boot_sequence_devices(value: str) -> tuple[str, ...]:
    """The devices of a stored boot sequence, in order."""
    return tuple(value.split(",")) if value in BootSequence.values else (BootDevice.HARD_DISK,)


def boot_sequence_of(*devices: str) -> str:
    """The boot sequence of `devices` in order (empty ones skipped); ValueError if it is no
    valid sequence (an unknown device, or one given twice)."""
    value = ",".join(d for d in devices if d)
    if value not in BootSequence.values:
        raise ValueError(value)
    return value
