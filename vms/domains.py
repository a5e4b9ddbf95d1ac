"""Services for storage domains: New Domain, Edit, Maintenance, Activate, Detach, Attach and
Remove (the Storage tab), and setting a data center's domains up on a host that joins it.

storage/ holds the rows (StorageDomain, StorageDomainHost) and imports nothing of vms; what
is done to a domain is done on the hosts of its data center, so its services and jobs live
here beside the disks' (vms/disks.py, vms/disk_jobs.py). Each service checks the domain's
status against its catalogue entry (`vms.actions.DOMAIN_ACTIONS`), moves the status with a
conditional update (of two admins racing only one wins), records the Event and creates the
Job; a refusal changes nothing.
"""

import uuid

from django.db import IntegrityError, transaction

from accounts.permissions import can
from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind, Phase
from portal.kernel.tasks import job_create, queue_ensure_available
from portal.kernel.validators import text_check
from storage.choices import (
    DOMAIN_IN_USE_STATUSES,
    DiskStatus,
    DomainFunction,
    PoolStatus,
    StorageDomainStatus,
    StorageType,
)
from storage.models import Disk, StorageDomain, StorageDomainHost
from storage.space import domain_space_refresh
from storage.validators import export_path_check, local_path_check, nfs_server_check

from .actions import DOMAIN_ACTIONS, Action
from .choices import HostStatus, VMStatus
from .models import DataCenter, Host, VirtualMachine
from .services import NAME_MAX, NAME_RE

SD = StorageDomainStatus
OBJECT_TYPE = "storage domain"


def pool_name_new() -> str:
    """The libvirt pool name of a new domain: Vireo's own, never text a user typed."""
    return f"vireo-{uuid.uuid4()}"


def domain_name_check(name) -> str:
    """A storage domain name: 1-255 letters, digits, '-', '_' or '.', not only dots and dashes."""
    name = str(name or "").strip()
    if not name:
        raise ActionRefused("Name is required.")
    if len(name) > NAME_MAX:
        raise ActionRefused(f"Name is too long: {len(name)} characters, at most {NAME_MAX}.")
    if not NAME_RE.match(name) or not name.strip(".-"):
        raise ActionRefused(
            "Name may contain only letters, digits, '-', '_' and '.' (not only dots and dashes)."
        )
    return name


def _name_free(name: str, data_center: DataCenter, *, other_than: int | None = None) -> None:
    """Refuse a name another domain of the data center has (the caller holds the data
    center's row lock, so two requests cannot both take it)."""
    clash = StorageDomain.objects.filter(data_center=data_center, name=name)
    if other_than is not None:
        clash = clash.exclude(pk=other_than)
    if clash.exists():
        raise ActionRefused(
            f"Name '{name}' is already used by another storage domain in data center "
            f"{data_center.name}."
        )


def _data_center_locked(data_center_id) -> DataCenter:
    try:
        return DataCenter.objects.select_for_update().get(pk=data_center_id)
    except (DataCenter.DoesNotExist, ValueError, TypeError):
        raise ActionRefused("That data center does not exist.") from None


def _up_hosts_required(data_center: DataCenter, verb: str) -> None:
    up = Host.objects.filter(cluster__data_center=data_center, status=HostStatus.UP)
    if not up.exists():
        raise ActionRefused(
            f"Cannot {verb} the storage domain: no host of data center {data_center.name} is "
            "Up to set its pool up. Nothing was changed."
        )


def _domain(domain_id) -> StorageDomain:
    try:
        return (
            StorageDomain.objects.select_for_update(of=("self",))
            .select_related("data_center")
            .get(pk=domain_id)
        )
    except (StorageDomain.DoesNotExist, ValueError, TypeError):
        raise ActionRefused("That storage domain does not exist any more.") from None


def doing(action: Action, domain: StorageDomain) -> str:
    """The action's verb with the domain: "detach storage domain data1", "move storage
    domain data1 to maintenance"."""
    words = f"storage domain {domain.name}"
    return action.verb.format(words) if "{}" in action.verb else f"{action.verb} {words}"


def domain_refusal(domain: StorageDomain, key: str) -> str:
    """Why the status table does not let the action start now, or ""."""
    action = DOMAIN_ACTIONS[key]
    if action.allows(domain.status):
        return ""
    return f"Cannot {doing(action, domain)}: it is {domain.get_status_display()}."


def _guard(domain: StorageDomain, key: str) -> Action:
    refusal = domain_refusal(domain, key)
    if refusal:
        raise ActionRefused(refusal)
    return DOMAIN_ACTIONS[key]


def _move(domain: StorageDomain, action: Action) -> str:
    """Move the domain to the action's busy status from the status read; returns that status."""
    previous = domain.status
    if not StorageDomain.objects.filter(pk=domain.pk, status=previous).update(status=action.busy):
        raise ActionRefused(
            f"Storage domain {domain.name} was changed by another request. Nothing was done."
        )
    broadcast("storage")
    return previous


def domain_status_restore(domain_id: int, busy: str, previous: str):
    """The undo of a busy status (for a failed enqueue and a job's on_fail): back to the
    status the domain had, unless something moved it since; then its figures again."""

    def undo(job: Job, message: str = "") -> None:
        StorageDomain.objects.filter(pk=domain_id, status=busy).update(status=previous)
        domain_space_refresh(domain_id)
        broadcast("storage")

    return undo


def _disks_in_the_way(domain: StorageDomain, verb: str) -> None:
    count = Disk.objects.filter(storage_domain=domain).count()
    if count:
        raise ActionRefused(
            f"Cannot {verb} storage domain {domain.name}: {count} disk(s) are stored on it. "
            "Remove them (or their VMs) first."
        )


def _job(
    domain: StorageDomain, action: Action, user, description: str, previous: str, **params
) -> Job:
    job = job_create(
        kind=action.job,
        description=description,
        user=user,
        params={"domain_id": domain.pk, "from_status": previous, **params},
        on_enqueue_failure=domain_status_restore(domain.pk, action.busy, previous),
    )
    event_record(
        action=f"{action.key}_storage_domain",
        phase=Phase.REQUESTED,
        user=user,
        job=job,
        object_type=OBJECT_TYPE,
        object_name=domain.name,
        message=f"{actor(user)} asked to {doing(action, domain)}.",
    )
    return job


def storage_domain_create(
    *,
    user,
    name: str,
    data_center_id: int,
    domain_function: str,
    storage_type: str,
    path: str = "",
    nfs_server: str = "",
    description: str = "",
) -> StorageDomain:
    """New Domain: a Local on Host domain (a directory on each host) or an NFS domain (an
    export every host mounts) in a data center. It is Locked while a job defines, builds,
    starts and autostarts its pool on every Up host; hosts that come Up later get it from
    the monitor."""
    queue_ensure_available()
    name = domain_name_check(name)
    description = text_check(description, "Description", max_length=1000)
    if domain_function not in DomainFunction.values:
        raise ActionRefused("Choose the domain function: Data, ISO or Export.")
    if storage_type == StorageType.LOCAL:
        path, nfs_server = local_path_check(path), ""
    elif storage_type == StorageType.NFS:
        nfs_server, path = nfs_server_check(nfs_server), export_path_check(path)
    else:
        raise ActionRefused("Choose the storage type: Local on Host or NFS.")
    with transaction.atomic():
        data_center = _data_center_locked(data_center_id)
        if not can(user, "create_storage_domain", data_center):
            raise ActionRefused(
                f"You may not create storage domains in data center {data_center.name}."
            )
        _name_free(name, data_center)
        same = StorageDomain.objects.filter(
            data_center=data_center, storage_type=storage_type, path=path, nfs_server=nfs_server
        ).first()
        if same is not None:
            raise ActionRefused(
                f"Storage domain {same.name} already uses {same.location} in data center "
                f"{data_center.name}."
            )
        _up_hosts_required(data_center, "add")
        action = DOMAIN_ACTIONS["create"]
        try:
            with transaction.atomic():
                domain = StorageDomain.objects.create(
                    name=name,
                    description=description,
                    data_center=data_center,
                    domain_function=domain_function,
                    storage_type=storage_type,
                    path=path,
                    nfs_server=nfs_server,
                    pool_name=pool_name_new(),
                    status=action.busy,
                )
        except IntegrityError:
            raise ActionRefused(
                f"Name '{name}' was just taken by another storage domain in data center "
                f"{data_center.name}."
            ) from None

        def take_back(job: Job) -> None:
            StorageDomain.objects.filter(pk=domain.pk, status=action.busy).delete()
            broadcast("storage")

        job = job_create(
            kind=JobKind.STORAGE_DOMAIN_CREATE,
            description=f"Add storage domain {name}",
            user=user,
            params={"domain_id": domain.pk},
            on_enqueue_failure=take_back,
        )
        event_record(
            action="add_storage_domain",
            phase=Phase.REQUESTED,
            user=user,
            job=job,
            object_type=OBJECT_TYPE,
            object_name=name,
            message=(
                f"{actor(user)} asked to add storage domain {name} "
                f"({domain.get_storage_type_display()} {domain.location}) to data center "
                f"{data_center.name}."
            ),
        )
        broadcast("storage")
        return domain


def storage_domain_edit(*, domain_id: int, user, name: str, description: str = "") -> StorageDomain:
    """Edit a domain's name and description (not while a job works on it)."""
    name = domain_name_check(name)
    description = text_check(description, "Description", max_length=1000)
    with transaction.atomic():
        domain = _domain(domain_id)
        data_center = _data_center_locked(domain.data_center_id)
        _guard(domain, "edit")
        _name_free(name, data_center, other_than=domain.pk)
        if not StorageDomain.objects.filter(pk=domain.pk, status=domain.status).update(
            name=name, description=description
        ):
            raise ActionRefused(
                f"Storage domain {domain.name} was changed by another request. Nothing was done."
            )
        event_record(
            action="edit_storage_domain",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type=OBJECT_TYPE,
            object_name=name,
            message=f"{actor(user)} edited storage domain {name}"
            + (f" (was {domain.name})." if name != domain.name else "."),
        )
        broadcast("storage")
        domain.name, domain.description = name, description
        return domain


def storage_domain_maintenance(*, domain_id: int, user) -> Job:
    """Maintenance: stop the domain's pool on every host of its data center (refused while a
    VM that is not Down, or a disk job, uses it)."""
    queue_ensure_available()
    with transaction.atomic():
        domain = _domain(domain_id)
        action = _guard(domain, "maintenance")
        running = (
            VirtualMachine.objects.filter(disks__storage_domain=domain)
            .exclude(status=VMStatus.DOWN)
            .distinct()
            .order_by("name")
        )
        names = list(running.values_list("name", flat=True)[:5])
        if names:
            raise ActionRefused(
                f"Cannot move storage domain {domain.name} to maintenance: VM(s) "
                f"{', '.join(names)} use its disks and are not Down. Shut them down first."
            )
        if Disk.objects.filter(storage_domain=domain, status=DiskStatus.LOCKED).exists():
            raise ActionRefused(
                f"Cannot move storage domain {domain.name} to maintenance: some of its disks "
                "are Locked by a running task."
            )
        previous = _move(domain, action)
        return _job(domain, action, user, f"Maintenance of storage domain {domain.name}", previous)


def storage_domain_activate(*, domain_id: int, user) -> Job:
    """Activate: set the domain's pool up again on every Up host of its data center (and so
    try again where it failed)."""
    queue_ensure_available()
    with transaction.atomic():
        domain = _domain(domain_id)
        action = _guard(domain, "activate")
        _up_hosts_required(domain.data_center, "activate")
        previous = _move(domain, action)
        return _job(domain, action, user, f"Activate storage domain {domain.name}", previous)


def storage_domain_detach(*, domain_id: int, user) -> Job:
    """Detach a domain in Maintenance from its data center: its pool is taken off the hosts
    (its data stays) and it is Unattached, usable nowhere. Refused while disks are on it."""
    queue_ensure_available()
    with transaction.atomic():
        domain = _domain(domain_id)
        action = _guard(domain, "detach")
        _disks_in_the_way(domain, "detach")
        previous = _move(domain, action)
        return _job(domain, action, user, f"Detach storage domain {domain.name}", previous)


def storage_domain_attach(*, domain_id: int, user, data_center_id: int) -> Job:
    """Attach an Unattached domain to a data center (create_storage_domain there): its pool is
    set up on that data center's Up hosts and it becomes usable there."""
    queue_ensure_available()
    with transaction.atomic():
        domain = _domain(domain_id)
        action = _guard(domain, "attach")
        data_center = _data_center_locked(data_center_id)
        if not can(user, "create_storage_domain", data_center):
            raise ActionRefused(
                f"You may not attach storage domains to data center {data_center.name}."
            )
        _name_free(domain.name, data_center, other_than=domain.pk)
        _up_hosts_required(data_center, "attach")
        previous = _move(domain, action)
        return _job(
            domain,
            action,
            user,
            f"Attach storage domain {domain.name} to data center {data_center.name}",
            previous,
            data_center_id=data_center.pk,
        )


def storage_domain_remove(*, domain_id: int, user, format_domain: bool = False) -> Job:
    """Remove a domain in Maintenance or Unattached: its pool is undefined on the hosts; with
    Format Domain its volumes are deleted first, else its data stays where it is. Refused
    while disks are on it."""
    queue_ensure_available()
    with transaction.atomic():
        domain = _domain(domain_id)
        action = _guard(domain, "remove")
        _disks_in_the_way(domain, "remove")
        if format_domain and domain.status == SD.UNATTACHED:
            raise ActionRefused(
                f"Storage domain {domain.name} is Unattached: no host holds its pool to format "
                "it. Attach it to a data center first, or remove it keeping its data."
            )
        if format_domain and not domain.managed:
            raise ActionRefused(
                f"Storage domain {domain.name} names a pool made outside Vireo; Vireo does not "
                "format it. Remove it keeping its data."
            )
        previous = _move(domain, action)
        return _job(
            domain,
            action,
            user,
            f"Remove storage domain {domain.name}" + (" and format it" if format_domain else ""),
            previous,
            format_domain=bool(format_domain),
        )


def storage_domain_host_setup(*, domain_id: int, host_id: int) -> Job | None:
    """Set a data center's domain up on one of its hosts that has not got it (a host added
    later, or Up again after it was down when the domain was made): called by the monitor.
    The host's row claims the work, so one job is made however often the host is polled;
    None when there is nothing to do or the task queue is down (the next poll tries again)."""
    with transaction.atomic():
        domain = StorageDomain.objects.filter(
            pk=domain_id, status__in=DOMAIN_IN_USE_STATUSES
        ).first()
        if domain is None or not domain.managed:
            return None
        row, made = StorageDomainHost.objects.get_or_create(
            domain=domain,
            host_id=host_id,
            defaults={"status": PoolStatus.INACTIVE, "error": "Setting the pool up on this host."},
        )
        if not made:
            return None
        host = Host.objects.get(pk=host_id)
        try:
            queue_ensure_available()
        except ActionRefused:
            transaction.set_rollback(True)
            return None
        job = job_create(
            kind=JobKind.STORAGE_DOMAIN_ACTIVATE,
            description=f"Set storage domain {domain.name} up on host {host.name}",
            params={"domain_id": domain.pk, "host_ids": [host.pk]},
            on_enqueue_failure=lambda job: StorageDomainHost.objects.filter(pk=row.pk).delete(),
        )
        event_record(
            action="activate_storage_domain",
            phase=Phase.REQUESTED,
            job=job,
            host=host,
            object_type=OBJECT_TYPE,
            object_name=domain.name,
            message=f"Host {host.name} has no pool of storage domain {domain.name} yet: "
            "setting it up.",
        )
        broadcast("storage")
        return job
