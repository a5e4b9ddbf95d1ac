"""What RQ workers do for Run Once and Change CD (services: `vms.cdrom`).

Run Once starts the domain from a one-time definition (the saved one with the CD and boot
sequence chosen for this start), then at once puts the saved definition back: a running
domain does not read its persistent definition, so the next start (and Vireo's own Run, which
redefines a Down VM from the inventory anyway) uses the saved configuration."""

from dataclasses import replace

from django.utils import timezone

import hypervisor
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind
from portal.kernel.tasks import Outcome, job_progress
from storage.models import IsoImage

from .choices import BootSequence, VMStatus, boot_sequence_devices
from .jobs import (
    RUNNING_STATES,
    START_TIMEOUT,
    JobError,
    cdrom_spec,
    networks_ensure,
    vm_action_handler,
    vm_define_for_start,
    vm_domain_spec,
    vm_job_done,
    vm_job_load,
    vm_plugged_nics,
    vm_run_failed,
)
from .models import VirtualMachine


def _image(job: Job) -> IsoImage | None:
    """The image a job was asked to put in the drive (None: none); JobError if it went."""
    image_id = job.params.get("cd_image_id")
    if image_id is None:
        return None
    image = IsoImage.objects.select_related("domain").filter(pk=image_id).first()
    if image is None:
        raise JobError("The image chosen was removed meanwhile.")
    return image


@vm_action_handler(JobKind.VM_RUN_ONCE, "run_once", on_fail=vm_run_failed)
def vm_run_once_job(job: Job) -> Outcome:
    vm, conn = vm_job_load(job)
    uuid = str(vm.uuid)
    image = _image(job)
    sequence = job.params.get("boot_sequence") or vm.boot_sequence
    job_progress(job, 10, "Starting")
    networks_ensure(conn, [nic.profile.network for nic in vm_plugged_nics(vm)])
    vm_define_for_start(job, conn, vm)  # the saved definition (and a move to another host)
    saved = vm_domain_spec(vm)
    once = replace(saved, cdrom=cdrom_spec(image), boot=boot_sequence_devices(sequence))
    label = f"image {image.name}" if image else "an empty CD-ROM drive"
    job_progress(
        job, 20, f"Starting once with {label}, booting from {BootSequence(sequence).label}"
    )
    conn.start_once(once, saved)
    if conn.wait_for_state(uuid, RUNNING_STATES, timeout=START_TIMEOUT) is None:
        raise JobError(f"{vm.name} did not reach running within {START_TIMEOUT:.0f} seconds.")
    return vm_job_done(
        job,
        vm,
        VMStatus.UP,
        f"VM {vm.name} was started once on host {vm.host.name} with {label}, booting from "
        f"{BootSequence(sequence).label}; its next start uses its saved configuration.",
        started_at=timezone.now(),
    )


@vm_action_handler(JobKind.VM_CHANGE_CD, "change_cd")
def vm_change_cd_job(job: Job) -> Outcome:
    vm, conn = vm_job_load(job)
    image = _image(job)
    if image is None:
        job_progress(job, 30, "Ejecting the CD")
    else:
        job_progress(job, 30, f"Inserting image {image.name}")
    try:
        conn.change_cd(str(vm.uuid), cdrom_spec(image))
    except hypervisor.DomainNotFound:
        raise JobError(f"{vm.name} is not defined on host {vm.host.name} any more.") from None

    def last_writes() -> None:  # the VM keeps the CD for its next start
        VirtualMachine.objects.filter(pk=vm.pk).update(cd_image=image)
        broadcast(f"vm.{vm.pk}")

    what = f"image {image.name} was inserted" if image else "the CD was ejected"
    return Outcome(
        message=f"Change CD on VM {vm.name}: {what}.",
        last_writes=last_writes,
    )
