"""Small frozen dataclasses that stand for libvirt objects outside this package."""

from __future__ import annotations

from dataclasses import dataclass


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
    # The address its graphics (VNC, SPICE) listen on: one the web process reaches (the
    # console proxies to it), 127.0.0.1 for a host on the portal's own machine.
    graphics_listen: str = "127.0.0.1"


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
    """A domain lifecycle event; `event` is a lower-case word ("started", "stopped" ...)."""

    uri: str
    uuid: str
    name: str
    event: str
    detail: int
