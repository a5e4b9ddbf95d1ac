"""Services: every change to VMs, clusters and hosts goes through these functions.

Each one checks the request against its action's catalogue entry (`vms.actions`), moves the status with a
conditional update so that of two admins racing only one wins, records the Event, and creates
the Job that a worker carries out after commit. They raise ActionRefused with a message for
the user and change nothing when they refuse.
"""

import re

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from guardian.models import GroupObjectPermission, UserObjectPermission

from accounts.permissions import can
from accounts.services import permission_grant_creator
from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast, broadcast_gone
from portal.kernel.models import Job, JobKind, Phase, Severity
from portal.kernel.tasks import job_create, queue_ensure_available
from portal.kernel.validators import text_check
from storage.choices import (
    DOMAIN_IN_USE_STATUSES,
    DiskStatus,
    DomainFunction,
    StorageDomainStatus,
    StorageType,
)
from storage.images import image_choose, image_unusable_on
from storage.models import Disk, StorageDomain
from storage.space import free_bytes_on, unusable_on

from .actions import VM_ACTIONS, VMAction
from .affinity import has_soft_rules
from .choices import (
    BootSequence,
    ConsoleDisconnectAction,
    HostStatus,
    SnapshotStatus,
    VMPriority,
    VMStatus,
)
from .host_address import host_address_check
from .host_devices import attached_host, host_devices_edit_check, host_devices_run_check
from .migration_policy import policy_fields_check, vm_migration_copy, vm_migration_fields_check
from .models import (
    Cluster,
    DataCenter,
    Host,
    NetworkInterface,
    SnapshotPreview,
    Template,
    VirtualMachine,
)
from .quotas import quota_check
from .scheduling import NoHostAvailable, Purpose, host_status_locked, refusal_text, schedule
from .scheduling_policy import scheduling_policy_check
from .vnics import mac_allocate, profile_usable

NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
NAME_MAX = 255
MEMORY_MB_RANGE = (64, 4 * 1024 * 1024)
VCPUS_RANGE = (1, 256)
DISK_BYTES_RANGE = (1024 * 1024, 64 * 1024**4)


def vm_topics(vm) -> tuple[str, ...]:
    """Topics for a VM that appears in or leaves the list (its own and the list's)."""
    return (f"vm.{vm.pk}", "vms")


def name_validate(name: str, *, data_center_id: int, what: str = "Name") -> str:
    """A VM name is 1-255 letters, digits, '-', '_' or '.', not only dots and dashes (".",
    "..", "-"), unique in its data center."""
    name = (name or "").strip()
    if not name:
        raise ActionRefused(f"{what} is required.")
    if len(name) > NAME_MAX:
        raise ActionRefused(f"{what} is too long: {len(name)} characters, at most {NAME_MAX}.")
    if not NAME_RE.match(name):
        raise ActionRefused(f"{what} may contain only letters, digits, '-', '_' and '.'.")
    if not name.strip(".-"):
        raise ActionRefused(f"{what} needs a letter, a digit or '_': not only dots and dashes.")
    if VirtualMachine.objects.filter(name=name, cluster__data_center_id=data_center_id).exists():
        raise ActionRefused(
            f"{what} '{name}' is already used by another virtual machine in this data center."
        )
    return name


def vm_names_lock(data_center_id: int) -> None:
    """Serialise name checks in one data center (row lock on it) so two requests cannot both
    take the same name."""
    DataCenter.objects.select_for_update().filter(pk=data_center_id).first()


def _in_range(value, bounds, label: str, unit: str = "") -> int:
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ActionRefused(f"{label} must be a whole number.") from None
    low, high = bounds
    if not low <= value <= high:
        raise ActionRefused(f"{label} must be between {low:,} and {high:,}{unit}.")
    return value


def _lost_race(vm_id: int, name: str, verb: str) -> ActionRefused:
    current = VirtualMachine.objects.filter(pk=vm_id).values_list("status", flat=True).first()
    now = VMStatus(current).label if current else "removed"
    return ActionRefused(
        f"Cannot {verb} {name}: it was changed by another request and is now {now}. Nothing was done."
    )


def vm_status_move(*, vm_id: int, from_status: str, to_status: str, **fields) -> bool:
    """Conditionally move a VM from one status to another; False if it was not in from_status."""
    moved = VirtualMachine.objects.filter(pk=vm_id, status=from_status).update(
        status=to_status, status_changed_at=timezone.now(), **fields
    )
    if moved:
        broadcast(f"vm.{vm_id}")
    return bool(moved)


def _restore_status(vm_id: int, busy: str, previous: str):
    def undo(job: Job) -> None:
        vm_status_move(vm_id=vm_id, from_status=busy, to_status=previous)

    return undo


LEAVING_ACTIONS = frozenset(
    {VMAction.MIGRATE, VMAction.SHUTDOWN, VMAction.POWER_OFF, VMAction.SUSPEND}
)


def vm_begin(
    *,
    vm: VirtualMachine,
    action: str,
    user,
    kind: str | None = None,
    reason: str = "",
    params: dict | None = None,
    result_vm=None,
    message: str = "",
    on_enqueue_failure=None,
) -> Job:
    """Common start of a VM action, as its catalogue entry says: check, move to the busy
    status, record, create the job. If the queue then refuses the job, the VM goes back and
    `on_enqueue_failure` runs too."""
    entry = VM_ACTIONS[action]
    verb = entry.verb
    if not entry.allows(vm.status):
        raise ActionRefused(f"Cannot {verb} {vm.name}: the VM is {vm.get_status_display()}.")
    if entry.external is False and vm.is_external:
        raise ActionRefused(
            f"Cannot {verb} {vm.name}: it was defined on its host outside Vireo; Import it first."
        )
    if entry.external is True and not vm.is_external:
        raise ActionRefused(f"Cannot {verb} {vm.name}: Vireo already manages it.")
    if vm.snapshots.filter(status=SnapshotStatus.LOCKED).exists():
        raise ActionRefused(f"Cannot {verb} {vm.name}: a snapshot operation on it is in progress.")
    if entry.needs_host and vm.host_id is None:
        raise ActionRefused(f"Cannot {verb} {vm.name}: it is not placed on any host.")
    if vm.host_id:
        # Read under a lock on the host's row: Maintenance (`vms.inventory.host_maintenance`)
        # takes the same lock, so a VM cannot start on a host going into Maintenance.
        host_status = host_status_locked(vm.host_id)
        # A host Preparing For Maintenance lets its VMs leave (migrated, stopped, suspended).
        leaving = action in LEAVING_ACTIONS and host_status == HostStatus.PREPARING_FOR_MAINTENANCE
        if host_status != HostStatus.UP and not leaving:
            now = HostStatus(host_status).label if host_status else "removed"
            raise ActionRefused(f"Cannot {verb} {vm.name}: its host {vm.host.name} is {now}.")
    busy = entry.busy_for(vm.status)
    previous = vm.status
    if not vm_status_move(vm_id=vm.pk, from_status=previous, to_status=busy):
        raise _lost_race(vm.pk, vm.name, verb)
    vm.status = busy
    restore = _restore_status(vm.pk, busy, previous)

    def undo(job: Job) -> None:
        restore(job)
        if on_enqueue_failure is not None:
            on_enqueue_failure(job)

    job = job_create(
        kind=kind or JobKind(entry.job),
        description=f"{entry.label} {vm.name}",
        vm=vm,
        result_vm=result_vm,
        user=user,
        params={"from_status": previous, "reason": reason, **(params or {})},
        on_enqueue_failure=undo,
    )
    message = message or f"{actor(user)} asked to {verb} VM {vm.name}."
    event_record(
        action=action,
        phase=Phase.REQUESTED,
        message=message,
        user=user,
        vm=vm,
        job=job,
        reason=reason,
    )
    return job


def _preview_check(vm: VirtualMachine, action: str) -> None:
    """Refuse an action that its catalogue entry rules out while a snapshot preview is active."""
    if VM_ACTIONS[action].preview is False and SnapshotPreview.objects.filter(vm=vm).exists():
        raise ActionRefused(
            f"Cannot {VM_ACTIONS[action].verb} {vm.name}: a snapshot preview is active; "
            "Commit or Undo it first."
        )


def vm_load(vm_id: int) -> VirtualMachine:
    try:
        return VirtualMachine.objects.select_related("cluster", "host").get(pk=vm_id)
    except VirtualMachine.DoesNotExist:
        raise ActionRefused("That virtual machine does not exist any more.") from None


def vm_action(*, vm_id: int, action: str, user, reason: str = "") -> Job:
    """Run, Shutdown, Power Off, Suspend or Reboot one VM: the catalogue's actions on a guest
    on its host (Remove and Clone VM have services of their own)."""
    entry = VM_ACTIONS.get(action)
    if entry is None or not entry.needs_host:
        raise ActionRefused(f"Unknown action {str(action)!r}.")
    queue_ensure_available()
    with transaction.atomic():
        vm = vm_load(vm_id)
        if action == VMAction.SHUTDOWN:
            reason = (
                text_check(reason, "Reason")[:1000] if vm.cluster.shutdown_reason_enabled else ""
            )
        else:
            reason = ""
        if action == VMAction.RUN:
            disks_storage_check(vm, "run")
        params = vm_run_placement(vm) if action == VMAction.RUN else None
        if action == VMAction.RUN and vm.status == VMStatus.DOWN and vm.cd_image_id:
            # It starts from the inventory's definition, its CD included.
            why = image_unusable_on(vm.cd_image, vm.host) if vm.host else ""
            if why:
                raise ActionRefused(f"Cannot run {vm.name}: {why}")
        return vm_begin(vm=vm, action=action, user=user, reason=reason, params=params)


def disks_storage_check(vm: VirtualMachine, verb: str) -> None:
    """Refuse to start or copy a VM whose disks are on a storage domain that is not in use
    (Maintenance, Unattached, or a job holding it), with the domain's name and status."""
    blocked = (
        vm.disks.exclude(storage_domain__status__in=DOMAIN_IN_USE_STATUSES)
        .select_related("storage_domain")
        .first()
    )
    if blocked is not None:
        domain = blocked.storage_domain
        raise ActionRefused(
            f"Cannot {verb} {vm.name}: its disk {blocked.alias} is on storage domain "
            f"{domain.name}, which is {domain.get_status_display()}. Activate the domain first."
        )


def vm_run_placement(vm: VirtualMachine) -> dict | None:
    """Where a Down VM starts, chosen by the scheduler (`vms.scheduling`): its Start Running On
    host if it names one; else the host it is defined on if that host can run it; else the
    best host of its cluster (its host is down or missing, or lacks room, or a soft affinity
    rule of the VM's groups may prefer another). A Suspended or
    Paused VM resumes where it is. Moving the VM here makes the run job move its definition;
    returns the job's params."""
    host_devices_run_check(vm)
    if vm.status != VMStatus.DOWN:
        return None
    target = vm.start_host
    if target is not None:
        _start_host_check(vm, target)
        try:
            host = schedule(vm, purpose=Purpose.RUN, candidates=[target])
        except NoHostAvailable as exc:
            raise ActionRefused(
                f"Cannot run {vm.name} on {target.name}: {exc.reasons[target.name]}."
            ) from None
    else:
        # A soft affinity rule weighs every host of the cluster, the VM's own included.
        stay = vm.host_id and not has_soft_rules(vm)
        try:
            host = schedule(vm, purpose=Purpose.RUN, candidates=[vm.host]) if stay else None
        except NoHostAvailable:
            host = None
        if host is None:
            host = _run_elsewhere(vm)
    return vm_place_on(vm, host)


def vm_place_on(vm: VirtualMachine, host: Host) -> dict | None:
    """Place a Down VM on the host the scheduler chose for its start (its disks on shared
    storage go with it: the new host reaches them as well); returns the run job's params
    that make it move its definition, or None when it stays where it is."""
    if host.pk == vm.host_id:
        return None
    moved_from = vm.host_id
    # shared storage: the new host reaches them as well (the storage filter kept local ones)
    vm.disks.exclude(host__isnull=True).exclude(host=host).update(host=host)
    VirtualMachine.objects.filter(pk=vm.pk).update(host=host)
    vm.host = host
    return {"moved_from": moved_from}


def _run_elsewhere(vm: VirtualMachine) -> Host:
    """The scheduler's host for a Down VM its own host cannot run, or a refusal that says
    first what is wrong with its own host."""
    try:
        return schedule(vm, purpose=Purpose.RUN)
    except NoHostAvailable as exc:
        own = exc.reasons.pop(vm.host.name, None) if vm.host_id else None
        if own is None:
            raise ActionRefused(f"Cannot run {vm.name}: {exc}") from None
        others = (
            f" No other host of cluster {vm.cluster.name} can run it: {refusal_text(exc.reasons)}."
            if exc.reasons
            else ""
        )
        where = (
            f"its host {vm.host.name} is {own.removeprefix('the host is ')}"
            if own.startswith("the host is ")
            else f"on its host {vm.host.name}, {own}"
        )
        raise ActionRefused(f"Cannot run {vm.name}: {where}.{others}") from None


def _start_host_check(vm: VirtualMachine, target: Host) -> None:
    """Start Running On names a host of the VM's cluster that reaches all its disks (a disk
    on one host's local storage keeps the VM there)."""
    if target.cluster_id != vm.cluster_id:
        raise ActionRefused(
            f"Cannot run {vm.name} on {target.name}: the host is not in cluster {vm.cluster.name}."
        )
    elsewhere = vm.disks.exclude(host__isnull=True).exclude(host=target)
    local = elsewhere.exclude(storage_domain__storage_type=StorageType.NFS)
    if disk := local.select_related("host").first():
        raise ActionRefused(
            f"Cannot run {vm.name} on {target.name}: its disk {disk.alias} is on the local "
            f"storage of host {disk.host.name}. Set Start Running On to that host or to any host."
        )


def _place_new_vm(cluster: Cluster, *, memory_mb: int, vcpus: int) -> Host:
    """The scheduler's host for a New VM of that size in the cluster (locked against
    Maintenance until commit)."""
    sizing = VirtualMachine(cluster=cluster, memory_mb=memory_mb, vcpus=vcpus, name="the VM")
    try:
        return schedule(sizing, purpose=Purpose.CREATE)
    except NoHostAvailable as exc:
        raise ActionRefused(f"{exc} A VM cannot be created there now.") from None


def vm_run(*, vm_id: int, user) -> Job:
    """Run a Down, Suspended or Paused VM."""
    return vm_action(vm_id=vm_id, action=VMAction.RUN, user=user)


def vm_shutdown(*, vm_id: int, user, reason: str = "") -> Job:
    """Gracefully shut a VM down (ACPI); the reason is kept when the cluster asks for one."""
    return vm_action(vm_id=vm_id, action=VMAction.SHUTDOWN, user=user, reason=reason)


def vm_poweroff(*, vm_id: int, user) -> Job:
    """Force a VM off."""
    return vm_action(vm_id=vm_id, action=VMAction.POWER_OFF, user=user)


def vm_suspend(*, vm_id: int, user) -> Job:
    """Hibernate a running VM (its memory is saved to disk on the host)."""
    return vm_action(vm_id=vm_id, action=VMAction.SUSPEND, user=user)


def vm_reboot(*, vm_id: int, user) -> Job:
    """Reboot a running VM."""
    return vm_action(vm_id=vm_id, action=VMAction.REBOOT, user=user)


def vm_remove(*, vm_id: int, user, remove_disks: bool = True) -> Job:
    """Remove a Down VM; its disks are removed too, or left as floating disks."""
    queue_ensure_available()
    with transaction.atomic():
        vm = vm_load(vm_id)
        _preview_check(vm, VMAction.REMOVE)
        job = vm_begin(
            vm=vm, action=VMAction.REMOVE, user=user, params={"remove_disks": bool(remove_disks)}
        )
        Disk.objects.filter(vm=vm).update(status=DiskStatus.LOCKED)
        broadcast("disks")
        return job


def vm_import(*, vm_id: int, user, name: str) -> Job:
    """Import an external VM (a domain defined on its host outside Vireo) into full management
    under `name`: from then on Vireo defines it from its inventory. Its disks must all be in
    storage domains; a new name renames the domain, which libvirt does only while it is Down."""
    queue_ensure_available()
    with transaction.atomic():
        vm = vm_load(vm_id)
        if vm.is_external and vm.unmanaged_disks:
            paths = ", ".join(
                f"{target} ({source or device})" for target, device, source in vm.unmanaged_disks
            )
            raise ActionRefused(
                f"Cannot import {vm.name}: no storage domain holds its disk(s) {paths}. "
                "Move them into a storage domain's pool first."
            )
        vm_names_lock(vm.cluster.data_center_id)
        old_name = vm.name
        name = (name or "").strip()
        if name.lower() != old_name.lower():
            name = name_validate(name, data_center_id=vm.cluster.data_center_id)
        renames = bool(vm.domain_name) and name != vm.domain_name
        if vm.is_external and renames and vm.status != VMStatus.DOWN:
            raise ActionRefused(
                f"Cannot import {vm.name} as {name}: its domain is {vm.domain_name} and libvirt "
                f"renames only a VM that is Down. Shut it down, or import it as {vm.domain_name}."
            )
        job = vm_begin(
            vm=vm,
            action=VMAction.IMPORT,
            user=user,
            params={"name": name, "old_name": old_name, "rename": renames},
            message=f"{actor(user)} asked to import VM {old_name} as {name}.",
            # the queue refused the job: the VM keeps the name it had
            on_enqueue_failure=lambda _job: VirtualMachine.objects.filter(pk=vm.pk).update(
                name=old_name
            ),
        )
        VirtualMachine.objects.filter(pk=vm.pk).update(name=name)
    return job


def creation_check(*, user, cluster: Cluster, verb: str = "create VMs") -> None:
    """Refuse making a VM in `cluster` without the right to create VMs there (New VM from a
    template also accepts the template right; a clone copies a VM, so it needs create_vm)."""
    if not can(user, "create_vm", cluster):
        raise ActionRefused(
            f"You may not {verb} in cluster {cluster.name}: that needs the right to create "
            "virtual machines there."
        )


def vm_clone(*, vm_id: int, user, clone_name: str) -> VirtualMachine:
    """Clone a Down VM: the clone appears at once as Image Locked while its disks are copied.
    It needs the right to create VMs in the VM's cluster and counts against the quota; it is
    refused while a snapshot preview is active (which disks would it copy?)."""
    queue_ensure_available()
    with transaction.atomic():
        vm = vm_load(vm_id)
        creation_check(user=user, cluster=vm.cluster, verb="clone VMs")
        _preview_check(vm, VMAction.CLONE)
        disks_storage_check(vm, "clone")
        data_center_id = vm.cluster.data_center_id
        vm_names_lock(data_center_id)
        clone_name = name_validate(clone_name, data_center_id=data_center_id, what="Clone Name")
        quota_check(user, disk_bytes=sum(d.size_bytes for d in vm.disks.all()))
        clone = VirtualMachine.objects.create(
            name=clone_name,
            description=vm.description,
            cluster=vm.cluster,
            host=vm.host,
            status=VMStatus.IMAGE_LOCKED,
            memory_mb=vm.memory_mb,
            vcpus=vm.vcpus,
            cores_per_socket=vm.cores_per_socket,
            boot_sequence=vm.boot_sequence,  # its Boot Options too
            cd_image_id=vm.cd_image_id,
            created_by=user if user.is_authenticated else None,
            **vm_migration_copy(vm),  # and its Host tab's migration settings
        )
        vm_nics_copy(vm, clone)
        permission_grant_creator(user=user, vm=clone)
        # The job acts on the source and makes the clone; both rows show its progress.
        vm_begin(
            vm=vm,
            action=VMAction.CLONE,
            user=user,
            result_vm=clone,
            message=f"{actor(user)} asked to clone VM {vm.name} to {clone.name}.",
            on_enqueue_failure=lambda job: vm_take_back(clone.pk),
        )
        broadcast(*vm_topics(clone))
        return clone


def vm_nics_copy(source: VirtualMachine, clone: VirtualMachine) -> None:
    """A clone's network interfaces: the source's, on the same profiles, each with a new MAC
    from the data center's pool (call under the data center's row lock, `vm_names_lock`)."""
    data_center_id = source.cluster.data_center_id
    for nic in source.nics.order_by("name"):
        NetworkInterface.objects.create(
            vm=clone,
            name=nic.name,
            profile_id=nic.profile_id,
            model=nic.model,
            mac=mac_allocate(data_center_id),
            linked=nic.linked,
            plugged=nic.plugged,
        )


def grants_drop(model, pk: int) -> None:
    """Forget the permissions given on an object that is taken away (guardian's rows are
    generic: nothing cascades when the object's row goes)."""
    content_type = ContentType.objects.get_for_model(model)
    for table in (UserObjectPermission, GroupObjectPermission):
        table.objects.filter(content_type=content_type, object_pk=str(pk)).delete()


def vm_grants_drop(vm_id: int) -> None:
    """Forget the permissions given on a VM that is taken away."""
    grants_drop(VirtualMachine, vm_id)


def vm_take_back(vm_id: int) -> None:
    """Undo a VM whose creation job never reached a worker (nothing exists on the host): its
    disks, its row and the permissions given on it to its creator."""
    with transaction.atomic():
        vm_grants_drop(vm_id)
        Disk.objects.filter(vm_id=vm_id).delete()
        VirtualMachine.objects.filter(pk=vm_id).delete()
        broadcast_gone(f"vm.{vm_id}")
        broadcast("vms", "disks", "perms")


def _creation_allowed(user, cluster: Cluster, template: Template | None) -> None:
    """Refuse a new VM in `cluster` without create_vm there, or, from a template, without
    create_vm_from_template either."""
    if can(user, "create_vm", cluster):
        return
    if template is not None and can(user, "create_vm_from_template", cluster):
        return
    if template is None and can(user, "create_vm_from_template", cluster):
        raise ActionRefused(f"In cluster {cluster.name} you may create VMs only from a template.")
    raise ActionRefused(
        f"You may not create VMs in cluster {cluster.name}"
        + (" from this template." if template is not None else "; choose a template.")
    )


def vm_create(
    *,
    user,
    name: str,
    cluster_id: int,
    memory_mb,
    vcpus,
    disk_bytes,
    storage_domain_id: int,
    sparse: bool = True,
    description: str = "",
    template_id: int | None = None,
    profile_id: int | None = None,
    boot_sequence: str = "hd",
    cd_image_id: int | None = None,
) -> VirtualMachine:
    """New VM with one disk, blank or from a template, and a network interface nic1 on the
    vNIC profile chosen (one the user may use, attach_vnic), if any: it is Image Locked while
    its disk is created, then Down. Its creator holds UserVmEngine on it. A VM from a template
    takes the template's memory, vCPUs and disk size; making one needs create_vm or
    create_vm_from_template on the cluster, a blank one create_vm and create_disk on the
    storage domain."""
    queue_ensure_available()
    description = text_check(description, "Description")[:1000]
    with transaction.atomic():
        try:
            cluster = Cluster.objects.select_for_update().get(pk=cluster_id)
        except Cluster.DoesNotExist:
            raise ActionRefused("That cluster does not exist.") from None
        template = None
        if template_id is not None:
            template = Template.objects.filter(pk=template_id).first()
            if template is None:
                raise ActionRefused("That template does not exist.")
            if template.data_center_id != cluster.data_center_id:
                raise ActionRefused("The template belongs to another data center than the cluster.")
            memory_mb, vcpus = template.memory_mb, template.vcpus
            disk_bytes = max(1, template.disk_bytes // 1024**3) * 1024**3
        _creation_allowed(user, cluster, template)
        if boot_sequence not in BootSequence.values:
            raise ActionRefused("Choose a boot sequence from the list.")
        cd_image = None
        if cd_image_id is not None:  # Boot Options: Attach CD
            cd_image = image_choose(user, cd_image_id, data_center_id=cluster.data_center_id)
        memory_mb = _in_range(memory_mb, MEMORY_MB_RANGE, "Memory", " MB")
        vcpus = _in_range(vcpus, VCPUS_RANGE, "vCPUs")
        disk_bytes = _in_range(disk_bytes, DISK_BYTES_RANGE, "Disk size", " bytes")
        vm_names_lock(cluster.data_center_id)
        name = name_validate(name, data_center_id=cluster.data_center_id)
        try:
            domain = StorageDomain.objects.get(
                pk=storage_domain_id,
                data_center_id=cluster.data_center_id,
                domain_function=DomainFunction.DATA,
            )
        except StorageDomain.DoesNotExist:
            raise ActionRefused(
                "Choose a data storage domain of the cluster's data center."
            ) from None
        # A VM from a template brings its disk; a blank VM's disk is the user's to create.
        if template is None and not can(user, "create_disk", domain):
            raise ActionRefused(f"You may not create disks on {domain.name}.")
        if domain.status != StorageDomainStatus.ACTIVE:
            raise ActionRefused(
                f"Storage domain {domain.name} is {domain.get_status_display()}; choose an Active one."
            )
        profile = None
        if profile_id is not None:  # after the data center's lock, as vms.networks locks
            profile = profile_usable(user, profile_id, data_center_id=cluster.data_center_id)
        host = _place_new_vm(cluster, memory_mb=memory_mb, vcpus=vcpus)
        unusable = unusable_on(domain, host.pk)
        if unusable:
            raise ActionRefused(unusable)
        if cd_image is not None and (why := image_unusable_on(cd_image, host)):
            raise ActionRefused(why)  # its definition on the host names the image
        # A local domain's room is the chosen host's own; another host's is of no use here.
        free = free_bytes_on(domain, host.pk)
        if free and not sparse and disk_bytes > free:
            raise ActionRefused(
                f"Not enough free space on {domain.name}: {disk_bytes:,} bytes needed, {free:,} free."
            )
        quota_check(user, disk_bytes=disk_bytes)
        vm = VirtualMachine.objects.create(
            name=name,
            description=description,
            cluster=cluster,
            host=host,
            status=VMStatus.IMAGE_LOCKED,
            memory_mb=memory_mb,
            vcpus=vcpus,
            template=template,
            created_by=user if user.is_authenticated else None,
            boot_sequence=boot_sequence,
            cd_image=cd_image,
        )
        permission_grant_creator(user=user, vm=vm)
        Disk.objects.create(
            alias=f"{name}_Disk1",
            vm=vm,
            storage_domain=domain,
            host=host,
            volume_name=f"{vm.uuid}-disk1.{'qcow2' if sparse else 'img'}",
            size_bytes=disk_bytes,
            sparse=sparse,
            status=DiskStatus.LOCKED,
        )
        if profile is not None:
            NetworkInterface.objects.create(
                vm=vm, name="nic1", profile=profile, mac=mac_allocate(cluster.data_center_id)
            )
        job = job_create(
            kind=JobKind.VM_CREATE,
            description=f"Create VM {name}",
            vm=vm,
            user=user,
            # Nothing exists on the host yet: a VM whose job never started is taken back.
            on_enqueue_failure=lambda job: vm_take_back(vm.pk),
        )
        event_record(
            action="create",
            phase=Phase.REQUESTED,
            user=user,
            vm=vm,
            job=job,
            message=f"{actor(user)} asked to create VM {name} on host {host.name}.",
        )
        broadcast(*vm_topics(vm), "disks")
        return vm


SHUTDOWN_TIMEOUT_RANGE = (5, 3600)


def shutdown_timeout_check(value) -> int:
    """A cluster's graceful shutdown timeout, in seconds."""
    return _in_range(value, SHUTDOWN_TIMEOUT_RANGE, "Graceful shutdown timeout", " seconds")


NO_CHANGE = object()  # vm_edit, cluster_update: a setting the window did not offer
MIGRATIONS_AT_ONCE_RANGE = (1, 32)  # engine-config's MaxNumberOfConcurrentMigrations' range


def migrations_at_once_check(value) -> int | None:
    """A cluster's maximum concurrent outgoing migrations; None: engine-config's."""
    if value is None or value == "":
        return None
    return _in_range(value, MIGRATIONS_AT_ONCE_RANGE, "Maximum concurrent outgoing migrations")


def inventory_name_check(name, what: str = "Name") -> str:
    """The name of a data center or cluster: required, at most 255 characters, no control
    characters (whether it is taken is the caller's to check, in its scope)."""
    name = text_check(name, what, max_length=NAME_MAX)
    if not name:
        raise ActionRefused(f"{what} is required.")
    return name


def cluster_name_taken(name: str, *, data_center_id: int, exclude_pk: int | None = None):
    """Refuse a cluster name already used in the data center (whatever its case)."""
    others = Cluster.objects.filter(data_center_id=data_center_id, name__iexact=name)
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    if others.exists():
        raise ActionRefused(
            f"Name '{name}' is already used by another cluster in this data center."
        )


def cluster_update(
    *,
    cluster_id: int,
    user,
    shutdown_reason_enabled: bool,
    shutdown_timeout: int,
    description: str | None = None,
    name: str | None = None,
    migration: dict | None = None,
    max_concurrent_migrations=NO_CHANGE,
    scheduling: dict | None = None,
) -> Cluster:
    """Edit a cluster: its name (unique in its data center), description and VM settings;
    `migration`: the Migration Policy tab's fields (vms.migration_policy; absent: unchanged);
    `scheduling`: the Scheduling Policy tab's (vms.scheduling_policy; absent: unchanged);
    the most outgoing migrations at once of a host moved to Maintenance (None for
    engine-config's)."""
    timeout = shutdown_timeout_check(shutdown_timeout)
    policy = policy_fields_check(migration or {}, level="cluster")
    if max_concurrent_migrations is not NO_CHANGE:
        max_concurrent_migrations = migrations_at_once_check(max_concurrent_migrations)
    if name is not None:
        name = inventory_name_check(name)
    if description is not None:
        description = text_check(description, "Description", max_length=1000)
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().filter(pk=cluster_id).first()
        if cluster is None:
            raise ActionRefused("That cluster does not exist any more.")
        if name is not None and name != cluster.name:
            vm_names_lock(cluster.data_center_id)  # cluster names are checked under it
            cluster_name_taken(name, data_center_id=cluster.data_center_id, exclude_pk=cluster.pk)
            cluster.name = name
        cluster.shutdown_reason_enabled = bool(shutdown_reason_enabled)
        cluster.shutdown_timeout = timeout
        for field, value in policy.items():
            setattr(cluster, field, value)
        for field, value in scheduling_policy_check(scheduling or {}, cluster).items():
            setattr(cluster, field, value)
        if max_concurrent_migrations is not NO_CHANGE:
            cluster.max_concurrent_migrations = max_concurrent_migrations
        if description is not None:
            cluster.description = description
        try:
            with transaction.atomic():
                cluster.save()
        except IntegrityError:
            raise ActionRefused(
                f"Name '{name}' is already used by another cluster in this data center."
            ) from None
        event_record(
            action="edit",
            phase=Phase.SUCCEEDED,
            user=user,
            cluster=cluster,
            object_type="cluster",
            object_name=cluster.name,
            message=f"{actor(user)} edited cluster {cluster.name}.",
        )
        broadcast("clusters", "datacenters")
    return cluster


def host_add(*, user, name: str, uri: str, cluster_id: int, trusted: bool = False) -> Host:
    """Add a host by its libvirt URI; the monitor connects to it within one poll. The URI
    must pass the host address policy (`vms.host_address`) unless `trusted` (the operator's
    `addhost` command)."""
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX or not NAME_RE.match(name):
        raise ActionRefused(
            "Host name is required: letters, digits, '-', '_' and '.', at most 255 characters."
        )
    uri = host_address_check(uri, user=user, trusted=trusted)
    with transaction.atomic():
        # Locked: Remove Cluster (`vms.inventory.cluster_remove`) takes the same lock.
        cluster = Cluster.objects.select_for_update().filter(pk=cluster_id).first()
        if cluster is None:
            raise ActionRefused("That cluster does not exist.")
        if Host.objects.filter(Q(name__iexact=name) | Q(uri=uri)).exists():
            raise ActionRefused("A host with that name or URI already exists.")
        try:
            with transaction.atomic():
                host = Host.objects.create(
                    name=name, uri=uri, cluster=cluster, status=HostStatus.CONNECTING
                )
        except IntegrityError:  # the same name or URI, added by a request racing this one
            raise ActionRefused("A host with that name or URI already exists.") from None
        event_record(
            action="add_host",
            phase=Phase.SUCCEEDED,
            user=user,
            host=host,
            cluster=cluster,
            object_type="host",
            object_name=name,
            message=f"{actor(user)} added host {name} ({uri}).",
        )
        broadcast("hosts")
    return host


def ha_pinned_warning(vm: VirtualMachine) -> str:
    """ " It is Highly Available with host devices of host X: ..." when the VM is, else ""."""
    host = attached_host(vm) if vm.highly_available else None
    if host is None:
        return ""
    return (
        f" It is Highly Available with host devices of host {host.name} attached: it can "
        f"restart only on {host.name}."
    )


def vm_edit(
    *,
    vm_id: int,
    user,
    description: str,
    sso_enabled: bool,
    memory_mb=None,
    vcpus=None,
    cores_per_socket=None,
    start_host_id=NO_CHANGE,
    boot_sequence=NO_CHANGE,
    cd_image_id=NO_CHANGE,
    console_disconnect_action=NO_CHANGE,
    migration=NO_CHANGE,
    priority=NO_CHANGE,
    highly_available=NO_CHANGE,
) -> VirtualMachine:
    """Edit a VM (the Edit Virtual Machine window's General, System and Host tabs): description
    and Single Sign-On; memory, vCPUs and cores per virtual socket only while Down (the host
    gets them when the VM next starts); Start Running On (a host of its cluster, or None for any
    host), which takes effect at its next start; Boot Options (the boot sequence and the CD
    attached: an image id, or None for an empty drive), which take effect at its next start;
    the Console Disconnect Action; the Priority for Run/Migration queue and Highly Available
    (High Availability tab)."""
    with transaction.atomic():
        vm = VirtualMachine.objects.select_for_update().filter(pk=vm_id).first()
        if vm is None:
            raise ActionRefused("That virtual machine does not exist any more.")
        if vm.is_external:
            raise ActionRefused(
                f"Cannot edit {vm.name}: it was defined on its host outside Vireo; Import it first."
            )
        fields = {
            "description": text_check(description, "Description")[:1000],
            "sso_enabled": bool(sso_enabled),
        }
        if start_host_id is not NO_CHANGE:
            if (
                start_host_id is not None
                and not Host.objects.filter(pk=start_host_id, cluster_id=vm.cluster_id).exists()
            ):
                raise ActionRefused(f"Choose a host of cluster {vm.cluster.name}, or any host.")
            fields["start_host_id"] = start_host_id
        if boot_sequence is not NO_CHANGE:
            if boot_sequence not in BootSequence.values:
                raise ActionRefused("Choose a boot sequence from the list.")
            fields["boot_sequence"] = boot_sequence
        if cd_image_id is not NO_CHANGE and cd_image_id != vm.cd_image_id:
            image = None
            if cd_image_id is not None:
                image = image_choose(user, cd_image_id, data_center_id=vm.cluster.data_center_id)
            fields["cd_image_id"] = image.pk if image else None
        if console_disconnect_action is not NO_CHANGE:
            if console_disconnect_action not in ConsoleDisconnectAction.values:
                raise ActionRefused("Choose a Console Disconnect Action from the list.")
            fields["console_disconnect_action"] = console_disconnect_action
        if migration is not NO_CHANGE:
            fields.update(vm_migration_fields_check(vm, migration))
        if priority is not NO_CHANGE:
            if priority not in VMPriority.values:
                raise ActionRefused("Choose a Priority for Run/Migration queue from the list.")
            fields["priority"] = priority
        if highly_available is not NO_CHANGE:
            fields["highly_available"] = bool(highly_available)
        host_devices_edit_check(vm, fields)
        sizing = {}
        if memory_mb is not None and int(memory_mb) != vm.memory_mb:
            sizing["memory_mb"] = _in_range(memory_mb, MEMORY_MB_RANGE, "Memory", " MB")
        if vcpus is not None and int(vcpus) != vm.vcpus:
            sizing["vcpus"] = _in_range(vcpus, VCPUS_RANGE, "vCPUs")
        if cores_per_socket is not None and int(cores_per_socket) != vm.cores_per_socket:
            sizing["cores_per_socket"] = _in_range(
                cores_per_socket, VCPUS_RANGE, "Cores per Virtual Socket"
            )
        if sizing and vm.status != VMStatus.DOWN:
            raise ActionRefused(
                f"Memory and CPUs of {vm.name} can be changed only while it is Down."
            )
        total = sizing.get("vcpus", vm.vcpus)
        cores = sizing.get("cores_per_socket", vm.cores_per_socket)
        if total % cores:
            raise ActionRefused(
                f"Total Virtual CPUs ({total}) must be a multiple of Cores per Virtual Socket "
                f"({cores})."
            )
        for name, value in {**fields, **sizing}.items():
            setattr(vm, name, value)
        vm.save(update_fields=[*fields, *sizing])
        vm.ha_pinned_warning = ha_pinned_warning(vm) if fields.get("highly_available") else ""
        event_record(
            action="edit_vm",
            phase=Phase.SUCCEEDED,
            severity=Severity.WARNING if vm.ha_pinned_warning else Severity.NORMAL,
            user=user,
            vm=vm,
            message=f"{actor(user)} edited VM {vm.name}.{vm.ha_pinned_warning}",
        )
        broadcast(f"vm.{vm.pk}")
    return vm
