"""Services for snapshots: Create, (Custom) Preview, Commit, Undo, Clone and Delete.

The same rules as everywhere: check the action's catalogue entry (`vms.actions`), move
statuses with conditional updates, record the Event, create the Job. How a snapshot lives on
the host (a chain of qcow2 volumes per disk) is described in docs/architecture.md.
"""

from django.db import transaction

from accounts.services import permission_grant_creator
from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind, Phase
from portal.kernel.tasks import job_create, queue_ensure_available
from portal.kernel.validators import text_check
from storage.models import Disk
from storage.space import free_bytes_on

from .actions import SNAPSHOT_ACTIONS, SnapshotAction, snapshot_actions_allowed
from .choices import RUNNING_STATUSES, SnapshotStatus, VMStatus
from .models import Snapshot, SnapshotPreview, VirtualMachine
from .quotas import quota_check
from .services import (
    creation_check,
    name_validate,
    vm_names_lock,
    vm_nics_copy,
    vm_status_move,
    vm_take_back,
)

GiB = 1024**3


def _vm(vm_id: int) -> VirtualMachine:
    vm = (
        VirtualMachine.objects.select_for_update(of=("self",))
        .select_related("cluster", "host")
        .filter(pk=vm_id)
        .first()
    )
    if vm is None:
        raise ActionRefused("That virtual machine does not exist any more.")
    return vm


def _snapshot(vm: VirtualMachine, snapshot_id: int) -> Snapshot:
    snapshot = Snapshot.objects.filter(pk=snapshot_id, vm=vm).first()
    if snapshot is None:
        raise ActionRefused("That snapshot does not exist any more.")
    return snapshot


def snapshot_state(vm: VirtualMachine) -> dict:
    """What the snapshot table needs to know about a VM (two queries)."""
    return {
        "previewing": SnapshotPreview.objects.filter(vm=vm).exists(),
        "busy": vm.snapshots.filter(status=SnapshotStatus.LOCKED).exists(),
        "unmanaged": external_snapshot_obstacle(vm),
    }


def external_snapshot_obstacle(vm: VirtualMachine) -> str:
    """Why a VM defined outside Vireo can have no snapshots, or "": its disks allow them when
    every one is a volume of a storage domain's pool (Vireo then layers overlays over them and
    points the domain's own definition at them, leaving the rest of it as its maker wrote
    it). A Vireo VM has no obstacle."""
    if not vm.is_external:
        return ""
    if vm.unmanaged_disks:
        targets = ", ".join(str(d[0]) for d in vm.unmanaged_disks)
        return f"no storage domain holds its disk(s) {targets}; Import it or move them first"
    if not vm.disks.exists():
        return "it has no disk on a storage domain"
    return ""


def _guard(vm: VirtualMachine, action: str, snapshot: Snapshot | None = None) -> None:
    """Refuse with the reason when the snapshot table does not allow `action`."""
    state = snapshot_state(vm)
    allowed = snapshot_actions_allowed(
        vm_status=vm.status, snapshot_status=snapshot.status if snapshot else None, **state
    )
    if action in allowed:
        return
    verb = SNAPSHOT_ACTIONS[action].verb
    if state["unmanaged"]:
        why = state["unmanaged"]
    elif state["busy"]:
        why = "another snapshot operation on it is in progress"
    elif action in (SnapshotAction.COMMIT, SnapshotAction.UNDO) and not state["previewing"]:
        why = "no snapshot is being previewed"
    elif (
        action in (SnapshotAction.CREATE, SnapshotAction.PREVIEW, SnapshotAction.DELETE)
        and state["previewing"]
    ):
        why = "a snapshot preview is active; Commit or Undo it first"
    elif (
        snapshot is not None
        and snapshot.status != SnapshotStatus.OK
        and action != SnapshotAction.COMMIT
    ):
        why = f"the snapshot is {snapshot.get_status_display()}"
    else:
        why = f"the VM is {vm.get_status_display()}"
    raise ActionRefused(f"Cannot {verb} a snapshot of {vm.name}: {why}.")


def _lock_vm_if_down(vm: VirtualMachine) -> str:
    """A Down VM is Image Locked while its volumes change; a running one stays as it is."""
    previous = vm.status
    if previous == VMStatus.DOWN:
        if not vm_status_move(
            vm_id=vm.pk, from_status=VMStatus.DOWN, to_status=VMStatus.IMAGE_LOCKED
        ):
            raise ActionRefused(f"{vm.name} was changed by another request. Nothing was done.")
    return previous


def _set_snapshot_status(snapshot_id: int, from_status: str, to_status: str) -> bool:
    return bool(
        Snapshot.objects.filter(pk=snapshot_id, status=from_status).update(status=to_status)
    )


def _undo(
    vm_id: int,
    previous: str,
    snapshot_id: int | None = None,
    snapshot_status: str = SnapshotStatus.OK,
    delete_snapshot: bool = False,
):
    """What to put back if the job never reaches a worker."""

    def undo(job: Job) -> None:
        if previous == VMStatus.DOWN:
            vm_status_move(vm_id=vm_id, from_status=VMStatus.IMAGE_LOCKED, to_status=VMStatus.DOWN)
        if snapshot_id is not None:
            if delete_snapshot:
                Snapshot.objects.filter(pk=snapshot_id).delete()
            else:
                Snapshot.objects.filter(pk=snapshot_id, status=SnapshotStatus.LOCKED).update(
                    status=snapshot_status
                )
        broadcast(f"vm.{vm_id}")

    return undo


def _record(job: Job, vm: VirtualMachine, user, message: str) -> None:
    event_record(
        action="snapshot", phase=Phase.REQUESTED, user=user, vm=vm, job=job, message=message
    )
    broadcast(f"vm.{vm.pk}")


def snapshot_create(
    *, vm_id: int, user, description: str, disk_ids, save_memory: bool = False
) -> Snapshot:
    """Create snapshot: the chosen disks (and the memory of a running VM) as they are now.
    The snapshot is Locked until the job ends, then Ok."""
    queue_ensure_available()
    description = text_check(description, "Description", max_length=1000)
    with transaction.atomic():
        vm = _vm(vm_id)
        _guard(vm, SnapshotAction.CREATE)
        wanted = {int(pk) for pk in disk_ids}
        disks = list(vm.disks.filter(pk__in=wanted))
        if not disks or len(disks) != len(wanted):
            raise ActionRefused("Tick at least one of the VM's disks under Disks to include.")
        if save_memory and vm.is_external:
            raise ActionRefused(
                f"Save Memory is not offered for {vm.name}: it was defined outside Vireo, "
                "which starts it as its maker defined it. Import it to save memory."
            )
        if save_memory and vm.status not in RUNNING_STATUSES:
            raise ActionRefused("Save Memory needs a running VM.")
        previous = _lock_vm_if_down(vm)
        nics = [
            {"name": n.name, "network": n.profile.network.name, "profile": n.profile.name}
            for n in vm.nics.select_related("profile__network")
        ]
        snapshot = Snapshot.objects.create(
            vm=vm,
            description=description,
            status=SnapshotStatus.LOCKED,
            memory_mb=vm.memory_mb,
            vcpus=vm.vcpus,
            nics=nics,
            created_by=user if user.is_authenticated else None,
        )
        job = job_create(
            kind=JobKind.SNAPSHOT_CREATE,
            description=f"Create snapshot of {vm.name}",
            vm=vm,
            user=user,
            params={
                "snapshot_id": snapshot.pk,
                "disk_ids": sorted(wanted),
                "save_memory": bool(save_memory),
                "from_status": previous,
            },
            on_enqueue_failure=_undo(vm.pk, previous, snapshot.pk, delete_snapshot=True),
        )
        _record(
            job,
            vm,
            user,
            f"{actor(user)} asked for a snapshot of VM {vm.name}"
            + (f" ('{description}')" if description else "")
            + (" with memory." if save_memory else "."),
        )
        return snapshot


def snapshot_preview(
    *,
    vm_id: int,
    snapshot_id: int,
    user,
    vm_configuration: bool = True,
    memory: bool = False,
    disks: dict[int, int | None] | None = None,
) -> Job:
    """Preview (or Custom Preview) a snapshot: per disk, the snapshot whose version to use
    (None keeps the current one); VM Configuration and Memory from the selected snapshot."""
    queue_ensure_available()
    with transaction.atomic():
        vm = _vm(vm_id)
        snapshot = _snapshot(vm, snapshot_id)
        _guard(vm, SnapshotAction.PREVIEW, snapshot)
        if disks is None:
            disks = {sd.disk_id: snapshot.pk for sd in snapshot.disks.all()}
        choices = {}
        for disk_id, chosen in disks.items():
            if chosen is None:
                continue
            source = Snapshot.objects.filter(pk=chosen, vm=vm, status=SnapshotStatus.OK).first()
            if source is None or not source.disks.filter(disk_id=disk_id).exists():
                raise ActionRefused(
                    "Each disk can be previewed only from an Ok snapshot that includes it."
                )
            choices[str(int(disk_id))] = source.pk
        if vm.is_external and (vm_configuration or memory):
            raise ActionRefused(
                f"{vm.name} was defined outside Vireo: a preview gives it the snapshot's disks "
                "only; its configuration stays as its maker defined it. Untick VM "
                "Configuration and Memory."
            )
        if not choices and not vm_configuration:
            raise ActionRefused("Choose VM Configuration or at least one disk to preview.")
        if memory and not snapshot.memory_saved:
            raise ActionRefused("This snapshot has no saved memory.")
        if memory:
            # The saved memory belongs to exactly that snapshot's disks and configuration.
            own = set(snapshot.disks.values_list("disk_id", flat=True))
            if (
                not vm_configuration
                or {int(k) for k, v in choices.items() if v == snapshot.pk} != own
            ):
                raise ActionRefused(
                    "Memory can be previewed only with the snapshot's own VM Configuration and all of its disks."
                )
        previous = _lock_vm_if_down(vm)
        _set_snapshot_status(snapshot.pk, SnapshotStatus.OK, SnapshotStatus.LOCKED)
        job = job_create(
            kind=JobKind.SNAPSHOT_PREVIEW,
            description=f"Preview snapshot of {vm.name}",
            vm=vm,
            user=user,
            params={
                "snapshot_id": snapshot.pk,
                "disks": choices,
                "vm_configuration": bool(vm_configuration),
                "memory": bool(memory),
            },
            on_enqueue_failure=_undo(vm.pk, previous, snapshot.pk),
        )
        _record(
            job, vm, user, f"{actor(user)} asked to preview snapshot '{snapshot}' of VM {vm.name}."
        )
        return job


def _end_preview(*, vm_id: int, user, action: str) -> Job:
    queue_ensure_available()
    with transaction.atomic():
        vm = _vm(vm_id)
        preview = SnapshotPreview.objects.filter(vm=vm).select_related("snapshot").first()
        _guard(vm, action, preview.snapshot if preview else None)
        previous = _lock_vm_if_down(vm)
        _set_snapshot_status(preview.snapshot_id, SnapshotStatus.IN_PREVIEW, SnapshotStatus.LOCKED)
        entry = SNAPSHOT_ACTIONS[action]
        job = job_create(
            kind=JobKind(entry.job),
            description=f"{entry.label} snapshot preview of {vm.name}",
            vm=vm,
            user=user,
            params={"snapshot_id": preview.snapshot_id},
            on_enqueue_failure=_undo(
                vm.pk, previous, preview.snapshot_id, SnapshotStatus.IN_PREVIEW
            ),
        )
        _record(
            job,
            vm,
            user,
            f"{actor(user)} asked to {entry.verb} the preview of snapshot "
            f"'{preview.snapshot}' of VM {vm.name}.",
        )
        return job


def snapshot_commit(*, vm_id: int, user) -> Job:
    """Commit: the VM keeps the previewed state; every later snapshot is erased."""
    return _end_preview(vm_id=vm_id, user=user, action=SnapshotAction.COMMIT)


def snapshot_undo(*, vm_id: int, user) -> Job:
    """Undo: throw the preview away; the VM returns to its state before the preview."""
    return _end_preview(vm_id=vm_id, user=user, action=SnapshotAction.UNDO)


def snapshot_clone(
    *, vm_id: int, snapshot_id: int, user, name: str, description: str = ""
) -> VirtualMachine:
    """Clone a new, independent VM from a snapshot: Image Locked while its disks are copied.
    It needs the right to create VMs in the VM's cluster and counts against the quota."""
    queue_ensure_available()
    description = text_check(description, "Description")[:1000]
    with transaction.atomic():
        vm = _vm(vm_id)
        snapshot = _snapshot(vm, snapshot_id)
        creation_check(user=user, cluster=vm.cluster, verb="clone VMs")
        _guard(vm, SnapshotAction.CLONE, snapshot)
        vm_names_lock(vm.cluster.data_center_id)
        name = name_validate(name, data_center_id=vm.cluster.data_center_id, what="Name")
        quota_check(
            user, disk_bytes=sum(sd.disk.size_bytes for sd in snapshot.disks.select_related("disk"))
        )
        clone = VirtualMachine.objects.create(
            name=name,
            description=description,
            cluster=vm.cluster,
            host=vm.host,
            status=VMStatus.IMAGE_LOCKED,
            memory_mb=snapshot.memory_mb,
            vcpus=snapshot.vcpus,
            cores_per_socket=vm.cores_per_socket,
            created_by=user if user.is_authenticated else None,
        )
        vm_nics_copy(vm, clone)
        permission_grant_creator(user=user, vm=clone)
        _set_snapshot_status(snapshot.pk, SnapshotStatus.OK, SnapshotStatus.LOCKED)

        def undo(job: Job) -> None:
            Snapshot.objects.filter(pk=snapshot.pk, status=SnapshotStatus.LOCKED).update(
                status=SnapshotStatus.OK
            )
            vm_take_back(clone.pk)
            broadcast(f"vm.{vm.pk}")

        job = job_create(
            kind=JobKind.VM_CLONE,
            description=f"Clone {name} from a snapshot of {vm.name}",
            vm=vm,
            result_vm=clone,
            user=user,
            params={"snapshot_id": snapshot.pk, "from_status": vm.status},
            on_enqueue_failure=undo,
        )
        _record(
            job,
            clone,
            user,
            f"{actor(user)} asked to clone VM {name} from snapshot '{snapshot}' of {vm.name}.",
        )
        broadcast("vms")
        return clone


def snapshot_delete_space(snapshot: Snapshot) -> list[tuple[str, int, int]]:
    """Per storage domain short of room: (domain name, bytes needed, bytes free). Merging needs
    room for the original and the merged volume at once: up to the disk's whole chain again."""
    needed: dict[int, int] = {}
    domains = {}
    for sd in snapshot.disks.select_related("disk__storage_domain"):
        disk: Disk = sd.disk
        domains[disk.storage_domain_id] = disk.storage_domain
        needed[disk.storage_domain_id] = needed.get(disk.storage_domain_id, 0) + max(
            disk.actual_bytes, 1
        )
    # A local domain's room is that of the VM's host (each host has its own directory).
    free = {pk: free_bytes_on(domains[pk], snapshot.vm.host_id) for pk in needed}
    return [(domains[pk].name, need, free[pk]) for pk, need in needed.items() if need > free[pk]]


def snapshot_delete(*, vm_id: int, snapshot_id: int, user) -> Job:
    """Delete a snapshot, also while the VM runs: its volume is merged with its successor."""
    queue_ensure_available()
    with transaction.atomic():
        vm = _vm(vm_id)
        snapshot = _snapshot(vm, snapshot_id)
        _guard(vm, SnapshotAction.DELETE, snapshot)
        short = snapshot_delete_space(snapshot)
        if short:
            name, need, free = short[0]
            raise ActionRefused(
                f"Cannot delete snapshot '{snapshot}': merging its volumes needs {need / GiB:,.1f} GiB free on "
                f"storage domain {name}, and {free / GiB:,.1f} GiB are free."
            )
        previous = _lock_vm_if_down(vm)
        _set_snapshot_status(snapshot.pk, SnapshotStatus.OK, SnapshotStatus.LOCKED)
        job = job_create(
            kind=JobKind.SNAPSHOT_DELETE,
            description=f"Delete snapshot of {vm.name}",
            vm=vm,
            user=user,
            params={"snapshot_id": snapshot.pk, "from_status": previous},
            on_enqueue_failure=_undo(vm.pk, previous, snapshot.pk),
        )
        _record(
            job, vm, user, f"{actor(user)} asked to delete snapshot '{snapshot}' of VM {vm.name}."
        )
        return job
