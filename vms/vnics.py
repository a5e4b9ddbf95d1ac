"""What a VM network interface may be put on, and with which MAC: the vNIC profiles a user
may pick (VnicProfileUser, attach_vnic), and each data center's MAC pool. New VM
(vms.services) and the Network Interfaces windows (vms.networks) share them."""

import re

from accounts.permissions import can
from portal.kernel.errors import ActionRefused

from .choices import NetworkStatus
from .models import Network, NetworkInterface, VnicProfile

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# A MAC pool per data center: 56:6f (oVirt's own locally administered prefix), the data
# center's id in two bytes, then 65,535 addresses.
MAC_POOL_PREFIX = 0x566F
MAC_POOL_SIZE = 0xFFFF


def mac_check(mac) -> str:
    """A MAC address as six pairs of hex digits (':' or '-'), unicast and not all zeros;
    stored in lower case with ':'."""
    text = str(mac or "").strip().lower().replace("-", ":")
    if not MAC_RE.match(text):
        raise ActionRefused(
            f"MAC address {str(mac)[:40]!r} is malformed: write six pairs of hex digits, "
            "like 56:6f:00:01:00:0a."
        )
    if int(text[:2], 16) & 1:
        raise ActionRefused(f"MAC address {text} is a multicast address; use a unicast one.")
    if text == "00:00:00:00:00:00":
        raise ActionRefused("MAC address 00:00:00:00:00:00 cannot be used.")
    return text


def mac_text(value: int) -> str:
    """A 48-bit number as a MAC (lower case, ':')."""
    return ":".join(f"{(value >> shift) & 0xFF:02x}" for shift in range(40, -8, -8))


def mac_pool_range(data_center_id: int) -> tuple[str, str]:
    """The first and last MAC of a data center's MAC pool."""
    base = (MAC_POOL_PREFIX << 32) | ((data_center_id & 0xFFFF) << 16)
    return mac_text(base + 1), mac_text(base + MAC_POOL_SIZE)


def mac_allocate(data_center_id: int) -> str:
    """The lowest free MAC of the data center's pool (call under the data center's row lock,
    `vm_names_lock`, so two requests cannot take the same one)."""
    first, _last = mac_pool_range(data_center_id)
    prefix = first[:11]
    used = set(
        NetworkInterface.objects.filter(mac__startswith=prefix).values_list("mac", flat=True)
    )
    base = int(first.replace(":", ""), 16)
    for n in range(MAC_POOL_SIZE):
        mac = mac_text(base + n)
        if mac not in used:
            return mac
    raise ActionRefused(
        "The data center's MAC pool is used up: remove unused network interfaces first."
    )


def mac_free(mac: str, *, nic_id: int | None = None) -> None:
    used = NetworkInterface.objects.filter(mac=mac).exclude(pk=nic_id).select_related("vm").first()
    if used is not None:
        raise ActionRefused(
            f"MAC address {mac} is already in use by {used.name} of VM {used.vm.name}."
        )


def network_lock(network_id: int, verb: str) -> Network:
    """The network, row-locked, if no job is changing it (else refused)."""
    network = (
        Network.objects.select_for_update()
        .select_related("data_center")
        .filter(pk=network_id)
        .first()
    )
    if network is None:
        raise ActionRefused("That logical network does not exist any more.")
    if network.status != NetworkStatus.OPERATIONAL:
        raise ActionRefused(
            f"Cannot {verb} network {network.name}: it is {network.get_status_display()} "
            "while a job changes it on the hosts."
        )
    return network


def profile_usable(user, profile_id, *, data_center_id: int) -> VnicProfile:
    """The profile an interface is put on: of the VM's data center, usable by the user
    (attach_vnic), on a network that is not being changed (its row is locked meanwhile, so a
    removal cannot slip in)."""
    profile = VnicProfile.objects.select_related("network").filter(pk=profile_id).first()
    if profile is None or profile.network.data_center_id != data_center_id:
        raise ActionRefused("Choose a vNIC profile of the VM's data center.")
    if not can(user, "attach_vnic", profile):
        raise ActionRefused(
            f"You may not use vNIC profile {profile.name}: that needs VnicProfileUser on it."
        )
    if not profile.network.vm_network:
        raise ActionRefused(f"Network {profile.network.name} is not a VM network.")
    network_lock(profile.network_id, f"plug an interface into profile {profile.name} of")
    return profile
