"""Migrate and Cancel Migration (the chapter's "Migrating Virtual Machines Between Hosts").

Migrate moves a running VM live to another Up host of its cluster: the destination chosen by
the administrator (Select Destination Host) or for them (Select Host Automatically). The VM
holds Migrating From, with `migrating_to` naming the destination, while the job
(vms/migration_jobs.py) has the source host's libvirtd migrate it peer-to-peer with the
options of the migration policy; Cancel Migration asks that job to abort the libvirt job, and
the VM stays Up on its source host.
"""

from django.conf import settings
from django.db import transaction
from django.db.models import Sum

import hypervisor
from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind, Phase
from portal.kernel.tasks import queue_ensure_available
from storage.choices import StorageType

from .actions import VMAction
from .choices import RUNNING_STATUSES, HostStatus, VMStatus
from .models import Host, VirtualMachine
from .services import host_status_locked, vm_begin, vm_load


def host_free_memory_mb(host: Host) -> int:
    """What the host's memory leaves for one more guest: its memory less that of the VMs
    running there and of those migrating to it (the inventory's figures, no hypervisor call)."""
    used = (
        VirtualMachine.objects.filter(host=host, status__in=RUNNING_STATUSES).aggregate(
            m=Sum("memory_mb")
        )["m"]
        or 0
    )
    incoming = (
        VirtualMachine.objects.filter(migrating_to=host).aggregate(m=Sum("memory_mb"))["m"] or 0
    )
    return host.memory_mb - used - incoming


def _why_not(vm: VirtualMachine, host: Host) -> str:
    """Why `host` cannot take `vm` by migration, or ""."""
    if host.pk == vm.host_id:
        return "it is the host the VM runs on"
    if host.cluster_id != vm.cluster_id:
        return f"it is not in cluster {vm.cluster.name}"
    if host.status != HostStatus.UP:
        return f"it is {host.get_status_display()}"
    if host.cpus and host.cpus < vm.vcpus:
        return f"it has {host.cpus} CPUs and the VM {vm.vcpus} vCPUs"
    free = host_free_memory_mb(host)
    if host.memory_mb and free < vm.memory_mb:
        return f"not enough free memory (needs {vm.memory_mb} MB, {max(free, 0)} MB free)"
    return ""


def migration_targets(vm: VirtualMachine) -> list[Host]:
    """The hosts the Migrate window offers: Up hosts of the VM's cluster that can take it."""
    hosts = Host.objects.filter(cluster_id=vm.cluster_id, status=HostStatus.UP).order_by("name")
    return [h for h in hosts if not _why_not(vm, h)]


def _destination(vm: VirtualMachine, host_id: int | None) -> Host:
    """The chosen host, checked; or (None) the Up host of the cluster that can take the VM
    with the most free memory."""
    if host_id is not None:
        host = Host.objects.filter(pk=host_id).first()
        if host is None:
            raise ActionRefused("That host does not exist any more.")
        why = _why_not(vm, host)
        if why:
            raise ActionRefused(f"Cannot migrate {vm.name} to {host.name}: {why}.")
        return host
    candidates = list(
        Host.objects.filter(cluster_id=vm.cluster_id).exclude(pk=vm.host_id).order_by("name")
    )
    reasons = {h.name: _why_not(vm, h) for h in candidates}
    able = [h for h in candidates if not reasons[h.name]]
    if not able:
        detail = "; ".join(f"{name}: {why}" for name, why in reasons.items())
        raise ActionRefused(
            f"Cannot migrate {vm.name}: no other host of cluster {vm.cluster.name} can take "
            f"it{' (' + detail + ')' if detail else ''}."
        )
    return max(able, key=lambda h: (host_free_memory_mb(h), -h.pk))


def _storage_check(vm: VirtualMachine) -> None:
    """Both hosts must reach the VM's disks: a disk on one host's local storage stays there."""
    local = vm.disks.exclude(storage_domain__storage_type=StorageType.NFS).select_related(
        "storage_domain"
    )
    if disk := local.first():
        raise ActionRefused(
            f"Cannot migrate {vm.name}: its disk {disk.alias} is on storage domain "
            f"{disk.storage_domain.name}, local to its host. Live migration needs storage that "
            "both hosts reach."
        )
    if vm.unmanaged_disks:
        targets = ", ".join(str(d[0]) for d in vm.unmanaged_disks)
        raise ActionRefused(
            f"Cannot migrate {vm.name}: no storage domain holds its disk(s) {targets}, so "
            "Vireo cannot tell whether the destination reaches them."
        )


def vm_migrate(*, vm_id: int, user, host_id: int | None = None) -> Job:
    """Migrate a running VM live to another host of its cluster: `host_id`, or (None) the
    one Select Host Automatically picks."""
    queue_ensure_available()
    with transaction.atomic():
        vm = vm_load(vm_id)
        if vm.status == VMStatus.UP:
            _storage_check(vm)
            dest = _destination(vm, host_id)
            # The destination's row lock: it cannot go into Maintenance under the migration.
            if host_status_locked(dest.pk) != HostStatus.UP:
                raise ActionRefused(f"Cannot migrate {vm.name}: host {dest.name} is not Up now.")
        else:
            dest = None  # vm_begin refuses, with the VM's status
        job = vm_begin(
            vm=vm,
            action=VMAction.MIGRATE,
            user=user,
            params={"host_id": dest.pk if dest else None},
            message=f"{actor(user)} asked to migrate VM {vm.name} from host "
            f"{vm.host.name if vm.host else '?'} to {dest.name if dest else '?'}"
            + (" (selected automatically)." if host_id is None else "."),
            on_enqueue_failure=lambda job: VirtualMachine.objects.filter(pk=vm_id).update(
                migrating_to=None
            ),
        )
        VirtualMachine.objects.filter(pk=vm.pk).update(migrating_to=dest)
        broadcast(f"vm.{vm.pk}", "vms", "hosts")
        return job


def vm_migration_cancel(*, vm_id: int, user) -> Job:
    """Cancel Migration: the migrate job aborts the libvirt job; the VM stays Up on its
    source host (the job ends the status)."""
    with transaction.atomic():
        vm = vm_load(vm_id)
        if vm.status != VMStatus.MIGRATING_FROM:
            raise ActionRefused(
                f"Cannot cancel the migration of {vm.name}: the VM is {vm.get_status_display()}."
            )
        job = (
            Job.objects.filter(vm=vm, kind=JobKind.VM_MIGRATE, status__in=Job.ACTIVE)
            .order_by("-pk")
            .first()
        )
        if job is None or not Job.objects.filter(pk=job.pk, status__in=Job.ACTIVE).update(
            cancel_requested=True
        ):
            raise ActionRefused(f"Cannot cancel the migration of {vm.name}: it has just ended.")
        event_record(
            action=VMAction.CANCEL_MIGRATION,
            phase=Phase.REQUESTED,
            message=f"{actor(user)} asked to cancel the migration of VM {vm.name}.",
            user=user,
            vm=vm,
            job=job,
        )
        return job


def migration_options(vm: VirtualMachine, dest: Host) -> hypervisor.MigrationOptions:
    """The libvirt options of the VM's migration to `dest`: Vireo's defaults
    (`VIREO_MIGRATION_*`); qemu's memory stream goes to the destination's address."""
    address = dest.address or ""
    return hypervisor.MigrationOptions(
        auto_converge=settings.VIREO_MIGRATION_AUTO_CONVERGE,
        compression=("xbzrle",) if settings.VIREO_MIGRATION_COMPRESSED else (),
        downtime_steps=(settings.VIREO_MIGRATION_MAX_DOWNTIME_MS,),
        bandwidth_mbps=settings.VIREO_MIGRATION_BANDWIDTH_MBPS or None,
        migrate_uri=f"tcp://{address}" if address else "",
    )
