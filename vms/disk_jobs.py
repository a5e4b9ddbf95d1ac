"""What RQ workers do for disks. Each handler returns its Succeeded message and last writes;
the job frame records the Events and ends the Job."""

import hypervisor
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind
from portal.kernel.tasks import Outcome, job_handler
from storage.choices import DiskStatus
from storage.models import Disk

from .choices import VMStatus
from .disks import disk_unlock
from .jobs import disk_volumes_delete, vm_domain_spec, vm_settle
from .models import VirtualMachine
from .services import vm_status_move


def _attach_failed(job: Job, message: str) -> None:
    disk_unlock(job.params["disk_id"])(job)
    vm_settle(job.vm_id)


@job_handler(
    JobKind.DISK_ATTACH,
    action="attach_disk",
    failed=lambda job, vm: f"Failed to attach a disk to VM {vm.name if vm else ''}.",
    on_fail=_attach_failed,
)
def disk_attach_job(job: Job) -> Outcome:
    vm = VirtualMachine.objects.select_related("host").get(pk=job.vm_id)
    disk = Disk.objects.select_related("host").get(pk=job.params["disk_id"])
    host = vm.host or disk.host

    def last_writes() -> None:
        Disk.objects.filter(pk=disk.pk).update(
            vm=vm, target=job.params["target"], status=DiskStatus.OK
        )
        if vm.host_id is None:
            VirtualMachine.objects.filter(pk=vm.pk).update(host=host)
            vm.host = host
        # Redefine the domain with the disk; if the host refuses, the transaction rolls back.
        hypervisor.connect(host.uri).define_domain(vm_domain_spec(vm))
        vm_status_move(vm_id=vm.pk, from_status=VMStatus.IMAGE_LOCKED, to_status=VMStatus.DOWN)
        broadcast("disks", f"vm.{vm.pk}")

    return Outcome(
        message=f"Disk {disk.alias} was attached to VM {vm.name}.",
        event={"vm": vm},
        last_writes=last_writes,
    )


def _remove_failed(job: Job, message: str) -> None:
    disk_unlock(job.params["disk_id"])(job)


@job_handler(
    JobKind.DISK_REMOVE,
    action="remove_disk",
    object_type="disk",
    failed=lambda job, vm: "Failed to remove a floating disk.",
    on_fail=_remove_failed,
)
def disk_remove_job(job: Job) -> Outcome:
    disk = Disk.objects.select_related("host", "storage_domain").get(pk=job.params["disk_id"])
    disk_volumes_delete(disk)

    def last_writes() -> None:
        disk.delete()
        broadcast("disks")

    return Outcome(
        message=f"Disk {disk.alias} was removed.",
        event={"object_name": disk.alias},
        last_writes=last_writes,
    )
