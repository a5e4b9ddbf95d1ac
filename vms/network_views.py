"""Logical networks (Data Centers tab, a data center's Networks), their vNIC profiles, and a
VM's Network Interfaces windows. Views are thin: the object through the restricted queryset
(404 when out of reach), one service call through `form_window` / `confirm_window`."""

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_http_methods

from accounts.access import admin_portal_required
from accounts.permissions import can, may_read_permissions, permitted_actions
from portal.kernel.dialogs import confirm_window, form_window
from portal.kernel.paging import page_get

from . import networks as services
from . import selectors
from .actions import NETWORK_ACTIONS, NIC_ACTIONS, VNIC_PROFILE_ACTIONS
from .choices import NetworkStatus
from .forms import NetworkForm, NicForm, VnicProfileForm
from .models import DataCenter, Network, VnicProfile
from .selectors import vms_visible

CONFIGURE = NETWORK_ACTIONS["create"].permission  # configure_network


def _network_values(data: dict) -> dict:
    return {
        "name": data["name"],
        "description": data["description"],
        "vm_network": data["vm_network"],
        "kind": data["kind"],
        "bridge": data["bridge"],
        "vlan": data["vlan"],
        "ipv4": data["ipv4"],
    }


def _network_page(request, dc: DataCenter | None, tab: str):
    page = page_get(selectors.network_list(request.user, dc), request.GET.get("page"))
    networks = list(page.object_list)
    context = {
        "tab": tab,
        "dc": dc,
        "page": page,
        "networks": networks,
        "can_create": dc is not None and can(request.user, CONFIGURE, dc),
        "configurable": {
            pk
            for pk, held in permitted_actions(request.user, networks, [CONFIGURE]).items()
            if held
        },
        "readable": {n.pk for n in networks if may_read_permissions(request.user, n)},
    }
    template = "vms/_network_table.html" if request.htmx else "vms/network_list.html"
    return render(request, template, context)


@admin_portal_required
def network_list(request, pk: int):
    """A data center's Networks: its logical networks (paged), New / Edit / Remove, and the
    vNIC profiles of the one selected."""
    dc = get_object_or_404(DataCenter.objects.restrict(request.user, "view"), pk=pk)
    return _network_page(request, dc, "datacenters")


@admin_portal_required
def network_list_all(request):
    """The Networks tab: every logical network the user may see, in every data center, so a
    NetworkAdmin of one network reaches it without a role on its data center."""
    return _network_page(request, None, "networks")


@admin_portal_required
def network_profiles(request, pk: int):
    """The vNIC Profiles of one logical network (paged), with New / Edit / Remove."""
    network = get_object_or_404(Network.objects.restrict(request.user, "view"), pk=pk)
    page = page_get(selectors.profile_list(request.user, network), request.GET.get("page"))
    profiles = list(page.object_list)
    context = {
        "network": network,
        "page": page,
        "profiles": profiles,
        "can_configure": can(request.user, CONFIGURE, network),
        "readable": {p.pk for p in profiles if may_read_permissions(request.user, p)},
    }
    return render(request, "vms/_vnic_profiles.html", context)


@admin_portal_required
@require_http_methods(["GET", "POST"])
def network_new(request, pk: int):
    """The New Logical Network window (configure_network on the data center)."""
    dc = get_object_or_404(DataCenter.objects.restrict(request.user, CONFIGURE), pk=pk)
    form = NetworkForm(request.POST or None)
    return form_window(
        request,
        form,
        lambda data: services.network_create(
            user=request.user, data_center_id=dc.pk, **_network_values(data)
        ),
        success=lambda network: f"Creating logical network {network.name}.",
        template="vms/_network_dialog.html",
        context={"dc": dc, "entry": NETWORK_ACTIONS["create"]},
        redirect_to="vms:datacenters",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def network_edit(request, pk: int):
    """The Edit Logical Network window."""
    network = get_object_or_404(
        Network.objects.select_related("data_center").restrict(request.user, CONFIGURE), pk=pk
    )
    initial = {
        "name": network.name,
        "description": network.description,
        "vm_network": network.vm_network,
        "kind": network.kind,
        "bridge": network.bridge,
        "vlan": network.vlan,
        "ipv4": network.ipv4,
    }
    form = NetworkForm(request.POST or None, initial=initial)
    return form_window(
        request,
        form,
        lambda data: services.network_edit(
            network_id=network.pk, user=request.user, **_network_values(data)
        ),
        success=lambda saved: f"Logical network {saved.name} saved.",
        template="vms/_network_dialog.html",
        context={"dc": network.data_center, "network": network, "entry": NETWORK_ACTIONS["edit"]},
        redirect_to="vms:datacenters",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def network_remove(request, pk: int):
    """Remove a logical network (confirmation window)."""
    network = get_object_or_404(Network.objects.restrict(request.user, CONFIGURE), pk=pk)
    return confirm_window(
        request,
        lambda: services.network_remove(network_id=network.pk, user=request.user),
        success=lambda _job: f"Removing logical network {network.name}.",
        template="vms/_network_remove.html",
        context={"network": network, "entry": NETWORK_ACTIONS["remove"]},
        redirect_to="vms:datacenters",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def vnic_profile_new(request, pk: int):
    """The New VM Interface Profile window (configure_network on the network)."""
    network = get_object_or_404(Network.objects.restrict(request.user, CONFIGURE), pk=pk)
    form = VnicProfileForm(request.POST or None)
    return form_window(
        request,
        form,
        lambda data: services.vnic_profile_create(network_id=network.pk, user=request.user, **data),
        success=lambda profile: f"vNIC profile {profile.name} created.",
        template="vms/_vnic_profile_dialog.html",
        context={"network": network, "entry": VNIC_PROFILE_ACTIONS["create"]},
        redirect_to="vms:datacenters",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def vnic_profile_edit(request, pk: int):
    """The Edit VM Interface Profile window."""
    profile = get_object_or_404(
        VnicProfile.objects.select_related("network").restrict(request.user, CONFIGURE), pk=pk
    )
    initial = {
        "name": profile.name,
        "description": profile.description,
        "port_mirroring": profile.port_mirroring,
    }
    form = VnicProfileForm(request.POST or None, initial=initial)
    return form_window(
        request,
        form,
        lambda data: services.vnic_profile_edit(profile_id=profile.pk, user=request.user, **data),
        success=lambda saved: f"vNIC profile {saved.name} saved.",
        template="vms/_vnic_profile_dialog.html",
        context={
            "network": profile.network,
            "profile": profile,
            "entry": VNIC_PROFILE_ACTIONS["edit"],
        },
        redirect_to="vms:datacenters",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def vnic_profile_remove(request, pk: int):
    """Remove a vNIC profile (confirmation window)."""
    profile = get_object_or_404(
        VnicProfile.objects.select_related("network").restrict(request.user, CONFIGURE), pk=pk
    )
    return confirm_window(
        request,
        lambda: services.vnic_profile_remove(profile_id=profile.pk, user=request.user),
        success=lambda _none: f"vNIC profile {profile.name} removed.",
        template="vms/_vnic_profile_remove.html",
        context={"profile": profile, "entry": VNIC_PROFILE_ACTIONS["remove"]},
        redirect_to="vms:datacenters",
    )


# -- a VM's Network Interfaces -------------------------------------------------------------


def _nic_profiles(request, vm, current=None):
    """The profiles the window offers: those of the VM's data center the user may use
    (attach_vnic) on VM networks no job is changing, and the interface's own profile."""
    usable = VnicProfile.objects.restrict(request.user, "attach_vnic")
    offered = Q(
        pk__in=usable.values("pk"),
        network__vm_network=True,
        network__status=NetworkStatus.OPERATIONAL,
    )
    if current is not None:
        offered |= Q(pk=current.pk)
    return VnicProfile.objects.filter(
        offered, network__data_center_id=vm.cluster.data_center_id
    ).select_related("network__data_center")


def _nic_values(data: dict) -> dict:
    return {
        "profile_id": data["profile"].pk,
        "name": data["name"],
        "model": data["model"],
        "mac": data["mac"],
        "linked": data["link_state"] == "up",
        "plugged": data["card_status"] == "plugged",
    }


def _vm_for_nics(request, pk: int):
    return get_object_or_404(
        vms_visible(request.user, NIC_ACTIONS["create"].permission).select_related(
            "cluster__data_center"
        ),
        pk=pk,
    )


@login_required
@require_http_methods(["GET", "POST"])
def nic_new(request, pk: int):
    """The New Network Interface window (edit_vm on the VM; the profile needs attach_vnic)."""
    vm = _vm_for_nics(request, pk)
    form = NicForm(request.POST or None, profiles=_nic_profiles(request, vm))
    return form_window(
        request,
        form,
        lambda data: services.nic_create(vm_id=vm.pk, user=request.user, **_nic_values(data)),
        success=lambda nic: f"Adding network interface {nic.name} ({nic.mac}) to {vm.name}.",
        template="vms/_nic_dialog.html",
        context={"vm": vm, "entry": NIC_ACTIONS["create"]},
    )


def _nic(vm, nid: int):
    nic = vm.nics.select_related("profile__network").filter(pk=nid).first()
    if nic is None:
        raise Http404
    return nic


@login_required
@require_http_methods(["GET", "POST"])
def nic_edit(request, pk: int, nid: int):
    """The Edit Network Interface window."""
    vm = _vm_for_nics(request, pk)
    nic = _nic(vm, nid)
    initial = {
        "name": nic.name,
        "profile": nic.profile,
        "model": nic.model,
        "mac": nic.mac,
        "link_state": "up" if nic.linked else "down",
        "card_status": "plugged" if nic.plugged else "unplugged",
    }
    form = NicForm(
        request.POST or None, initial=initial, profiles=_nic_profiles(request, vm, nic.profile)
    )
    return form_window(
        request,
        form,
        lambda data: services.nic_edit(
            vm_id=vm.pk, nic_id=nic.pk, user=request.user, **_nic_values(data)
        ),
        success=lambda saved: f"Saving network interface {saved.name} of {vm.name}.",
        template="vms/_nic_dialog.html",
        context={"vm": vm, "nic": nic, "entry": NIC_ACTIONS["edit"]},
    )


@login_required
@require_http_methods(["GET", "POST"])
def nic_remove(request, pk: int, nid: int):
    """Remove a network interface (confirmation window)."""
    vm = _vm_for_nics(request, pk)
    nic = _nic(vm, nid)
    return confirm_window(
        request,
        lambda: services.nic_remove(vm_id=vm.pk, nic_id=nic.pk, user=request.user),
        success=lambda _job: f"Removing network interface {nic.name} from {vm.name}.",
        template="vms/_nic_remove.html",
        context={"vm": vm, "nic": nic, "entry": NIC_ACTIONS["remove"]},
    )
