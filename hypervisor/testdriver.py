"""TestDriverConnection: a Connection to libvirt's test driver, with what that driver lacks.

The test driver (`test:///node.xml`, used by unit tests and the demo) keeps pools, volumes and
domain definitions, but has no backing files, block jobs, external snapshots or restore from
a file. This subclass stands in for exactly those, in process, by overriding Connection's
hooks (its public methods stay Connection's own):

- backing relations live in a dict (pool, volume) -> backing volume, per connection (a test
  node's state is per connection too); overlays and memory files are ordinary test volumes,
  so they show in list_volumes and in the pool's allocation;
- a snapshot of a running test domain is taken like one of a shut-off domain (overlays, then
  defineXML): the domain keeps running, and since the test driver cannot change a running
  domain's live XML, its persistent definition is where the current disks are read from;
- a merge rewires the dict (no data to move), restoring memory just starts the domain;
- it cannot migrate: the definition moves to the destination node and runs there at once;
- it has no guest agents: a running domain's "agent" answers when the domain has the agent's
  channel, with what the driver itself reports (its host name; guestInfo where a newer driver
  has it) and the agent-sourced addresses libvirt's test driver makes up for each interface.
  Its virDomainInterfaceAddresses crashes the process (libvirt 9.0) for an interface whose
  network has no <ip> or does not exist: such a domain's agent reports no addresses;
- it has no volume upload (virStorageVolUpload): an upload reads the source through, with the
  same progress calls, into the volume created at the source's size (test volumes hold no
  data); the real stream is proven on libvirtd with qemu (tests/integration);
- it has no device hot-plug (virDomainAttachDeviceFlags, Detach, Update: "not supported by
  the connection driver"): an interface is plugged, unplugged or updated in the persistent
  definition (defineXML), running or not, as snapshots do; so is a CD put in or ejected
  (Change CD), and a console ticket (the graphics password). Its networks (define, start,
  autostart, destroy, undefine) are libvirt's own. It has no domain capabilities: VNC is its
  one graphics type.
- its node CPU counters never move (virNodeGetCPUStats gives fixed figures) and its domains'
  CPU time is the clock: the host's CPU counters advance, between two readings, by the
  elapsed time times its running domains (one CPU's worth each, as the driver counts them)
  out of the elapsed time times the node's CPUs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import libvirt

from hypervisor.agent import GUEST_INFO_TYPES
from hypervisor.connection import Connection
from hypervisor.consolexml import with_graphics_device
from hypervisor.datatypes import HostCpuTimes, InterfaceSpec, VolumeInfo
from hypervisor.domainxml import (
    has_guest_agent_channel,
    interface_macs,
    interface_networks,
    network_has_ip,
    overlay_xml,
    volume_xml,
    with_cdrom,
    with_interface,
    without_interface,
)
from hypervisor.errors import HypervisorError


class TestDriverConnection(Connection):
    """A Connection to libvirt's test driver, with emulated backing chains, merges and memory."""

    __test__ = False  # not a pytest test class

    def __init__(self, uri: str, *, timeout: float | None = None) -> None:
        super().__init__(uri, timeout=timeout)
        self._chains_lock = threading.Lock()
        self._backing: dict[tuple[str, str], str] = {}
        self._cpu_counters = (0, 0, 0)  # (when, busy, total) of the last host_cpu_times

    def _record(self, pool: str, name: str, backing: str) -> None:
        """Volume `name` of `pool` now backs onto volume `backing` of the same pool."""
        with self._chains_lock:
            self._backing[pool, name] = backing

    def host_cpu_times(self) -> HostCpuTimes:
        """Counters that advance, from one reading to the next, by the elapsed time times the
        running domains (busy) and times the node's CPUs (total); see the module's text."""
        with self._translated():
            cpus = max(1, self._conn.getInfo()[2])
            running = len(self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING))
        now = time.monotonic_ns()
        with self._chains_lock:
            last, busy, total = self._cpu_counters
            if last:
                busy += (now - last) * min(running, cpus)
                total += (now - last) * cpus
            self._cpu_counters = (now, busy, total)
        return HostCpuTimes(busy_ns=busy, total_ns=total)

    # -- domains ------------------------------------------------------------------------------

    def _migrate_domain(
        self, dom: libvirt.virDomain, dest: Connection, params: dict, flags: int
    ) -> None:
        """The test driver cannot migrate: the definition moves to the destination's node and
        the domain runs there, at once, paused if it was (no job statistics, nothing to
        abort)."""
        xml = self._current_xml(dom)
        with self._translated():
            paused = dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
            moved = dest._conn.defineXML(xml)
            moved.create()
            if paused:
                moved.suspend()
            dom.destroy()
            dom.undefine()

    def _domain_type(self) -> tuple[str, str | None]:
        return "test", None

    def graphics_offered(self) -> tuple[set[str], set[str]]:
        """The test driver has no domain capabilities: VNC and vga, as libvirt accepts them."""
        return {"vnc"}, {"vga"}

    def _graphics_xml(self, dom: libvirt.virDomain) -> str:
        return self._current_xml(dom)

    def _update_graphics(self, dom: libvirt.virDomain, device: str) -> None:
        """No virDomainUpdateDeviceFlags: the ticket goes into the persistent definition,
        where _graphics_xml reads it (as interfaces do, see the module's text)."""
        xml = with_graphics_device(self._current_xml(dom), device)
        with self._translated():
            self._conn.defineXML(xml)

    def _current_xml(self, dom: libvirt.virDomain) -> str:
        """The persistent XML of a persistent domain, running or not (see the module's text)."""
        flags = libvirt.VIR_DOMAIN_XML_SECURE
        with self._translated():
            if dom.isPersistent():
                flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
            return dom.XMLDesc(flags)

    def _agent_params(self, dom: libvirt.virDomain, timeout: int) -> dict | None:
        """No channel: no agent (as qemu says "QEMU guest agent is not configured"). Else the
        driver's guestInfo if it has one, or its host name (libvirt 9.0's test driver)."""
        with self._translated():
            if not dom.isActive() or not has_guest_agent_channel(dom.XMLDesc(0)):
                return None
            try:
                return dom.guestInfo(GUEST_INFO_TYPES, 0)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
            return {"hostname": dom.hostname(0)}

    def _agent_interfaces(self, dom: libvirt.virDomain) -> dict:
        """The driver's made-up addresses, asked only where it can answer (see the module)."""
        with self._translated():
            for network in interface_networks(dom.XMLDesc(0)):
                try:
                    if not network_has_ip(self._conn.networkLookupByName(network).XMLDesc(0)):
                        return {}
                except libvirt.libvirtError:
                    return {}
        return super()._agent_interfaces(dom)

    def _device(self, uuid: str, nic: InterfaceSpec, call: str, *, live: bool) -> None:
        """Plug, unplug or update `nic` in the domain's persistent definition (see above)."""
        dom = self._domain(uuid)
        xml = self._current_xml(dom)
        present = nic.mac.lower() in interface_macs(xml)
        if call == "attachDeviceFlags" and present:
            raise HypervisorError(
                f"operation failed: an interface with MAC {nic.mac} already exists",
                libvirt.VIR_ERR_OPERATION_FAILED,
            )
        if call != "attachDeviceFlags" and not present:
            raise HypervisorError(
                f"device not found: no interface with MAC {nic.mac}",
                libvirt.VIR_ERR_DEVICE_MISSING,
            )
        xml = without_interface(xml, nic.mac) if call == "detachDeviceFlags" else xml
        if call != "detachDeviceFlags":
            xml = with_interface(xml, nic)
        with self._translated():
            self._conn.defineXML(xml)

    def _cdrom_update(self, dom: libvirt.virDomain, path: str | None, flags: int) -> None:
        """The CD goes into the persistent definition, running or not (no device update)."""
        xml = with_cdrom(self._current_xml(dom), path)
        with self._translated():
            self._conn.defineXML(xml)

    # -- backing chains -----------------------------------------------------------------------

    def _upload(self, vol, data, size, progress) -> None:
        """Read the source through (no stream: the test driver has none; see the module)."""
        done = 0
        if progress:
            progress(0, size)
        while done < size:
            chunk = data.read(min(1 << 20, size - done))
            if not chunk:
                raise HypervisorError(f"the source file ended after {done} of {size} bytes")
            done += len(chunk)
            if progress:
                progress(done, size)

    def _backing_names(self, pool: str) -> dict[str, str | None]:
        names = {v.name for v in self.list_volumes(pool)}
        with self._chains_lock:
            return {
                name: below if (below := self._backing.get((pool, name))) in names else None
                for name in names
            }

    def _overlay_xml(self, name: str, under: VolumeInfo) -> str:
        return overlay_xml(name, under.capacity)  # a <backingStore> would only be echoed back

    def create_overlay(self, pool: str, name: str, backing: str) -> VolumeInfo:
        info = super().create_overlay(pool, name, backing)
        self._record(pool, name, backing)
        return info

    def adopt_backing(self, pool: str, name: str, backing: str) -> None:
        self._record(pool, name, backing)

    def delete_volume(self, pool: str, name: str) -> None:
        super().delete_volume(pool, name)
        with self._chains_lock:
            self._backing.pop((pool, name), None)

    # -- snapshots, merges, memory ------------------------------------------------------------

    def _snapshot_running(
        self,
        dom: libvirt.virDomain,
        xml: str,
        layers: dict[str, tuple[str, str, str]],
        memory_volume: tuple[str, str] | None,
    ) -> None:
        self._snapshot_by_overlays(dom, layers, memory_volume)

    def _save_memory(self, dom: libvirt.virDomain, pool: str, name: str) -> None:
        """The memory file of a snapshot: a raw volume as large as the domain's memory."""
        with self._translated():
            size = dom.info()[1] * 1024  # maximum memory, KiB
            self._pool(pool).createXML(volume_xml(name, size, size, "raw"), 0)

    def _merge(
        self,
        dom: libvirt.virDomain,
        target: str,
        pool: str,
        path: str,
        top: VolumeInfo,
        base: VolumeInfo,
        *,
        active_layer: bool,
        running: bool,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        """What backed onto `top` now backs onto `base` (merge_volumes redefines, deletes)."""
        total = top.capacity
        if progress:
            progress(0, total)
        with self._chains_lock:
            for key, below in list(self._backing.items()):
                if key[0] == pool and below == top.name:
                    self._backing[key] = base.name
        if progress:
            progress(total, total)

    def _restore(self, dom: libvirt.virDomain, memory: VolumeInfo) -> None:
        """Start the domain (the test driver cannot restore from a file)."""
        with self._translated():
            dom.create()
