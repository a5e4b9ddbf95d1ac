"""Vireo's hypervisor layer: the only code that imports libvirt.

It turns libvirt objects into small frozen dataclasses and libvirt errors into HypervisorError.
"""

from hypervisor.connection import (
    LIFECYCLE_EVENTS,
    Connection,
    connect,
    disconnect,
    disconnect_all,
    start_event_loop,
)
from hypervisor.datatypes import (
    DiskSpec,
    DomainInfo,
    DomainSpec,
    DomainState,
    HostInfo,
    LifecycleEvent,
    PoolInfo,
    VolumeInfo,
)
from hypervisor.errors import (
    DomainNotFound,
    HostUnreachable,
    HypervisorError,
    PoolNotFound,
    VolumeNotFound,
)

__all__ = [
    "LIFECYCLE_EVENTS",
    "Connection",
    "DiskSpec",
    "DomainInfo",
    "DomainNotFound",
    "DomainSpec",
    "DomainState",
    "HostInfo",
    "HostUnreachable",
    "HypervisorError",
    "LifecycleEvent",
    "PoolInfo",
    "PoolNotFound",
    "VolumeInfo",
    "VolumeNotFound",
    "connect",
    "disconnect",
    "disconnect_all",
    "start_event_loop",
]
