"""The disks' windows on the Storage tab: attach a floating disk to a VM, remove a floating
disk. vms owns disk actions (see vms/disks.py); the URLs stay in the storage namespace
(portal/urls.py puts them there)."""

from django import forms
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views.decorators.http import require_http_methods

from accounts.access import admin_portal_required
from portal.kernel.dialogs import confirm_window, form_window
from storage.choices import DiskStatus
from storage.models import Disk

from . import disks as services
from .choices import VMStatus
from .models import VirtualMachine


def _refusal(disk: Disk) -> str:
    """Why a window cannot act on this disk (the service refuses the same on OK), or ""."""
    if disk.vm_id is not None:
        return f"Disk {disk.alias} is attached to a VM; only floating disks can be changed here."
    if disk.status != DiskStatus.OK:
        return f"Disk {disk.alias} is {disk.get_status_display()}."
    return ""


class AttachForm(forms.Form):
    vm = forms.ModelChoiceField(
        label="Virtual Machine", queryset=VirtualMachine.objects.none(), empty_label=None
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def disk_attach(request, pk: int):
    """Attach a floating disk to a Down virtual machine."""
    disk = get_object_or_404(
        Disk.objects.select_related("storage_domain").restrict(request.user, "edit_disk"), pk=pk
    )
    form = AttachForm(request.POST or None)
    form.fields["vm"].queryset = VirtualMachine.objects.filter(
        status=VMStatus.DOWN, cluster__data_center_id=disk.storage_domain.data_center_id
    ).restrict(request.user, "edit_vm")
    refused = _refusal(disk) if request.method == "GET" else ""
    return form_window(
        request,
        form,
        lambda data: services.disk_attach(disk_id=disk.pk, vm_id=data["vm"].pk, user=request.user),
        success=lambda _job: f"Attaching {disk.alias}.",
        template="storage/_attach_dialog.html",
        context={"disk": disk, "error": refused or None, "refused": refused},
        redirect_to="storage:disks",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def disk_remove(request, pk: int):
    """Remove a floating disk (confirmation window)."""
    disk = get_object_or_404(Disk.objects.restrict(request.user, "edit_disk"), pk=pk)
    refused = _refusal(disk)
    return confirm_window(
        request,
        lambda: services.disk_remove(disk_id=disk.pk, user=request.user),
        success=lambda _job: f"Removing disk {disk.alias}.",
        template="storage/_remove_dialog.html",
        context={"disk": disk, "error": refused or None, "refused": refused},
        redirect_to="storage:disks",
    )


# Included by portal/urls.py into the "storage" namespace, next to storage/urls.py's lists.
disk_urlpatterns = [
    path("disks/<id:pk>/attach/", disk_attach, name="disk_attach"),
    path("disks/<id:pk>/remove/", disk_remove, name="disk_remove"),
]
