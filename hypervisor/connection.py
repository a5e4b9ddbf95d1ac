"""Connection: one open libvirt connection, composed from its concerns.

- hypervisor/base.py: opening (with a deadline), keepalive, callbacks, lookups, host info;
- hypervisor/domains.py: domains; hypervisor/storage.py: pools and volumes;
- hypervisor/networks.py: libvirt networks and domains' network interfaces;
- hypervisor/agent.py: what the guests' qemu-guest-agents report;
- hypervisor/chains.py: snapshot chains (overlays, external snapshots, merges, restore);
- hypervisor/migration.py: live migration (peer-to-peer, progress, policy steps, cancel);
- hypervisor/console.py: graphics ports, console tickets (graphics passwords), keys;
- hypervisor/devices.py: the host's assignable devices (pci, usb_device, scsi node devices).

libvirt's test driver gets TestDriverConnection (hypervisor/testdriver.py), a subclass;
connect() (hypervisor/cache.py) picks the class from the URI.
"""

from __future__ import annotations

from hypervisor.agent import AgentMixin
from hypervisor.chains import SnapshotChainsMixin
from hypervisor.console import ConsoleMixin
from hypervisor.devices import DevicesMixin
from hypervisor.domains import DomainsMixin
from hypervisor.migration import MigrationMixin
from hypervisor.networks import NetworksMixin
from hypervisor.storage import StorageMixin


class Connection(
    SnapshotChainsMixin,
    DomainsMixin,
    StorageMixin,
    NetworksMixin,
    MigrationMixin,
    AgentMixin,
    ConsoleMixin,
    DevicesMixin,
):
    """One open libvirt connection (virConnect) to a real libvirtd; safe to use from several
    threads. Its methods: hypervisor/base.py, domains.py, storage.py, networks.py, chains.py,
    migration.py, agent.py, console.py, devices.py."""
