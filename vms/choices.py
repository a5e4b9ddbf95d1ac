"""The statuses of virtual machines, hosts and snapshots, in the chapter's words.

Which action may start from which status, and the busy status it holds, is part of each
action's entry in the catalogue (`vms.actions`).
"""

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
    }
)

# Statuses in which the guest is running on a host (Remove and Clone VM are disabled).
RUNNING_STATUSES = frozenset(
    {S.UP, S.POWERING_UP, S.POWERING_DOWN, S.REBOOT_IN_PROGRESS, S.PAUSED, S.NOT_RESPONDING}
)


class ConsoleDisconnectAction(models.TextChoices):
    """What happens to a VM when the last user closes its console (Console Disconnect Action)."""

    NONE = "none", "No action"
    LOCK_SCREEN = "lock_screen", "Lock screen"
    SHUTDOWN = "shutdown", "Shutdown virtual machine"


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
