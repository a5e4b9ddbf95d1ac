"""What RQ workers do for VM actions. Each handler loads its Job's VM by id, talks to the
host through `hypervisor`, reports progress and ends in a real status. Each kind's on_fail
hook returns the VM to what its host says it is, so no VM stays busy after a failure."""

import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import hypervisor
from portal.kernel.audit import event_record
from portal.kernel.live import broadcast, broadcast_gone, coalesced
from portal.kernel.models import Job, Phase, Severity
from portal.kernel.tasks import job_finish, job_handler, job_progress
from portal.kernel.validators import control_characters_strip
from storage.choices import DiskStatus
from storage.models import Disk

from .choices import (
    BUSY_STATUSES,
    RUNNING_STATUSES,
    SnapshotStatus,
    VMAction,
    VMStatus,
    status_from_domain,
)
from .models import Snapshot, VirtualMachine
from .services import ACTION_VERBS, vm_grants_drop, vm_status_move

log = logging.getLogger(__name__)

RUNNING_STATES = frozenset({hypervisor.DomainState.RUNNING, hypervisor.DomainState.BLOCKED})
START_TIMEOUT = 60.0


class JobError(Exception):
    """A job cannot go on; the message is for the user."""


def vm_domain_spec(vm: VirtualMachine) -> hypervisor.DomainSpec:
    """The libvirt domain a VM is, built from the inventory."""
    disks = tuple(
        hypervisor.DiskSpec(pool=d.storage_domain.pool_name, volume=d.volume_name, target=d.target)
        for d in sorted(vm.disks.all(), key=lambda d: d.target)
    )
    return hypervisor.DomainSpec(
        uuid=str(vm.uuid),
        name=vm.name,
        memory_mb=vm.memory_mb,
        vcpus=vm.vcpus,
        disks=disks,
        description=control_characters_strip(vm.description),
    )


def vm_hypervisor_status(vm: VirtualMachine) -> str:
    """The status the VM's host reports for it: Down when the host does not know it,
    Unknown when the host cannot be asked."""
    if vm.host is None:
        return VMStatus.DOWN
    try:
        info = hypervisor.connect(vm.host.uri).get_domain(str(vm.uuid))
    except hypervisor.DomainNotFound:
        return VMStatus.DOWN
    except hypervisor.HypervisorError:
        return VMStatus.UNKNOWN
    return status_from_domain(info.state, info.has_managed_save)


def vm_settle(vm_id: int) -> None:
    """Put a busy VM in the status its host reports (after a failed or abandoned job)."""
    vm = VirtualMachine.objects.select_related("host").filter(pk=vm_id).first()
    if vm is None or vm.status not in BUSY_STATUSES:
        return
    real = vm_hypervisor_status(vm)
    fields = {}
    if real not in RUNNING_STATUSES:
        fields["started_at"] = None
    elif vm.started_at is None:
        fields["started_at"] = timezone.now()
    vm_status_move(vm_id=vm.pk, from_status=vm.status, to_status=real, **fields)


def _load(job: Job) -> tuple[VirtualMachine, hypervisor.Connection]:
    if job.vm_id is None:
        raise VirtualMachine.DoesNotExist("VirtualMachine matching query does not exist.")
    vm = job.vm  # portal.kernel.tasks.execute read it with its host and cluster, along with the Job
    if vm.host is None:
        raise JobError(f"{vm.name} is not placed on any host.")
    return vm, hypervisor.connect(vm.host.uri)


def _started(job: Job, vm: VirtualMachine, action: str) -> None:
    event_record(
        action=action,
        phase=Phase.STARTED,
        user=job.user,
        vm=vm,
        job=job,
        message=f"Started to {ACTION_VERBS[action]} VM {vm.name} on host {vm.host.name}.",
    )


def _succeeded(job: Job, vm: VirtualMachine, action: str, message: str, reason: str = "") -> None:
    event_record(
        action=action,
        phase=Phase.SUCCEEDED,
        user=job.user,
        vm=vm,
        job=job,
        message=message,
        reason=reason,
    )


def _started_progress(job: Job, vm: VirtualMachine, action: str, percent: int, step: str) -> None:
    """The Started Event and the first progress report, told to open pages in one update."""
    with coalesced():
        _started(job, vm, action)
        job_progress(job, percent, step)


def _done(
    job: Job,
    vm: VirtualMachine,
    to_status: str,
    action: str,
    message: str,
    *,
    reason: str = "",
    **fields,
) -> None:
    """A job's last writes in one transaction: the VM out of its busy status, the Succeeded
    Event, the Job succeeded; open pages hear of all three in one update after the commit."""
    with coalesced(), transaction.atomic():
        _finish(job, vm, to_status, **fields)
        _succeeded(job, vm, action, message, reason=reason)
        job_finish(job.pk, job=job)


def _finish(job: Job, vm: VirtualMachine, to_status: str, **fields) -> None:
    """Move the VM out of the busy status the job put it in."""
    busy = VirtualMachine.objects.filter(pk=vm.pk).values_list("status", flat=True).first()
    if busy is None:
        raise JobError(f"{vm.name} was removed while the job ran.")
    vm_status_move(vm_id=vm.pk, from_status=busy, to_status=to_status, **fields)


def _ensure_defined(conn: hypervisor.Connection, vm: VirtualMachine) -> None:
    try:
        conn.get_domain(str(vm.uuid))
    except hypervisor.DomainNotFound:
        conn.define_domain(vm_domain_spec(vm))


def _vm_action_failed(action: str):
    def on_fail(job: Job, message: str) -> None:
        vm_settle(job.vm_id)
        vm = VirtualMachine.objects.filter(pk=job.vm_id).select_related("host").first()
        event_record(
            action=action,
            phase=Phase.FAILED,
            user=job.user,
            vm=vm,
            job=job,
            object_name=vm.name if vm else "",
            error=message,
            message=f"Failed to {ACTION_VERBS[action]} VM {vm.name if vm else ''}.",
        )

    return on_fail


@job_handler("vm_run", on_fail=_vm_action_failed(VMAction.RUN))
def vm_run_job(job: Job) -> None:
    vm, conn = _load(job)
    uuid = str(vm.uuid)
    _started(job, vm, VMAction.RUN)
    previous = job.params.get("from_status")
    if previous == VMStatus.PAUSED:
        job_progress(job, 30, "Resuming")
        conn.resume(uuid)
    else:
        job_progress(job, 10, "Restoring state" if previous == VMStatus.SUSPENDED else "Starting")
        _ensure_defined(conn, vm)
        if previous == VMStatus.DOWN and vm.resume_memory_volume:
            # A previewed or committed snapshot's memory: the guest continues where it was.
            pool, _, volume = vm.resume_memory_volume.partition("/")
            job_progress(job, 20, "Restoring the snapshot's memory")
            conn.restore_memory(uuid, pool, volume)
            VirtualMachine.objects.filter(pk=vm.pk).update(resume_memory_volume="")
        else:
            conn.start(uuid)
    if conn.wait_for_state(uuid, RUNNING_STATES, timeout=START_TIMEOUT) is None:
        raise JobError(f"{vm.name} did not reach running within {START_TIMEOUT:.0f} seconds.")
    fields = {} if previous == VMStatus.PAUSED and vm.started_at else {"started_at": timezone.now()}
    message = f"VM {vm.name} was started on host {vm.host.name}."
    if previous == VMStatus.SUSPENDED:
        message = f"VM {vm.name} was restored from its saved state on host {vm.host.name}."
    if vm.shutdown_reason and previous == VMStatus.DOWN:
        message += f" It had been shut down with the reason: {vm.shutdown_reason}"
    reason = vm.shutdown_reason if previous == VMStatus.DOWN else ""
    _done(job, vm, VMStatus.UP, VMAction.RUN, message, reason=reason, **fields)


@job_handler("vm_shutdown", on_fail=_vm_action_failed(VMAction.SHUTDOWN))
def vm_shutdown_job(job: Job) -> None:
    vm, conn = _load(job)
    uuid = str(vm.uuid)
    reason = job.params.get("reason", "")
    _started_progress(job, vm, VMAction.SHUTDOWN, 10, "Asking the guest to shut down (ACPI)")
    conn.shutdown(uuid)
    timeout = vm.cluster.shutdown_timeout
    if conn.wait_for_state(uuid, {hypervisor.DomainState.SHUTOFF}, timeout=timeout) is None:
        raise JobError(
            f"{vm.name} did not shut down within {timeout} seconds and is still running. "
            "Use Power Off to force it."
        )
    _done(
        job,
        vm,
        VMStatus.DOWN,
        VMAction.SHUTDOWN,
        f"VM {vm.name} was shut down." + (f" Reason: {reason}" if reason else ""),
        reason=reason,
        started_at=None,
        shutdown_reason=reason,
    )


@job_handler("vm_poweroff", on_fail=_vm_action_failed(VMAction.POWER_OFF))
def vm_poweroff_job(job: Job) -> None:
    vm, conn = _load(job)
    _started(job, vm, VMAction.POWER_OFF)
    try:
        conn.destroy(str(vm.uuid))
    except hypervisor.HypervisorError:
        # Already off (for instance a graceful shutdown finished meanwhile) is fine.
        if conn.get_domain(str(vm.uuid)).state != hypervisor.DomainState.SHUTOFF:
            raise
    # A power off is a stop without a reason: the next power on must not repeat an older one.
    _done(
        job,
        vm,
        VMStatus.DOWN,
        VMAction.POWER_OFF,
        f"VM {vm.name} was powered off.",
        started_at=None,
        shutdown_reason="",
    )


@job_handler("vm_suspend", on_fail=_vm_action_failed(VMAction.SUSPEND))
def vm_suspend_job(job: Job) -> None:
    vm, conn = _load(job)
    _started_progress(job, vm, VMAction.SUSPEND, 10, "Saving memory to disk")
    conn.managed_save(str(vm.uuid))
    _done(
        job,
        vm,
        VMStatus.SUSPENDED,
        VMAction.SUSPEND,
        f"VM {vm.name} was suspended (hibernated).",
        started_at=None,
    )


@job_handler("vm_reboot", on_fail=_vm_action_failed(VMAction.REBOOT))
def vm_reboot_job(job: Job) -> None:
    vm, conn = _load(job)
    uuid = str(vm.uuid)
    _started(job, vm, VMAction.REBOOT)
    began = time.monotonic()
    job_progress(job, 20, "Rebooting the guest")
    conn.reboot(uuid)
    if conn.wait_for_state(uuid, RUNNING_STATES, timeout=START_TIMEOUT) is None:
        raise JobError(f"{vm.name} did not come back after the reboot.")
    # libvirt's reboot returns at once while the guest restarts: Reboot In Progress stays (and
    # every open page shows it) for at least the hold, as the guest comes back meanwhile.
    hold = settings.VIREO_REBOOT_HOLD_SECONDS - (time.monotonic() - began)
    if hold > 0:
        job_progress(job, 60, "Waiting for the guest to come back")
        time.sleep(hold)
    _done(
        job,
        vm,
        VMStatus.UP,
        VMAction.REBOOT,
        f"VM {vm.name} was rebooted.",
        started_at=timezone.now(),
    )


def disk_volumes(conn: hypervisor.Connection, disk: Disk) -> list[str]:
    """Every volume a disk owns: its chain (snapshot layers under the active one), the
    volumes its snapshots froze, and a preview's kept-aside active chain."""
    pool = disk.storage_domain.pool_name
    names = dict.fromkeys(conn.volume_chain(pool, disk.volume_name))
    names.update(dict.fromkeys(disk.snapshot_volumes.values_list("volume_name", flat=True)))
    preview = getattr(disk.vm, "preview", None) if disk.vm_id else None
    if preview is not None and str(disk.pk) in preview.disks:
        names.update(dict.fromkeys(conn.volume_chain(pool, preview.disks[str(disk.pk)]["active"])))
    return list(names)


def disk_volumes_delete(disk: Disk) -> None:
    """Delete a disk's volumes, all of its chain (a volume already gone is fine)."""
    if disk.host is None:
        return
    conn = hypervisor.connect(disk.host.uri)
    try:
        names = disk_volumes(conn, disk)
    except hypervisor.VolumeNotFound:
        names = [disk.volume_name]
    for name in names:
        try:
            conn.delete_volume(disk.storage_domain.pool_name, name)
        except hypervisor.VolumeNotFound:
            pass


def _memory_volumes_delete(conn: hypervisor.Connection, vm: VirtualMachine) -> None:
    """Delete the memory states saved by a VM's snapshots ("pool/volume")."""
    for ref in vm.snapshots.exclude(memory_volume="").values_list("memory_volume", flat=True):
        pool, _, name = ref.partition("/")
        try:
            conn.delete_volume(pool, name)
        except hypervisor.VolumeNotFound:
            pass


def _remove_failed(job: Job, message: str) -> None:
    Disk.objects.filter(vm_id=job.vm_id, status=DiskStatus.LOCKED).update(status=DiskStatus.OK)
    _vm_action_failed(VMAction.REMOVE)(job, message)


@job_handler("vm_remove", on_fail=_remove_failed)
def vm_remove_job(job: Job) -> None:
    vm = VirtualMachine.objects.select_related("host", "cluster").get(pk=job.vm_id)
    remove_disks = job.params.get("remove_disks", True)
    if vm.host is not None:
        _started(job, vm, VMAction.REMOVE)
        try:
            hypervisor.connect(vm.host.uri).undefine_domain(str(vm.uuid), remove_managed_save=True)
        except hypervisor.DomainNotFound:
            pass
    disks = list(vm.disks.select_related("storage_domain", "host"))
    if vm.host is not None:
        _memory_volumes_delete(hypervisor.connect(vm.host.uri), vm)
    if remove_disks:
        for n, disk in enumerate(disks, 1):
            job_progress(job, 10 + 80 * n // len(disks), f"Removing disk {disk.alias}")
            disk_volumes_delete(disk)
            disk.delete()
    with transaction.atomic():
        if not remove_disks:
            Disk.objects.filter(vm=vm).update(vm=None, status=DiskStatus.OK)
        _succeeded(
            job,
            vm,
            VMAction.REMOVE,
            f"VM {vm.name} was removed"
            + (" with its disks." if remove_disks else "; its disks are now floating disks."),
        )
        vm_grants_drop(vm.pk)
        vm.delete()
        broadcast_gone(f"vm.{job.vm_id}")
        broadcast("vms", "disks")


def _create_failed(job: Job, message: str) -> None:
    """A VM whose creation failed is taken away again, volumes and all."""
    vm = VirtualMachine.objects.filter(pk=job.vm_id).select_related("host").first()
    if vm is None:
        return
    for disk in vm.disks.select_related("storage_domain", "host"):
        try:
            disk_volumes_delete(disk)
        except hypervisor.HypervisorError as exc:
            log.warning("could not delete volume %s: %s", disk.volume_name, exc)
    event_record(
        action="create",
        phase=Phase.FAILED,
        user=job.user,
        vm=None,
        job=job,
        object_name=vm.name,
        cluster=vm.cluster,
        host=vm.host,
        error=message,
        message=f"Failed to create VM {vm.name}.",
    )
    with transaction.atomic():
        vm_grants_drop(vm.pk)
        vm.disks.all().delete()
        vm.delete()
        broadcast_gone(f"vm.{job.vm_id}")
        broadcast("vms", "disks")


@job_handler("vm_create", on_fail=_create_failed)
def vm_create_job(job: Job) -> None:
    vm, conn = _load(job)
    event_record(
        action="create",
        phase=Phase.STARTED,
        user=job.user,
        vm=vm,
        job=job,
        message=f"Started to create VM {vm.name} on host {vm.host.name}.",
    )
    disks = list(vm.disks.select_related("storage_domain"))
    for n, disk in enumerate(disks, 1):
        job_progress(job, 10 + 70 * (n - 1) // len(disks), f"Creating disk {disk.alias}")
        info = conn.create_volume(
            disk.storage_domain.pool_name,
            disk.volume_name,
            disk.size_bytes,
            preallocate=not disk.sparse,
        )
        Disk.objects.filter(pk=disk.pk).update(status=DiskStatus.OK, actual_bytes=info.allocation)
    job_progress(job, 90, "Defining the VM on its host")
    conn.define_domain(vm_domain_spec(vm))
    _finish(job, vm, VMStatus.DOWN)
    broadcast("disks")
    _succeeded(job, vm, "create", f"VM {vm.name} was created on host {vm.host.name}.")


def _clone_snapshot(job: Job) -> Snapshot | None:
    """The snapshot a Clone job copies from, if it was started from the Snapshots sub-tab."""
    snapshot_id = job.params.get("snapshot_id")
    return Snapshot.objects.filter(pk=snapshot_id).first() if snapshot_id else None


def _clone_failed(job: Job, message: str) -> None:
    """The half-made clone is taken away; the source goes back to its status."""
    clone = VirtualMachine.objects.filter(pk=job.result_vm_id).select_related("host").first()
    if clone is not None:
        for disk in clone.disks.select_related("storage_domain", "host"):
            try:
                disk_volumes_delete(disk)
            except hypervisor.HypervisorError as exc:
                log.warning("could not delete volume %s: %s", disk.volume_name, exc)
        if clone.host is not None:
            try:
                hypervisor.connect(clone.host.uri).undefine_domain(str(clone.uuid))
            except hypervisor.HypervisorError:
                pass
        with transaction.atomic():
            vm_grants_drop(clone.pk)
            clone.disks.all().delete()
            clone.delete()
            broadcast_gone(f"vm.{job.result_vm_id}")
            broadcast("vms", "disks")
    source = VirtualMachine.objects.filter(pk=job.vm_id).first()
    snapshot = _clone_snapshot(job)
    if snapshot is not None:
        Snapshot.objects.filter(pk=snapshot.pk, status=SnapshotStatus.LOCKED).update(
            status=SnapshotStatus.OK
        )
    elif source is not None and source.status == VMStatus.IMAGE_LOCKED:
        vm_status_move(
            vm_id=source.pk,
            from_status=VMStatus.IMAGE_LOCKED,
            to_status=job.params.get("from_status", VMStatus.DOWN),
        )
    event_record(
        action=VMAction.CLONE,
        phase=Phase.FAILED,
        user=job.user,
        vm=source,
        job=job,
        object_name=source.name if source else "",
        error=message,
        message=f"Failed to clone VM {source.name if source else ''}.",
        severity=Severity.ERROR,
    )


@job_handler("vm_clone", on_fail=_clone_failed)
def vm_clone_job(job: Job) -> None:
    vm, conn = _load(job)
    clone = VirtualMachine.objects.select_related("host").get(pk=job.result_vm_id)
    _started(job, vm, VMAction.CLONE)
    snapshot = _clone_snapshot(job)
    if snapshot is not None:
        # From a snapshot: each included disk as it was then (the copy flattens its chain).
        pairs = [
            (sd.disk, sd.volume_name)
            for sd in snapshot.disks.select_related("disk__storage_domain")
        ]
    else:
        pairs = [(d, d.volume_name) for d in vm.disks.select_related("storage_domain")]
    pairs.sort(key=lambda pair: pair[0].target)
    total = sum(d.size_bytes for d, _ in pairs) or 1
    copied = 0
    for number, (disk, source_volume) in enumerate(pairs, 1):
        ext = disk.volume_name.rsplit(".", 1)[-1] if "." in disk.volume_name else "img"
        new = Disk.objects.create(
            alias=f"{clone.name}_Disk{number}",  # in target order: _Disk1, _Disk2, ...
            description=disk.description,
            vm=clone,
            storage_domain=disk.storage_domain,
            host=disk.host,
            volume_name=f"{clone.uuid}-{disk.target}.{ext}",
            size_bytes=disk.size_bytes,
            sparse=disk.sparse,
            status=DiskStatus.LOCKED,
            target=disk.target,
        )
        broadcast("disks")
        done_before = copied

        def progress(
            done: int, size: int, base=done_before, weight=disk.size_bytes, alias=new.alias
        ) -> None:
            # `done` counts bytes out of `size` (the volume's allocation, not its virtual
            # size): scale it to this disk's share of the total.
            part = weight * min(done, size) // size if size else 0
            job_progress(job, 5 + 85 * (base + part) // total, f"Copying disk {alias}")

        info = conn.clone_volume(
            disk.storage_domain.pool_name, source_volume, new.volume_name, progress
        )
        Disk.objects.filter(pk=new.pk).update(status=DiskStatus.OK, actual_bytes=info.allocation)
        copied += disk.size_bytes
    job_progress(job, 95, f"Defining {clone.name} on host {vm.host.name}")
    conn.define_domain(vm_domain_spec(clone))
    _finish(job, clone, VMStatus.DOWN)
    if snapshot is not None:
        Snapshot.objects.filter(pk=snapshot.pk, status=SnapshotStatus.LOCKED).update(
            status=SnapshotStatus.OK
        )
        broadcast(f"vm.{vm.pk}")
    else:
        _finish(job, vm, job.params.get("from_status", VMStatus.DOWN))
    broadcast("disks")
    source = f"snapshot '{snapshot}' of VM {vm.name}" if snapshot else f"VM {vm.name}"
    _succeeded(
        job, clone, VMAction.CLONE, f"{source[0].upper()}{source[1:]} was cloned to {clone.name}."
    )
