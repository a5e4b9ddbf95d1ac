"""Connections to libvirt: the event loop, the per-process connection cache, and Connection."""

from __future__ import annotations

import logging
import os
import posixpath
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import libvirt

from hypervisor.datatypes import (
    STATE_BY_NUMBER,
    DomainInfo,
    DomainSpec,
    HostInfo,
    LifecycleEvent,
    PoolInfo,
    VolumeInfo,
)
from hypervisor.domainxml import (
    DiskSource,
    disk_chain,
    disk_files,
    disk_targets,
    domain_xml,
    with_disk_files,
    without_backing_stores,
)
from hypervisor.emulated import EmulatedChains
from hypervisor.errors import (
    DomainNotFound,
    HostUnreachable,
    HypervisorError,
    PoolNotFound,
    VolumeNotFound,
    convert,
    translated,
)

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
_CLOSE_REASONS = ("error", "eof", "keepalive", "client")

_loop_lock = threading.Lock()
_loop_registered = False
_loop_thread: threading.Thread | None = None
_cache_lock = threading.Lock()
_connections: dict[str, Connection] = {}
_uri_locks: dict[str, threading.Lock] = {}
_inherited: list[Connection] = []  # a parent's connections, kept (never closed) after a fork
_opening: dict[str, threading.Thread] = {}  # opens given up on that still wait for the host
# Seconds a connection attempt may take before the host counts as not answering.
CONNECT_TIMEOUT = 30.0
# Keepalive: a probe every 5 s, the connection closed after 3 unanswered (a call on a host
# that stopped answering fails within about 20 s instead of waiting for ever).
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 3


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """Keep libvirt from printing every error on stderr: we raise them instead."""


libvirt.registerErrorHandler(_ignore_libvirt_error, None)


def start_event_loop() -> None:
    """Register libvirt's default event loop once and run it in a daemon thread."""
    global _loop_registered, _loop_thread
    with _loop_lock:
        if not _loop_registered:
            libvirt.virEventRegisterDefaultImpl()
            _loop_registered = True
        if _loop_thread is None:
            _loop_thread = threading.Thread(
                target=_run_event_loop, name="libvirt-events", daemon=True
            )
            _loop_thread.start()


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # the loop must outlive any error
            log.exception("libvirt event loop iteration failed")
            time.sleep(0.1)


def _after_fork_in_child() -> None:
    """Give a forked child its own connections: its parent's sockets are not its to use.

    The inherited connections are set aside untouched (closing them would talk on the parent's
    sockets). Calls work in the child, but libvirt's event loop does not survive a fork once it
    ran: a child of a process that called connect() gets no events (and no keepalive).
    """
    global _loop_lock, _cache_lock, _loop_thread
    if _loop_thread is not None:
        log.warning("forked after the libvirt event loop started: no events in this process")
    _loop_lock, _cache_lock, _loop_thread = threading.Lock(), threading.Lock(), None
    _inherited.extend(_connections.values())
    _connections.clear()
    _uri_locks.clear()
    _opening.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def connect(uri: str, *, timeout: float | None = None) -> Connection:
    """The process-wide shared Connection for `uri`, opened (or reopened if dead) on demand.

    Opening gives up after `timeout` seconds (CONNECT_TIMEOUT by default) with HostUnreachable."""
    start_event_loop()
    with _cache_lock:
        uri_lock = _uri_locks.setdefault(uri, threading.Lock())
    with uri_lock:
        conn = _connections.get(uri)
        if conn is not None and conn.is_alive():
            return conn
        if conn is not None:
            conn.close()
        conn = Connection(uri, timeout=CONNECT_TIMEOUT if timeout is None else timeout)
        with _cache_lock:
            _connections[uri] = conn
        return conn


def disconnect(uri: str) -> None:
    """Close and forget the cached connection for `uri`, if any."""
    with _cache_lock:
        conn = _connections.pop(uri, None)
    if conn is not None:
        conn.close()


def disconnect_all() -> None:
    """Close and forget every cached connection."""
    with _cache_lock:
        uris = list(_connections)
    for uri in uris:
        disconnect(uri)


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


def _xml_text(xml: str, path: str, attr: str | None = None, default: str = "") -> str:
    node = ET.fromstring(xml).find(path)
    if node is None:
        return default
    value = node.get(attr) if attr else node.text
    return value if value is not None else default


def _chain(backing: dict[str, str | None], name: str) -> list[str]:
    """`name` and the volumes below it, following `backing` (volume -> its backing volume)."""
    chain = [name]
    while (below := backing.get(chain[-1])) is not None and below not in chain:
        chain.append(below)
    return chain


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


class Connection:
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
        # libvirt's test driver has no backing chains, block jobs, external snapshots or
        # restore from a file: for it (only) those are emulated in this process.
        try:
            is_test = self._conn.getType() == "TEST"
        except libvirt.libvirtError as err:
            self._conn.close()
            raise convert(err, alive=lambda: False) from err
        self._emulated: EmulatedChains | None = EmulatedChains(self) if is_test else None

    def __repr__(self) -> str:
        return f"<Connection {self.uri}>"

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
        """Name, CPUs, memory and versions of the host."""
        with self._translated():
            model, memory_mb, cpus, *_ = self._conn.getInfo()
            return HostInfo(
                hostname=self._conn.getHostname(),
                cpu_model=_xml_text(self._caps(), "host/cpu/model", default=model),
                cpus=cpus,
                memory_mb=memory_mb,
                hypervisor=f"{self._conn.getType()} {_version(self._conn.getVersion())}",
                libvirt_version=_version(self._conn.getLibVersion()),
            )

    # -- domains ----------------------------------------------------------------------------

    def _info(self, dom: libvirt.virDomain, *, saved: bool, persistent: bool) -> DomainInfo:
        state, max_kib, _cur_kib, vcpus, _cpu_time = dom.info()
        return DomainInfo(
            uuid=dom.UUIDString(),
            name=dom.name(),
            state=STATE_BY_NUMBER[state] if 0 <= state < len(STATE_BY_NUMBER) else "nostate",
            has_managed_save=saved,
            memory_mb=max_kib // 1024,
            vcpus=vcpus,
            persistent=persistent,
        )

    def _domain_info(self, dom: libvirt.virDomain) -> DomainInfo:
        with self._translated():
            saved = bool(dom.hasManagedSaveImage(0))
            return self._info(dom, saved=saved, persistent=bool(dom.isPersistent()))

    def list_domains(self) -> list[DomainInfo]:
        """Every domain of the host, active or not."""
        with self._translated():
            saved = {
                d.UUIDString()
                for d in self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)
            }
            persistent = {
                d.UUIDString()
                for d in self._conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
            }
            domains = self._conn.listAllDomains(0)
        result = []
        for dom in domains:
            uuid = dom.UUIDString()
            try:
                with self._translated():
                    result.append(
                        self._info(dom, saved=uuid in saved, persistent=uuid in persistent)
                    )
            except DomainNotFound:
                continue  # undefined while we were listing
        return result

    def get_domain(self, uuid: str) -> DomainInfo:
        """The domain with this uuid (DomainNotFound if none)."""
        return self._domain_info(self._domain(uuid))

    def _domain_type(self) -> tuple[str, str | None]:
        """The domain type and arch to define with: test, else kvm when usable, else qemu."""
        with self._translated():
            driver = self._conn.getType()
        if driver == "TEST":
            return "test", None
        caps = ET.fromstring(self._caps())
        arch = caps.findtext("host/cpu/arch") or "x86_64"
        offered = {
            d.get("type")
            for guest in caps.findall("guest")
            if guest.findtext("os_type") == "hvm" and guest.find("arch").get("name") == arch
            for d in guest.findall("arch/domain")
        }
        return ("kvm" if "kvm" in offered and self._kvm_usable() else "qemu"), arch

    def _kvm_usable(self) -> bool:
        if urlsplit(self.uri).hostname:
            return True  # remote: the host's capabilities already say kvm works there
        try:
            os.close(os.open("/dev/kvm", os.O_RDWR))
        except OSError:
            return False
        return True

    def _disk_source(self, pool: str, volume: str, target: str, bus: str) -> DiskSource:
        vol = self._volume(self._pool(pool), volume)
        with self._translated():
            xml = vol.XMLDesc(0)
            return DiskSource(vol.path(), _xml_text(xml, "target/format", "type"), target, bus)

    def define_domain(self, spec: DomainSpec) -> DomainInfo:
        """Define a persistent domain from `spec`; its disks must be existing volumes."""
        disks = [self._disk_source(d.pool, d.volume, d.target, d.bus) for d in spec.disks]
        domain_type, arch = self._domain_type()
        xml = domain_xml(spec, domain_type=domain_type, disks=disks, arch=arch)
        with self._translated():
            dom = self._conn.defineXML(xml)
        return self._domain_info(dom)

    def undefine_domain(self, uuid: str, *, remove_managed_save: bool = True) -> None:
        """Remove the domain's definition (and its managed-save image unless told not to)."""
        dom = self._domain(uuid)
        flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE if remove_managed_save else 0
        with self._translated():
            try:
                dom.undefineFlags(flags | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError as err:
                unsupported = (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT)
                if err.get_error_code() not in unsupported:
                    raise
                dom.undefineFlags(flags)  # the driver does not know the NVRAM flag

    def _act(self, uuid: str, action: Callable[[libvirt.virDomain], object]) -> None:
        dom = self._domain(uuid)
        with self._translated():
            action(dom)

    def start(self, uuid: str) -> None:
        """Start the domain; restores its managed-save image if it has one."""
        self._act(uuid, lambda d: d.create())

    def shutdown(self, uuid: str) -> None:
        """Ask the guest to shut down (ACPI); returns at once."""
        self._act(uuid, lambda d: d.shutdown())

    def destroy(self, uuid: str) -> None:
        """Power the domain off at once."""
        self._act(uuid, lambda d: d.destroy())

    def managed_save(self, uuid: str) -> None:
        """Save the domain's memory to its managed-save image and stop it (hibernate)."""
        self._act(uuid, lambda d: d.managedSave(0))

    def reboot(self, uuid: str) -> None:
        """Ask the guest to reboot."""
        self._act(uuid, lambda d: d.reboot(0))

    def pause(self, uuid: str) -> None:
        """Suspend the domain's vCPUs."""
        self._act(uuid, lambda d: d.suspend())

    def resume(self, uuid: str) -> None:
        """Resume a paused domain."""
        self._act(uuid, lambda d: d.resume())

    def wait_for_state(
        self, uuid: str, states: set[str] | frozenset[str], timeout: float, poll: float = 0.2
    ) -> DomainInfo | None:
        """Poll until the domain is in one of `states`; its info, or None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.get_domain(uuid)
            if info.state in states:
                return info
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    # -- storage ----------------------------------------------------------------------------

    def _pool_info(self, pool: libvirt.virStoragePool) -> PoolInfo:
        with self._translated():
            xml = pool.XMLDesc(0)
            _state, capacity, allocation, available = pool.info()
            return PoolInfo(
                name=pool.name(),
                uuid=pool.UUIDString(),
                type=_xml_text(xml, ".", "type"),
                path=_xml_text(xml, "target/path"),
                active=bool(pool.isActive()),
                capacity=capacity,
                allocation=allocation,
                available=available,
            )

    def list_pools(self) -> list[PoolInfo]:
        """Every storage pool of the host, active ones refreshed first."""
        with self._translated():
            pools = self._conn.listAllStoragePools(0)
        result = []
        for pool in pools:
            self._refresh(pool)
            try:
                result.append(self._pool_info(pool))
            except PoolNotFound:
                continue
        return result

    def get_pool(self, name: str) -> PoolInfo:
        """The pool with this name, refreshed (PoolNotFound if none)."""
        pool = self._pool(name)
        self._refresh(pool)
        return self._pool_info(pool)

    def _volume_info(self, vol: libvirt.virStorageVol) -> VolumeInfo:
        with self._translated():
            _type, capacity, allocation = vol.info()
            return VolumeInfo(
                name=vol.name(),
                key=vol.key(),
                path=vol.path(),
                capacity=capacity,
                allocation=allocation,
                format=_xml_text(vol.XMLDesc(0), "target/format", "type"),
            )

    @staticmethod
    def _volume_xml(name: str, capacity: int, allocation: int, fmt: str) -> str:
        vol = ET.Element("volume")
        ET.SubElement(vol, "name").text = name
        ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
        ET.SubElement(vol, "allocation", unit="bytes").text = str(allocation)
        ET.SubElement(ET.SubElement(vol, "target"), "format", type=fmt)
        return ET.tostring(vol, encoding="unicode")

    def create_volume(
        self, pool: str, name: str, capacity: int, *, preallocate: bool
    ) -> VolumeInfo:
        """Create a thin qcow2 volume, or a fully allocated raw one when `preallocate`."""
        # Preallocation of a raw file comes from allocation == capacity. PREALLOC_METADATA is
        # only for preallocated qcow2 (and refused for raw), so neither case passes it.
        fmt, allocation = ("raw", capacity) if preallocate else ("qcow2", 0)
        xml = self._volume_xml(name, capacity, allocation, fmt)
        target = self._pool(pool)
        with self._translated():
            vol = target.createXML(xml, 0)
        return self._volume_info(vol)

    def clone_volume(
        self,
        pool: str,
        source: str,
        new_name: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> VolumeInfo:
        """Copy a volume within its pool: same format, capacity and thin/thick allocation.

        `progress(done, total)` is called on this thread at the start, about every 0.5 s
        (the target's allocation, unless a thick raw target is allocated up front) and at the end.
        """
        target = self._pool(pool)
        src = self._volume(target, source)
        src_info = self._volume_info(src)
        total = src_info.allocation or src_info.capacity
        allocation = min(src_info.allocation, src_info.capacity)
        thick_raw = src_info.format == "raw" and allocation >= src_info.capacity
        xml = self._volume_xml(new_name, src_info.capacity, allocation, src_info.format)
        outcome: dict[str, object] = {}

        def copy() -> None:
            try:
                outcome["volume"] = target.createXMLFrom(xml, src, 0)
            except libvirt.libvirtError as err:
                outcome["error"] = err

        worker = threading.Thread(target=copy, name=f"clone-{new_name}", daemon=True)
        if progress:
            progress(0, total)
        worker.start()
        try:
            while True:
                worker.join(0.5)
                if not worker.is_alive():
                    break
                if progress and not thick_raw:
                    progress(min(self._copied(target, new_name), total), total)
        finally:
            worker.join()
        if "error" in outcome:
            raise convert(outcome["error"], alive=self.is_alive)  # type: ignore[arg-type]
        if progress:
            progress(total, total)
        return self._volume_info(outcome["volume"])  # type: ignore[arg-type]

    def _copied(self, pool: libvirt.virStoragePool, name: str) -> int:
        """Bytes written so far to a volume being built, 0 when libvirt cannot tell yet."""
        try:
            return pool.storageVolLookupByName(name).info()[2]
        except libvirt.libvirtError:
            return 0

    def delete_volume(self, pool: str, name: str) -> None:
        """Delete the volume (VolumeNotFound if it does not exist)."""
        vol = self._volume(self._pool(pool), name)
        with self._translated():
            vol.delete(0)
        if self._emulated is not None:
            self._emulated.forget(pool, name)

    def get_volume(self, pool: str, name: str) -> VolumeInfo:
        """The volume `name` of `pool`."""
        return self._volume_info(self._volume(self._pool(pool), name))

    def list_volumes(self, pool: str) -> list[VolumeInfo]:
        """Every volume of the pool, after a refresh."""
        target = self._pool(pool)
        self._refresh(target)
        with self._translated():
            volumes = target.listAllVolumes(0)
        result = []
        for vol in volumes:
            try:
                result.append(self._volume_info(vol))
            except VolumeNotFound:
                continue
        return result

    # -- snapshots: qcow2 chains, external snapshots, merges --------------------------------
    #
    # Vireo's database is the truth about snapshots (as in oVirt): a disk is a chain of qcow2
    # volumes of one pool, base <- ... <- active. libvirt's snapshot metadata is never used
    # (libvirt 9.0 cannot revert external snapshots): snapshots are taken with NO_METADATA.

    def _pool_path(self, pool: str) -> str:
        with self._translated():
            return _xml_text(self._pool(pool).XMLDesc(0), "target/path").rstrip("/")

    def _must_be_new(self, pool: str, name: str) -> None:
        target = self._pool(pool)
        self._refresh(target)
        try:
            self._volume(target, name)
        except VolumeNotFound:
            return
        raise HypervisorError(f"Volume {name} already exists in pool {pool}.")

    def _volume_at(self, path: str) -> tuple[str, str]:
        """(pool, volume) of the volume whose file is `path` (VolumeNotFound if none)."""
        with self._translated():
            vol = self._conn.storageVolLookupByPath(path)
            return vol.storagePoolLookupByVolume().name(), vol.name()

    def _current_xml(self, dom: libvirt.virDomain) -> str:
        """The XML that holds the domain's current disks: the live one while it runs.

        On the test driver, the persistent one: the emulation cannot change a running test
        domain's live XML, so it keeps the current disks in the persistent definition.
        """
        flags = libvirt.VIR_DOMAIN_XML_SECURE
        with self._translated():
            if self._emulated is not None and dom.isPersistent():
                flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
            return dom.XMLDesc(flags)

    def _redefine_disks(self, dom: libvirt.virDomain, files: dict[str, tuple[str, str]]) -> None:
        """Point the persistent definition's disks (target -> (file, format)) at those files."""
        with self._translated():
            if not dom.isPersistent():
                return
            flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
            self._conn.defineXML(with_disk_files(dom.XMLDesc(flags), files))

    def _backing_names(self, pool: str) -> dict[str, str | None]:
        """Each volume of `pool` -> the volume of the same pool it backs onto (None: none)."""
        if self._emulated is not None:
            return self._emulated.backing_names(pool)
        target = self._pool(pool)
        self._refresh(target)  # a block commit rewrites backing files behind the pool's back
        with self._translated():
            volumes = target.listAllVolumes(0)
        names, backing_files = {}, {}
        for vol in volumes:
            try:
                with self._translated():
                    path, name = vol.path(), vol.name()
                    backing = _xml_text(vol.XMLDesc(0), "backingStore/path")
            except VolumeNotFound:
                continue
            names[path] = name
            if backing:  # a relative backing file is relative to the overlay's directory
                backing = posixpath.normpath(posixpath.join(posixpath.dirname(path), backing))
            backing_files[name] = backing
        return {
            name: names.get(backing) if backing else None for name, backing in backing_files.items()
        }

    def create_overlay(self, pool: str, name: str, backing: str) -> VolumeInfo:
        """Create qcow2 volume `name` in `pool` backed by its volume `backing`, same capacity."""
        target = self._pool(pool)
        under = self._volume_info(self._volume(target, backing))
        vol_el = ET.fromstring(self._volume_xml(name, under.capacity, 0, "qcow2"))
        ET.SubElement(vol_el.find("target"), "compat").text = "1.1"
        if self._emulated is None:  # the test driver would only echo it back
            store = ET.SubElement(vol_el, "backingStore")
            ET.SubElement(store, "path").text = under.path
            ET.SubElement(store, "format", type=under.format or "raw")
        with self._translated():
            vol = target.createXML(ET.tostring(vol_el, encoding="unicode"), 0)
        if self._emulated is not None:
            self._emulated.record(pool, name, backing)
        return self._volume_info(vol)

    def adopt_backing(self, pool: str, name: str, backing: str) -> None:
        """Test driver only: record that existing volume `name` backs onto `backing` (a test
        host reloaded from its node file, whose backing relations the driver cannot keep)."""
        if self._emulated is None:
            raise HypervisorError(
                "Backing relations are read from the volumes themselves on this host."
            )
        self._emulated.record(pool, name, backing)

    def volume_chain(self, pool: str, name: str) -> list[str]:
        """Volume names from `name` down to its base, following backing files within `pool`."""
        self._volume(self._pool(pool), name)  # VolumeNotFound
        return _chain(self._backing_names(pool), name)

    def snapshot_disks(
        self,
        uuid: str,
        overlays: dict[str, str],
        *,
        memory_volume: tuple[str, str] | None = None,
    ) -> None:
        """Freeze the current volume of each disk target in `overlays` under a new overlay.

        `overlays` maps a target (vda) to the name of the overlay to create in the pool of that
        disk's current volume; other disks are left alone. A shut-off domain gets the overlays
        from create_overlay and is redefined onto them. A running or paused one takes one
        external libvirt snapshot (NO_METADATA), with its memory saved to the new volume
        `memory_volume` = (pool, name) if given, and keeps running; its persistent definition
        then points at the overlays too.
        """
        dom = self._domain(uuid)
        with self._translated():
            active = bool(dom.isActive())
        xml = self._current_xml(dom)
        files = disk_files(xml)
        unknown = sorted(set(overlays) - set(files))
        if unknown:
            raise HypervisorError(f"The domain has no file-backed disk {', '.join(unknown)}.")
        if memory_volume is not None and not active:
            raise HypervisorError("Only a running or paused domain has memory to save.")
        layers = {}  # target -> (pool, current volume, overlay)
        for target, overlay in overlays.items():
            pool, current = self._volume_at(files[target])
            self._must_be_new(pool, overlay)
            layers[target] = (pool, current, overlay)
        if memory_volume is not None:
            self._must_be_new(*memory_volume)
        if not active or self._emulated is not None:
            self._snapshot_by_overlays(dom, layers, memory_volume)
        elif layers or memory_volume is not None:
            self._snapshot_live(dom, xml, layers, memory_volume)

    def _snapshot_by_overlays(
        self,
        dom: libvirt.virDomain,
        layers: dict[str, tuple[str, str, str]],
        memory_volume: tuple[str, str] | None,
    ) -> None:
        """create_overlay for each disk, then redefine; undone (volumes deleted) on failure."""
        created: list[tuple[str, str]] = []
        files = {}
        try:
            for target, (pool, current, overlay) in layers.items():
                files[target] = (self.create_overlay(pool, overlay, current).path, "qcow2")
                created.append((pool, overlay))
            if memory_volume is not None and self._emulated is not None:
                self._emulated.save_memory(dom, *memory_volume)
                created.append(memory_volume)
            if files:
                self._redefine_disks(dom, files)
        except BaseException:
            for pool, name in created:
                try:
                    self.delete_volume(pool, name)
                except HypervisorError:
                    log.warning("could not remove volume %s of pool %s", name, pool)
            raise

    def _snapshot_live(
        self,
        dom: libvirt.virDomain,
        xml: str,
        layers: dict[str, tuple[str, str, str]],
        memory_volume: tuple[str, str] | None,
    ) -> None:
        """One external snapshot of a running domain; libvirt creates the overlays and file."""
        snapshot = ET.Element("domainsnapshot")
        if memory_volume is not None:
            memory_file = f"{self._pool_path(memory_volume[0])}/{memory_volume[1]}"
            ET.SubElement(snapshot, "memory", snapshot="external", file=memory_file)
        disks = ET.SubElement(snapshot, "disks")
        files = {}
        for target in disk_targets(xml):  # a disk left out would get libvirt's default
            if target not in layers:
                ET.SubElement(disks, "disk", name=target, snapshot="no")
                continue
            pool, _current, overlay = layers[target]
            files[target] = (f"{self._pool_path(pool)}/{overlay}", "qcow2")
            disk = ET.SubElement(disks, "disk", name=target, snapshot="external")
            ET.SubElement(disk, "driver", type="qcow2")
            ET.SubElement(disk, "source", file=files[target][0])
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        if memory_volume is None:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        pools = {pool for pool, _c, _o in layers.values()}
        if memory_volume is not None:
            pools.add(memory_volume[0])
        try:
            with self._translated():
                dom.snapshotCreateXML(ET.tostring(snapshot, encoding="unicode"), flags)
        finally:
            for pool in pools:  # the new files become volumes
                self._refresh(self._pool(pool))
        # libvirt moved the persistent disks onto the overlays too, but with the chain spelled
        # out in <backingStore>, which a later merge would make stale: redefine without it.
        self._redefine_disks(dom, files)

    def set_disk_sources(self, uuid: str, sources: dict[str, tuple[str, str]]) -> None:
        """Point the shut-off domain's disk targets at volumes: target -> (pool, volume)."""
        dom = self._domain(uuid)
        with self._translated():
            if dom.isActive():
                raise HypervisorError("The domain must be shut off to change its disks.")
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        unknown = sorted(set(sources) - set(disk_targets(xml)))
        if unknown:
            raise HypervisorError(f"The domain has no disk {', '.join(unknown)}.")
        files = {}
        for target, (pool, volume) in sources.items():
            info = self.get_volume(pool, volume)
            files[target] = (info.path, info.format)
        self._redefine_disks(dom, files)

    def merge_volumes(
        self,
        uuid: str,
        target: str,
        *,
        top: str,
        base: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Merge volume `top` into `base`, its backing volume in the chain of disk `target`.

        What backed onto `top` then backs onto `base`; if `top` was the active layer the domain
        now uses `base`; `top` is deleted. A running or paused domain does it with a block
        commit; a shut-off one is started paused for the commit and destroyed afterwards.
        `progress(done, total)` is called on this thread while the data is copied.
        """
        dom = self._domain(uuid)
        with self._translated():
            active = bool(dom.isActive())
        path = disk_files(self._current_xml(dom)).get(target)
        if path is None:
            raise HypervisorError(f"The domain has no file-backed disk {target}.")
        pool, current = self._volume_at(path)
        backing = self._backing_names(pool)
        chain = _chain(backing, current)
        index = chain.index(top) if top in chain else -1
        if index < 0 or chain[index + 1 : index + 2] != [base]:
            raise HypervisorError(
                f"Volume {top} is not backed by {base} in the chain of disk {target} "
                f"({' <- '.join(reversed(chain))})."
            )
        child = chain[index - 1] if index else None
        others = sorted(
            name
            for name, below in backing.items()
            if (below == top and name != child) or (below == base and name != top)
        )
        if others:
            raise HypervisorError(
                f"Cannot merge {top} into {base}: {', '.join(others)} also depend on them."
            )
        top_info, base_info = self.get_volume(pool, top), self.get_volume(pool, base)
        if self._emulated is not None:
            self._emulated.merge(pool, top, base, top_info.capacity, progress)
        else:
            self._commit(dom, target, top_info, base_info, index == 0, active, progress)
        if index == 0:
            self._redefine_disks(dom, {target: (base_info.path, base_info.format)})
        elif self._emulated is None:
            self._redefine_disks(dom, {target: (path, self.get_volume(pool, current).format)})
        self.delete_volume(pool, top)
        self._refresh(self._pool(pool))

    def _commit(
        self,
        dom: libvirt.virDomain,
        target: str,
        top: VolumeInfo,
        base: VolumeInfo,
        active_layer: bool,
        running: bool,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        """virDomainBlockCommit of `top` into `base`, starting the domain paused if it is off."""
        if not running:
            with self._translated():
                if dom.hasManagedSaveImage(0):
                    raise HypervisorError("The domain has a saved memory state: resume it first.")
                dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        try:
            self._block_commit(dom, target, top, base, active_layer, progress)
        except BaseException:
            if not running:
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    log.warning("could not destroy %s after a failed merge", dom.name())
            raise
        if not running:
            with self._translated():
                dom.destroy()

    def _block_commit(
        self,
        dom: libvirt.virDomain,
        target: str,
        top: VolumeInfo,
        base: VolumeInfo,
        active_layer: bool,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE if active_layer else 0
        total = top.capacity
        if progress:
            progress(0, total)
        with self._translated():
            dom.blockCommit(target, base.path, top.path, 0, flags)
        while True:
            with self._translated():
                job = dom.blockJobInfo(target, 0)
            if not job:
                break  # finished (or failed: the chain tells below)
            total = job["end"] or total
            if progress:
                progress(min(job["cur"], total), total)
            if active_layer and job["cur"] >= job["end"]:
                # The copy caught up (libvirt shows an empty ready job as 1/1): switch the
                # disk to `base`, which ends the job; "not ready yet" means poll again.
                try:
                    dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                    break
                except libvirt.libvirtError as err:
                    if err.get_error_code() != libvirt.VIR_ERR_BLOCK_COPY_ACTIVE:
                        raise convert(err, alive=self.is_alive) from err
            time.sleep(0.05)
        with self._translated():
            chain = disk_chain(dom.XMLDesc(0), target)
        if top.path in chain or (active_layer and chain[:1] != [base.path]):
            raise HypervisorError(
                f"The block commit of {top.name} into {base.name} did not complete "
                f"(disk {target} is {' <- '.join(reversed(chain))})."
            )
        if progress:
            progress(total, total)

    def restore_memory(self, uuid: str, pool: str, volume: str) -> None:
        """Start the shut-off domain from the memory state in `volume` (saved by snapshot_disks).

        The domain's current definition is used (its disks as they are now), and it runs.
        """
        dom = self._domain(uuid)
        memory = self.get_volume(pool, volume)
        with self._translated():
            if dom.isActive():
                raise HypervisorError("The domain must be shut off to restore its memory.")
        if self._emulated is not None:
            self._emulated.restore(dom)
            return
        with self._translated():
            dxml = without_backing_stores(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
            self._conn.restoreFlags(memory.path, dxml, libvirt.VIR_DOMAIN_SAVE_RUNNING)

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
            lifecycle = LifecycleEvent(self.uri, dom.UUIDString(), dom.name(), word, detail)
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
