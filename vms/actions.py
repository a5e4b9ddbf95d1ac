"""The catalogue of actions: every action on a VM, a snapshot, a disk, a storage domain or a
host, declared once.

An entry holds what the chapter calls it (label, the verb of its Events and refusals, its
window's title and question), where it may start (the statuses, a snapshot preview) and the
busy status it holds, whether it takes several objects, opens a confirmation window or is
offered in the User Portal, the role action (`accounts.catalogue.ACTIONS`) it needs, and the
service and job kind that carry it out. The services' guards, the toolbar, the right-click
menu (read from the toolbar by `static/vireo.js`), the enabled buttons, the User Portal's
cards, the windows and the Events all read these entries; nothing else lists the actions.
Adding an action is one entry here, one service, one job handler and their tests
(`tests/accounts/test_action_catalogue.py` fails on an entry without them).
"""

from dataclasses import dataclass, field

from django.db import models

from storage.choices import StorageDomainStatus

from .choices import HostStatus, SnapshotStatus, VMStatus

S = VMStatus
H = HostStatus
SD = StorageDomainStatus


@dataclass(frozen=True)
class Action:
    """One action as the portal offers it."""

    # what it acts on: "vm", "snapshot", "disk", "storagedomain", "isoimage", "host", "cluster",
    # "affinity_group", "datacenter", "network", "vnic_profile", "nic", "hostdev"
    on: str
    key: str  # its name in URLs and Events ("run"); unique among the actions on the same kind
    label: str  # the button's and menu's text, in the chapter's words
    verb: str  # "Cannot {verb} {name}: ...", "asked to {verb} VM ...", "Failed to {verb} ..."
    permission: str  # the role action (accounts.catalogue.ACTIONS) needed on the object
    service: str  # dotted path of the service that starts it
    url: str  # the URL name of its window or endpoint (the permission matrix has a rule for it)
    job: str | None = None  # the job kind whose handler carries it out; None: done at once
    title: str = ""  # the confirmation window's title
    question: str = ""  # the confirmation window's question
    # Statuses (of the VM, or of the storage domain) it may start from (None: any), and the
    # busy status the object holds meanwhile (None: the status does not move); `busy_from`
    # overrides it for a starting status.
    sources: frozenset[str] | None = None
    busy: str | None = None
    busy_from: dict[str, str] = field(default_factory=dict)
    # A snapshot preview: True needs one active, False refuses while one is, None either.
    preview: bool | None = None
    snapshot_status: str | None = None  # the status the selected snapshot must have
    needs_host: bool = False  # refused while the VM is placed on no host
    # An external VM (defined on its host outside Vireo): True, only for one (Import); False,
    # never for one (what would redefine or delete what Vireo did not make); None, either.
    external: bool | None = None
    inputs: tuple[str, ...] = ()  # what its window asks, passed to its service by name
    also: tuple[str, ...] = ()  # role actions needed besides, on the VM's cluster
    multi: bool = False  # may act on several selected objects at once
    confirm: bool = True  # asks in a window first; False: done at once from the button
    toolbar: str = ""  # the VM toolbar's button text (with its sign); "" not on the toolbar
    separated: bool = False  # the toolbar (and menu) sets it apart from the buttons before it
    # Its place on the User Portal's VM cards (1 first; 0: not offered). A card asks in the
    # same window as the Administration Portal when `confirm` says so.
    user_portal: int = 0
    # Opens a page of its own in a new browser window (the console) from the toolbar, the
    # right-click menu and the card, instead of a window of the portal; not in the status table.
    window: bool = False

    @property
    def id(self) -> str:
        return f"{self.on}.{self.key}"

    def allows(self, status: str) -> bool:
        """Whether the status table lets the action start from `status`."""
        return self.sources is None or status in self.sources

    def busy_for(self, status: str) -> str | None:
        """The busy status the VM shows while the action, started from `status`, is carried out."""
        return self.busy_from.get(status, self.busy)


RUNNING = frozenset({S.UP, S.PAUSED, S.REBOOT_IN_PROGRESS})
# A guest whose qemu runs, so its graphics listen: the console can be opened.
CONSOLE_STATUSES = RUNNING | {S.POWERING_UP, S.POWERING_DOWN, S.NOT_RESPONDING}

CATALOGUE: tuple[Action, ...] = (
    # -- virtual machines: the toolbar and right-click menu, in their order --------------------
    Action(
        "vm",
        "run",
        "Run",
        "run",
        permission="run",
        service="vms.services.vm_run",
        job="vm_run",
        url="vms:action",
        title="Run Virtual Machine(s)",
        question="Are you sure you want to run the following Virtual Machine(s)?",
        sources=frozenset({S.DOWN, S.SUSPENDED, S.PAUSED}),
        busy=S.POWERING_UP,
        busy_from={S.SUSPENDED: S.RESTORING_STATE},  # a Suspended VM is restored, not booted
        needs_host=True,
        multi=True,
        confirm=False,
        toolbar="▶ Run",
        user_portal=1,
    ),
    Action(
        "vm",
        "run_once",
        "Run Once",
        "run",
        permission="run",
        service="vms.cdrom.vm_run_once",
        job="vm_run_once",
        url="vms:action",
        title="Run Virtual Machine(s)",
        # Down only: it starts the guest with a CD and boot order for this start alone.
        sources=frozenset({S.DOWN}),
        busy=S.POWERING_UP,
        needs_host=True,
        external=False,  # it defines the domain from Vireo's inventory
        inputs=("cd_image", "boot_sequence"),
        toolbar="Run Once",
        user_portal=7,
    ),
    Action(
        "vm",
        "suspend",
        "Suspend",
        "suspend",
        permission="suspend",
        service="vms.services.vm_suspend",
        job="vm_suspend",
        url="vms:action",
        title="Suspend Virtual Machine(s)",
        question="Are you sure you want to suspend the following Virtual Machine(s)?",
        sources=frozenset({S.UP}),
        busy=S.SAVING_STATE,
        needs_host=True,
        multi=True,
        confirm=False,
        toolbar="❚❚ Suspend",
        user_portal=3,
    ),
    Action(
        "vm",
        "shutdown",
        "Shutdown",
        "shut down",
        permission="shutdown",
        service="vms.services.vm_shutdown",
        job="vm_shutdown",
        url="vms:action",
        title="Shut down Virtual Machine(s)",
        question="Are you sure you want to shut down the following Virtual Machine(s)?",
        sources=RUNNING,
        busy=S.POWERING_DOWN,
        needs_host=True,
        inputs=("reason",),  # asked when the cluster wants a reason (Shutdown Reason)
        multi=True,
        toolbar="■ Shutdown",
        user_portal=2,
    ),
    Action(
        "vm",
        "poweroff",
        "Power Off",
        "power off",
        permission="poweroff",
        service="vms.services.vm_poweroff",
        job="vm_poweroff",
        url="vms:action",
        title="Power Off Virtual Machine(s)",
        question="Are you sure you want to power off the following Virtual Machine(s)? "
        "Unsaved data in the guests will be lost.",
        sources=RUNNING | {S.POWERING_UP, S.POWERING_DOWN, S.NOT_RESPONDING},
        busy=S.POWERING_DOWN,
        needs_host=True,
        multi=True,
        toolbar="Power Off",
        user_portal=6,
    ),
    Action(
        "vm",
        "reboot",
        "Reboot",
        "reboot",
        permission="reboot",
        service="vms.services.vm_reboot",
        job="vm_reboot",
        url="vms:action",
        title="Reboot Virtual Machine(s)",
        question="Are you sure you want to reboot the following Virtual Machine(s)?",
        sources=frozenset({S.UP}),
        busy=S.REBOOT_IN_PROGRESS,
        needs_host=True,
        multi=True,
        toolbar="↻ Reboot",
        user_portal=4,
    ),
    Action(
        "vm",
        "change_cd",
        "Change CD",
        "change the CD of",
        permission="change_cd",
        service="vms.cdrom.vm_change_cd",
        job="vm_change_cd",  # a running VM's; a Down VM's saved CD changes at once
        url="vms:action",
        title="Change CD",
        sources=frozenset({S.UP, S.PAUSED, S.DOWN}),
        busy=None,  # the guest goes on running; the status does not move
        external=False,
        inputs=("cd_image",),
        toolbar="Change CD",
        user_portal=8,
    ),
    Action(
        "vm",
        "migrate",
        "Migrate",
        "migrate",
        permission="migrate_vm",
        service="vms.migration.vm_migrate",
        job="vm_migrate",
        url="vms:action",
        title="Migrate Virtual Machine(s)",
        question="Migrate the following Virtual Machine(s) to another host of their cluster?",
        sources=frozenset({S.UP, S.PAUSED}),
        busy=S.MIGRATING_FROM,
        needs_host=True,
        inputs=("host_id",),  # None: Select Host Automatically
        multi=True,
        toolbar="Migrate",
        separated=True,
    ),
    Action(
        "vm",
        "cancel_migration",
        "Cancel Migration",
        "cancel the migration of",
        permission="migrate_vm",
        service="vms.migration.vm_migration_cancel",
        url="vms:action",
        title="Cancel Migration",
        sources=frozenset({S.MIGRATING_FROM}),
        needs_host=True,
        multi=True,
        confirm=False,
        toolbar="Cancel Migration",
    ),
    Action(
        "vm",
        "remove",
        "Remove",
        "remove",
        permission="remove",
        service="vms.services.vm_remove",
        job="vm_remove",
        url="vms:action",
        title="Remove Virtual Machine(s)",
        question="Are you sure you want to remove the following Virtual Machine(s)?",
        sources=frozenset({S.DOWN}),
        busy=S.IMAGE_LOCKED,
        preview=False,  # which disks would go: the previewed ones or the kept ones?
        external=False,
        inputs=("remove_disks",),
        multi=True,
        toolbar="Remove",
        separated=True,
        user_portal=9,
    ),
    Action(
        "vm",
        "clone",
        "Clone VM",
        "clone",
        permission="clone",
        service="vms.services.vm_clone",
        job="vm_clone",
        url="vms:action",
        title="Clone Virtual Machine",
        sources=frozenset({S.DOWN}),
        busy=S.IMAGE_LOCKED,
        preview=False,  # which disks would a clone copy?
        external=False,
        also=("create_vm",),  # a clone is a new VM in the VM's cluster
        toolbar="Clone VM",
    ),
    Action(
        "vm",
        "import",
        "Import",
        "import",
        permission="import_vm",
        service="vms.services.vm_import",
        job="vm_import",
        url="vms:action",
        title="Import Virtual Machine",
        sources=frozenset({S.DOWN, S.UP, S.PAUSED, S.SUSPENDED}),
        busy=S.IMAGE_LOCKED,
        external=True,
        inputs=("name",),
        toolbar="Import",
    ),
    Action(
        "vm",
        "console",
        "Console",
        "open the console of",
        permission="console",
        service="vms.console.console_open",
        url="vms:console",
        title="Console",
        sources=CONSOLE_STATUSES,
        needs_host=True,
        confirm=False,
        toolbar="Console",
        separated=True,
        user_portal=5,
        window=True,
    ),
    Action(
        "vm",
        "create",
        "New VM",
        "create",
        permission="create_vm",  # or create_vm_from_template, for a VM from a template
        service="vms.services.vm_create",
        job="vm_create",
        url="vms:new",
        title="New Virtual Machine",
    ),
    Action(
        "vm",
        "edit_vm",
        "Edit",
        "edit",
        permission="edit_vm",
        service="vms.services.vm_edit",
        url="vms:edit",
        title="Edit Virtual Machine",
    ),
    # -- snapshots: the Snapshots sub-tab's toolbar, in its order ------------------------------
    Action(
        "snapshot",
        "create",
        "Create",
        "create",
        permission="snapshots",
        service="vms.snapshots.snapshot_create",
        job="snapshot_create",
        url="vms:snapshot_create",
        title="Create snapshot",
        sources=frozenset({S.DOWN, S.UP, S.PAUSED}),
        preview=False,
    ),
    Action(
        "snapshot",
        "preview",
        "Preview",
        "preview",
        permission="snapshots",
        service="vms.snapshots.snapshot_preview",
        job="snapshot_preview",
        url="vms:snapshot_preview",
        title="Custom Preview Snapshot",
        sources=frozenset({S.DOWN}),
        preview=False,
        snapshot_status=SnapshotStatus.OK,
    ),
    Action(
        "snapshot",
        "commit",
        "Commit",
        "commit",
        permission="snapshots",
        service="vms.snapshots.snapshot_commit",
        job="snapshot_commit",
        url="vms:snapshot_end_preview",
        title="Commit Snapshot",
        sources=frozenset({S.DOWN}),
        preview=True,
        snapshot_status=SnapshotStatus.IN_PREVIEW,
    ),
    Action(
        "snapshot",
        "undo",
        "Undo",
        "undo",
        permission="snapshots",
        service="vms.snapshots.snapshot_undo",
        job="snapshot_undo",
        url="vms:snapshot_end_preview",
        title="Undo Snapshot Preview",
        sources=frozenset({S.DOWN}),
        preview=True,
        snapshot_status=SnapshotStatus.IN_PREVIEW,
    ),
    Action(
        "snapshot",
        "clone",
        "Clone",
        "clone",
        permission="snapshots",
        service="vms.snapshots.snapshot_clone",
        job="vm_clone",
        url="vms:snapshot_clone",
        title="Clone VM from Snapshot",
        sources=frozenset({S.DOWN, S.UP, S.PAUSED, S.SUSPENDED}),
        snapshot_status=SnapshotStatus.OK,
        also=("create_vm",),
    ),
    Action(
        "snapshot",
        "delete",
        "Delete",
        "delete",
        permission="snapshots",
        service="vms.snapshots.snapshot_delete",
        job="snapshot_delete",
        url="vms:snapshot_delete",
        title="Delete Snapshot",
        sources=frozenset({S.DOWN, S.UP}),
        preview=False,
        snapshot_status=SnapshotStatus.OK,
    ),
    # -- floating disks (Storage tab, Disks) ---------------------------------------------------
    Action(
        "disk",
        "attach",
        "Attach",
        "attach",
        permission="edit_disk",
        service="vms.disks.disk_attach",
        job="disk_attach",
        url="storage:disk_attach",
        title="Attach Disk",
    ),
    Action(
        "disk",
        "remove",
        "Remove",
        "remove",
        permission="edit_disk",
        service="vms.disks.disk_remove",
        job="disk_remove",
        url="storage:disk_remove",
        title="Remove Disk(s)",
        question="Are you sure you want to remove the floating disk?",
    ),
    # -- storage domains (Storage tab): the toolbar, in its order ------------------------------
    Action(
        "storagedomain",
        "create",
        "New Domain",
        "add",
        permission="create_storage_domain",
        service="vms.domains.storage_domain_create",
        job="storage_domain_create",
        url="storage:domain_new",
        title="New Domain",
        busy=SD.LOCKED,
    ),
    Action(
        "storagedomain",
        "edit",
        "Edit",
        "edit",
        permission="edit_storage",
        service="vms.domains.storage_domain_edit",
        url="storage:domain_edit",
        title="Edit Domain",
        sources=frozenset({SD.ACTIVE, SD.INACTIVE, SD.UNKNOWN, SD.MAINTENANCE, SD.UNATTACHED}),
    ),
    Action(
        "storagedomain",
        "remove",
        "Remove",
        "remove",
        permission="edit_storage",
        service="vms.domains.storage_domain_remove",
        job="storage_domain_remove",
        url="storage:domain_remove",
        title="Remove Storage(s)",
        question="Are you sure you want to remove the following storage domain?",
        sources=frozenset({SD.MAINTENANCE, SD.UNATTACHED}),
        busy=SD.LOCKED,
        inputs=("format_domain",),
    ),
    Action(
        "storagedomain",
        "maintenance",
        "Maintenance",
        "move {} to maintenance",  # "{}": where the object's words go
        permission="edit_storage",
        service="vms.domains.storage_domain_maintenance",
        job="storage_domain_maintenance",
        url="storage:domain_action",
        title="Maintenance Storage Domain(s)",
        question="Are you sure you want to place the following storage domain(s) into "
        "maintenance mode? Its pool is stopped on every host of the data center.",
        sources=frozenset({SD.ACTIVE, SD.INACTIVE, SD.UNKNOWN}),
        busy=SD.PREPARING_FOR_MAINTENANCE,
    ),
    Action(
        "storagedomain",
        "activate",
        "Activate",
        "activate",
        permission="edit_storage",
        service="vms.domains.storage_domain_activate",
        job="storage_domain_activate",
        url="storage:domain_action",
        title="Activate Storage Domain(s)",
        question="Are you sure you want to activate the following storage domain(s)? Its pool "
        "is set up again on every Up host of the data center.",
        # From Active or Inactive too: it tries again on hosts where setting it up failed.
        sources=frozenset({SD.MAINTENANCE, SD.INACTIVE, SD.ACTIVE, SD.UNKNOWN}),
        busy=SD.ACTIVATING,
    ),
    Action(
        "storagedomain",
        "attach",
        "Attach",
        "attach",
        permission="edit_storage",
        service="vms.domains.storage_domain_attach",
        job="storage_domain_attach",
        url="storage:domain_attach",
        title="Attach to Data Center",
        sources=frozenset({SD.UNATTACHED}),
        busy=SD.LOCKED,
        inputs=("data_center",),
    ),
    Action(
        "storagedomain",
        "detach",
        "Detach",
        "detach",
        permission="edit_storage",
        service="vms.domains.storage_domain_detach",
        job="storage_domain_detach",
        url="storage:domain_action",
        title="Detach Storage",
        question="Are you sure you want to detach the following storage(s)? Its pool is taken "
        "off every host of the data center; its data stays.",
        sources=frozenset({SD.MAINTENANCE}),
        busy=SD.DETACHING,
    ),
    # -- images of an ISO domain (Storage tab, the domain's Images) ----------------------------
    Action(
        "isoimage",
        "upload",
        "Upload",
        "upload",
        permission="manage_images",  # on the ISO domain
        service="vms.isos.iso_upload_start",
        job="iso_upload",
        url="storage:image_upload",
        title="Upload Image",
    ),
    Action(
        "isoimage",
        "remove",
        "Remove",
        "remove",
        permission="manage_images",
        service="vms.isos.iso_image_remove",
        job="iso_remove",
        url="storage:image_remove",
        title="Remove ISO Image(s)",
        question="Are you sure you want to remove the following ISO image from the domain?",
    ),
    Action(
        "isoimage",
        "guest_tools",
        "Mark as Guest Tools",
        "mark",
        permission="manage_images",
        service="vms.isos.iso_image_guest_tools",
        url="storage:image_guest_tools",
        title="Guest Tools",
        inputs=("guest_tools",),
    ),
    # -- hosts ---------------------------------------------------------------------------------
    Action(
        "host",
        "add_host",
        "New Host",
        "add",
        permission="add_host",
        service="vms.services.host_add",
        url="vms:host_new",
        title="New Host",
    ),
    Action(
        "host",
        "edit",
        "Edit",
        "edit",
        permission="edit_host",
        service="vms.inventory.host_update",
        url="vms:host_edit",
        title="Edit Host",
    ),
    Action(
        "host",
        "remove",
        "Remove",
        "remove",
        permission="remove_host",
        service="vms.inventory.host_remove",
        url="vms:host_remove",
        title="Remove Host(s)",
        question="Are you sure you want to remove the following Host(s)?",
        sources=frozenset({H.MAINTENANCE}),
    ),
    Action(
        "host",
        "maintenance",
        "Maintenance",
        "move to Maintenance",
        permission="manipulate_host",
        service="vms.inventory.host_maintenance",
        url="vms:host_maintenance",
        title="Maintenance Host(s)",
        question="Are you sure you want to place the following Host(s) into maintenance mode?",
        sources=frozenset({H.UP, H.NON_RESPONSIVE, H.CONNECTING}),
    ),
    Action(
        "host",
        "activate",
        "Activate",
        "activate",
        permission="manipulate_host",
        service="vms.inventory.host_activate",
        url="vms:host_activate",
        title="Activate Host(s)",
        question="Are you sure you want to activate the following Host(s)?",
        sources=frozenset({H.MAINTENANCE, H.PREPARING_FOR_MAINTENANCE}),
    ),
    Action(
        "host",
        "confirm_rebooted",
        "Confirm 'Host has been Rebooted'",
        "confirm that the host has been rebooted",
        permission="manipulate_host",
        service="vms.high_availability.host_reboot_confirm",
        url="vms:host_confirm_rebooted",
        title="Confirm 'Host has been Rebooted'",
        question="Are you sure you want to confirm that the following Host has been rebooted "
        "(or is powered off)? Its virtual machines are marked Down and the Highly Available "
        "ones are restarted on other hosts. If the host is in fact still running them, their "
        "disks will be used twice and may be corrupted.",
        sources=frozenset({H.NON_RESPONSIVE}),
    ),
    # -- clusters (Clusters tab) ---------------------------------------------------------------
    Action(
        "cluster",
        "create",
        "New",
        "create",
        permission="create_cluster",
        service="vms.inventory.cluster_create",
        url="vms:cluster_new",
        title="New Cluster",
    ),
    Action(
        "cluster",
        "edit",
        "Edit",
        "edit",
        permission="edit_cluster",
        service="vms.services.cluster_update",
        url="vms:cluster_edit",
        title="Edit Cluster",
    ),
    Action(
        "cluster",
        "remove",
        "Remove",
        "remove",
        permission="remove_cluster",
        service="vms.inventory.cluster_remove",
        url="vms:cluster_remove",
        title="Remove Cluster(s)",
        question="Are you sure you want to remove the following Cluster(s)?",
    ),
    # -- a cluster's affinity groups (Clusters tab and a VM's Affinity Groups sub-tab) ---------
    Action(
        "affinity_group",
        "create",
        "New",
        "create",
        permission="manipulate_affinity_groups",  # on the cluster
        service="vms.affinity.affinity_group_create",
        url="vms:affinity_group_new",
        title="New Affinity Group",
    ),
    Action(
        "affinity_group",
        "edit",
        "Edit",
        "edit",
        permission="manipulate_affinity_groups",
        service="vms.affinity.affinity_group_update",
        url="vms:affinity_group_edit",
        title="Edit Affinity Group",
    ),
    Action(
        "affinity_group",
        "remove",
        "Remove",
        "remove",
        permission="manipulate_affinity_groups",
        service="vms.affinity.affinity_group_remove",
        url="vms:affinity_group_remove",
        title="Remove Affinity Group(s)",
        question="Are you sure you want to remove the following Affinity Group(s)?",
    ),
    # -- data centers (Data Centers tab) -------------------------------------------------------
    Action(
        "datacenter",
        "create",
        "New",
        "create",
        permission="create_datacenter",
        service="vms.inventory.datacenter_create",
        url="vms:datacenter_new",
        title="New Data Center",
    ),
    Action(
        "datacenter",
        "edit",
        "Edit",
        "edit",
        permission="edit_datacenter",
        service="vms.inventory.datacenter_update",
        url="vms:datacenter_edit",
        title="Edit Data Center",
    ),
    Action(
        "datacenter",
        "remove",
        "Remove",
        "remove",
        permission="remove_datacenter",
        service="vms.inventory.datacenter_remove",
        url="vms:datacenter_remove",
        title="Remove Data Center(s)",
        question="Are you sure you want to remove the following Data Center(s)?",
    ),
    # -- logical networks and their vNIC profiles (Data Centers tab, Networks) -----------------
    Action(
        "network",
        "create",
        "New",
        "create",
        permission="configure_network",  # on the data center
        service="vms.networks.network_create",
        job="network_create",
        url="vms:network_new",
        title="New Logical Network",
    ),
    Action(
        "network",
        "edit",
        "Edit",
        "edit",
        permission="configure_network",
        service="vms.networks.network_edit",
        job="network_edit",  # only when its backing changes
        url="vms:network_edit",
        title="Edit Logical Network",
    ),
    Action(
        "network",
        "remove",
        "Remove",
        "remove",
        permission="configure_network",
        service="vms.networks.network_remove",
        job="network_remove",
        url="vms:network_remove",
        title="Remove Logical Network(s)",
        question="Are you sure you want to remove the following Logical Network(s)?",
    ),
    Action(
        "vnic_profile",
        "create",
        "New",
        "create",
        permission="configure_network",  # on its network
        service="vms.networks.vnic_profile_create",
        url="vms:vnic_profile_new",
        title="New VM Interface Profile",
    ),
    Action(
        "vnic_profile",
        "edit",
        "Edit",
        "edit",
        permission="configure_network",
        service="vms.networks.vnic_profile_edit",
        url="vms:vnic_profile_edit",
        title="Edit VM Interface Profile",
    ),
    Action(
        "vnic_profile",
        "remove",
        "Remove",
        "remove",
        permission="configure_network",
        service="vms.networks.vnic_profile_remove",
        url="vms:vnic_profile_remove",
        title="Remove VM Interface Profile(s)",
        question="Are you sure you want to remove the following VM Interface Profile(s)?",
    ),
    # -- a VM's network interfaces (details pane, Network Interfaces); the profile chosen
    # needs attach_vnic (VnicProfileUser) on it besides ----------------------------------------
    Action(
        "nic",
        "create",
        "New",
        "add",
        permission="edit_vm",
        service="vms.networks.nic_create",
        job="nic_create",
        url="vms:nic_new",
        title="New Network Interface",
    ),
    Action(
        "nic",
        "edit",
        "Edit",
        "edit",
        permission="edit_vm",
        service="vms.networks.nic_edit",
        job="nic_edit",
        url="vms:nic_edit",
        title="Edit Network Interface",
    ),
    Action(
        "nic",
        "remove",
        "Remove",
        "remove",
        permission="edit_vm",
        service="vms.networks.nic_remove",
        job="nic_remove",
        url="vms:nic_remove",
        title="Remove Network Interface(s)",
        question="Are you sure you want to remove the following Network Interface(s)?",
    ),
    # -- a VM's Host Devices sub-tab (done at once: the guest gets them at its next start) ----
    Action(
        "hostdev",
        "add",
        "Add device",
        "add host devices to",
        permission="edit_vm",
        service="vms.host_devices.vm_host_devices_add",
        url="vms:hostdev_add",
        title="Add Host Devices",
        external=False,
    ),
    Action(
        "hostdev",
        "remove",
        "Remove device",
        "remove host devices from",
        permission="edit_vm",
        service="vms.host_devices.vm_host_devices_remove",
        url="vms:hostdev_remove",
        title="Remove Host Device(s)",
        question="Are you sure you want to remove the following Host Device(s)?",
        multi=True,
        external=False,
    ),
    Action(
        "hostdev",
        "pin",
        "Pin to another host",
        "pin",
        permission="edit_vm",
        service="vms.host_devices.vm_pin_to_host",
        url="vms:hostdev_pin",
        title="Pin VM to Host",
        external=False,
    ),
)


def _by_kind(kind: str) -> dict[str, Action]:
    return {a.key: a for a in CATALOGUE if a.on == kind}


VM_ACTIONS = _by_kind("vm")
SNAPSHOT_ACTIONS = _by_kind("snapshot")
DISK_ACTIONS = _by_kind("disk")
DOMAIN_ACTIONS = _by_kind("storagedomain")
# The Storage tab's toolbar on a selected domain (New Domain needs no selection), and the
# actions whose confirmation window is the shared one (`storage:domain_action`).
DOMAIN_TOOLBAR = tuple(a for k, a in DOMAIN_ACTIONS.items() if k != "create")
DOMAIN_CONFIRM_ACTIONS = {
    k: a for k, a in DOMAIN_ACTIONS.items() if a.url == "storage:domain_action"
}
IMAGE_ACTIONS = _by_kind("isoimage")
HOST_ACTIONS = _by_kind("host")
CLUSTER_ACTIONS = _by_kind("cluster")
AFFINITY_GROUP_ACTIONS = _by_kind("affinity_group")
DATACENTER_ACTIONS = _by_kind("datacenter")


def host_actions_allowed(status: str) -> frozenset[str]:
    """The host actions that may start from a host's `status` (those without statuses: any)."""
    return frozenset(k for k, a in HOST_ACTIONS.items() if a.allows(status))


NETWORK_ACTIONS = _by_kind("network")
VNIC_PROFILE_ACTIONS = _by_kind("vnic_profile")
NIC_ACTIONS = _by_kind("nic")
HOSTDEV_ACTIONS = _by_kind("hostdev")

# The VM actions of the status table (toolbar, right-click menu, `vms:action`), and the
# snapshot actions of the Snapshots sub-tab, as choices.
VM_STATUS_ACTIONS = {k: a for k, a in VM_ACTIONS.items() if a.sources is not None and not a.window}
# The VM actions that open a page of their own (the console), enabled by the same table.
VM_WINDOW_ACTIONS = {k: a for k, a in VM_ACTIONS.items() if a.window}
VMAction = models.TextChoices(
    "VMAction",
    [
        (k.upper().replace("POWEROFF", "POWER_OFF"), (k, a.label))
        for k, a in VM_STATUS_ACTIONS.items()
    ],
)
SnapshotAction = models.TextChoices(
    "SnapshotAction", [(k.upper(), (k, a.label)) for k, a in SNAPSHOT_ACTIONS.items()]
)
TOOLBAR = tuple(a for a in VM_ACTIONS.values() if a.toolbar)
USER_PORTAL_ACTIONS = tuple(
    sorted((a for a in VM_ACTIONS.values() if a.user_portal), key=lambda a: a.user_portal)
)


# The busy statuses each kind of job holds its VM in: a row shows a job's progress only while
# its VM is in one of them, so a bar never contradicts the badge ("Down 10%"). Other kinds
# (create, disks) hold it Image Locked; a snapshot job leaves a running VM running, and its
# progress shows there too.
JOB_BUSY_STATUSES: dict[str, frozenset[str]] = {
    a.job: frozenset({a.busy, *a.busy_from.values()} - {None}) for a in VM_STATUS_ACTIONS.values()
}
SNAPSHOT_JOB_STATUSES = frozenset({S.IMAGE_LOCKED, S.UP, S.PAUSED})


def job_shows_on(kind: str, status: str) -> bool:
    """Whether a VM in `status` shows the progress of its active job of `kind`."""
    if kind.startswith("snapshot_"):
        return status in SNAPSHOT_JOB_STATUSES
    return status in JOB_BUSY_STATUSES.get(kind, frozenset({S.IMAGE_LOCKED}))


def domain_actions_allowed(status: str) -> frozenset[str]:
    """The storage domain actions the status table allows from `status` (New Domain aside)."""
    return frozenset(a.key for a in DOMAIN_TOOLBAR if a.allows(status))


def allowed_actions(status: str, *, external: bool = False) -> frozenset[str]:
    """The VM actions the status table allows from `status`, for a VM Vireo defined or (when
    `external`) one defined on its host outside Vireo."""
    return frozenset(
        k
        for k, a in (VM_STATUS_ACTIONS | VM_WINDOW_ACTIONS).items()
        if a.allows(status) and a.external in (None, external)
    )


def preview_blocked() -> frozenset[str]:
    """The VM actions an active snapshot preview rules out."""
    return frozenset(k for k, a in VM_STATUS_ACTIONS.items() if a.preview is False)


def snapshot_actions_allowed(
    *,
    vm_status: str,
    previewing: bool,
    busy: bool,
    snapshot_status: str | None,
    unmanaged: str = "",
) -> frozenset[str]:
    """The snapshot actions the table allows for a VM (and a selected snapshot, if any).
    `busy`: another snapshot of the VM is Locked (one snapshot operation at a time).
    `unmanaged`: why a VM defined outside Vireo can have none (a disk that is no volume of a
    storage domain), or ""."""
    if busy or unmanaged:
        return frozenset()
    return frozenset(
        k
        for k, a in SNAPSHOT_ACTIONS.items()
        if a.allows(vm_status)
        and (a.preview is None or a.preview == previewing)
        and (a.snapshot_status is None or a.snapshot_status == snapshot_status)
    )
