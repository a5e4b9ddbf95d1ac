"""Small frozen dataclasses that stand for libvirt objects outside this package."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class DomainState:
    """The run states of a domain, as plain strings (libvirt's VIR_DOMAIN_* states)."""

    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # being shut down
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"


# Index = libvirt's virDomainShutoffReason: why a domain is shut off.
SHUTOFF_REASONS = (
    "unknown",
    "shutdown",
    "destroyed",
    "crashed",
    "migrated",
    "saved",
    "failed",
    "from_snapshot",
    "daemon",
)

# Index = libvirt's virDomainState number.
STATE_BY_NUMBER = (
    DomainState.NOSTATE,
    DomainState.RUNNING,
    DomainState.BLOCKED,
    DomainState.PAUSED,
    DomainState.SHUTDOWN,
    DomainState.SHUTOFF,
    DomainState.CRASHED,
    DomainState.PMSUSPENDED,
)


@dataclass(frozen=True)
class HostCpuTimes:
    """A host's CPU time counters at one moment (nanoseconds, all CPUs): `busy` (user and
    kernel) out of `total`. The CPU usage between two readings is the ratio of their deltas."""

    busy_ns: int
    total_ns: int

    def usage_since(self, earlier: HostCpuTimes) -> int | None:
        """Percent busy between `earlier` and this reading (None when no time passed)."""
        total = self.total_ns - earlier.total_ns
        if total <= 0:
            return None
        busy = self.busy_ns - earlier.busy_ns
        return max(0, min(100, round(100 * busy / total)))


@dataclass(frozen=True)
class HostInfo:
    """What a host is: its name, CPU model, logical CPUs and physical cores, memory, and the
    versions of its hypervisor (`hypervisor`: type and version, "QEMU 7.2.0";
    `hypervisor_version` the version alone) and of libvirt."""

    hostname: str
    cpu_model: str
    cpus: int
    memory_mb: int
    hypervisor: str
    libvirt_version: str
    cores: int = 0
    hypervisor_version: str = ""
    # The fastest network link that is up, as libvirt's node devices report it (Mbps); 0 when
    # none says (a virtio NIC has no speed): Auto migration bandwidth reads it.
    link_speed_mbps: int = 0


@dataclass(frozen=True)
class DomainInfo:
    """A domain as seen at one moment: identity, run state (a DomainState) and size."""

    uuid: str
    name: str
    state: str
    has_managed_save: bool
    memory_mb: int
    vcpus: int
    persistent: bool


@dataclass(frozen=True)
class PoolInfo:
    """A storage pool; sizes in bytes."""

    name: str
    uuid: str
    type: str
    path: str
    active: bool
    capacity: int
    allocation: int
    available: int


@dataclass(frozen=True)
class PoolSpec:
    """A pool to define: a `dir` pool on `path`, or a `netfs` pool mounting
    `source_host`:`source_dir` (NFS) on `path`."""

    name: str
    type: str  # "dir" or "netfs"
    path: str
    source_host: str = ""
    source_dir: str = ""
    # NFS mount options (`soft`, `timeo=100` ...), each checked by the caller.
    mount_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeInfo:
    """A storage volume; sizes in bytes, format as libvirt names it (qcow2, raw ...)."""

    name: str
    key: str
    path: str
    capacity: int
    allocation: int
    format: str


@dataclass(frozen=True)
class DiskSpec:
    """A disk of a domain to define: an existing volume of a pool, attached as `target`."""

    pool: str
    volume: str
    target: str = "vda"
    bus: str = "virtio"


@dataclass(frozen=True)
class InterfaceSpec:
    """A network interface of a domain: plugged into the libvirt network `network` of the
    host, with its MAC, its device model (virtio, e1000, rtl8139) and its link state."""

    mac: str
    network: str
    model: str = "virtio"
    link_up: bool = True


@dataclass(frozen=True)
class CdromSpec:
    """The CD in a domain's CD-ROM drive: volume `volume` of pool `pool` (an image of an ISO
    domain), or none (`volume` empty: an empty drive)."""

    pool: str = ""
    volume: str = ""

    @property
    def empty(self) -> bool:
        return not self.volume


class DeviceCapability:
    """The node-device capabilities a VM may be given (libvirt's names, the chapter's too)."""

    PCI = "pci"
    SCSI = "scsi"
    USB_DEVICE = "usb_device"
    ALL = (PCI, SCSI, USB_DEVICE)


@dataclass(frozen=True)
class NodeDevice:
    """A device of a host (libvirt's node device) that can be assigned to a guest.

    `address` by capability: pci (domain, bus, slot, function); usb_device (bus, device);
    scsi (host, bus, target, lun). Ids are hex text as libvirt writes them ("0x8086")."""

    name: str
    capability: str
    address: tuple[int, ...]
    vendor_id: str = ""
    vendor_name: str = ""
    product_id: str = ""
    product_name: str = ""
    iommu_group: int | None = None
    driver: str = ""
    parent: str = ""

    @property
    def address_text(self) -> str:
        return address_text(self.capability, self.address)


def address_text(capability: str, address: tuple[int, ...]) -> str:
    """A device address as people write it: 0000:00:19.0 (PCI), 001:002 (USB bus:device),
    0:0:0:0 (SCSI host:bus:target:lun)."""
    if capability == DeviceCapability.PCI and len(address) == 4:
        return "{:04x}:{:02x}:{:02x}.{:x}".format(*address)
    if capability == DeviceCapability.USB_DEVICE and len(address) == 2:
        return "{:03d}:{:03d}".format(*address)
    return ":".join(str(part) for part in address)


@dataclass(frozen=True)
class HostdevSpec:
    """A host device given to a domain (<hostdev>): PCI by its address (managed: libvirt
    detaches it from its host driver), USB by vendor and product, SCSI by adapter and
    address (`address` as in NodeDevice)."""

    capability: str
    address: tuple[int, ...]
    vendor_id: str = ""
    product_id: str = ""

    def __post_init__(self) -> None:
        sizes = {DeviceCapability.PCI: 4, DeviceCapability.USB_DEVICE: 2, DeviceCapability.SCSI: 4}
        if self.capability not in sizes:
            raise ValueError(f"unknown device capability {self.capability!r}")
        if len(self.address) != sizes[self.capability] or any(
            not isinstance(part, int) or part < 0 or part > 0xFFFF for part in self.address
        ):
            raise ValueError(f"bad {self.capability} address {self.address!r}")
        for value in (self.vendor_id, self.product_id):
            if value and not HEX_ID.fullmatch(value):
                raise ValueError(f"bad device id {value!r}")
        if self.capability == DeviceCapability.USB_DEVICE and not (
            self.vendor_id and self.product_id
        ):
            raise ValueError("a USB device is given by its vendor and product ids")


HEX_ID = re.compile(r"0x[0-9a-fA-F]{1,4}")


@dataclass(frozen=True)
class DomainSpec:
    """What define_domain needs to build a domain's XML."""

    uuid: str
    name: str
    memory_mb: int
    vcpus: int
    disks: tuple[DiskSpec, ...] = ()
    description: str = ""
    cores_per_socket: int = 1  # vcpus are vcpus / cores_per_socket sockets of that many cores
    interfaces: tuple[InterfaceSpec, ...] = ()
    # Every domain Vireo defines has one CD-ROM drive (empty by default), and boots from
    # `boot` in order (libvirt's <boot dev=...>: "hd", "cdrom", "network").
    cdrom: CdromSpec = CdromSpec()
    boot: tuple[str, ...] = ("hd",)
    # The address its graphics (VNC, SPICE) listen on: one the web process reaches (the
    # console proxies to it), 127.0.0.1 for a host on the portal's own machine.
    graphics_listen: str = "127.0.0.1"
    # Pass-Through Host CPU: <cpu mode='host-passthrough'/> (such a guest cannot migrate).
    cpu_passthrough: bool = False
    # Host devices given to the guest (<hostdev>), from the host it is pinned to.
    hostdevs: tuple[HostdevSpec, ...] = ()


class NetworkMode:
    """How a libvirt network reaches the outside: NAT through the host, not at all
    (isolated), or through an existing bridge of the host."""

    NAT = "nat"
    ISOLATED = "isolated"
    BRIDGE = "bridge"


@dataclass(frozen=True)
class NetworkSpec:
    """A libvirt network to define on a host. `ipv4` is the host's address on it with its
    prefix ("192.168.150.1/24", NAT and isolated; DHCP serves the rest of the subnet); a
    bridge network names the host's `bridge`, and a VLAN `vlan` tag (libvirt tags only on
    Open vSwitch bridges)."""

    name: str
    mode: str
    bridge: str = ""
    vlan: int | None = None
    ipv4: str = ""


@dataclass(frozen=True)
class NetworkInfo:
    """A libvirt network of a host as it is now."""

    name: str
    uuid: str
    active: bool
    autostart: bool
    persistent: bool


@dataclass(frozen=True)
class LifecycleEvent:
    """A domain lifecycle event; `event` is a lower-case word ("started", "stopped" ...),
    `why` its detail as a word where it tells why a domain stopped ("failed", "guest" ...)."""

    uri: str
    uuid: str
    name: str
    event: str
    detail: int
    why: str = ""


COMPRESSION_METHODS = ("xbzrle", "mt")


@dataclass(frozen=True)
class MigrationOptions:
    """How to migrate, as the effective migration policy says.

    `downtime_steps`: the maximum downtime (ms) for the first iterations in turn, the last
    one kept (Minimal downtime raises it step by step; Legacy gives one value).
    `post_copy_after`: switch to post-copy from this memory iteration (Post-copy policy).
    `pause_after`: pause the guest from this iteration so the copy converges (Suspend
    workload if needed); it runs again on the destination.
    `migrate_uri`: where qemu sends the memory (tcp://<destination address>), when the
    destination's own host name would not reach it."""

    auto_converge: bool = False
    compression: tuple[str, ...] = ()
    downtime_steps: tuple[int, ...] = ()
    bandwidth_mbps: int | None = None
    post_copy_after: int | None = None
    pause_after: int | None = None
    migrate_uri: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.compression) - set(COMPRESSION_METHODS)
        if unknown:
            raise ValueError(f"unknown compression method(s) {sorted(unknown)}")
        if any(not 0 < ms <= 60_000 for ms in self.downtime_steps):
            raise ValueError("downtime steps must be 1..60000 ms")
        if self.bandwidth_mbps is not None and not 0 < self.bandwidth_mbps <= 1_000_000:
            raise ValueError("bandwidth must be 1..1000000 Mbps")


@dataclass(frozen=True)
class MigrationProgress:
    """One reading of the migration job: bytes of guest memory, the iteration (pass over
    memory), elapsed milliseconds."""

    data_total: int = 0
    data_processed: int = 0
    data_remaining: int = 0
    iteration: int = 0
    elapsed_ms: int = 0
    post_copy: bool = False
    paused: bool = False

    @property
    def percent(self) -> int:
        if not self.data_total:
            return 0
        return min(99, (self.data_total - self.data_remaining) * 100 // self.data_total)


@dataclass(frozen=True)
class MigrationResult:
    duration_s: float
    downtime_ms: int | None
    iterations: int
    paused: bool = False  # paused to converge: resume it on the destination
    steps: tuple[str, ...] = field(default_factory=tuple)
