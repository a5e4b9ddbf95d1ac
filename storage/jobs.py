"""What RQ workers do for disks."""

from django.db import transaction

import hypervisor
from portal.kernel.audit import event_record
from portal.kernel.live import broadcast
from portal.kernel.models import Job, Phase
from portal.kernel.tasks import job_handler
from vms.choices import VMStatus
from vms.jobs import disk_volumes_delete, vm_domain_spec, vm_settle
from vms.models import VirtualMachine
from vms.services import vm_status_move

from .choices import DiskStatus
from .models import Disk
from .services import _unlock


def _attach_failed(job: Job, message: str) -> None:
    _unlock(job.params["disk_id"])(job)
    vm_settle(job.vm_id)
    event_record(
        action="attach_disk",
        phase=Phase.FAILED,
        user=job.user,
        vm=job.vm,
        job=job,
        error=message,
        message=f"Failed to attach a disk to VM {job.vm.name if job.vm else ''}.",
    )


@job_handler("disk_attach", on_fail=_attach_failed)
def disk_attach_job(job: Job) -> None:
    vm = VirtualMachine.objects.select_related("host").get(pk=job.vm_id)
    disk = Disk.objects.select_related("host").get(pk=job.params["disk_id"])
    host = vm.host or disk.host
    with transaction.atomic():
        Disk.objects.filter(pk=disk.pk).update(
            vm=vm, target=job.params["target"], status=DiskStatus.OK
        )
        if vm.host_id is None:
            VirtualMachine.objects.filter(pk=vm.pk).update(host=host)
            vm.host = host
        # Redefine the domain with the disk; if the host refuses, the transaction rolls back.
        hypervisor.connect(host.uri).define_domain(vm_domain_spec(vm))
        vm_status_move(vm_id=vm.pk, from_status=VMStatus.IMAGE_LOCKED, to_status=VMStatus.DOWN)
        event_record(
            action="attach_disk",
            phase=Phase.SUCCEEDED,
            user=job.user,
            vm=vm,
            job=job,
            message=f"Disk {disk.alias} was attached to VM {vm.name}.",
        )
        broadcast("disks", f"vm.{vm.pk}")


def _remove_failed(job: Job, message: str) -> None:
    _unlock(job.params["disk_id"])(job)
    event_record(
        action="remove_disk",
        phase=Phase.FAILED,
        user=job.user,
        job=job,
        object_type="disk",
        error=message,
        message="Failed to remove a floating disk.",
    )


@job_handler("disk_remove", on_fail=_remove_failed)
def disk_remove_job(job: Job) -> None:
    disk = Disk.objects.select_related("host", "storage_domain").get(pk=job.params["disk_id"])
    disk_volumes_delete(disk)
    with transaction.atomic():
        event_record(
            action="remove_disk",
            phase=Phase.SUCCEEDED,
            user=job.user,
            job=job,
            object_type="disk",
            object_name=disk.alias,
            message=f"Disk {disk.alias} was removed.",
        )
        disk.delete()
        broadcast("disks")
