"""The Storage tab: storage domains and, under Disks, every disk with its VM or floating.
The disks' windows (attach, remove) are vms' (vms/disk_views.py): vms owns disk actions."""

from django.shortcuts import render

from accounts.access import admin_portal_required
from portal.kernel.paging import page_get

from . import selectors


@admin_portal_required
def domain_list(request):
    """Storage domains with type, status and total / used / free."""
    page = page_get(selectors.domain_list(request.user), request.GET.get("page"))
    template = "storage/_domain_table.html" if request.htmx else "storage/domain_list.html"
    return render(request, template, {"page": page, "tab": "storage", "subtab": "domains"})


@admin_portal_required
def disk_list(request):
    """Every disk with its VM, or "floating"."""
    floating = bool(request.GET.get("floating"))
    page = page_get(selectors.disk_list(request.user, floating=floating), request.GET.get("page"))
    template = "storage/_disk_table.html" if request.htmx else "storage/disk_list.html"
    context = {"page": page, "tab": "storage", "subtab": "disks", "floating": floating}
    return render(request, template, context)
