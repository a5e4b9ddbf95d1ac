"""The one status table for virtual machines.

Services consult it before moving a VM, and views consult it to enable buttons: nothing else
decides whether an action is allowed in a status. Words are the chapter's own.
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


class VMAction(models.TextChoices):
    RUN = "run", "Run"
    SHUTDOWN = "shutdown", "Shutdown"
    POWER_OFF = "poweroff", "Power Off"
    SUSPEND = "suspend", "Suspend"
    REBOOT = "reboot", "Reboot"
    REMOVE = "remove", "Remove"
    CLONE = "clone", "Clone VM"


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

# action -> (statuses it may start from, busy status it moves the VM to while the job works).
# Run's busy status depends on where it starts: a Suspended VM is restored, not booted.
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    VMAction.RUN: (frozenset({S.DOWN, S.SUSPENDED, S.PAUSED}), S.POWERING_UP),
    VMAction.SHUTDOWN: (frozenset({S.UP, S.PAUSED, S.REBOOT_IN_PROGRESS}), S.POWERING_DOWN),
    VMAction.POWER_OFF: (
        frozenset(
            {S.UP, S.PAUSED, S.POWERING_UP, S.POWERING_DOWN, S.REBOOT_IN_PROGRESS, S.NOT_RESPONDING}
        ),
        S.POWERING_DOWN,
    ),
    VMAction.SUSPEND: (frozenset({S.UP}), S.SAVING_STATE),
    VMAction.REBOOT: (frozenset({S.UP}), S.REBOOT_IN_PROGRESS),
    VMAction.REMOVE: (frozenset({S.DOWN}), S.IMAGE_LOCKED),
    VMAction.CLONE: (frozenset({S.DOWN}), S.IMAGE_LOCKED),
}

# The busy statuses each kind of job holds its VM in: a row shows a job's progress only while
# its VM is in one of them, so a bar never contradicts the badge ("Down 10%"). Other kinds
# (create, clone, remove, disks) hold it Image Locked; a snapshot job leaves a running VM
# running, and its progress shows there too.
JOB_BUSY_STATUSES: dict[str, frozenset[str]] = {
    "vm_run": frozenset({S.POWERING_UP, S.RESTORING_STATE}),
    "vm_shutdown": frozenset({S.POWERING_DOWN}),
    "vm_poweroff": frozenset({S.POWERING_DOWN}),
    "vm_suspend": frozenset({S.SAVING_STATE}),
    "vm_reboot": frozenset({S.REBOOT_IN_PROGRESS}),
}
SNAPSHOT_JOB_STATUSES = frozenset({S.IMAGE_LOCKED, S.UP, S.PAUSED})


def job_shows_on(kind: str, status: str) -> bool:
    """Whether a VM in `status` shows the progress of its active job of `kind`."""
    if kind.startswith("snapshot_"):
        return status in SNAPSHOT_JOB_STATUSES
    return status in JOB_BUSY_STATUSES.get(kind, frozenset({S.IMAGE_LOCKED}))


# Actions a snapshot preview rules out: which disks would a clone copy, and Remove is refused.
PREVIEW_BLOCKS = frozenset({VMAction.CLONE, VMAction.REMOVE})

# Busy status override by starting status.
BUSY_FROM = {(VMAction.RUN, S.SUSPENDED): S.RESTORING_STATE}

# Actions that can be applied to several selected VMs at once.
MULTI_VM_ACTIONS = (
    VMAction.RUN,
    VMAction.SHUTDOWN,
    VMAction.POWER_OFF,
    VMAction.SUSPEND,
    VMAction.REBOOT,
    VMAction.REMOVE,
)


def allowed_actions(status: str) -> frozenset[str]:
    """The actions the status table allows from `status`."""
    return frozenset(a for a, (sources, _busy) in TRANSITIONS.items() if status in sources)


def busy_status_for(action: str, status: str) -> str:
    """The busy status a VM shows while `action` started from `status` is being carried out."""
    return BUSY_FROM.get((action, status), TRANSITIONS[action][1])


class HostStatus(models.TextChoices):
    UP = "up", "Up"
    CONNECTING = "connecting", "Connecting"
    NON_RESPONSIVE = "non_responsive", "Non Responsive"
    MAINTENANCE = "maintenance", "Maintenance"


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


class SnapshotAction(models.TextChoices):
    CREATE = "create", "Create"
    PREVIEW = "preview", "Preview"
    COMMIT = "commit", "Commit"
    UNDO = "undo", "Undo"
    CLONE = "clone", "Clone"
    DELETE = "delete", "Delete"


# Snapshot actions: the VM statuses each may start from, whether it needs an active preview
# (True), no preview (False) or either (None), and the status the selected snapshot must have.
SNAPSHOT_RULES: dict[str, tuple[frozenset[str], bool | None, str | None]] = {
    SnapshotAction.CREATE: (frozenset({S.DOWN, S.UP, S.PAUSED}), False, None),
    SnapshotAction.PREVIEW: (frozenset({S.DOWN}), False, SnapshotStatus.OK),
    SnapshotAction.COMMIT: (frozenset({S.DOWN}), True, SnapshotStatus.IN_PREVIEW),
    SnapshotAction.UNDO: (frozenset({S.DOWN}), True, SnapshotStatus.IN_PREVIEW),
    SnapshotAction.CLONE: (
        frozenset({S.DOWN, S.UP, S.PAUSED, S.SUSPENDED}),
        None,
        SnapshotStatus.OK,
    ),
    SnapshotAction.DELETE: (frozenset({S.DOWN, S.UP}), False, SnapshotStatus.OK),
}


def snapshot_actions_allowed(
    *, vm_status: str, previewing: bool, busy: bool, snapshot_status: str | None
):
    """The snapshot actions the table allows for a VM (and a selected snapshot, if any).
    `busy`: another snapshot of the VM is Locked (one snapshot operation at a time)."""
    allowed = set()
    for action, (statuses, needs_preview, wanted) in SNAPSHOT_RULES.items():
        if busy or vm_status not in statuses:
            continue
        if needs_preview is not None and needs_preview != previewing:
            continue
        if wanted is not None and snapshot_status != wanted:
            continue
        allowed.add(action)
    return frozenset(allowed)
