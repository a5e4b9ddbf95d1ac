"""The Storage tab's Disks: every disk with its VM or floating. The storage domains' list
(its toolbar reads vms' action catalogue) and every window of the tab are vms'
(vms/domain_views.py, vms/disk_views.py): vms owns the actions, which act on hosts."""

from django.shortcuts import render

from accounts.access import admin_portal_required
from portal.kernel.paging import page_get

from . import selectors


@admin_portal_required
def disk_list(request):
    """Every disk with its VM, or "floating"."""
    floating = bool(request.GET.get("floating"))
    page = page_get(selectors.disk_list(request.user, floating=floating), request.GET.get("page"))
    template = "storage/_disk_table.html" if request.htmx else "storage/disk_list.html"
    context = {"page": page, "tab": "storage", "subtab": "disks", "floating": floating}
    return render(request, template, context)
