"""Services for disks: attaching a floating disk to a VM, removing a floating disk.

vms owns what is done to disks; storage below it holds the rows (StorageDomain, Disk) and the
storage tab's lists. A disk's actions lock and redefine its VM (Image Locked, the domain's
spec, settling after a failure), so they belong with the VM's own services and jobs; storage
imports nothing of vms, and vms imports storage's models and choices. (NetBox keeps VirtualDisk
next to VirtualMachine for the same reason.)"""

import string

from django.db import transaction

from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind, Phase
from portal.kernel.tasks import job_create, queue_ensure_available
from storage.choices import DiskStatus
from storage.models import Disk

from .choices import VMStatus
from .models import VirtualMachine
from .services import vm_status_move


def _floating_disk(disk_id: int) -> Disk:
    try:
        disk = (
            Disk.objects.select_for_update(of=("self",))  # host is nullable: an outer join
            .select_related("storage_domain", "host")
            .get(pk=disk_id)
        )
    except Disk.DoesNotExist:
        raise ActionRefused("That disk does not exist any more.") from None
    if disk.vm_id is not None:
        raise ActionRefused(
            f"Disk {disk.alias} is attached to a VM; only floating disks can be changed here."
        )
    if disk.status != DiskStatus.OK:
        raise ActionRefused(f"Disk {disk.alias} is {disk.get_status_display()}.")
    return disk


def _lock(disk: Disk) -> None:
    if not Disk.objects.filter(pk=disk.pk, status=DiskStatus.OK, vm__isnull=True).update(
        status=DiskStatus.LOCKED
    ):
        raise ActionRefused(f"Disk {disk.alias} was changed by another request. Nothing was done.")
    broadcast("disks")


def disk_unlock(disk_id: int):
    """The undo of a disk's lock: for a failed enqueue and for the job's on_fail."""

    def undo(job: Job, message: str = "") -> None:
        Disk.objects.filter(pk=disk_id, status=DiskStatus.LOCKED).update(status=DiskStatus.OK)
        broadcast("disks")

    return undo


def disk_attach(*, disk_id: int, vm_id: int, user) -> Job:
    """Attach a floating disk to a Down VM whose host holds the disk's volume."""
    queue_ensure_available()
    with transaction.atomic():
        disk = _floating_disk(disk_id)
        try:
            vm = VirtualMachine.objects.select_related("host", "cluster").get(pk=vm_id)
        except VirtualMachine.DoesNotExist:
            raise ActionRefused("That virtual machine does not exist any more.") from None
        if vm.status != VMStatus.DOWN:
            raise ActionRefused(
                f"Disks can be attached only while the VM is Down; {vm.name} is {vm.get_status_display()}."
            )
        if vm.cluster.data_center_id != disk.storage_domain.data_center_id:
            raise ActionRefused(f"Disk {disk.alias} is in another data center than {vm.name}.")
        if disk.host_id and vm.host_id and disk.host_id != vm.host_id:
            raise ActionRefused(
                f"Disk {disk.alias} is stored on host {disk.host.name} but {vm.name} runs on host {vm.host.name}."
            )
        used = set(vm.disks.values_list("target", flat=True))
        target = next(f"vd{c}" for c in string.ascii_lowercase if f"vd{c}" not in used)
        _lock(disk)
        # The VM is Image Locked while its definition changes, so it cannot be started meanwhile.
        if not vm_status_move(
            vm_id=vm.pk, from_status=VMStatus.DOWN, to_status=VMStatus.IMAGE_LOCKED
        ):
            raise ActionRefused(f"{vm.name} was changed by another request. Nothing was done.")

        def undo(job: Job) -> None:
            disk_unlock(disk.pk)(job)
            vm_status_move(vm_id=vm.pk, from_status=VMStatus.IMAGE_LOCKED, to_status=VMStatus.DOWN)

        job = job_create(
            kind=JobKind.DISK_ATTACH,
            description=f"Attach disk {disk.alias} to {vm.name}",
            vm=vm,
            user=user,
            params={"disk_id": disk.pk, "target": target},
            on_enqueue_failure=undo,
        )
        event_record(
            action="attach_disk",
            phase=Phase.REQUESTED,
            user=user,
            vm=vm,
            job=job,
            message=f"{actor(user)} asked to attach disk {disk.alias} to VM {vm.name}.",
        )
        return job


def disk_remove(*, disk_id: int, user) -> Job:
    """Remove a floating disk and its volume."""
    queue_ensure_available()
    with transaction.atomic():
        disk = _floating_disk(disk_id)
        _lock(disk)
        job = job_create(
            kind=JobKind.DISK_REMOVE,
            description=f"Remove disk {disk.alias}",
            user=user,
            params={"disk_id": disk.pk},
            on_enqueue_failure=disk_unlock(disk.pk),
        )
        event_record(
            action="remove_disk",
            phase=Phase.REQUESTED,
            user=user,
            job=job,
            object_type="disk",
            object_name=disk.alias,
            message=f"{actor(user)} asked to remove disk {disk.alias}.",
        )
        return job
