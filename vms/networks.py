"""Services for logical networks, vNIC profiles and VM network interfaces.

A logical network belongs to a data center and is backed on each of its hosts by the libvirt
network `vireo-<id>` (NAT, isolated, or over an existing host bridge), which a job defines,
starts and marks autostart on every Up host (a host that was not Up gets it when a VM with an
interface on it runs there). Its vNIC profiles are how interfaces use it: VnicProfileUser
(attach_vnic) on a profile lets a user pick it. An interface (nic1, nic2 ...) has a profile,
a device model, a MAC from its data center's MAC pool (no two interfaces share one), a link
state, and is plugged or not; a job hot-plugs, unplugs or updates it on a running VM, or
redefines a Down VM. Everything typed is checked strictly here: names, MACs, bridge names
and addresses never reach XML unchecked (and XML is built only in hypervisor/domainxml.py).
"""

import ipaddress
import re

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from guardian.models import GroupObjectPermission, UserObjectPermission

from accounts.permissions import can
from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind, Phase
from portal.kernel.tasks import job_create, queue_ensure_available
from portal.kernel.validators import text_check

from .choices import HostStatus, NetworkKind, NetworkStatus, NicModel, VMStatus
from .models import DataCenter, Network, NetworkInterface, VirtualMachine, VnicProfile
from .services import NAME_MAX, NAME_RE, vm_names_lock, vm_status_move
from .vnics import mac_allocate, mac_check, mac_free, network_lock, profile_usable

VLAN_RANGE = (0, 4094)
BRIDGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")  # a Linux interface name
NIC_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
IPV4_PREFIX_RANGE = (8, 30)
# Statuses in which a VM's interfaces may change: Down (its definition), Up and Paused
# (hot-plug on the running guest).
NIC_VM_STATUSES = frozenset({VMStatus.DOWN, VMStatus.UP, VMStatus.PAUSED})
LIVE_STATUSES = frozenset({VMStatus.UP, VMStatus.PAUSED})


# -- checks of what was typed ----------------------------------------------------------------


def network_name_check(name) -> str:
    """A logical network's (or vNIC profile's) name: 1-255 letters, digits, '-', '_', '.'."""
    name = str(name or "").strip()
    if not name:
        raise ActionRefused("Name is required.")
    if len(name) > NAME_MAX:
        raise ActionRefused(f"Name is too long: {len(name)} characters, at most {NAME_MAX}.")
    if not NAME_RE.match(name) or not name.strip(".-"):
        raise ActionRefused("Name may contain only letters, digits, '-', '_' and '.'.")
    return name


def vlan_check(vlan) -> int | None:
    """A VLAN tag: empty (none) or a whole number 0-4094."""
    if vlan is None or str(vlan).strip() == "":
        return None
    try:
        value = int(str(vlan).strip())
    except ValueError:
        raise ActionRefused("VLAN tag must be a whole number between 0 and 4094.") from None
    if not VLAN_RANGE[0] <= value <= VLAN_RANGE[1]:
        raise ActionRefused(f"VLAN tag {value} is outside 0-4094.")
    return value


def bridge_check(bridge) -> str:
    """The name of a host's bridge: a Linux interface name (1-15 letters, digits, '_', '.',
    '-', not starting with a sign)."""
    bridge = str(bridge or "").strip()
    if not bridge:
        raise ActionRefused("Host bridge is required for a network over an existing bridge.")
    if not BRIDGE_RE.match(bridge):
        raise ActionRefused(
            "Host bridge must be a Linux interface name: 1-15 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )
    return bridge


def ipv4_check(ipv4) -> str:
    """The hosts' address on a libvirt network with its prefix ("192.168.150.1/24"), or ""."""
    text = str(ipv4 or "").strip()
    if not text:
        return ""
    try:
        interface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise ActionRefused(
            f"IPv4 address {text!r} is not an address with a prefix, like 192.168.150.1/24."
        ) from None
    low, high = IPV4_PREFIX_RANGE
    if "/" not in text or not low <= interface.network.prefixlen <= high:
        raise ActionRefused(f"IPv4 address needs a prefix between /{low} and /{high}.")
    if interface.ip in (interface.network.network_address, interface.network.broadcast_address):
        raise ActionRefused(f"{interface.ip} is not a host address of {interface.network}.")
    return str(interface)


def _grants_drop(model, pks) -> None:
    """Forget the permissions given on objects that go away (guardian's rows are generic)."""
    content_type = ContentType.objects.get_for_model(model)
    for table in (UserObjectPermission, GroupObjectPermission):
        table.objects.filter(
            content_type=content_type, object_pk__in=[str(pk) for pk in pks]
        ).delete()


def _saved(obj, what: str, name: str):
    """Save `obj`; a name another request took meanwhile (the unique constraint) refuses."""
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError:
        raise ActionRefused(f"{what} '{name}' was just taken by another request.") from None
    return obj


# -- logical networks ------------------------------------------------------------------------


def _backing_check(kind, bridge, vlan, ipv4) -> dict:
    if kind not in NetworkKind.values:
        raise ActionRefused("Choose the type of network: NAT, isolated, or an existing bridge.")
    vlan = vlan_check(vlan)
    ipv4 = ipv4_check(ipv4)
    if kind == NetworkKind.BRIDGE:
        bridge = bridge_check(bridge)
        ipv4 = ""
    else:
        bridge = ""
        if vlan is not None:
            raise ActionRefused(
                "A VLAN tag needs a network over an existing host bridge (an Open vSwitch "
                "bridge: libvirt tags no other)."
            )
        if kind == NetworkKind.NAT and not ipv4:
            raise ActionRefused(
                "A NAT network needs the hosts' IPv4 address, like 192.168.150.1/24."
            )
    return {"kind": kind, "bridge": bridge, "vlan": vlan, "ipv4": ipv4}


def _subnet_free(data_center_id: int, ipv4: str, *, network_id: int | None = None) -> None:
    """Two networks of one data center meet on each of its hosts: their subnets may not overlap."""
    if not ipv4:
        return
    mine = ipaddress.IPv4Interface(ipv4).network
    others = Network.objects.filter(data_center_id=data_center_id).exclude(pk=network_id)
    for other in others.exclude(ipv4=""):
        if ipaddress.IPv4Interface(other.ipv4).network.overlaps(mine):
            raise ActionRefused(
                f"{mine} overlaps the subnet of network {other.name} ({other.ipv4})."
            )


def _network_name_free(data_center_id: int, name: str, *, network_id: int | None = None) -> None:
    taken = Network.objects.filter(data_center_id=data_center_id, name__iexact=name)
    if taken.exclude(pk=network_id).exists():
        raise ActionRefused(f"A logical network named {name} already exists in this data center.")


def _network_job(
    *, network: Network, kind: JobKind, action: str, verb: str, user, params=None, undo
) -> Job:
    job = job_create(
        kind=kind,
        description=f"{verb.capitalize()} network {network.name}",
        user=user,
        params={"network_id": network.pk, "name": network.name, **(params or {})},
        on_enqueue_failure=undo,
    )
    event_record(
        action=action,
        phase=Phase.REQUESTED,
        user=user,
        job=job,
        object_type="network",
        object_name=network.name,
        message=f"{actor(user)} asked to {verb} logical network {network.name}.",
    )
    return job


def network_take_back(network_id: int) -> None:
    """Take away a network whose creation never reached its hosts: its profiles, its row
    and the permissions given on them."""
    with transaction.atomic():
        profiles = list(
            VnicProfile.objects.filter(network_id=network_id).values_list("pk", flat=True)
        )
        _grants_drop(VnicProfile, profiles)
        _grants_drop(Network, [network_id])
        Network.objects.filter(pk=network_id).delete()
        broadcast("networks")


def network_create(
    *,
    user,
    data_center_id: int,
    name: str,
    kind: str,
    description: str = "",
    bridge: str = "",
    vlan=None,
    ipv4: str = "",
    vm_network: bool = True,
) -> Network:
    """New logical network in a data center, with its default vNIC profile (the network's
    name). It is Locked while a job defines and starts it on every Up host of the data center;
    if one of them fails, it is taken off all of them and the network is not created."""
    queue_ensure_available()
    name = network_name_check(name)
    description = text_check(description, "Description", max_length=1000)
    backing = _backing_check(kind, bridge, vlan, ipv4)
    with transaction.atomic():
        dc = DataCenter.objects.select_for_update().filter(pk=data_center_id).first()
        if dc is None:
            raise ActionRefused("That data center does not exist.")
        if not can(user, "configure_network", dc):
            raise ActionRefused(f"You may not create logical networks in data center {dc.name}.")
        _network_name_free(dc.pk, name)
        _subnet_free(dc.pk, backing["ipv4"])
        network = _saved(
            Network(
                name=name,
                description=description,
                data_center=dc,
                vm_network=bool(vm_network),
                status=NetworkStatus.LOCKED,
                **backing,
            ),
            "Logical network name",
            name,
        )
        VnicProfile.objects.create(network=network, name=name)
        _network_job(
            network=network,
            kind=JobKind.NETWORK_CREATE,
            action="create_network",
            verb="create",
            user=user,
            undo=lambda _job: network_take_back(network.pk),
        )
        broadcast("networks")
    return network


def _interfaces_on(network: Network):
    return NetworkInterface.objects.filter(profile__network=network).select_related("vm")


def _vm_list(nics) -> str:
    names = sorted({n.vm.name for n in nics})
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def _network_unlock(network_id: int, restore: dict | None = None):
    def undo(job: Job, message: str = "") -> None:
        Network.objects.filter(pk=network_id, status=NetworkStatus.LOCKED).update(
            status=NetworkStatus.OPERATIONAL, **(restore or {})
        )
        broadcast("networks")

    return undo


def network_edit(
    *,
    network_id: int,
    user,
    name: str,
    kind: str,
    description: str = "",
    bridge: str = "",
    vlan=None,
    ipv4: str = "",
    vm_network: bool = True,
) -> Network:
    """Edit a logical network. Its name, description and VM network mark change at once; a new
    backing (type, bridge, VLAN tag, address) is applied by a job that redefines and restarts
    it on every Up host, refused while a running VM has an interface plugged on it."""
    name = network_name_check(name)
    description = text_check(description, "Description", max_length=1000)
    backing = _backing_check(kind, bridge, vlan, ipv4)
    with transaction.atomic():
        # The data center first, then the network: the order nic_create and vm_create lock in.
        dc_id = Network.objects.filter(pk=network_id).values_list("data_center_id", flat=True)
        vm_names_lock(dc_id.first())
        network = network_lock(network_id, "edit")
        before = {key: getattr(network, key) for key in backing}
        changes_backing = before != backing
        if changes_backing:
            queue_ensure_available()
            running = _interfaces_on(network).filter(plugged=True).exclude(vm__status=VMStatus.DOWN)
            if running.exists():
                raise ActionRefused(
                    f"Cannot change how network {network.name} is backed while VMs "
                    f"{_vm_list(running)} run with interfaces plugged on it: shut them down "
                    "or unplug those interfaces first."
                )
        if name != network.name:
            _network_name_free(network.data_center_id, name, network_id=network.pk)
        _subnet_free(network.data_center_id, backing["ipv4"], network_id=network.pk)
        old_name = network.name
        network.name, network.description, network.vm_network = name, description, bool(vm_network)
        for key, value in backing.items():
            setattr(network, key, value)
        if changes_backing:
            network.status = NetworkStatus.LOCKED
        _saved(network, "Logical network name", name)
        if changes_backing:
            _network_job(
                network=network,
                kind=JobKind.NETWORK_EDIT,
                action="edit_network",
                verb="edit",
                user=user,
                params={"before": before},
                undo=_network_unlock(network.pk, before),
            )
        else:
            event_record(
                action="edit_network",
                phase=Phase.SUCCEEDED,
                user=user,
                object_type="network",
                object_name=name,
                message=f"{actor(user)} edited logical network {old_name}"
                + (f" (now {name})." if name != old_name else "."),
            )
        broadcast("networks")
    return network


def network_remove(*, network_id: int, user) -> Job:
    """Remove a logical network: refused while any VM has an interface on one of its
    profiles; a job takes its libvirt network off every Up host, then the row goes."""
    queue_ensure_available()
    with transaction.atomic():
        network = network_lock(network_id, "remove")
        used = list(_interfaces_on(network))
        if used:
            raise ActionRefused(
                f"Cannot remove network {network.name}: the network interfaces of VMs "
                f"{_vm_list(used)} use it. Remove those interfaces or move them to another "
                "profile first."
            )
        Network.objects.filter(pk=network.pk).update(status=NetworkStatus.LOCKED)
        job = _network_job(
            network=network,
            kind=JobKind.NETWORK_REMOVE,
            action="remove_network",
            verb="remove",
            user=user,
            undo=_network_unlock(network.pk),
        )
        broadcast("networks")
    return job


def network_forget(network_id: int) -> None:
    """The last writes of a removal: the network, its profiles and their permissions."""
    profiles = list(VnicProfile.objects.filter(network_id=network_id).values_list("pk", flat=True))
    _grants_drop(VnicProfile, profiles)
    _grants_drop(Network, [network_id])
    Network.objects.filter(pk=network_id).delete()
    broadcast("networks", "perms")


# -- vNIC profiles ---------------------------------------------------------------------------


def _profile_event(user, profile_name: str, network: Network, verb: str) -> None:
    event_record(
        action=f"{verb}_vnic_profile",
        phase=Phase.SUCCEEDED,
        user=user,
        object_type="vnic_profile",
        object_name=profile_name,
        message=f"{actor(user)} {verb}d vNIC profile {profile_name} of network {network.name}.",
    )


def vnic_profile_create(
    *, network_id: int, user, name: str, description: str = "", port_mirroring: bool = False
) -> VnicProfile:
    """New vNIC profile of a logical network (a row: hosts see only the network)."""
    name = network_name_check(name)
    description = text_check(description, "Description", max_length=1000)
    with transaction.atomic():
        network = network_lock(network_id, "add a profile to")
        if network.profiles.filter(name__iexact=name).exists():
            raise ActionRefused(f"Network {network.name} already has a vNIC profile named {name}.")
        profile = _saved(
            VnicProfile(
                network=network,
                name=name,
                description=description,
                port_mirroring=bool(port_mirroring),
            ),
            "vNIC profile name",
            name,
        )
        _profile_event(user, name, network, "create")
        broadcast("networks")
    return profile


def vnic_profile_edit(
    *, profile_id: int, user, name: str, description: str = "", port_mirroring: bool = False
) -> VnicProfile:
    """Edit a vNIC profile: name, description, port mirroring."""
    name = network_name_check(name)
    description = text_check(description, "Description", max_length=1000)
    with transaction.atomic():
        profile = VnicProfile.objects.select_for_update().filter(pk=profile_id).first()
        if profile is None:
            raise ActionRefused("That vNIC profile does not exist any more.")
        network = network_lock(profile.network_id, "edit a profile of")
        if network.profiles.filter(name__iexact=name).exclude(pk=profile.pk).exists():
            raise ActionRefused(f"Network {network.name} already has a vNIC profile named {name}.")
        profile.name, profile.description = name, description
        profile.port_mirroring = bool(port_mirroring)
        _saved(profile, "vNIC profile name", name)
        _profile_event(user, name, network, "update")
        broadcast("networks")
    return profile


def vnic_profile_remove(*, profile_id: int, user) -> None:
    """Remove a vNIC profile no interface uses."""
    with transaction.atomic():
        profile = VnicProfile.objects.select_for_update().filter(pk=profile_id).first()
        if profile is None:
            raise ActionRefused("That vNIC profile does not exist any more.")
        network = network_lock(profile.network_id, "remove a profile of")
        used = list(profile.interfaces.select_related("vm"))
        if used:
            raise ActionRefused(
                f"Cannot remove vNIC profile {profile.name}: the network interfaces of VMs "
                f"{_vm_list(used)} use it."
            )
        name = profile.name
        _grants_drop(VnicProfile, [profile.pk])
        profile.delete()
        _profile_event(user, name, network, "remove")
        broadcast("networks", "perms")


# -- a VM's network interfaces ---------------------------------------------------------------


def _nic_vm(vm_id: int, verb: str) -> VirtualMachine:
    """The VM, row-locked (one interface change of a VM at a time), if its interfaces may
    change now."""
    vm = (
        VirtualMachine.objects.select_for_update(of=("self",))
        .select_related("cluster", "host")
        .filter(pk=vm_id)
        .first()
    )
    if vm is None:
        raise ActionRefused("That virtual machine does not exist any more.")
    if vm.is_external:
        raise ActionRefused(
            f"Cannot {verb} a network interface of {vm.name}: it was defined on its host "
            "outside Vireo; Import it first."
        )
    if vm.status not in NIC_VM_STATUSES:
        raise ActionRefused(
            f"Cannot {verb} a network interface of {vm.name}: the VM is "
            f"{vm.get_status_display()} (interfaces change while it is Down, Up or Paused)."
        )
    if vm.nics.filter(locked=True).exists():
        raise ActionRefused(
            f"Cannot {verb} a network interface of {vm.name}: another change of its interfaces "
            "is in progress."
        )
    if vm.status in LIVE_STATUSES and (vm.host is None or vm.host.status != HostStatus.UP):
        raise ActionRefused(f"Cannot {verb} a network interface of {vm.name}: its host is not Up.")
    return vm


def _nic_name(vm: VirtualMachine, name, *, nic_id: int | None = None) -> str:
    name = str(name or "").strip()
    taken = set(vm.nics.exclude(pk=nic_id).values_list("name", flat=True))
    if not name:
        return next(f"nic{n}" for n in range(1, len(taken) + 2) if f"nic{n}" not in taken)
    if not NIC_NAME_RE.match(name):
        raise ActionRefused(
            "Interface name may contain only letters, digits, '-', '_' and '.' (at most 64)."
        )
    if name in taken:
        raise ActionRefused(f"{vm.name} already has a network interface named {name}.")
    return name


def _nic_model(model) -> str:
    if model not in NicModel.values:
        raise ActionRefused("Choose the interface type: VirtIO, e1000 or rtl8139.")
    return model


NIC_FIELDS = ("name", "profile_id", "model", "mac", "linked", "plugged")


def _nic_job(
    *, vm: VirtualMachine, nic: NetworkInterface, kind: JobKind, verb: str, user, params: dict, undo
) -> Job | None:
    """The job that carries an interface change to the VM's host; a Down VM is Image Locked
    meanwhile (its definition changes). A VM placed on no host has nothing to change there."""
    if vm.host_id is None:
        return None
    previous = vm.status
    if previous == VMStatus.DOWN and not vm_status_move(
        vm_id=vm.pk, from_status=VMStatus.DOWN, to_status=VMStatus.IMAGE_LOCKED
    ):
        raise ActionRefused(f"{vm.name} was changed by another request. Nothing was done.")

    def on_enqueue_failure(job: Job) -> None:
        undo(job)
        vm_status_move(vm_id=vm.pk, from_status=VMStatus.IMAGE_LOCKED, to_status=previous)

    NetworkInterface.objects.filter(pk=nic.pk).update(locked=True)
    nic.locked = True
    job = job_create(
        kind=kind,
        description=f"{verb.capitalize()} network interface {nic.name} of {vm.name}",
        vm=vm,
        user=user,
        params={"nic_id": nic.pk, "from_status": previous, **params},
        on_enqueue_failure=on_enqueue_failure,
    )
    event_record(
        action=f"{verb}_nic",
        phase=Phase.REQUESTED,
        user=user,
        vm=vm,
        job=job,
        message=f"{actor(user)} asked to {verb} network interface {nic.name} of VM {vm.name}.",
    )
    return job


def _nic_done_at_once(user, vm: VirtualMachine, nic_name: str, verb: str) -> None:
    event_record(
        action=f"{verb}_nic",
        phase=Phase.SUCCEEDED,
        user=user,
        vm=vm,
        message=f"{actor(user)} {verb}d network interface {nic_name} of VM {vm.name}.",
    )


def nic_create(
    *,
    vm_id: int,
    user,
    profile_id: int,
    name: str = "",
    model: str = NicModel.VIRTIO,
    mac: str = "",
    linked: bool = True,
    plugged: bool = True,
) -> NetworkInterface:
    """New network interface of a VM on a vNIC profile the user may use. Without a MAC it takes
    the lowest free one of the data center's MAC pool. Plugged on a running VM, a job
    hot-plugs it; on a Down VM the job redefines the VM."""
    queue_ensure_available()
    model = _nic_model(model)
    mac = mac_check(mac) if str(mac or "").strip() else ""
    with transaction.atomic():
        vm = _nic_vm(vm_id, "add")
        # Locks in one order everywhere (VM, data center, network): one MAC allocation at a
        # time in a data center, and the network cannot go while the interface is added.
        vm_names_lock(vm.cluster.data_center_id)
        profile = profile_usable(user, profile_id, data_center_id=vm.cluster.data_center_id)
        name = _nic_name(vm, name)
        if mac:
            mac_free(mac)
        else:
            mac = mac_allocate(vm.cluster.data_center_id)
        nic = _saved(
            NetworkInterface(
                vm=vm,
                name=name,
                profile=profile,
                model=model,
                mac=mac,
                linked=bool(linked),
                plugged=bool(plugged),
            ),
            "MAC address",
            mac,
        )
        job = _nic_job(
            vm=vm,
            nic=nic,
            kind=JobKind.NIC_CREATE,
            verb="add",
            user=user,
            params={},
            undo=lambda _job: NetworkInterface.objects.filter(pk=nic.pk).delete(),
        )
        if job is None:
            _nic_done_at_once(user, vm, name, "add")
        broadcast(f"vm.{vm.pk}")
    return nic


def _nic_of(vm_id: int, nic_id: int, verb: str) -> tuple[VirtualMachine, NetworkInterface]:
    vm = _nic_vm(vm_id, verb)
    nic = vm.nics.select_related("profile__network").filter(pk=nic_id).first()
    if nic is None:
        raise ActionRefused("That network interface does not exist any more.")
    return vm, nic


def nic_edit(
    *,
    vm_id: int,
    nic_id: int,
    user,
    profile_id: int,
    name: str,
    model: str,
    mac: str,
    linked: bool,
    plugged: bool,
) -> NetworkInterface:
    """Edit a network interface: its profile (another one needs attach_vnic on it), link
    state and Plugged change on a running VM too (a job updates, plugs or unplugs it); its
    type and MAC only while it is unplugged or the VM is Down."""
    queue_ensure_available()
    model = _nic_model(model)
    mac = mac_check(mac)
    with transaction.atomic():
        vm, nic = _nic_of(vm_id, nic_id, "edit")
        vm_names_lock(vm.cluster.data_center_id)  # locks in the order of nic_create
        before = {key: getattr(nic, key) for key in NIC_FIELDS}
        if int(profile_id) != nic.profile_id:
            profile = profile_usable(user, profile_id, data_center_id=vm.cluster.data_center_id)
        else:
            profile = nic.profile
        name = _nic_name(vm, name, nic_id=nic.pk)
        live_device = vm.status in LIVE_STATUSES and nic.plugged and bool(plugged)
        if live_device and (model != nic.model or mac != nic.mac):
            raise ActionRefused(
                f"The type and MAC of {nic.name} can change only while it is unplugged or "
                f"{vm.name} is Down."
            )
        if mac != nic.mac:
            mac_free(mac, nic_id=nic.pk)
        nic.name, nic.profile, nic.model, nic.mac = name, profile, model, mac
        nic.linked, nic.plugged = bool(linked), bool(plugged)
        _saved(nic, "MAC address", mac)
        job = _nic_job(
            vm=vm,
            nic=nic,
            kind=JobKind.NIC_EDIT,
            verb="edit",
            user=user,
            params={"before": before},
            undo=nic_restore(nic.pk, before),
        )
        if job is None:
            _nic_done_at_once(user, vm, name, "update")
        broadcast(f"vm.{vm.pk}")
    return nic


def nic_restore(nic_id: int, before: dict):
    """The undo of an interface edit that did not reach the host: its values as they were."""

    def undo(job: Job, message: str = "") -> None:
        NetworkInterface.objects.filter(pk=nic_id).update(locked=False, **before)

    return undo


def nic_remove(*, vm_id: int, nic_id: int, user) -> Job | None:
    """Remove a network interface: a job unplugs it from a running VM, or redefines a Down
    VM without it; its MAC goes back to the pool."""
    queue_ensure_available()
    with transaction.atomic():
        vm, nic = _nic_of(vm_id, nic_id, "remove")
        job = _nic_job(
            vm=vm,
            nic=nic,
            kind=JobKind.NIC_REMOVE,
            verb="remove",
            user=user,
            params={},
            undo=lambda _job: NetworkInterface.objects.filter(pk=nic.pk).update(locked=False),
        )
        if job is None:
            nic.delete()
            _nic_done_at_once(user, vm, nic.name, "remove")
        broadcast(f"vm.{vm.pk}")
    return job
