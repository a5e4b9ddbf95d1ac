"""What RQ workers do for VM actions. Each handler takes its Job's VM (read by the job
frame, `portal.kernel.tasks.execute`), talks to the host through `hypervisor`, reports progress and
returns its Succeeded message with its last writes; the frame records the Events and ends the
Job. Each kind's on_fail hook returns the VM to what its host says it is, so no VM stays busy
after a failure."""

import logging
import time

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

import hypervisor
from portal.kernel.live import broadcast, broadcast_gone
from portal.kernel.models import Job, JobKind
from portal.kernel.tasks import Outcome, job_handler, job_progress
from portal.kernel.validators import control_characters_strip
from storage.choices import DiskStatus
from storage.models import Disk

from .actions import VM_ACTIONS, VMAction
from .choices import (
    BUSY_STATUSES,
    RUNNING_STATUSES,
    HostStatus,
    SnapshotStatus,
    VMOrigin,
    VMStatus,
    boot_sequence_devices,
    status_from_domain,
)
from .console import graphics_listen
from .models import Host, Network, NetworkInterface, Snapshot, VirtualMachine
from .services import vm_grants_drop, vm_status_move

log = logging.getLogger(__name__)

RUNNING_STATES = frozenset({hypervisor.DomainState.RUNNING, hypervisor.DomainState.BLOCKED})
START_TIMEOUT = 60.0


class JobError(Exception):
    """A job cannot go on; the message is for the user."""


def network_spec(network: Network) -> hypervisor.NetworkSpec:
    """The libvirt network that backs a logical network on each host."""
    return hypervisor.NetworkSpec(
        name=network.libvirt_name,
        mode=network.kind,
        bridge=network.bridge,
        vlan=network.vlan,
        ipv4=network.ipv4,
    )


def interface_spec(nic: NetworkInterface) -> hypervisor.InterfaceSpec:
    """A VM's network interface as its domain has it."""
    return hypervisor.InterfaceSpec(
        mac=nic.mac,
        network=nic.profile.network.libvirt_name,
        model=nic.model,
        link_up=nic.linked,
    )


def vm_plugged_nics(vm: VirtualMachine, *, without: int | None = None) -> list[NetworkInterface]:
    """The VM's plugged interfaces in the order they were made (prefetched ones if read)."""
    if "nics" in getattr(vm, "_prefetched_objects_cache", {}):
        nics = vm.nics.all()
    else:
        nics = vm.nics.select_related("profile__network")
    return sorted((n for n in nics if n.plugged and n.pk != without), key=lambda n: n.pk)


def cdrom_spec(image) -> hypervisor.CdromSpec:
    """The CD-ROM drive holding an ISO image (the volume of its domain's pool), or empty."""
    if image is None:
        return hypervisor.CdromSpec()
    return hypervisor.CdromSpec(pool=image.domain.pool_name, volume=image.name)


def vm_domain_spec(vm: VirtualMachine, *, without_nic: int | None = None) -> hypervisor.DomainSpec:
    """The libvirt domain a VM is, built from the inventory (its plugged interfaces, less
    `without_nic`, one being removed; its saved CD and boot sequence)."""
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
        cores_per_socket=vm.cores_per_socket,
        interfaces=tuple(interface_spec(n) for n in vm_plugged_nics(vm, without=without_nic)),
        cdrom=cdrom_spec(vm.cd_image),
        boot=boot_sequence_devices(vm.boot_sequence),
        graphics_listen=graphics_listen(vm.host),
        cpu_passthrough=vm.cpu_passthrough,
        hostdevs=tuple(hostdev_spec(a.device) for a in vm.host_devices.all()),
    )


def hostdev_spec(device) -> hypervisor.HostdevSpec:
    """A HostDevice as the <hostdev> the guest is given."""
    return hypervisor.HostdevSpec(
        capability=device.capability,
        address=tuple(device.address),
        vendor_id=device.vendor_id,
        product_id=device.product_id,
    )


def networks_ensure(conn: hypervisor.Connection, networks) -> None:
    """Make sure the host has each logical network's libvirt network, started: a host that
    was not Up when the network was made (or a test host that forgot it) gets it now."""
    for network in {n.pk: n for n in networks}.values():
        if not conn.network_started(network.libvirt_name):
            conn.ensure_network(network_spec(network))


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


def vm_job_load(job: Job) -> tuple[VirtualMachine, hypervisor.Connection]:
    if job.vm_id is None:
        raise VirtualMachine.DoesNotExist("VirtualMachine matching query does not exist.")
    vm = job.vm  # portal.kernel.tasks.execute read it with its host and cluster, along with the Job
    if vm.host is None:
        raise JobError(f"{vm.name} is not placed on any host.")
    return vm, hypervisor.connect(vm.host.uri)


def _vm_started(action: str):
    """The Started Event's message of a VM action (none when the job cannot start: no VM, or
    a VM on no host, which the handler then refuses)."""

    def started(job: Job) -> str | None:
        vm = job.vm
        if vm is None or vm.host is None:
            return None
        return f"Started to {VM_ACTIONS[action].verb} VM {vm.name} on host {vm.host.name}."

    return started


def _vm_failed(action: str):
    """The Failed Event's message of a VM action."""

    def failed(job: Job, vm: VirtualMachine | None) -> str:
        return f"Failed to {VM_ACTIONS[action].verb} VM {vm.name if vm else ''}."

    return failed


def _vm_settle_hook(job: Job, message: str) -> None:
    """on_fail of a VM action: the VM back in the status its host reports."""
    vm_settle(job.vm_id)


def vm_action_handler(kind: str, action: str, *, on_fail=_vm_settle_hook, **options):
    """Register a VM action's handler: its Events are the action's (verb from the catalogue, vms.actions)."""
    return job_handler(
        kind,
        action=action,
        started=_vm_started(action),
        failed=_vm_failed(action),
        on_fail=on_fail,
        **options,
    )


def vm_job_done(
    job: Job, vm: VirtualMachine, to_status: str, message: str, *, reason: str = "", **fields
) -> Outcome:
    """A VM job's end: the VM out of its busy status, committed by the frame in one
    transaction with the Succeeded Event and the Job succeeded (one live update)."""
    return Outcome(
        message=message,
        reason=reason,
        last_writes=lambda: vm_job_finish(job, vm, to_status, **fields),
    )


def vm_job_finish(job: Job, vm: VirtualMachine, to_status: str, **fields) -> None:
    """Move the VM out of the busy status the job put it in: the status read with the Job,
    else (it changed meanwhile) the one it is in now."""
    if vm_status_move(vm_id=vm.pk, from_status=vm.status, to_status=to_status, **fields):
        return
    busy = VirtualMachine.objects.filter(pk=vm.pk).values_list("status", flat=True).first()
    if busy is None:
        raise JobError(f"{vm.name} was removed while the job ran.")
    vm_status_move(vm_id=vm.pk, from_status=busy, to_status=to_status, **fields)


def _ensure_defined(conn: hypervisor.Connection, vm: VirtualMachine) -> None:
    try:
        conn.get_domain(str(vm.uuid))
    except hypervisor.DomainNotFound:
        conn.define_domain(vm_domain_spec(vm))


def vm_define_for_start(job: Job, conn: hypervisor.Connection, vm: VirtualMachine) -> None:
    """Before a Down VM starts, its host gets the definition the inventory holds now (what Edit
    changed while it was Down: memory, CPUs and their topology); one moved to its Start
    Running On host, or placed by the scheduler, leaves the host it was defined on first. An
    external VM runs as its maker defined it."""
    if vm.is_external:
        _ensure_defined(conn, vm)
        return
    moved_from = job.params.get("moved_from")
    if moved_from:
        old = Host.objects.filter(pk=moved_from).first()
        if old is not None and old.status != HostStatus.UP:
            # Run placed it elsewhere because that host is down: its stale definition stays
            # there (the monitor leaves a domain the inventory knows alone).
            job_progress(job, 5, f"Host {old.name} is {old.get_status_display()}; not reached")
        elif old is not None:
            job_progress(job, 5, f"Removing its definition from host {old.name}")
            try:
                hypervisor.connect(old.uri).undefine_domain(str(vm.uuid), remove_managed_save=False)
            except hypervisor.DomainNotFound:
                pass
    conn.define_domain(vm_domain_spec(vm))


def vm_run_failed(job: Job, message: str) -> None:
    """A Run that moved the VM to another host and failed puts it back where it was defined."""
    moved_from = job.params.get("moved_from")
    if moved_from:
        VirtualMachine.objects.filter(pk=job.vm_id).update(host_id=moved_from)
    vm_settle(job.vm_id)


@vm_action_handler(JobKind.VM_RUN, VMAction.RUN, on_fail=vm_run_failed)
def vm_run_job(job: Job) -> Outcome:
    vm, conn = vm_job_load(job)
    uuid = str(vm.uuid)
    previous = job.params.get("from_status")
    if previous == VMStatus.PAUSED:
        job_progress(job, 30, "Resuming")
        conn.resume(uuid)
    else:
        job_progress(job, 10, "Restoring state" if previous == VMStatus.SUSPENDED else "Starting")
        networks_ensure(conn, [nic.profile.network for nic in vm_plugged_nics(vm)])
        if previous == VMStatus.DOWN:
            vm_define_for_start(job, conn, vm)
        else:
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
    return vm_job_done(job, vm, VMStatus.UP, message, reason=reason, **fields)


@vm_action_handler(
    JobKind.VM_SHUTDOWN, VMAction.SHUTDOWN, first_step=(10, "Asking the guest to shut down (ACPI)")
)
def vm_shutdown_job(job: Job) -> Outcome:
    vm, conn = vm_job_load(job)
    uuid = str(vm.uuid)
    reason = job.params.get("reason", "")
    conn.shutdown(uuid)
    timeout = vm.cluster.shutdown_timeout
    if conn.wait_for_state(uuid, {hypervisor.DomainState.SHUTOFF}, timeout=timeout) is None:
        raise JobError(
            f"{vm.name} did not shut down within {timeout} seconds and is still running. "
            "Use Power Off to force it."
        )
    return vm_job_done(
        job,
        vm,
        VMStatus.DOWN,
        f"VM {vm.name} was shut down." + (f" Reason: {reason}" if reason else ""),
        reason=reason,
        started_at=None,
        shutdown_reason=reason,
    )


@vm_action_handler(JobKind.VM_POWER_OFF, VMAction.POWER_OFF)
def vm_poweroff_job(job: Job) -> Outcome:
    vm, conn = vm_job_load(job)
    try:
        conn.destroy(str(vm.uuid))
    except hypervisor.HypervisorError:
        # Already off (for instance a graceful shutdown finished meanwhile) is fine.
        if conn.get_domain(str(vm.uuid)).state != hypervisor.DomainState.SHUTOFF:
            raise
    # A power off is a stop without a reason: the next power on must not repeat an older one.
    return vm_job_done(
        job,
        vm,
        VMStatus.DOWN,
        f"VM {vm.name} was powered off.",
        started_at=None,
        shutdown_reason="",
    )


@vm_action_handler(JobKind.VM_SUSPEND, VMAction.SUSPEND, first_step=(10, "Saving memory to disk"))
def vm_suspend_job(job: Job) -> Outcome:
    vm, conn = vm_job_load(job)
    conn.managed_save(str(vm.uuid))
    return vm_job_done(
        job,
        vm,
        VMStatus.SUSPENDED,
        f"VM {vm.name} was suspended (hibernated).",
        started_at=None,
    )


@vm_action_handler(JobKind.VM_REBOOT, VMAction.REBOOT)
def vm_reboot_job(job: Job) -> Outcome:
    vm, conn = vm_job_load(job)
    uuid = str(vm.uuid)
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
    return vm_job_done(
        job,
        vm,
        VMStatus.UP,
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
    vm_settle(job.vm_id)


@vm_action_handler(JobKind.VM_REMOVE, VMAction.REMOVE, on_fail=_remove_failed)
def vm_remove_job(job: Job) -> Outcome:
    vm = job.vm  # read by the frame with its host and cluster
    if vm is None:
        raise VirtualMachine.DoesNotExist("VirtualMachine matching query does not exist.")
    remove_disks = job.params.get("remove_disks", True)
    if vm.host is not None:
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

    def last_writes() -> None:  # after the Succeeded Event, which names the VM
        if not remove_disks:
            Disk.objects.filter(vm=vm).update(vm=None, status=DiskStatus.OK)
        vm_id = vm.pk
        vm_grants_drop(vm_id)
        vm.delete()
        broadcast_gone(f"vm.{vm_id}")
        broadcast("vms", "disks")
        job.vm = None  # gone: the Job's end tells no page to fetch it again

    return Outcome(
        message=f"VM {vm.name} was removed"
        + (" with its disks." if remove_disks else "; its disks are now floating disks."),
        last_writes=last_writes,
    )


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
    with transaction.atomic():
        vm_grants_drop(vm.pk)
        vm.disks.all().delete()
        vm.delete()
        broadcast_gone(f"vm.{job.vm_id}")
        broadcast("vms", "disks")


def _create_started(job: Job) -> str | None:
    vm = job.vm
    if vm is None or vm.host is None:
        return None
    return f"Started to create VM {vm.name} on host {vm.host.name}."


@job_handler(
    JobKind.VM_CREATE,
    action="create",
    started=_create_started,
    # The Failed Event keeps the VM's name, cluster and host: on_fail takes the VM away.
    failed=lambda job, vm: f"Failed to create VM {vm.name}." if vm else "",
    on_fail=_create_failed,
)
def vm_create_job(job: Job) -> str:
    vm, conn = vm_job_load(job)
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
    vm_job_finish(job, vm, VMStatus.DOWN)
    broadcast("disks")
    return f"VM {vm.name} was created on host {vm.host.name}."


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


@vm_action_handler(JobKind.VM_CLONE, VMAction.CLONE, on_fail=_clone_failed)
def vm_clone_job(job: Job) -> Outcome:
    vm, conn = vm_job_load(job)
    clone = VirtualMachine.objects.select_related("host").get(pk=job.result_vm_id)
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
    vm_job_finish(job, clone, VMStatus.DOWN)
    if snapshot is not None:
        Snapshot.objects.filter(pk=snapshot.pk, status=SnapshotStatus.LOCKED).update(
            status=SnapshotStatus.OK
        )
        broadcast(f"vm.{vm.pk}")
    else:
        vm_job_finish(job, vm, job.params.get("from_status", VMStatus.DOWN))
    broadcast("disks")
    source = f"snapshot '{snapshot}' of VM {vm.name}" if snapshot else f"VM {vm.name}"
    return Outcome(
        message=f"{source[0].upper()}{source[1:]} was cloned to {clone.name}.",
        event={"vm": clone},
    )


def _import_failed(job: Job, message: str) -> None:
    """A failed import leaves the VM external, under the name it had, in its host's status."""
    VirtualMachine.objects.filter(pk=job.vm_id, origin=VMOrigin.EXTERNAL).update(
        name=job.params.get("old_name") or F("name")
    )
    vm_settle(job.vm_id)


@vm_action_handler(JobKind.VM_IMPORT, VMAction.IMPORT, on_fail=_import_failed)
def vm_import_job(job: Job) -> Outcome:
    vm, conn = vm_job_load(job)
    name, uuid = job.params["name"], str(vm.uuid)
    if job.params.get("rename"):
        job_progress(job, 40, f"Renaming domain {vm.domain_name} to {name}")
        conn.rename_domain(uuid, name)
    status = vm_hypervisor_status(vm)

    def last_writes() -> None:
        VirtualMachine.objects.filter(pk=vm.pk).update(
            origin=VMOrigin.VIREO, domain_name="", unmanaged_disks=[]
        )
        vm_job_finish(job, vm, status)
        broadcast("vms", "disks")

    return Outcome(
        message=f"VM {job.params.get('old_name') or name} was imported as {name}: Vireo manages it now.",
        last_writes=last_writes,
    )
