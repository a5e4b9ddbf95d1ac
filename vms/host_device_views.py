"""A VM's Host Devices sub-tab windows: Add Host Devices, Remove Host Device(s), Pin VM to Host.
Views are thin: the VM through the restricted queryset (edit_vm, 404 when out of reach), one
service call on OK. The Add window's lists are kept by the server: the Pinned Host and
Capability selects and the arrow buttons post the window back (htmx), which is drawn again
with the devices moved; no script of its own (the CSP allows none inline)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_http_methods

from portal.kernel.converters import parse_id
from portal.kernel.dialogs import confirm_window, form_window, modal_done
from portal.kernel.errors import ActionRefused

from . import host_devices as services
from .actions import HOSTDEV_ACTIONS
from .choices import DeviceCapability, VMStatus
from .forms import PinToHostForm
from .models import Host, HostDevice, VirtualMachine
from .selectors import vms_visible

EDIT = HOSTDEV_ACTIONS["add"].permission  # edit_vm


def vm_for_hostdevs(request, pk: int) -> VirtualMachine:
    return get_object_or_404(
        vms_visible(request.user, EDIT).select_related("cluster", "start_host"), pk=pk
    )


def _ids(values) -> list[int]:
    """Ids posted by the window; anything else is dropped (the service checks the rest)."""
    ids = [parse_id(v) for v in values[: services.MAX_DEVICES_AT_ONCE * 2]]
    return [i for i in ids if i is not None]


@login_required
@require_http_methods(["GET", "POST"])
def hostdev_add(request, pk: int):
    """The Add Host Devices window: Pinned Host, Capability, Available Host Devices and Host
    Devices to be attached (moved across with the arrow buttons), and OK."""
    vm = vm_for_hostdevs(request, pk)
    entry = HOSTDEV_ACTIONS["add"]
    hosts = list(Host.objects.filter(cluster_id=vm.cluster_id).order_by("name"))
    by_id = {h.pk: h for h in hosts}
    data = request.POST if request.method == "POST" else request.GET
    attached = services.attached_host(vm)
    default = attached or (vm.start_host if vm.start_host_id in by_id else None)
    host = by_id.get(parse_id(data.get("host"))) or default or (hosts[0] if hosts else None)
    capability = data.get("capability")
    if capability not in DeviceCapability.values:
        capability = DeviceCapability.PCI
    chosen = _ids(data.getlist("chosen"))
    if parse_id(data.get("shown_host")) != (host.pk if host else None):
        chosen = []  # another host: the devices to attach are of one host
    op = data.get("op", "ok" if request.method == "POST" else "")
    if op == "attach":
        chosen += [i for i in _ids(data.getlist("pick")) if i not in chosen]
    elif op == "detach":
        dropped = set(_ids(data.getlist("unpick")))
        chosen = [i for i in chosen if i not in dropped]
    error = ""
    if request.method == "POST" and op == "ok":
        try:
            added = services.vm_host_devices_add(
                vm_id=vm.pk, user=request.user, host_id=host.pk if host else None, device_ids=chosen
            )
        except ActionRefused as exc:
            error = str(exc)
        else:
            later = " They take effect when it next starts." if vm.status != VMStatus.DOWN else ""
            text = (
                f"Attached {len(added)} host device(s) of {host.name} to {vm.name}; it is "
                f"pinned to {host.name} and does not allow migration.{later}"
            )
            return modal_done(request, [("success", text)])
    devices = list(HostDevice.objects.filter(host=host)) if host else []
    mine = set(vm.host_devices.values_list("device_id", flat=True))
    others = services.attached_elsewhere([d.pk for d in devices], vm_id=vm.pk)
    held = services.holding_vms([d.pk for d in devices], exclude_vm_id=vm.pk)
    chosen = [i for i in chosen if any(d.pk == i for d in devices)]
    rows = [
        {
            "device": d,
            "others": others.get(d.pk, []),
            "held": bool(held.get(d.pk)),
            "attached": d.pk in mine,
        }
        for d in devices
    ]
    context = {
        "vm": vm,
        "entry": entry,
        "hosts": hosts,
        "host": host,
        "capabilities": DeviceCapability.choices,
        "capability": capability,
        "available": [
            r
            for r in rows
            if r["device"].capability == capability
            and r["device"].pk not in chosen
            and not r["attached"]
        ],
        "chosen_rows": [r for r in rows if r["device"].pk in chosen],
        "chosen": chosen,
        "attached_host": attached,
        "error": error,
    }
    return render(request, "vms/_hostdev_add_dialog.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def hostdev_remove(request, pk: int):
    """The Remove Host Device(s) window for the devices ticked in the sub-tab."""
    vm = vm_for_hostdevs(request, pk)
    data = request.POST if request.method == "POST" else request.GET
    ids = _ids(data.getlist("device"))
    devices = list(HostDevice.objects.filter(pk__in=ids, attachments__vm=vm))
    error = "" if devices else "Select the host devices to remove in the Host Devices sub-tab."
    return confirm_window(
        request,
        lambda: services.vm_host_devices_remove(
            vm_id=vm.pk, user=request.user, device_ids=[d.pk for d in devices] or ids
        ),
        success=lambda count: f"Removed {count} host device(s) from {vm.name}.",
        template="vms/_hostdev_remove_dialog.html",
        context={
            "vm": vm,
            "devices": devices,
            "entry": HOSTDEV_ACTIONS["remove"],
            "error": error,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def hostdev_pin(request, pk: int):
    """The Pin VM to Host window: a host of the VM's cluster (refused while host devices of
    another host are attached)."""
    vm = vm_for_hostdevs(request, pk)
    form = PinToHostForm(
        request.POST or None,
        initial={"host": vm.start_host_id},
        hosts=Host.objects.filter(cluster_id=vm.cluster_id),
    )
    return form_window(
        request,
        form,
        lambda data: services.vm_pin_to_host(
            vm_id=vm.pk, user=request.user, host_id=data["host"].pk
        ),
        success=lambda host: f"{vm.name} is pinned to host {host.name}.",
        template="vms/_hostdev_pin_dialog.html",
        context={
            "vm": vm,
            "entry": HOSTDEV_ACTIONS["pin"],
            "attached_host": services.attached_host(vm),
        },
    )
