"""The Storage tab: storage domains and, under Disks, every disk with its VM or floating."""

from django import forms
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_http_methods

from accounts.access import admin_portal_required
from accounts.permissions import restrict
from portal.kernel.dialogs import modal_done
from portal.kernel.errors import ActionRefused
from vms.choices import VMStatus
from vms.models import VirtualMachine

from . import services
from .choices import DiskStatus
from .models import Disk, StorageDomain


@admin_portal_required
def domain_list(request):
    """Storage domains with type, status and total / used / free."""
    domains = restrict(
        request.user, StorageDomain.objects.select_related("data_center"), "view_storage"
    )
    template = "storage/_domain_table.html" if request.htmx else "storage/domain_list.html"
    return render(request, template, {"domains": domains, "tab": "storage", "subtab": "domains"})


@admin_portal_required
def disk_list(request):
    """Every disk with its VM, or "floating"."""
    disks = restrict(
        request.user, Disk.objects.select_related("vm", "storage_domain", "host"), "view"
    )
    if request.GET.get("floating"):
        disks = disks.filter(vm__isnull=True)
    template = "storage/_disk_table.html" if request.htmx else "storage/disk_list.html"
    return render(
        request,
        template,
        {
            "disks": disks,
            "tab": "storage",
            "subtab": "disks",
            "floating": bool(request.GET.get("floating")),
        },
    )


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
        restrict(request.user, Disk.objects.select_related("storage_domain"), "edit_disk"), pk=pk
    )
    form = AttachForm(request.POST or None)
    form.fields["vm"].queryset = restrict(
        request.user,
        VirtualMachine.objects.filter(
            status=VMStatus.DOWN, cluster__data_center_id=disk.storage_domain.data_center_id
        ),
        "edit_vm",
    )
    refused = _refusal(disk) if request.method == "GET" else ""
    error = refused or None
    if request.method == "POST" and form.is_valid():
        try:
            services.disk_attach(
                disk_id=disk.pk, vm_id=form.cleaned_data["vm"].pk, user=request.user
            )
        except ActionRefused as exc:
            error = str(exc)
        else:
            return modal_done(
                request, [("success", f"Attaching {disk.alias}.")], redirect_to="storage:disks"
            )
    return render(
        request,
        "storage/_attach_dialog.html",
        {"disk": disk, "form": form, "error": error, "refused": refused},
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def disk_remove(request, pk: int):
    """Remove a floating disk (confirmation window)."""
    disk = get_object_or_404(restrict(request.user, Disk.objects.all(), "edit_disk"), pk=pk)
    if request.method == "POST":
        try:
            services.disk_remove(disk_id=disk.pk, user=request.user)
        except ActionRefused as exc:
            return modal_done(request, [("error", str(exc))], redirect_to="storage:disks")
        return modal_done(
            request, [("success", f"Removing disk {disk.alias}.")], redirect_to="storage:disks"
        )
    refused = _refusal(disk)
    return render(
        request,
        "storage/_remove_dialog.html",
        {"disk": disk, "error": refused or None, "refused": refused},
    )
