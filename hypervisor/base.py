"""One libvirt connection's plumbing: opening it (with a deadline), keepalive, close and
lifecycle callbacks, error translation, object lookups and the host's own description.

The concerns of a Connection (domains, storage, snapshot chains) are mixins over this base,
composed in hypervisor/connection.py.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import libvirt

from hypervisor.datatypes import HostCpuTimes, HostInfo, LifecycleEvent
from hypervisor.domainxml import host_cpu_model, net_link_speed
from hypervisor.errors import DomainNotFound, HostUnreachable, translated

log = logging.getLogger(__name__)

# Index = libvirt's VIR_DOMAIN_EVENT_* lifecycle id.
LIFECYCLE_EVENTS = (
    "defined",
    "undefined",
    "started",
    "suspended",
    "resumed",
    "stopped",
    "shutdown",
    "pmsuspended",
    "crashed",
)
# Index = the detail of a lifecycle event, for the events whose detail tells why a domain
# stopped (VIR_DOMAIN_EVENT_STOPPED_*, _SHUTDOWN_*, _CRASHED_*); the HA watcher reads them.
LIFECYCLE_DETAILS = {
    "stopped": (
        "shutdown",
        "destroyed",
        "crashed",
        "migrated",
        "saved",
        "failed",
        "from_snapshot",
        "recovery",
    ),
    "shutdown": ("finished", "guest", "host"),
    "crashed": ("panicked", "crashloaded"),
}
_CLOSE_REASONS = ("error", "eof", "keepalive", "client")

# Keepalive: a probe every 5 s, the connection closed after 3 unanswered (a call on a host
# that stopped answering fails within about 20 s instead of waiting for ever).
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 3

_opening: dict[str, threading.Thread] = {}  # opens given up on that still wait for the host


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """Keep libvirt from printing every error on stderr: we raise them instead."""


libvirt.registerErrorHandler(_ignore_libvirt_error, None)
# A forked child has no thread of its parent's, so no open attempt of its own pending.
os.register_at_fork(after_in_child=_opening.clear)


def _open(uri: str, timeout: float | None) -> libvirt.virConnect:
    """libvirt.open(uri) with a deadline. libvirt has no connect timeout (a host whose port
    accepts but never answers holds the caller for ever), so the open runs in a thread of its
    own; one given up on is left to end by itself (and close what it opened), and while it
    waits no second attempt is started for that URI."""
    if timeout is None:
        return libvirt.open(uri)
    pending = _opening.get(uri)
    if pending is not None and pending.is_alive():
        raise HostUnreachable(
            "The host has still not answered an earlier connection attempt.",
            libvirt.VIR_ERR_NO_CONNECT,
        )
    lock = threading.Lock()
    outcome: dict[str, object] = {}

    def attempt() -> None:
        try:
            result: object = libvirt.open(uri)
        except libvirt.libvirtError as err:
            result = err
        with lock:
            if not outcome.get("abandoned"):
                outcome["result"] = result
                return
        if isinstance(result, libvirt.virConnect):
            try:
                result.close()
            except libvirt.libvirtError:
                pass

    thread = threading.Thread(target=attempt, name="libvirt-open", daemon=True)
    thread.start()
    thread.join(timeout)
    with lock:
        if "result" not in outcome:
            outcome["abandoned"] = True
            _opening[uri] = thread
            raise HostUnreachable(
                f"The host did not answer within {timeout:g} seconds.", libvirt.VIR_ERR_NO_CONNECT
            )
    result = outcome["result"]
    if isinstance(result, libvirt.libvirtError):
        raise result
    return result


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


class ConnectionBase:
    """One open libvirt connection (virConnect); safe to use from several threads."""

    def __init__(self, uri: str, *, timeout: float | None = None) -> None:
        """Open `uri` read-write, giving up after `timeout` seconds (None: wait as long as
        libvirt does); prefer connect(), which shares one Connection per URI."""
        self.uri = uri
        self._lock = threading.Lock()
        self._closed = False  # lost (close callback) or closed by us
        self._released = False  # close() done
        self._lifecycle_callbacks: list[Callable[[LifecycleEvent], None]] = []
        self._lifecycle_id: int | None = None
        self._close_callbacks: list[Callable[[str], None]] = []
        self._capabilities: str | None = None
        with translated(as_type=HostUnreachable):
            self._conn: libvirt.virConnect = _open(uri, timeout)
        for setup in (
            lambda: self._conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT),
            self._register_close,
        ):
            try:
                setup()
            except libvirt.libvirtError:
                pass  # local drivers have neither keepalive nor close callbacks

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uri}>"

    # -- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        with translated(self.is_alive):
            yield

    def _register_close(self) -> None:
        self._conn.registerCloseCallback(self._closed_by_libvirt, None)

    def _closed_by_libvirt(self, _conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        self._closed = True
        text = _CLOSE_REASONS[reason] if 0 <= reason < len(_CLOSE_REASONS) else str(reason)
        with self._lock:
            callbacks = list(self._close_callbacks)
        for callback in callbacks:
            try:
                callback(text)
            except Exception:
                log.exception("close callback failed for %s", self.uri)

    def is_alive(self) -> bool:
        """Whether the connection is still open and answering."""
        if self._closed:
            return False
        try:
            return self._conn.isAlive() == 1
        except libvirt.libvirtError:
            return False

    def close(self) -> None:
        """Deregister callbacks and close; on_close callbacks are not called for this."""
        with self._lock:
            if self._released:
                return
            self._released = self._closed = True
            lifecycle_id, self._lifecycle_id = self._lifecycle_id, None
        cleanups = [self._conn.unregisterCloseCallback, self._conn.close]
        if lifecycle_id is not None:
            cleanups.insert(0, lambda: self._conn.domainEventDeregisterAny(lifecycle_id))
        for cleanup in cleanups:
            try:
                cleanup()
            except libvirt.libvirtError:
                pass

    def _domain(self, uuid: str) -> libvirt.virDomain:
        with self._translated():
            try:
                return self._conn.lookupByUUIDString(uuid)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                    raise
                message = err.get_error_message() or str(err)  # a malformed uuid
                raise DomainNotFound(message, err.get_error_code()) from err

    def _pool(self, name: str) -> libvirt.virStoragePool:
        with self._translated():
            return self._conn.storagePoolLookupByName(name)

    def _volume(self, pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol:
        with self._translated():
            return pool.storageVolLookupByName(name)

    @staticmethod
    def _refresh(pool: libvirt.virStoragePool) -> None:
        try:
            if pool.isActive():
                pool.refresh(0)
        except libvirt.libvirtError:
            pass  # e.g. a volume is being built; a stale view is fine

    # -- host -------------------------------------------------------------------------------

    def _caps(self) -> str:
        if self._capabilities is None:
            with self._translated():
                self._capabilities = self._conn.getCapabilities()
        return self._capabilities

    def host_info(self) -> HostInfo:
        """Name, CPU model, CPUs and cores, memory, and versions of the host (virNodeGetInfo:
        model, memory, active CPUs, MHz, NUMA nodes, sockets per node, cores per socket,
        threads per core)."""
        with self._translated():
            model, memory_mb, cpus, _mhz, nodes, sockets, cores, _threads = self._conn.getInfo()
            version = _version(self._conn.getVersion())
            return HostInfo(
                hostname=self._conn.getHostname(),
                cpu_model=host_cpu_model(self._caps(), default=model),
                cpus=cpus,
                memory_mb=memory_mb,
                hypervisor=f"{self._conn.getType()} {version}",
                libvirt_version=_version(self._conn.getLibVersion()),
                cores=max(1, nodes) * max(1, sockets) * max(1, cores),
                hypervisor_version=version,
                link_speed_mbps=self._link_speed(),
            )

    def _link_speed(self) -> int:
        """The fastest link that is up among the host's network node devices (0: unknown)."""
        try:
            devices = self._conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET)
        except libvirt.libvirtError:
            return 0  # no node device driver: unknown
        speeds = []
        for device in devices:
            try:
                speeds.append(net_link_speed(device.XMLDesc(0)))
            except libvirt.libvirtError:
                continue  # the interface went away meanwhile
        return max(speeds, default=0)

    def host_cpu_times(self) -> HostCpuTimes:
        """The host's CPU time counters over all its CPUs (virNodeGetCPUStats: user and kernel
        busy; idle and iowait not), for the monitor's CPU usage between two polls."""
        with self._translated():
            stats = self._conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
        busy = int(stats.get("user", 0)) + int(stats.get("kernel", 0))
        idle = int(stats.get("idle", 0)) + int(stats.get("iowait", 0))
        return HostCpuTimes(busy_ns=busy, total_ns=busy + idle)

    # -- events -----------------------------------------------------------------------------

    def on_lifecycle(self, callback: Callable[[LifecycleEvent], None]) -> None:
        """Call `callback` (in the event-loop thread) for every domain lifecycle event."""
        with self._lock:
            if self._lifecycle_id is None:
                # libvirt tracks one Python callback per event id and connection: we dispatch.
                with self._translated():
                    self._lifecycle_id = self._conn.domainEventRegisterAny(
                        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
                    )
            self._lifecycle_callbacks.append(callback)

    def _lifecycle(
        self, _conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int, _o: object
    ) -> None:
        word = LIFECYCLE_EVENTS[event] if 0 <= event < len(LIFECYCLE_EVENTS) else str(event)
        with self._lock:
            callbacks = list(self._lifecycle_callbacks)
        try:
            words = LIFECYCLE_DETAILS.get(word, ())
            why = words[detail] if 0 <= detail < len(words) else ""
            lifecycle = LifecycleEvent(self.uri, dom.UUIDString(), dom.name(), word, detail, why)
        except libvirt.libvirtError:
            log.exception("cannot describe a lifecycle event on %s", self.uri)
            return
        for callback in callbacks:
            try:
                callback(lifecycle)
            except Exception:
                log.exception("lifecycle callback failed for %s", self.uri)

    def on_close(self, callback: Callable[[str], None]) -> None:
        """Call `callback(reason)` when libvirt reports the connection lost (error, eof ...)."""
        with self._lock:
            self._close_callbacks.append(callback)
