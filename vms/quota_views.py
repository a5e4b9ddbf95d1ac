"""Configure > Quota: each user's limits of VMs and disk space, and what they use now.
Only administrators who may configure the whole system (manage_roles on System) see it."""

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_http_methods
from guardian.conf import settings as guardian_settings

from accounts.access import admin_portal_required
from accounts.models import System
from accounts.permissions import can
from portal.kernel.dialogs import form_window
from portal.kernel.paging import page_get
from portal.kernel.search import SEARCH_MAX, SearchError, search_text
from storage.models import Disk

from .models import Quota, VirtualMachine
from .quotas import GiB, quota_limits, quota_set, quota_usage


def _may_configure(request) -> None:
    if not can(request.user, "manage_roles", System.get()):
        raise Http404


def _users():
    return (
        get_user_model()
        .objects.filter(is_active=True)
        .exclude(username=guardian_settings.ANONYMOUS_USER_NAME)
    )


@admin_portal_required
def quota_list(request):
    """Every user with their quota (their own or the default) and what they use."""
    _may_configure(request)
    vm_count = (
        VirtualMachine.objects.filter(created_by=OuterRef("pk"))
        .values("created_by")
        .annotate(n=Count("pk"))
        .values("n")
    )
    disk = (
        Disk.objects.filter(vm__created_by=OuterRef("pk"))
        .values("vm__created_by")
        .annotate(total=Sum("size_bytes"))
        .values("total")
    )
    own = Quota.objects.filter(user=OuterRef("pk"))
    users = _users().annotate(
        vm_count=Coalesce(Subquery(vm_count), 0),
        disk_bytes=Coalesce(Subquery(disk), 0),
        own_max_vms=Subquery(own.values("max_vms")),
        own_max_disk_gib=Subquery(own.values("max_disk_gib")),
    )
    q, search_error = request.GET.get("q", ""), ""
    try:
        q = search_text(q)
    except SearchError as exc:
        search_error, users = str(exc), users.none()
    if q and not search_error:
        users = users.filter(username__icontains=q)
    page = page_get(users.order_by("username"), request.GET.get("page"))
    defaults = (settings.VIREO_QUOTA_MAX_VMS, settings.VIREO_QUOTA_MAX_DISK_GIB)
    for u in page.object_list:
        u.disk_gib = u.disk_bytes / GiB
        if u.is_superuser:
            u.limit_vms = u.limit_disk_gib = None
        else:
            u.limit_vms = u.own_max_vms if u.own_max_vms is not None else defaults[0]
            u.limit_disk_gib = u.own_max_disk_gib if u.own_max_disk_gib is not None else defaults[1]
    context = {
        "tab": "configure",
        "page": page,
        "q": q[:SEARCH_MAX],
        "search_error": search_error,
        "default_vms": defaults[0],
        "default_disk_gib": defaults[1],
    }
    return render(request, "vms/quotas.html", context)


class QuotaForm(forms.Form):
    max_vms = forms.IntegerField(
        label="VMs", required=False, min_value=0, help_text="Empty: the default quota."
    )
    max_disk_gib = forms.IntegerField(
        label="Disk space (GiB)", required=False, min_value=0, help_text="Empty: the default quota."
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def quota_edit(request, pk: int):
    """The Edit Quota window of one user."""
    _may_configure(request)
    target = get_object_or_404(_users(), pk=pk)
    own = Quota.objects.filter(user=target).first()
    form = QuotaForm(
        request.POST or None,
        initial={"max_vms": own and own.max_vms, "max_disk_gib": own and own.max_disk_gib},
    )
    return form_window(
        request,
        form,
        lambda data: quota_set(
            user=request.user,
            target_user_id=target.pk,
            max_vms=data["max_vms"],
            max_disk_gib=data["max_disk_gib"],
        ),
        success=lambda _quota: f"Quota of {target} saved.",
        template="vms/_quota_dialog.html",
        context={"target": target, "usage": quota_usage(target), "limits": quota_limits(target)},
        redirect_to="vms:quotas",
    )
