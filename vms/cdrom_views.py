"""The Run Once and Change CD windows (opened from the toolbar, the right-click menu and the
User Portal's cards through `vms:action`). Thin: the VM was resolved through the restricted
queryset by the caller; the images offered are those `storage.images` allows the user."""

from django.http import HttpResponseBadRequest

from portal.kernel.dialogs import form_window
from storage.images import images_offered

from . import cdrom
from .choices import BootSequence
from .forms import ChangeCDForm, RunOnceForm


def run_once_window(request, vms):
    """Run Once: Boot Options (Attach CD, Boot Sequence) for this start only."""
    if len(vms) != 1:
        return HttpResponseBadRequest("Run Once takes one virtual machine.")
    vm = vms[0]
    images = list(images_offered(request.user, data_center_id=vm.cluster.data_center_id))
    form = RunOnceForm(request.POST or None, vm=vm, images=images)
    return form_window(
        request,
        form,
        lambda data: cdrom.vm_run_once(
            vm_id=vm.pk,
            user=request.user,
            cd_image=data["cd_image"],
            boot_sequence=data["boot_sequence"],
        ),
        success=lambda _job: (
            f"Run Once: {vm.name} requested, booting from "
            f"{BootSequence(form.cleaned_data['boot_sequence']).label}."
        ),
        template="vms/_run_once_dialog.html",
        context={"vm": vm, "images": images},
    )


def change_cd_window(request, vms):
    """Change CD: an image of the data center's ISO domains (the guest tools ISO first), or
    [Eject]."""
    if len(vms) != 1:
        return HttpResponseBadRequest("Change CD takes one virtual machine.")
    vm = vms[0]
    images = list(images_offered(request.user, data_center_id=vm.cluster.data_center_id))
    form = ChangeCDForm(request.POST or None, vm=vm, images=images)

    def success(job) -> str:
        image = next((i for i in images if i.pk == form.cleaned_data["cd_image"]), None)
        if job is None:  # a Down VM: its saved CD changed at once
            return f"Change CD: {vm.name} will start with " + (
                f"image {image.name}." if image else "no CD."
            )
        what = f"image {image.name}" if image else "eject the CD"
        return f"Change CD: {what} on {vm.name} requested."

    return form_window(
        request,
        form,
        lambda data: cdrom.vm_change_cd(vm_id=vm.pk, user=request.user, cd_image=data["cd_image"]),
        success=success,
        template="vms/_change_cd_dialog.html",
        context={"vm": vm, "images": images, "current": vm.cd_image},
    )
