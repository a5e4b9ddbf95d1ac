"""Services of a VM's CD-ROM drive and boot order: Run Once (a CD and a boot sequence for one
start; the next start uses the saved configuration) and Change CD (a running guest's CD
inserted or ejected live, and kept for its next start; a Down VM's saved CD at once).

Both check the request against their catalogue entry (`vms.actions`), refuse with a message and
change nothing when they cannot go ahead, record the Event and create the Job."""

from django.db import transaction
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind, Phase, Severity
from portal.kernel.tasks import job_create, queue_ensure_available
from storage.images import image_choose, image_unusable_on
from storage.models import IsoImage

from .actions import VM_ACTIONS
from .choices import BootSequence, HostStatus, VMStatus
from .models import VirtualMachine
from .services import disks_storage_check, host_status_locked, vm_begin, vm_load, vm_run_placement

RUN_ONCE = VM_ACTIONS["run_once"]
CHANGE_CD = VM_ACTIONS["change_cd"]


def boot_sequence_check(value) -> str:
    """A boot sequence as typed: one of the table's (`vms.choices.BootSequence`)."""
    if value not in BootSequence.values:
        raise ActionRefused("Choose a boot sequence from the list.")
    return value


def cd_reachable_check(vm: VirtualMachine, image: IsoImage | None, verb: str) -> None:
    """Refuse when the VM's host cannot read `image` (its ISO domain's pool is not active
    there)."""
    if image is None or vm.host is None:
        return
    why = image_unusable_on(image, vm.host)
    if why:
        raise ActionRefused(f"Cannot {verb} {vm.name}: {why}")


def vm_run_once(*, vm_id: int, user, cd_image=None, boot_sequence: str) -> Job:
    """Run Once: start a Down VM with the CD `cd_image` (an image id; None: an empty drive)
    and the boot sequence given, for this start only; its saved CD and boot sequence stay as
    they are and the next Run uses them."""
    boot_sequence = boot_sequence_check(boot_sequence)
    queue_ensure_available()
    with transaction.atomic():
        vm = vm_load(vm_id)
        verb = RUN_ONCE.verb
        image = None
        if cd_image not in (None, ""):
            image = image_choose(user, cd_image, data_center_id=vm.cluster.data_center_id)
        if boot_sequence.startswith("cdrom") and image is None:
            raise ActionRefused(
                f"Cannot {verb} {vm.name} from its CD-ROM: Attach CD is empty. Choose an image."
            )
        if vm.resume_memory_volume:
            raise ActionRefused(
                f"Cannot {verb} {vm.name} once: its next Run restores a snapshot's memory. Use Run."
            )
        if RUN_ONCE.allows(vm.status):  # else vm_begin refuses with the VM's status
            disks_storage_check(vm, verb)
            params = vm_run_placement(vm) or {}
            cd_reachable_check(vm, image, verb)
            cd_reachable_check(vm, vm.cd_image, verb)  # the saved one goes back afterwards
        else:
            params = {}
        label = image.name if image else "no CD"
        return vm_begin(
            vm=vm,
            action=RUN_ONCE.key,
            user=user,
            params={
                **params,
                "cd_image_id": image.pk if image else None,
                "boot_sequence": boot_sequence,
            },
            message=f"{actor(user)} asked to run VM {vm.name} once with {label}, booting from "
            f"{BootSequence(boot_sequence).label}.",
        )


def vm_change_cd(*, vm_id: int, user, cd_image=None) -> Job | None:
    """Change CD: put image `cd_image` (an id; None ejects) in the VM's CD-ROM drive. On a
    running VM a job changes it live and in the definition, and the VM keeps it for its next
    start; on a Down VM the saved CD changes at once (returns None then)."""
    with transaction.atomic():
        vm = (
            VirtualMachine.objects.select_for_update(of=("self",))
            .select_related("cluster", "host")
            .filter(pk=vm_id)
            .first()
        )
        if vm is None:
            raise ActionRefused("That virtual machine does not exist any more.")
        verb = CHANGE_CD.verb
        if not CHANGE_CD.allows(vm.status):
            raise ActionRefused(f"Cannot {verb} {vm.name}: the VM is {vm.get_status_display()}.")
        if vm.is_external:
            raise ActionRefused(
                f"Cannot {verb} {vm.name}: it was defined on its host outside Vireo; Import it "
                "first."
            )
        image = None
        if cd_image not in (None, ""):
            image = image_choose(user, cd_image, data_center_id=vm.cluster.data_center_id)
        label = f"image {image.name}" if image else "an empty drive (ejected)"
        if vm.status == VMStatus.DOWN:
            VirtualMachine.objects.filter(pk=vm.pk).update(cd_image=image)
            event_record(
                action=CHANGE_CD.key,
                phase=Phase.SUCCEEDED,
                user=user,
                vm=vm,
                message=f"{actor(user)} changed the CD of VM {vm.name} to {label}; it is "
                "used from its next start.",
            )
            broadcast(f"vm.{vm.pk}")
            return None
        if vm.host is None:
            raise ActionRefused(f"Cannot {verb} {vm.name}: it is not placed on any host.")
        host_status = host_status_locked(vm.host_id)
        if host_status != HostStatus.UP:
            now = HostStatus(host_status).label if host_status else "removed"
            raise ActionRefused(
                f"Cannot {verb} {vm.name}: its host {vm.host.name} is {now}. Nothing was changed."
            )
        if Job.objects.filter(vm=vm, kind=JobKind.VM_CHANGE_CD, status__in=Job.ACTIVE).exists():
            raise ActionRefused(
                f"Cannot {verb} {vm.name}: another Change CD on it is in progress. Nothing was "
                "changed."
            )
        cd_reachable_check(vm, image, verb)
        queue_ensure_available()
        job = job_create(
            kind=JobKind.VM_CHANGE_CD,
            description=f"{CHANGE_CD.label} {vm.name}",
            vm=vm,
            user=user,
            params={"from_status": vm.status, "cd_image_id": image.pk if image else None},
        )
        event_record(
            action=CHANGE_CD.key,
            phase=Phase.REQUESTED,
            user=user,
            vm=vm,
            job=job,
            message=f"{actor(user)} asked to change the CD of VM {vm.name} to {label}.",
        )
        return job


@receiver(pre_delete, sender=IsoImage, dispatch_uid="vms.cdrom.image_removed")
def image_removed(sender, instance: IsoImage, **kwargs) -> None:
    """An image that goes leaves the CD-ROM drives that held it empty (SET_NULL): each VM's
    Events say so."""
    for vm in VirtualMachine.objects.filter(cd_image=instance).select_related("cluster", "host"):
        event_record(
            action=CHANGE_CD.key,
            phase=Phase.SUCCEEDED,
            vm=vm,
            severity=Severity.WARNING,
            message=f"Image {instance.name} was removed from its ISO domain: the CD-ROM drive "
            f"of VM {vm.name} is empty from its next start.",
        )
        broadcast(f"vm.{vm.pk}")
