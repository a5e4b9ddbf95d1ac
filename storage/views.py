"""The Storage tab: storage domains and, under Disks, every disk with its VM or floating.
The disks' windows (attach, remove) are vms' (vms/disk_views.py): vms owns disk actions."""

from django.shortcuts import render

from accounts.access import admin_portal_required
from accounts.permissions import restrict

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
