"""What RQ workers do for snapshots. A disk is a chain of qcow2 volumes on its host; the
inventory (Disk.volume_name = the active top, SnapshotDisk = the frozen volume of each
snapshot, SnapshotPreview = what a preview put aside) is the truth the domain is defined from.
Each handler returns its Succeeded message; the job frame records the Events ("snapshot").
"""

import logging

from django.db import transaction

import hypervisor
from portal.kernel.models import Job, JobKind
from portal.kernel.tasks import job_handler, job_progress
from storage.models import Disk

from .choices import SnapshotStatus, VMStatus
from .jobs import vm_domain_spec, vm_job_finish, vm_job_load, vm_settle
from .models import Snapshot, SnapshotDisk, SnapshotPreview, VirtualMachine

log = logging.getLogger(__name__)


def _back_to(job: Job, vm: VirtualMachine, status: str | None = None) -> None:
    """A VM Image Locked for the job goes back (to Down, or where it started)."""
    current = VirtualMachine.objects.filter(pk=vm.pk).values_list("status", flat=True).first()
    if current == VMStatus.IMAGE_LOCKED:
        vm_job_finish(job, vm, status or job.params.get("from_status") or VMStatus.DOWN)


def _point_domain_at_inventory(conn: hypervisor.Connection, vm: VirtualMachine) -> None:
    """Have the host's definition use the volumes the inventory names: a Vireo VM is defined
    again from the inventory; a VM defined outside Vireo keeps its maker's definition with
    only its disks' sources changed."""
    if not vm.is_external:
        conn.define_domain(vm_domain_spec(vm))
        return
    disks = vm.disks.select_related("storage_domain")
    conn.set_disk_sources(
        str(vm.uuid), {d.target: (d.storage_domain.pool_name, d.volume_name) for d in disks}
    )


def _snapshot(job: Job) -> Snapshot:
    return Snapshot.objects.get(pk=job.params["snapshot_id"])


def _previewed(job: Job) -> Snapshot:
    return SnapshotPreview.objects.select_related("snapshot").get(vm=job.vm).snapshot


def snapshot_handler(kind: str, label: str, on_fail, started):
    """Register a snapshot job's handler: Events "snapshot", "Failed to <label> of VM ..."
    after on_fail, and the Started message `started(job, vm)` (none for a VM on no host,
    which the handler then refuses)."""

    def started_message(job: Job) -> str | None:
        vm = job.vm
        if vm is None or vm.host is None:
            return None
        return started(job, vm)

    return job_handler(
        kind,
        action="snapshot",
        started=started_message,
        failed=lambda job, vm: f"Failed to {label} of VM {vm.name if vm else ''}.",
        on_fail=on_fail,
    )


def _failed(snapshot_status: str | None, *, drop_snapshot: bool = False):
    """on_fail hook: the snapshot back to its status (or gone), the VM settled to its host."""

    def on_fail(job: Job, message: str) -> None:
        snapshot_id = job.params.get("snapshot_id")
        if drop_snapshot:
            Snapshot.objects.filter(pk=snapshot_id, status=SnapshotStatus.LOCKED).delete()
        elif snapshot_status:
            Snapshot.objects.filter(pk=snapshot_id, status=SnapshotStatus.LOCKED).update(
                status=snapshot_status
            )
        vm_settle(job.vm_id)

    return on_fail


@snapshot_handler(
    JobKind.SNAPSHOT_CREATE,
    "create a snapshot",
    _failed(None, drop_snapshot=True),
    lambda job, vm: f"Started a snapshot of VM {vm.name} on host {vm.host.name}.",
)
def snapshot_create_job(job: Job) -> str:
    vm, conn = vm_job_load(job)
    snapshot = Snapshot.objects.get(pk=job.params["snapshot_id"])
    disks = list(
        vm.disks.filter(pk__in=job.params["disk_ids"])
        .select_related("storage_domain")
        .order_by("target")
    )
    overlays = {d.target: f"{vm.uuid}-{d.target}-s{snapshot.pk}.qcow2" for d in disks}
    memory = None
    if job.params.get("save_memory"):
        memory = (disks[0].storage_domain.pool_name, f"{vm.uuid}-s{snapshot.pk}.mem")
    job_progress(job, 20, "Saving memory and creating overlays" if memory else "Creating overlays")
    conn.snapshot_disks(str(vm.uuid), overlays, memory_volume=memory)
    with transaction.atomic():
        for disk in disks:
            SnapshotDisk.objects.create(snapshot=snapshot, disk=disk, volume_name=disk.volume_name)
            Disk.objects.filter(pk=disk.pk).update(volume_name=overlays[disk.target])
        Snapshot.objects.filter(pk=snapshot.pk).update(
            status=SnapshotStatus.OK, memory_volume="/".join(memory) if memory else ""
        )
        _back_to(job, vm)
    return f"Snapshot '{snapshot}' of VM {vm.name} was created" + (
        " with memory." if memory else "."
    )


@snapshot_handler(
    JobKind.SNAPSHOT_PREVIEW,
    "preview a snapshot",
    _failed(SnapshotStatus.OK),
    lambda job, vm: f"Started to preview snapshot '{_snapshot(job)}' of VM {vm.name}.",
)
def snapshot_preview_job(job: Job) -> str:
    vm, conn = vm_job_load(job)
    snapshot = _snapshot(job)
    kept = {}
    created = []
    try:
        for disk_id, source_id in job.params["disks"].items():
            disk = Disk.objects.select_related("storage_domain").get(pk=int(disk_id), vm=vm)
            frozen = SnapshotDisk.objects.get(snapshot_id=source_id, disk=disk).volume_name
            overlay = f"{vm.uuid}-{disk.target}-p{snapshot.pk}.qcow2"
            job_progress(
                job,
                20 + 60 * len(kept) // max(1, len(job.params["disks"])),
                f"Preparing {disk.alias}",
            )
            conn.create_overlay(disk.storage_domain.pool_name, overlay, backing=frozen)
            created.append((disk.storage_domain.pool_name, overlay))
            kept[disk_id] = {"active": disk.volume_name, "preview": overlay, "snapshot": source_id}
        with transaction.atomic():
            SnapshotPreview.objects.create(
                vm=vm,
                snapshot=snapshot,
                previous_memory_mb=vm.memory_mb,
                previous_vcpus=vm.vcpus,
                disks=kept,
            )
            for disk_id, state in kept.items():
                Disk.objects.filter(pk=int(disk_id)).update(volume_name=state["preview"])
            fields = {}
            if job.params.get("vm_configuration"):
                fields.update(memory_mb=snapshot.memory_mb, vcpus=snapshot.vcpus)
            if job.params.get("memory"):
                fields["resume_memory_volume"] = snapshot.memory_volume
            if fields:
                VirtualMachine.objects.filter(pk=vm.pk).update(**fields)
            vm.refresh_from_db()
            _point_domain_at_inventory(conn, vm)  # the host now uses the previewed images
            Snapshot.objects.filter(pk=snapshot.pk).update(status=SnapshotStatus.IN_PREVIEW)
            _back_to(job, vm, VMStatus.DOWN)
    except Exception:
        for pool, name in created:
            try:
                conn.delete_volume(pool, name)
            except hypervisor.HypervisorError as exc:
                log.warning("preview overlay %s not removed: %s", name, exc)
        raise
    return f"Snapshot '{snapshot}' of VM {vm.name} is in Preview Mode."


@snapshot_handler(
    JobKind.SNAPSHOT_UNDO,
    "undo a snapshot preview",
    _failed(SnapshotStatus.IN_PREVIEW),
    lambda job, vm: f"Started to undo the preview of snapshot '{_previewed(job)}' of VM {vm.name}.",
)
def snapshot_undo_job(job: Job) -> str:
    vm, conn = vm_job_load(job)
    preview = SnapshotPreview.objects.select_related("snapshot").get(vm=vm)
    with transaction.atomic():
        for disk_id, state in preview.disks.items():
            Disk.objects.filter(pk=int(disk_id)).update(volume_name=state["active"])
        VirtualMachine.objects.filter(pk=vm.pk).update(
            memory_mb=preview.previous_memory_mb,
            vcpus=preview.previous_vcpus,
            resume_memory_volume="",
        )
        vm.refresh_from_db()
        _point_domain_at_inventory(conn, vm)
        Snapshot.objects.filter(pk=preview.snapshot_id).update(status=SnapshotStatus.OK)
        preview.delete()
    for disk_id, state in preview.disks.items():
        pool = (
            Disk.objects.select_related("storage_domain")
            .get(pk=int(disk_id))
            .storage_domain.pool_name
        )
        try:
            conn.delete_volume(pool, state["preview"])
        except hypervisor.VolumeNotFound:
            pass
    _back_to(job, vm, VMStatus.DOWN)
    return f"The preview of snapshot '{preview.snapshot}' of VM {vm.name} was undone."


@snapshot_handler(
    JobKind.SNAPSHOT_COMMIT,
    "commit a snapshot preview",
    _failed(SnapshotStatus.IN_PREVIEW),
    lambda job, vm: f"Started to commit snapshot '{_previewed(job)}' of VM {vm.name}.",
)
def snapshot_commit_job(job: Job) -> str:
    vm, conn = vm_job_load(job)
    preview = SnapshotPreview.objects.select_related("snapshot").get(vm=vm)
    snapshot = preview.snapshot
    dropped: dict[str, str] = {}  # volume -> pool
    for disk_id, state in preview.disks.items():
        disk = Disk.objects.select_related("storage_domain").get(pk=int(disk_id))
        pool = disk.storage_domain.pool_name
        frozen = SnapshotDisk.objects.get(snapshot_id=state["snapshot"], disk=disk).volume_name
        chain = conn.volume_chain(pool, state["active"])
        above = chain[: chain.index(frozen)] if frozen in chain else []
        for name in above:  # the state the preview replaced, and later snapshots' layers
            dropped[name] = pool
    later = list(vm.snapshots.filter(created_at__gt=snapshot.created_at).exclude(pk=snapshot.pk))
    for old in later:
        if old.memory_volume:
            pool, _, name = old.memory_volume.partition("/")
            dropped[name] = pool
    # The inventory lets go of them first: a failure while erasing them must not leave the
    # preview pointing at volumes that are gone (neither Commit nor Undo could then finish).
    with transaction.atomic():
        Snapshot.objects.filter(pk__in=[s.pk for s in later]).delete()
        SnapshotDisk.objects.filter(snapshot__vm=vm, volume_name__in=list(dropped)).delete()
        Snapshot.objects.filter(pk=snapshot.pk).update(status=SnapshotStatus.OK)
        preview.delete()
    left = []
    for name, pool in dropped.items():
        job_progress(job, 50, f"Erasing {name}")
        try:
            conn.delete_volume(pool, name)
        except hypervisor.VolumeNotFound:
            pass
        except hypervisor.HypervisorError as exc:
            log.warning("volume %s of pool %s not removed: %s", name, pool, exc)
            left.append(name)
    _back_to(job, vm, VMStatus.DOWN)
    return (
        f"Snapshot '{snapshot}' of VM {vm.name} was committed"
        + (f"; {len(later)} later snapshot(s) erased." if later else ".")
        + (f" Volumes left on the host: {', '.join(left)}." if left else "")
    )


@snapshot_handler(
    JobKind.SNAPSHOT_DELETE,
    "delete a snapshot",
    _failed(SnapshotStatus.OK),
    lambda job, vm: f"Started to delete snapshot '{_snapshot(job)}' of VM {vm.name}.",
)
def snapshot_delete_job(job: Job) -> str:
    vm, conn = vm_job_load(job)
    snapshot = _snapshot(job)
    parts = list(snapshot.disks.select_related("disk__storage_domain").order_by("disk__target"))
    for n, part in enumerate(parts):
        disk = Disk.objects.select_related("storage_domain").get(pk=part.disk_id)
        pool = disk.storage_domain.pool_name
        chain = conn.volume_chain(pool, disk.volume_name)
        if part.volume_name not in chain or chain.index(part.volume_name) == 0:
            raise hypervisor.HypervisorError(
                f"Volume {part.volume_name} is not below the active layer of {disk.alias}."
            )
        successor = chain[chain.index(part.volume_name) - 1]

        def progress(done: int, total: int, n=n, alias=disk.alias) -> None:
            share = done * 100 // total if total else 0
            job_progress(job, 5 + 90 * (n * 100 + share) // (100 * len(parts)), f"Merging {alias}")

        # The successor's data goes down into the snapshot's volume, which takes its place.
        conn.merge_volumes(
            str(vm.uuid), disk.target, top=successor, base=part.volume_name, progress=progress
        )
        with transaction.atomic():
            Disk.objects.filter(pk=disk.pk, volume_name=successor).update(
                volume_name=part.volume_name
            )
            SnapshotDisk.objects.filter(disk=disk, volume_name=successor).update(
                volume_name=part.volume_name
            )
            part.delete()
    if snapshot.memory_volume:
        pool, _, name = snapshot.memory_volume.partition("/")
        try:
            conn.delete_volume(pool, name)
        except hypervisor.VolumeNotFound:
            pass
    with transaction.atomic():
        snapshot.delete()
        if snapshot.memory_volume:  # a committed preview's memory is not there to restore now
            VirtualMachine.objects.filter(
                pk=vm.pk, resume_memory_volume=snapshot.memory_volume
            ).update(resume_memory_volume="")
        _back_to(job, vm)
    return f"Snapshot '{snapshot}' of VM {vm.name} was deleted; its data was merged."
