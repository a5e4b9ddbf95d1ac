"""Vireo's hypervisor layer: the only code that imports libvirt.

It turns libvirt objects into small frozen dataclasses and libvirt errors into HypervisorError.
Modules, each importing only those below it:

- cache: the event loop thread, connect() (one shared connection per URI), disconnect();
- testdriver: TestDriverConnection, the Connection for libvirt's test driver;
- connection: Connection, composed of chains (snapshot chains), domains, storage, networks,
  agent (guest agents) and devices (host devices), each over base (opening, keepalive, callbacks, lookups);
- domainxml (all libvirt XML), datatypes, errors; testnode renders test-driver node files.
"""

import os

# GLib (under libvirt) hands out small blocks from its own slice allocator, whose lock a fork
# copies as it stood: a child forked while another thread held it (libvirt's event loop thread
# allocates all the time) hangs in its first virConnectOpen. Plain malloc is fork-safe. GLib
# reads this once, at its first allocation, so it is set before libvirt is loaded.
os.environ.setdefault("G_SLICE", "always-malloc")

from hypervisor.agent import GuestAgentInfo, GuestInterface, GuestUser  # noqa: E402
from hypervisor.base import LIFECYCLE_EVENTS
from hypervisor.cache import connect, disconnect, disconnect_all, start_event_loop
from hypervisor.connection import Connection
from hypervisor.consolexml import GraphicsInfo
from hypervisor.datatypes import (
    CdromSpec,
    DeviceCapability,
    DiskSpec,
    DomainInfo,
    DomainSpec,
    DomainState,
    HostCpuTimes,
    HostdevSpec,
    HostInfo,
    InterfaceSpec,
    LifecycleEvent,
    MigrationOptions,
    MigrationProgress,
    MigrationResult,
    NetworkInfo,
    NetworkMode,
    NetworkSpec,
    NodeDevice,
    PoolInfo,
    PoolSpec,
    VolumeInfo,
)
from hypervisor.errors import (
    DomainNotFound,
    HostUnreachable,
    HypervisorError,
    MigrationCancelled,
    NetworkNotFound,
    PoolNotFound,
    VolumeNotFound,
)
from hypervisor.testdriver import TestDriverConnection

__all__ = [
    "LIFECYCLE_EVENTS",
    "CdromSpec",
    "Connection",
    "DeviceCapability",
    "DiskSpec",
    "DomainInfo",
    "DomainNotFound",
    "DomainSpec",
    "DomainState",
    "GuestAgentInfo",
    "GuestInterface",
    "GuestUser",
    "GraphicsInfo",
    "HostCpuTimes",
    "HostInfo",
    "HostdevSpec",
    "HostUnreachable",
    "HypervisorError",
    "InterfaceSpec",
    "LifecycleEvent",
    "MigrationCancelled",
    "MigrationOptions",
    "MigrationProgress",
    "MigrationResult",
    "NetworkInfo",
    "NetworkMode",
    "NetworkNotFound",
    "NetworkSpec",
    "NodeDevice",
    "PoolInfo",
    "PoolNotFound",
    "PoolSpec",
    "TestDriverConnection",
    "VolumeInfo",
    "VolumeNotFound",
    "connect",
    "disconnect",
    "disconnect_all",
    "start_event_loop",
]
