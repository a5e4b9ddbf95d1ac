"""A cluster's Affinity Groups (Clusters tab) and a VM's Affinity Groups sub-tab, with the New,
Edit and Remove windows. Views are thin: the cluster or group through the restricted queryset
(404 when out of reach), one service call through `form_window` / `confirm_window`."""

from django.db.models import Prefetch
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_http_methods

from accounts.access import admin_portal_required
from accounts.permissions import can
from portal.kernel.converters import parse_id
from portal.kernel.dialogs import confirm_window, form_window
from portal.kernel.paging import page_get

from . import affinity as services
from .actions import AFFINITY_GROUP_ACTIONS
from .forms import AffinityGroupForm
from .models import AffinityGroup, Cluster, Host, VirtualMachine
from .selectors import vms_visible

MANIPULATE = AFFINITY_GROUP_ACTIONS["create"].permission  # manipulate_affinity_groups


def groups_listed(groups):
    """Groups with their VMs' and hosts' names (three queries for a page of groups)."""
    return groups.prefetch_related(
        Prefetch("vms", queryset=VirtualMachine.objects.only("pk", "name").order_by("name")),
        Prefetch("hosts", queryset=Host.objects.only("pk", "name").order_by("name")),
    ).order_by("name")


def affinity_context(request, vm) -> dict:
    """The VM's Affinity Groups sub-tab: the groups it belongs to (paged) and whether the user
    may make, change and remove groups in its cluster."""
    page = page_get(groups_listed(vm.affinity_groups.all()), request.GET.get("page"))
    return {
        "group_page": page,
        "group_cluster": vm.cluster,
        "can_manipulate": can(request.user, MANIPULATE, vm.cluster),
    }


def cluster_affinity_context(request, cluster: Cluster) -> dict:
    """A cluster's Affinity Groups (its page, and the sub-tab of its details pane): every group
    of the cluster (paged), and whether the user may make, change and remove them."""
    page = page_get(groups_listed(cluster.affinity_groups.all()), request.GET.get("page"))
    return {
        "group_page": page,
        "group_cluster": cluster,
        "can_manipulate": can(request.user, MANIPULATE, cluster),
        "live": True,  # the list follows the cluster's topic (the VM's pane follows the VM's)
    }


@admin_portal_required
def affinity_groups(request, pk: int):
    """A cluster's Affinity Groups: every group of the cluster (paged), New / Edit / Remove."""
    cluster = get_object_or_404(Cluster.objects.restrict(request.user, "view"), pk=pk)
    context = {"tab": "clusters", "cluster": cluster, **cluster_affinity_context(request, cluster)}
    template = "vms/_affinity_groups.html" if request.htmx else "vms/affinity_group_list.html"
    return render(request, template, context)


def _form(request, cluster: Cluster, initial: dict) -> AffinityGroupForm:
    return AffinityGroupForm(
        request.POST or None,
        initial=initial,
        vms=list(cluster.vms.only("pk", "name").order_by("name")),
        hosts=list(cluster.hosts.only("pk", "name").order_by("name")),
        visible_vms=vms_visible(request.user),
        visible_hosts=Host.objects.restrict(request.user, "view"),
    )


def _values(data: dict) -> dict:
    return {
        "name": data["name"],
        "description": data["description"],
        "vm_rule": data["vm_rule"],
        "vm_enforcing": data["vm_enforcing"],
        "host_rule": data["host_rule"],
        "host_enforcing": data["host_enforcing"],
        "vm_ids": data["vms"],
        "host_ids": data["hosts"],
    }


@admin_portal_required
@require_http_methods(["GET", "POST"])
def affinity_group_new(request, pk: int):
    """The New Affinity Group window (manipulate_affinity_groups on the cluster); from a VM's
    sub-tab (`?vm=<id>`) that VM is selected."""
    entry = AFFINITY_GROUP_ACTIONS["create"]
    cluster = get_object_or_404(Cluster.objects.restrict(request.user, entry.permission), pk=pk)
    vm_id = parse_id(request.GET.get("vm"))
    initial = {"vms": [vm_id]} if vm_id and cluster.vms.filter(pk=vm_id).exists() else {}
    form = _form(request, cluster, initial)
    return form_window(
        request,
        form,
        lambda data: services.affinity_group_create(
            user=request.user, cluster_id=cluster.pk, **_values(data)
        ),
        success=lambda group: f"Affinity group {group.name} created in cluster {cluster.name}.",
        template="vms/_affinity_group_dialog.html",
        context={"entry": entry, "cluster": cluster, "post_url": request.get_full_path()},
        redirect_to="vms:clusters",
    )


def _group(request, key: str, gid: int) -> tuple:
    entry = AFFINITY_GROUP_ACTIONS[key]
    clusters = Cluster.objects.restrict(request.user, entry.permission)
    group = (
        AffinityGroup.objects.select_related("cluster")
        .filter(pk=gid, cluster__in=clusters.values("pk"))
        .first()
    )
    if group is None:
        raise Http404
    return entry, group


@admin_portal_required
@require_http_methods(["GET", "POST"])
def affinity_group_edit(request, gid: int):
    """The Edit Affinity Group window."""
    entry, group = _group(request, "edit", gid)
    initial = {
        "name": group.name,
        "description": group.description,
        "vm_rule": group.vm_rule,
        "vm_enforcing": group.vm_enforcing,
        "host_rule": group.host_rule,
        "host_enforcing": group.host_enforcing,
        "vms": list(group.vms.values_list("pk", flat=True)),
        "hosts": list(group.hosts.values_list("pk", flat=True)),
    }
    form = _form(request, group.cluster, initial)
    return form_window(
        request,
        form,
        lambda data: services.affinity_group_update(
            user=request.user, group_id=group.pk, **_values(data)
        ),
        success=lambda saved: f"Affinity group {saved.name} saved.",
        template="vms/_affinity_group_dialog.html",
        context={
            "entry": entry,
            "cluster": group.cluster,
            "group": group,
            "post_url": request.path,
        },
        redirect_to="vms:clusters",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def affinity_group_remove(request, gid: int):
    """The Remove Affinity Group(s) window, for one group."""
    entry, group = _group(request, "remove", gid)
    return confirm_window(
        request,
        lambda: services.affinity_group_remove(user=request.user, group_id=group.pk),
        success=lambda name: f"Affinity group {name} removed.",
        template="vms/_affinity_group_remove.html",
        context={"entry": entry, "group": group},
        redirect_to="vms:clusters",
    )
