"""Host devices (the chapter's "Host Devices"): the devices of each host that a VM may be given
directly (pci, usb_device, scsi), and a VM's attached devices.

The monitor reads each Up host's devices into `HostDevice` rows (on connecting, then every
VIREO_HOST_DEVICES_POLL_SECONDS), so no page asks libvirt. Adding devices to a VM pins it to
their host (Start Running On) and turns off its migration (Do not allow migration); they are
given to the guest as <hostdev> when it next starts (a running VM gets them at its next start).
A VM has devices of one host only: Pin to another host, Start Running On another host and
allowing migration are refused while devices are attached (issue 12; the chapter would remove
them silently). A device may be attached to several VMs, but only one of them holds it at a
time: adding a device another running VM holds, or running a VM whose device another running
VM holds, is refused.
"""

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

import hypervisor
from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Phase, Severity
from portal.kernel.validators import control_characters_strip

from .choices import NOT_HOLDING_DEVICES, DeviceCapability, MigrationMode, VMStatus
from .models import Host, HostDevice, VirtualMachine, VmHostDevice

MAX_DEVICES_AT_ONCE = 64


def _clean(text: str, size: int) -> str:
    return control_characters_strip(text or "")[:size]


def _row_values(dev: hypervisor.NodeDevice) -> dict:
    return {
        "capability": dev.capability,
        "address": list(dev.address),
        "vendor_id": _clean(dev.vendor_id, 16),
        "vendor_name": _clean(dev.vendor_name, 255),
        "product_id": _clean(dev.product_id, 16),
        "product_name": _clean(dev.product_name, 255),
        "iommu_group": dev.iommu_group,
        "driver": _clean(dev.driver, 64),
        "parent": _clean(dev.parent, 255),
    }


def host_devices_refresh(host: Host, conn: hypervisor.Connection) -> bool:
    """Store what the host says of its assignable devices (the monitor calls it): new ones
    added, changed ones updated, gone ones deleted, or kept as not present while a VM has them
    attached (with a Warning Event). Returns whether anything changed."""
    devices = [d for d in conn.list_host_devices() if d.capability in DeviceCapability.values]
    now = timezone.now()
    known = {row.name: row for row in HostDevice.objects.filter(host=host)}
    changed_vms: set[int] = set()
    changed = False
    for dev in devices:
        name = _clean(dev.name, 255)
        values = _row_values(dev)
        row = known.pop(name, None)
        if row is None:
            HostDevice.objects.create(host=host, name=name, seen_at=now, **values)
            changed = True
        elif not row.present or any(getattr(row, k) != v for k, v in values.items()):
            HostDevice.objects.filter(pk=row.pk).update(present=True, seen_at=now, **values)
            changed_vms.update(row.attachments.values_list("vm_id", flat=True))
            changed = True
    for row in known.values():  # not on the host any more
        holders = list(row.attachments.select_related("vm"))
        if not holders:
            row.delete()
            changed = True
        elif row.present:
            HostDevice.objects.filter(pk=row.pk).update(present=False)
            changed = True
            for attachment in holders:
                changed_vms.add(attachment.vm_id)
                event_record(
                    action="host_device",
                    phase=Phase.DETECTED,
                    severity=Severity.WARNING,
                    vm=attachment.vm,
                    host=host,
                    message=f"Host device {row.name} of VM {attachment.vm.name} is no longer "
                    f"present on host {host.name}; the VM cannot start until it is back or "
                    "removed from the VM.",
                )
    if changed:
        broadcast(f"host.{host.pk}", *(f"vm.{pk}" for pk in sorted(changed_vms)))
    return changed


# -- reads --------------------------------------------------------------------------------------


def attached_host(vm: VirtualMachine) -> Host | None:
    """The host whose devices are attached to the VM (its pinned host), or None."""
    row = HostDevice.objects.filter(attachments__vm=vm).select_related("host").first()
    return row.host if row is not None else None


def holding_vms(device_ids: Iterable[int], *, exclude_vm_id: int | None = None) -> dict:
    """device id -> the VMs (not Down, not Image Locked) that hold it now, `exclude_vm_id` aside."""
    rows = (
        VmHostDevice.objects.filter(device_id__in=list(device_ids))
        .exclude(vm__status__in=NOT_HOLDING_DEVICES)
        .select_related("vm")
        .order_by("vm__name")
    )
    if exclude_vm_id is not None:
        rows = rows.exclude(vm_id=exclude_vm_id)
    out: dict[int, list[VirtualMachine]] = {}
    for row in rows:
        out.setdefault(row.device_id, []).append(row.vm)
    return out


def attached_elsewhere(device_ids: Iterable[int], *, vm_id: int) -> dict[int, list[str]]:
    """device id -> names of the other VMs it is attached to (running or not), for the lists'
    "attached to" mark."""
    out: dict[int, list[str]] = {}
    rows = (
        VmHostDevice.objects.filter(device_id__in=list(device_ids))
        .exclude(vm_id=vm_id)
        .order_by("vm__name")
        .values_list("device_id", "vm__name", "vm__status")
    )
    for device_id, name, status in rows:
        label = name if status in NOT_HOLDING_DEVICES else f"{name} ({VMStatus(status).label})"
        out.setdefault(device_id, []).append(label)
    return out


def _held_text(device: HostDevice, vm: VirtualMachine) -> str:
    return f"VM {vm.name} holds host device {device.name} and is {vm.get_status_display()}"


def host_devices_context(vm: VirtualMachine) -> dict:
    """The Host Devices sub-tab: the VM's devices, each with the other VMs it is attached to,
    and the host they pin it to."""
    rows = list(VmHostDevice.objects.filter(vm=vm).select_related("device__host"))
    others = attached_elsewhere([r.device_id for r in rows], vm_id=vm.pk)
    return {
        "hostdev_rows": [{"device": r.device, "others": others.get(r.device_id, [])} for r in rows],
        "hostdev_host": rows[0].device.host if rows else None,
        "hostdev_later": bool(rows) and vm.status != VMStatus.DOWN,
    }


# -- services -----------------------------------------------------------------------------------


def _vm_locked(vm_id: int, verb: str) -> VirtualMachine:
    vm = (
        VirtualMachine.objects.select_for_update(of=("self",))
        .select_related("cluster", "start_host")
        .filter(pk=vm_id)
        .first()
    )
    if vm is None:
        raise ActionRefused("That virtual machine does not exist any more.")
    if vm.is_external:
        raise ActionRefused(
            f"Cannot {verb} {vm.name}: it was defined on its host outside Vireo; Import it first."
        )
    return vm


def _ids(device_ids: Iterable, empty: str) -> list[int]:
    try:
        ids = sorted({int(i) for i in device_ids})
    except (TypeError, ValueError):
        raise ActionRefused("Choose host devices from the list.") from None
    if not ids:
        raise ActionRefused(empty)
    if len(ids) > MAX_DEVICES_AT_ONCE:
        raise ActionRefused(f"Attach at most {MAX_DEVICES_AT_ONCE} host devices at once.")
    return ids


def _cluster_host(vm: VirtualMachine, host_id) -> Host:
    host = Host.objects.filter(pk=host_id, cluster_id=vm.cluster_id).first() if host_id else None
    if host is None:
        raise ActionRefused(f"Choose a host of cluster {vm.cluster.name}.")
    return host


def _pinned_elsewhere(vm: VirtualMachine, host: Host, verb: str) -> None:
    current = attached_host(vm)
    if current is not None and current.pk != host.pk:
        names = ", ".join(
            HostDevice.objects.filter(attachments__vm=vm).values_list("name", flat=True)[:5]
        )
        raise ActionRefused(
            f"Cannot {verb}: {vm.name} has host devices of host {current.name} attached "
            f"({names}), and it cannot be pinned to another host while they are. Remove them "
            "first (Remove device)."
        )


def iommu_siblings(host: Host, devices: list[HostDevice]) -> list[HostDevice]:
    """The other PCI devices of the host in the IOMMU groups of `devices` (locked): VFIO gives
    a guest a whole group or nothing, so they are attached together (a GPU and its audio)."""
    groups = {
        d.iommu_group
        for d in devices
        if d.capability == DeviceCapability.PCI and d.iommu_group is not None
    }
    if not groups:
        return []
    return list(
        HostDevice.objects.select_for_update()
        .filter(host=host, capability=DeviceCapability.PCI, iommu_group__in=groups)
        .exclude(pk__in=[d.pk for d in devices])
        .order_by("name")
    )


def vm_host_devices_add(*, vm_id: int, user, host_id: int, device_ids: Iterable) -> list:
    """Add Host Devices: attach devices of `host_id` (a host of the VM's cluster) to the VM,
    pinning it there (Start Running On) with migration turned off (Do not allow migration);
    the other PCI devices of a PCI device's IOMMU group come with it. They are given to the guest when it next starts. Refused for devices of another host than
    those already attached, devices gone from the host, and devices another running VM holds."""
    ids = _ids(device_ids, "Move at least one device to Host Devices to be attached.")
    with transaction.atomic():
        vm = _vm_locked(vm_id, "add host devices to")
        host = _cluster_host(vm, host_id)
        _pinned_elsewhere(vm, host, f"add devices of host {host.name} to {vm.name}")
        # Locked: a Run of another VM that holds them waits, and then sees them taken.
        devices = list(
            HostDevice.objects.select_for_update().filter(pk__in=ids, host=host).order_by("name")
        )
        if len(devices) != len(ids):
            raise ActionRefused(
                f"A device chosen is not a device of host {host.name} any more. Open the "
                "window again to see the host's devices as they are now."
            )
        devices += iommu_siblings(host, devices)
        ids = [d.pk for d in devices]
        if gone := [d.name for d in devices if not d.present]:
            raise ActionRefused(
                f"Cannot add {', '.join(gone)} to {vm.name}: no longer present on host {host.name}."
            )
        held = holding_vms(ids, exclude_vm_id=vm.pk)
        if held:
            texts = [_held_text(d, held[d.pk][0]) for d in devices if d.pk in held]
            raise ActionRefused(
                f"Cannot add host devices to {vm.name}: {'; '.join(texts)}. Shut that VM down, "
                "or choose other devices."
            )
        have = set(VmHostDevice.objects.filter(vm=vm).values_list("device_id", flat=True))
        new = [d for d in devices if d.pk not in have]
        VmHostDevice.objects.bulk_create([VmHostDevice(vm=vm, device=d) for d in new])
        VirtualMachine.objects.filter(pk=vm.pk).update(
            start_host=host, migration_mode=MigrationMode.PINNED
        )
        later = " They take effect when the VM next starts." if vm.status != VMStatus.DOWN else ""
        event_record(
            action="host_device_add",
            phase=Phase.SUCCEEDED,
            user=user,
            vm=vm,
            host=host,
            message=f"{actor(user)} attached host device(s) {', '.join(d.name for d in new) or '(none new)'} "
            f"of host {host.name} to VM {vm.name}; it is pinned to {host.name} and does not "
            f"allow migration.{later}",
        )
        broadcast(f"vm.{vm.pk}", "vms")
    return new


def vm_host_devices_remove(*, vm_id: int, user, device_ids: Iterable) -> int:
    """Remove Host Device(s): detach devices from the VM (it keeps its pinned host and
    migration setting; a running guest keeps them until it stops). Returns how many."""
    ids = _ids(device_ids, "Select the host devices to remove.")
    with transaction.atomic():
        vm = _vm_locked(vm_id, "remove host devices from")
        rows = VmHostDevice.objects.filter(vm=vm, device_id__in=ids)
        names = list(rows.values_list("device__name", flat=True))
        if not names:
            raise ActionRefused(f"None of those devices is attached to {vm.name} any more.")
        rows.delete()
        later = " A running guest keeps them until it stops." if vm.status != VMStatus.DOWN else ""
        event_record(
            action="host_device_remove",
            phase=Phase.SUCCEEDED,
            user=user,
            vm=vm,
            message=f"{actor(user)} removed host device(s) {', '.join(names)} from VM "
            f"{vm.name}.{later}",
        )
        broadcast(f"vm.{vm.pk}", "vms")
    return len(names)


def vm_pin_to_host(*, vm_id: int, user, host_id: int) -> Host:
    """Pin VM to Host: the VM starts on that host of its cluster (Start Running On). Refused
    while host devices of another host are attached (remove them first)."""
    with transaction.atomic():
        vm = _vm_locked(vm_id, "pin")
        host = _cluster_host(vm, host_id)
        _pinned_elsewhere(vm, host, f"pin {vm.name} to host {host.name}")
        VirtualMachine.objects.filter(pk=vm.pk).update(start_host=host)
        event_record(
            action="pin_to_host",
            phase=Phase.SUCCEEDED,
            user=user,
            vm=vm,
            host=host,
            message=f"{actor(user)} pinned VM {vm.name} to host {host.name} (Start Running On).",
        )
        broadcast(f"vm.{vm.pk}", "vms")
    return host


# -- checks other services make -------------------------------------------------------------------


def host_devices_run_check(vm: VirtualMachine) -> None:
    """Refuse to start a VM one of whose devices another running VM holds, or is no longer on
    its host. The devices' rows are locked to the end of the transaction, so a VM given them
    meanwhile (vm_host_devices_add) waits and then sees this one holding them."""
    rows = list(VmHostDevice.objects.filter(vm=vm).values_list("device_id", flat=True))
    if not rows:
        return
    devices = list(
        HostDevice.objects.select_for_update(of=("self",))
        .filter(pk__in=rows)
        .select_related("host")
        .order_by("name")
    )
    if gone := [d for d in devices if not d.present]:
        raise ActionRefused(
            f"Cannot run {vm.name}: its host device {gone[0].name} is no longer present on host "
            f"{gone[0].host.name}. Remove it from the VM (Host Devices) or plug it back in."
        )
    held = holding_vms(rows, exclude_vm_id=vm.pk)
    if held:
        texts = [_held_text(d, held[d.pk][0]) for d in devices if d.pk in held]
        raise ActionRefused(f"Cannot run {vm.name}: {'; '.join(texts)}.")


def host_devices_edit_check(vm: VirtualMachine, fields: dict) -> None:
    """Edit VM: while host devices are attached, Start Running On stays their host and
    migration stays off (the chapter removes the devices instead; issue 12 refuses)."""
    host = attached_host(vm)
    if host is None:
        return
    if "start_host_id" in fields and fields["start_host_id"] != host.pk:
        raise ActionRefused(
            f"Cannot change Start Running On of {vm.name}: it has host devices of host "
            f"{host.name} attached, and it cannot be pinned to another host while they are. "
            "Remove them first (Host Devices, Remove device)."
        )
    mode = fields.get("migration_mode", MigrationMode.PINNED)
    if mode != MigrationMode.PINNED:
        raise ActionRefused(
            f"Cannot allow migration of {vm.name}: it has host devices of host {host.name} "
            "attached. Remove them first (Host Devices, Remove device)."
        )


def migration_devices_reason(vm: VirtualMachine) -> str:
    """Why the VM cannot migrate because of its host devices ("" when it has none)."""
    host = attached_host(vm)
    return pinned_by_devices_text(host.name) if host is not None else ""


def pinned_by_devices_text(host_name: str) -> str:
    return f"it has host devices of host {host_name} attached, so it is pinned to that host"


def devices_hosts_of(vm_ids: Iterable[int]) -> dict[int, str]:
    """VM id -> the name of the host whose devices it has, for those of `vm_ids` with any
    (one query)."""
    return dict(
        VmHostDevice.objects.filter(vm_id__in=list(vm_ids))
        .values_list("vm_id", "device__host__name")
        .order_by()
    )
