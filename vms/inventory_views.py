"""The windows of the Data Centers, Clusters and Hosts tabs: New, Edit and Remove, and a
host's Maintenance, Activate and Confirm 'Host has been Rebooted'. Each resolves its object through the permission-restricted
queryset (404 when out of reach) and hands one service call to `form_window` or
`confirm_window`."""

from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_http_methods

from accounts.access import admin_portal_required
from accounts.models import System
from accounts.permissions import can
from portal.kernel.dialogs import confirm_window, form_window

from . import high_availability, inventory
from .actions import CLUSTER_ACTIONS, DATACENTER_ACTIONS, HOST_ACTIONS
from .choices import HostStatus
from .forms import DataCenterForm, EditHostForm, NewClusterForm
from .models import Cluster, DataCenter, Host

CONFIRM = "vms/_confirm_dialog.html"


def _confirm(request, entry, obj, call, success, redirect_to: str):
    """A confirmation window of a catalogue entry on one object (OK / Cancel); `success`: the
    message, or a function of the call's result giving it."""
    return confirm_window(
        request,
        call,
        success=success if callable(success) else lambda _result: success,
        template=CONFIRM,
        context={"entry": entry, "obj": obj},
        redirect_to=redirect_to,
    )


# -- data centers --------------------------------------------------------------------------


@admin_portal_required
@require_http_methods(["GET", "POST"])
def datacenter_new(request):
    """The New Data Center window: name and description."""
    if not can(request.user, DATACENTER_ACTIONS["create"].permission, System.get()):
        raise Http404
    form = DataCenterForm(request.POST or None)
    return form_window(
        request,
        form,
        lambda data: inventory.datacenter_create(
            user=request.user, name=data["name"], description=data["description"]
        ),
        success=lambda dc: f"Data center {dc.name} created.",
        template="vms/_datacenter_dialog.html",
        context={"entry": DATACENTER_ACTIONS["create"], "post_url": request.path},
        redirect_to="vms:datacenters",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def datacenter_edit(request, pk: int):
    """The Edit Data Center window."""
    entry = DATACENTER_ACTIONS["edit"]
    dc = get_object_or_404(DataCenter.objects.restrict(request.user, entry.permission), pk=pk)
    initial = {"name": dc.name, "description": dc.description}
    form = DataCenterForm(request.POST or None, initial=initial)
    return form_window(
        request,
        form,
        lambda data: inventory.datacenter_update(
            datacenter_id=dc.pk,
            user=request.user,
            name=data["name"],
            description=data["description"],
        ),
        success=lambda saved: f"Data center {saved.name} saved.",
        template="vms/_datacenter_dialog.html",
        context={"entry": entry, "datacenter": dc, "post_url": request.path},
        redirect_to="vms:datacenters",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def datacenter_remove(request, pk: int):
    """The Remove Data Center(s) window, for one data center."""
    entry = DATACENTER_ACTIONS["remove"]
    dc = get_object_or_404(DataCenter.objects.restrict(request.user, entry.permission), pk=pk)
    return _confirm(
        request,
        entry,
        dc,
        lambda: inventory.datacenter_remove(datacenter_id=dc.pk, user=request.user),
        f"Data center {dc.name} removed.",
        "vms:datacenters",
    )


# -- clusters -----------------------------------------------------------------------------


@admin_portal_required
@require_http_methods(["GET", "POST"])
def cluster_new(request):
    """The New Cluster window: data center, name, description and the VM settings."""
    entry = CLUSTER_ACTIONS["create"]
    data_centers = DataCenter.objects.restrict(request.user, entry.permission)
    if not data_centers.exists():
        raise Http404
    form = NewClusterForm(request.POST or None, data_centers=data_centers)
    return form_window(
        request,
        form,
        lambda data: inventory.cluster_create(
            user=request.user,
            name=data["name"],
            data_center_id=data["data_center"].pk,
            description=data["description"],
            shutdown_reason_enabled=data["shutdown_reason_enabled"],
            shutdown_timeout=data["shutdown_timeout"],
            max_concurrent_migrations=data["max_concurrent_migrations"],
        ),
        success=lambda cluster: f"Cluster {cluster.name} created.",
        template="vms/_cluster_dialog.html",
        context={"entry": entry, "post_url": request.path},
        redirect_to="vms:clusters",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def cluster_remove(request, pk: int):
    """The Remove Cluster(s) window, for one cluster."""
    entry = CLUSTER_ACTIONS["remove"]
    cluster = get_object_or_404(Cluster.objects.restrict(request.user, entry.permission), pk=pk)
    return _confirm(
        request,
        entry,
        cluster,
        lambda: inventory.cluster_remove(cluster_id=cluster.pk, user=request.user),
        f"Cluster {cluster.name} removed.",
        "vms:clusters",
    )


# -- hosts --------------------------------------------------------------------------------


def _host(request, key: str) -> tuple:
    entry = HOST_ACTIONS[key]
    return entry, Host.objects.restrict(request.user, entry.permission)


@admin_portal_required
@require_http_methods(["GET", "POST"])
def host_edit(request, pk: int):
    """The Edit Host window: name and cluster (the host's own, or one the user may add hosts
    to; the service moves it only in Maintenance)."""
    entry, hosts = _host(request, "edit")
    host = get_object_or_404(hosts.select_related("cluster"), pk=pk)
    clusters = Cluster.objects.filter(
        Q(pk=host.cluster_id)
        | Q(pk__in=Cluster.objects.restrict(request.user, HOST_ACTIONS["add_host"].permission))
    )
    initial = {"name": host.name, "cluster": host.cluster_id}
    initial.update(
        {
            field: getattr(host, field)
            for field in ("pm_enabled", "pm_agent", "pm_address", "pm_user", "pm_options")
        }
    )
    form = EditHostForm(request.POST or None, clusters=clusters, initial=initial)
    return form_window(
        request,
        form,
        lambda data: inventory.host_update(
            host_id=host.pk,
            user=request.user,
            name=data["name"],
            cluster_id=data["cluster"].pk,
            power_management=form.power_management(),
        ),
        success=lambda saved: f"Host {saved.name} saved.",
        template="vms/_host_edit_dialog.html",
        context={"entry": entry, "host": host},
        redirect_to="vms:hosts",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def host_remove(request, pk: int):
    """The Remove Host(s) window, for one host (in Maintenance)."""
    entry, hosts = _host(request, "remove")
    host = get_object_or_404(hosts, pk=pk)
    return _confirm(
        request,
        entry,
        host,
        lambda: inventory.host_remove(host_id=host.pk, user=request.user),
        f"Host {host.name} removed.",
        "vms:hosts",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def host_maintenance(request, pk: int):
    """The Maintenance Host(s) window."""
    entry, hosts = _host(request, "maintenance")
    host = get_object_or_404(hosts, pk=pk)
    return _confirm(
        request,
        entry,
        host,
        lambda: inventory.host_maintenance(host_id=host.pk, user=request.user),
        lambda moved: (
            f"Host {host.name} was moved to Maintenance."
            if moved.status == HostStatus.MAINTENANCE
            else f"Host {host.name} is Preparing For Maintenance: its VMs are being migrated away."
        ),
        "vms:hosts",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def host_activate(request, pk: int):
    """The Activate Host(s) window."""
    entry, hosts = _host(request, "activate")
    host = get_object_or_404(hosts, pk=pk)
    return _confirm(
        request,
        entry,
        host,
        lambda: inventory.host_activate(host_id=host.pk, user=request.user),
        f"Activating host {host.name}.",
        "vms:hosts",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def host_confirm_rebooted(request, pk: int):
    """The Confirm 'Host has been Rebooted' window (a Non Responsive host): its VMs go Down
    and the Highly Available ones restart elsewhere."""
    entry, hosts = _host(request, "confirm_rebooted")
    host = get_object_or_404(hosts, pk=pk)
    return _confirm(
        request,
        entry,
        host,
        lambda: high_availability.host_reboot_confirm(host_id=host.pk, user=request.user),
        lambda moved: (
            f"Host {host.name} was confirmed rebooted: {len(moved)} VM"
            f"{'s' if len(moved) != 1 else ''} marked Down; the Highly Available ones are being "
            "restarted elsewhere."
        ),
        "vms:hosts",
    )
