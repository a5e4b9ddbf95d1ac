"""Services of the Data Centers, Clusters and Hosts tabs: New, Edit and Remove, and a host's
Maintenance and Activate (New Host and Edit Cluster are `vms.services.host_add` and
`cluster_update`).

Each one checks its input and the object's state, changes rows under a lock or a conditional
update (of two admins racing, one wins and the other is told), records the Event and
broadcasts the lists' topics after commit. A refusal is an ActionRefused with the user's
message, and nothing is changed. Remove is refused while the object still holds anything,
and says what is in the way.
"""

from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast, broadcast_gone
from portal.kernel.models import Phase
from portal.kernel.validators import text_check
from storage.models import Disk, StorageDomain

from .actions import CLUSTER_ACTIONS, DATACENTER_ACTIONS, HOST_ACTIONS
from .choices import HOST_MAINTENANCE_STATUSES, VM_AT_REST_STATUSES, HostStatus, VMStatus
from .fencing import options_text, power_management_check
from .models import Cluster, DataCenter, Host, Network, Template, VirtualMachine
from .services import (
    NAME_MAX,
    NAME_RE,
    cluster_name_taken,
    grants_drop,
    inventory_name_check,
    migrations_at_once_check,
    shutdown_timeout_check,
)

DESCRIPTION_MAX = 1000
NAMES_SHOWN = 5  # how many names a refusal lists of each kind in the way


def _names(rows, *, status: bool = False) -> str:
    """'a, b, c and 4 more', with each VM's status when `status`."""
    rows = list(rows)
    shown = [
        f"{r.name} ({VMStatus(r.status).label})" if status else str(r) for r in rows[:NAMES_SHOWN]
    ]
    more = len(rows) - NAMES_SHOWN
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _in_the_way(what: list[tuple[str, object]]) -> str:
    """'clusters (a, b); templates (t)' for each non-empty (label, queryset)."""
    parts = []
    for label, qs in what:
        rows = list(qs.order_by("name")[: NAMES_SHOWN + 1])
        if rows:
            count = qs.count() if len(rows) > NAMES_SHOWN else len(rows)
            names = ", ".join(str(r) for r in rows[:NAMES_SHOWN])
            more = f" and {count - NAMES_SHOWN} more" if count > NAMES_SHOWN else ""
            parts.append(f"{label} ({names}{more})")
    return "; ".join(parts)


def _description(value) -> str:
    return text_check(value, "Description", max_length=DESCRIPTION_MAX)


# -- data centers --------------------------------------------------------------------------


def _datacenter_taken(name: str) -> ActionRefused:
    return ActionRefused(f"Name '{name}' is already used by another data center.")


def _datacenter_locked(datacenter_id: int) -> DataCenter:
    dc = DataCenter.objects.select_for_update().filter(pk=datacenter_id).first()
    if dc is None:
        raise ActionRefused("That data center does not exist any more.")
    return dc


def datacenter_create(*, user, name: str, description: str = "") -> DataCenter:
    """New Data Center: a name no other data center has (whatever its case) and a description."""
    name = inventory_name_check(name)
    description = _description(description)
    with transaction.atomic():
        if DataCenter.objects.filter(name__iexact=name).exists():
            raise _datacenter_taken(name)
        try:
            with transaction.atomic():
                dc = DataCenter.objects.create(name=name, description=description)
        except IntegrityError:  # the same name, created by a request racing this one
            raise _datacenter_taken(name) from None
        event_record(
            action="datacenter_create",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type="datacenter",
            object_name=dc.name,
            message=f"{actor(user)} created data center {dc.name}.",
        )
        broadcast("datacenters")
    return dc


def datacenter_update(*, datacenter_id: int, user, name: str, description: str = "") -> DataCenter:
    """Edit Data Center: its name and description."""
    name = inventory_name_check(name)
    description = _description(description)
    with transaction.atomic():
        dc = _datacenter_locked(datacenter_id)
        if DataCenter.objects.filter(name__iexact=name).exclude(pk=dc.pk).exists():
            raise _datacenter_taken(name)
        old = dc.name
        dc.name, dc.description = name, description
        try:
            with transaction.atomic():
                dc.save(update_fields=["name", "description"])
        except IntegrityError:
            raise _datacenter_taken(name) from None
        renamed = f" (was {old})" if old != name else ""
        event_record(
            action="datacenter_edit",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type="datacenter",
            object_name=dc.name,
            message=f"{actor(user)} edited data center {dc.name}{renamed}.",
        )
        broadcast("datacenters", "clusters", "hosts")
    return dc


def datacenter_remove(*, datacenter_id: int, user) -> str:
    """Remove Data Center: only an empty one, holding no clusters, storage domains, logical
    networks or templates. Returns its name."""
    verb = DATACENTER_ACTIONS["remove"].verb
    with transaction.atomic():
        # Locked: New Cluster (`cluster_create`) takes the same lock.
        dc = _datacenter_locked(datacenter_id)
        in_the_way = _in_the_way(
            [
                ("clusters", Cluster.objects.filter(data_center=dc)),
                ("storage domains", StorageDomain.objects.filter(data_center=dc)),
                ("logical networks", Network.objects.filter(data_center=dc)),
                ("templates", Template.objects.filter(data_center=dc)),
            ]
        )
        if in_the_way:
            raise ActionRefused(
                f"Cannot {verb} data center {dc.name}: it still holds {in_the_way}. "
                "Remove them first."
            )
        name, pk = dc.name, dc.pk
        grants_drop(DataCenter, pk)
        dc.delete()
        event_record(
            action="datacenter_remove",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type="datacenter",
            object_name=name,
            message=f"{actor(user)} removed data center {name}.",
        )
        broadcast("datacenters", "perms")
    return name


# -- clusters -----------------------------------------------------------------------------


def cluster_create(
    *,
    user,
    name: str,
    data_center_id: int,
    description: str = "",
    shutdown_reason_enabled: bool = False,
    shutdown_timeout: int = 120,
    max_concurrent_migrations: int | None = None,
) -> Cluster:
    """New Cluster in a data center: a name unique there (whatever its case), a description
    and the VM settings of Edit Cluster."""
    name = inventory_name_check(name)
    description = _description(description)
    timeout = shutdown_timeout_check(shutdown_timeout)
    migrations_at_once = migrations_at_once_check(max_concurrent_migrations)
    with transaction.atomic():
        # The data center's row lock: cluster names are checked under it, and Remove Data
        # Center cannot take the data center away meanwhile.
        dc = _datacenter_locked(data_center_id)
        cluster_name_taken(name, data_center_id=dc.pk)
        try:
            with transaction.atomic():
                cluster = Cluster.objects.create(
                    name=name,
                    description=description,
                    data_center=dc,
                    shutdown_reason_enabled=bool(shutdown_reason_enabled),
                    shutdown_timeout=timeout,
                    max_concurrent_migrations=migrations_at_once,
                )
        except IntegrityError:
            raise ActionRefused(
                f"Name '{name}' is already used by another cluster in this data center."
            ) from None
        event_record(
            action="cluster_create",
            phase=Phase.SUCCEEDED,
            user=user,
            cluster=cluster,
            object_type="cluster",
            object_name=cluster.name,
            message=f"{actor(user)} created cluster {cluster.name} in data center {dc.name}.",
        )
        broadcast("clusters", "datacenters")
    return cluster


def cluster_remove(*, cluster_id: int, user) -> str:
    """Remove Cluster: only one that holds no hosts and no VMs. Returns its name."""
    verb = CLUSTER_ACTIONS["remove"].verb
    with transaction.atomic():
        # Locked: New Host and New VM lock the cluster too before they put anything in it.
        cluster = Cluster.objects.select_for_update().filter(pk=cluster_id).first()
        if cluster is None:
            raise ActionRefused("That cluster does not exist any more.")
        in_the_way = _in_the_way(
            [
                ("hosts", Host.objects.filter(cluster=cluster)),
                ("virtual machines", VirtualMachine.objects.filter(cluster=cluster)),
            ]
        )
        if in_the_way:
            raise ActionRefused(
                f"Cannot {verb} cluster {cluster.name}: it still holds {in_the_way}. "
                "Remove or move them first."
            )
        name, pk = cluster.name, cluster.pk
        dc_name = cluster.data_center.name
        grants_drop(Cluster, pk)
        cluster.delete()
        event_record(
            action="cluster_remove",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type="cluster",
            object_name=name,
            message=f"{actor(user)} removed cluster {name} from data center {dc_name}.",
        )
        broadcast_gone(f"cluster.{pk}")
        broadcast("clusters", "datacenters", "perms")
    return name


# -- hosts --------------------------------------------------------------------------------


def _host_locked(host_id: int) -> Host:
    host = Host.objects.select_for_update(of=("self",)).select_related("cluster").filter(pk=host_id)
    host = host.first()
    if host is None:
        raise ActionRefused("That host does not exist any more.")
    return host


def _host_move(host: Host, to_status: str, what: str) -> None:
    """Move the host from the status it was read in, conditionally: a request that changed it
    meanwhile wins, and this one ("Cannot {what}: ...") is refused."""
    if not Host.objects.filter(pk=host.pk, status=host.status).update(status=to_status):
        now = Host.objects.filter(pk=host.pk).values_list("status", flat=True).first()
        label = HostStatus(now).label if now else "removed"
        raise ActionRefused(
            f"Cannot {what}: it was changed by another request and is now {label}. "
            "Nothing was done."
        )


def host_name_check(name) -> str:
    """A host name as New Host takes it: 1-255 letters, digits, '-', '_' or '.'."""
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX or not NAME_RE.match(name):
        raise ActionRefused(
            "Host name is required: letters, digits, '-', '_' and '.', at most 255 characters."
        )
    return name


def _power_management_fields(host: Host, pm: dict) -> dict:
    """Edit Host's Power Management tab as fields of the host, checked (vms.fencing): enabled
    needs a valid agent, address, user name, password (empty: the one stored is kept) and
    options; disabled keeps the stored settings unused."""
    if not pm.get("enabled"):
        return {"pm_enabled": False}
    checked = power_management_check(
        agent=pm.get("agent") or "",
        address=pm.get("address") or "",
        user=pm.get("user") or "",
        password=pm.get("password") or host.pm_password,
        options=pm.get("options") or "",
    )
    return {
        "pm_enabled": True,
        "pm_agent": checked.agent,
        "pm_address": checked.address,
        "pm_user": checked.user,
        "pm_password": checked.password,
        "pm_options": options_text(checked.options),
    }


def host_update(
    *,
    host_id: int,
    user,
    name: str,
    cluster_id: int | None = None,
    power_management: dict | None = None,
) -> Host:
    """Edit Host: its name, and its cluster. A host changes cluster only in Maintenance and
    while no VM is placed on it; to another data center, only while it holds no disks.
    `power_management`: the Power Management tab (enabled, agent, address, user, password,
    options; None: unchanged)."""
    verb = HOST_ACTIONS["edit"].verb
    name = host_name_check(name)
    with transaction.atomic():
        host = _host_locked(host_id)
        if Host.objects.filter(name__iexact=name).exclude(pk=host.pk).exists():
            raise ActionRefused(f"Name '{name}' is already used by another host.")
        changes = {"name": name}
        if power_management is not None:
            changes.update(_power_management_fields(host, power_management))
        moved_to = None
        if cluster_id is not None and cluster_id != host.cluster_id:
            if host.status != HostStatus.MAINTENANCE:
                raise ActionRefused(
                    f"Cannot change the cluster of host {host.name}: it is "
                    f"{host.get_status_display()}. Move it to Maintenance first."
                )
            moved_to = Cluster.objects.select_for_update().filter(pk=cluster_id).first()
            if moved_to is None:
                raise ActionRefused("That cluster does not exist any more.")
            vms = VirtualMachine.objects.filter(host=host).order_by("name")
            if vms.exists():
                raise ActionRefused(
                    f"Cannot move host {host.name} to cluster {moved_to.name}: virtual machines "
                    f"are placed on it: {_names(vms)}."
                )
            other_dc = moved_to.data_center_id != host.cluster.data_center_id
            disks = Disk.objects.filter(host=host).order_by("alias")
            if other_dc and disks.exists():
                raise ActionRefused(
                    f"Cannot move host {host.name} to cluster {moved_to.name} of another data "
                    f"center: it holds disks: {', '.join(d.alias for d in disks[:NAMES_SHOWN])}."
                )
            changes["cluster"] = moved_to
        old = host.name
        if not _host_update_integrity(
            lambda: Host.objects.filter(pk=host.pk, status=host.status).update(**changes)
        ):
            raise ActionRefused(
                f"Cannot {verb} host {host.name}: it was changed by another request. "
                "Nothing was done."
            )
        host.refresh_from_db()
        what = []
        if old != name:
            what.append(f"renamed from {old}")
        if moved_to is not None:
            what.append(f"moved to cluster {moved_to.name}")
            # as a VM leaving its cluster: out of the source cluster's affinity groups
            if host.affinity_groups.exists():
                host.affinity_groups.clear()
                what.append("taken out of its affinity groups")
        if power_management is not None:
            what.append(
                f"power management {host.pm_agent} at {host.pm_address}"
                if host.pm_enabled
                else "power management disabled"
            )
        event_record(
            action="host_edit",
            phase=Phase.SUCCEEDED,
            user=user,
            host=host,
            cluster=host.cluster,
            object_type="host",
            object_name=host.name,
            message=f"{actor(user)} edited host {host.name}"
            + (f" ({', '.join(what)})" if what else "")
            + ".",
        )
        broadcast("hosts", f"host.{host.pk}")
    return host


def _host_update_integrity(call):
    try:
        with transaction.atomic():
            return call()
    except IntegrityError:
        raise ActionRefused("A host with that name already exists.") from None


def host_remove(*, host_id: int, user) -> str:
    """Remove Host: only a host in Maintenance that holds no VMs and no disks. Returns its
    name; the monitor drops its connection."""
    entry = HOST_ACTIONS["remove"]
    with transaction.atomic():
        host = _host_locked(host_id)
        if not entry.allows(host.status):
            raise ActionRefused(
                f"Cannot {entry.verb} host {host.name}: it is {host.get_status_display()}. "
                "Move it to Maintenance first."
            )
        vms = VirtualMachine.objects.filter(host=host).order_by("name")
        disks = Disk.objects.filter(host=host).order_by("alias")
        parts = []
        if vms.exists():
            parts.append(f"virtual machines ({_names(vms)})")
        if disks.exists():
            aliases = [d.alias for d in disks[: NAMES_SHOWN + 1]]
            count = disks.count() if len(aliases) > NAMES_SHOWN else len(aliases)
            more = f" and {count - NAMES_SHOWN} more" if count > NAMES_SHOWN else ""
            parts.append(f"disks ({', '.join(aliases[:NAMES_SHOWN])}{more})")
        if parts:
            raise ActionRefused(
                f"Cannot {entry.verb} host {host.name}: it still holds {'; '.join(parts)}. "
                "Remove or move them first."
            )
        name, pk, cluster = host.name, host.pk, host.cluster
        grants_drop(Host, pk)
        if not Host.objects.filter(pk=pk, status=host.status).delete()[0]:
            raise ActionRefused(f"Cannot {entry.verb} host {name}: it was changed meanwhile.")
        event_record(
            action="host_remove",
            phase=Phase.SUCCEEDED,
            user=user,
            cluster=cluster,
            object_type="host",
            object_name=name,
            message=f"{actor(user)} removed host {name}.",
        )
        broadcast_gone(f"host.{pk}")
        broadcast("hosts", "perms")
    return name


def host_maintenance(*, host_id: int, user) -> Host:
    """Maintenance: the host gets no new VMs and runs none; the monitor stops polling it. A
    host with VMs not Down or Suspended goes Preparing For Maintenance first: the monitor
    migrates them away (`vms.evacuation`) and moves it to Maintenance once it is empty."""
    entry = HOST_ACTIONS["maintenance"]
    with transaction.atomic():
        # The lock Run takes (`vms.scheduling.host_status_locked`) before it starts a VM here.
        host = _host_locked(host_id)
        what = f"move host {host.name} to Maintenance"
        if host.status in HOST_MAINTENANCE_STATUSES:
            raise ActionRefused(f"Cannot {what}: it is {host.get_status_display()} already.")
        if not entry.allows(host.status):
            raise ActionRefused(f"Cannot {what}: it is {host.get_status_display()}.")
        running = VirtualMachine.objects.filter(host=host).exclude(status__in=VM_AT_REST_STATUSES)
        count = running.count()
        was = host.get_status_display()
        if count:
            if host.status != HostStatus.UP:
                raise ActionRefused(
                    f"Cannot {what}: it is {was}, so its virtual machines cannot be migrated "
                    f"away: {_names(running.order_by('name'), status=True)}."
                )
            _host_move(host, HostStatus.PREPARING_FOR_MAINTENANCE, what)
            Host.objects.filter(pk=host.pk).update(
                maintenance_reason="", maintenance_since=timezone.now()
            )
            host.status = HostStatus.PREPARING_FOR_MAINTENANCE
            message = (
                f"{actor(user)} moved host {host.name} to Maintenance: it is Preparing For "
                f"Maintenance, migrating {count} VM{'s' if count != 1 else ''} away."
            )
        else:
            _host_move(host, HostStatus.MAINTENANCE, what)
            host.status = HostStatus.MAINTENANCE
            message = f"{actor(user)} moved host {host.name} to Maintenance (was {was})."
        event_record(
            action="host_maintenance",
            phase=Phase.SUCCEEDED,
            user=user,
            host=host,
            cluster=host.cluster,
            object_type="host",
            object_name=host.name,
            message=message,
        )
        broadcast("hosts", f"host.{host.pk}")
    return host


def host_activate(*, host_id: int, user) -> Host:
    """Activate a host in Maintenance: it is Connecting until the monitor reaches it and
    marks it Up (or Non Responsive). From Preparing For Maintenance it cancels the evacuation
    (migrations already under way finish)."""
    entry = HOST_ACTIONS["activate"]
    with transaction.atomic():
        host = _host_locked(host_id)
        if not entry.allows(host.status):
            raise ActionRefused(
                f"Cannot {entry.verb} host {host.name}: it is {host.get_status_display()}, "
                "not in Maintenance."
            )
        was = host.status
        _host_move(host, HostStatus.CONNECTING, f"{entry.verb} host {host.name}")
        Host.objects.filter(pk=host.pk).update(maintenance_reason="")
        host.status = HostStatus.CONNECTING
        cancelled = was == HostStatus.PREPARING_FOR_MAINTENANCE
        event_record(
            action="host_activate",
            phase=Phase.REQUESTED,
            user=user,
            host=host,
            cluster=host.cluster,
            object_type="host",
            object_name=host.name,
            message=f"{actor(user)} asked to activate host {host.name}"
            + (" (its move to Maintenance is cancelled)." if cancelled else "."),
        )
        broadcast("hosts", f"host.{host.pk}")
    return host
