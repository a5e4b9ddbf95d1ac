"""Domains: list, define, undefine and run them (part of Connection)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import libvirt

from hypervisor.base import ConnectionBase
from hypervisor.datatypes import (
    SHUTOFF_REASONS,
    STATE_BY_NUMBER,
    CdromSpec,
    DomainInfo,
    DomainSpec,
)
from hypervisor.domainxml import (
    DiskSource,
    boot_order,
    cdrom_source,
    cdrom_xml,
    domain_disks,
    domain_xml,
    host_domain_types,
    volume_format,
)
from hypervisor.errors import DomainNotFound, HypervisorError


class DomainsMixin(ConnectionBase):
    """The domains of the host."""

    def _info(
        self, dom: libvirt.virDomain, *, saved: bool, persistent: bool, info: list | None = None
    ) -> DomainInfo:
        state, max_kib, _cur_kib, vcpus, _cpu_time = info or dom.info()
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

    def stop_reason(self, uuid: str) -> str:
        """Why a stopped domain stopped, as libvirt keeps it (virDomainShutoffReason as a word:
        "shutdown", "destroyed", "crashed", "failed", "daemon" ...; "crashed" for a domain left
        in the crashed state); "" while it runs."""
        dom = self._domain(uuid)
        with self._translated():
            state, reason = dom.state()
        word = STATE_BY_NUMBER[state] if 0 <= state < len(STATE_BY_NUMBER) else "nostate"
        if word == "crashed":
            return "crashed"
        if word != "shutoff":
            return ""
        return SHUTOFF_REASONS[reason] if 0 <= reason < len(SHUTOFF_REASONS) else "unknown"

    def _domain_type(self) -> tuple[str, str | None]:
        """The domain type and arch to define with: kvm when usable, else qemu."""
        arch, offered = host_domain_types(self._caps())
        return ("kvm" if "kvm" in offered and self._kvm_usable() else "qemu"), arch

    def _spice_and_qxl(self) -> tuple[bool, bool]:
        """Whether the host's qemu offers SPICE graphics, and the qxl video model (for SPICE)."""
        graphics, video = self.graphics_offered()  # ConsoleMixin, composed in Connection
        spice = "spice" in graphics
        return spice, spice and "qxl" in video

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
            return DiskSource(vol.path(), volume_format(vol.XMLDesc(0)), target, bus)

    def cdrom_path(self, cdrom: CdromSpec) -> str | None:
        """The file of the image `cdrom` names on this host (None for an empty drive): its
        ISO domain's pool must be active here (HypervisorError saying so otherwise)."""
        if cdrom.empty:
            return None
        pool = self._pool(cdrom.pool)
        with self._translated():
            active = pool.isActive()
        if not active:
            raise HypervisorError(
                f"The ISO domain's pool {cdrom.pool} is not active on this host: "
                f"its image {cdrom.volume} cannot be attached."
            )
        self._refresh(pool)  # an image uploaded since the pool was last read
        vol = self._volume(pool, cdrom.volume)
        with self._translated():
            return vol.path()

    def _domain_xml_of(self, spec: DomainSpec) -> str:
        disks = [self._disk_source(d.pool, d.volume, d.target, d.bus) for d in spec.disks]
        domain_type, arch = self._domain_type()
        spice, qxl = self._spice_and_qxl()
        return domain_xml(
            spec,
            domain_type=domain_type,
            disks=disks,
            arch=arch,
            cdrom_path=self.cdrom_path(spec.cdrom),
            spice=spice,
            qxl=qxl,
        )

    def define_domain(self, spec: DomainSpec) -> DomainInfo:
        """Define a persistent domain from `spec`; its disks (and its CD, if any) must be
        existing volumes."""
        xml = self._domain_xml_of(spec)
        with self._translated():
            dom = self._conn.defineXML(xml)
        return self._domain_info(dom)

    def start_once(self, once: DomainSpec, saved: DomainSpec) -> None:
        """Run Once: start the domain as `once` says (its one-time CD and boot order), then
        put `saved` back as its persistent definition, which the running guest does not read:
        the next start uses the saved configuration. `saved` goes back even if the start
        fails."""
        self.define_domain(once)
        try:
            self.start(once.uuid)
        finally:
            self.define_domain(saved)

    def change_cd(self, uuid: str, cdrom: CdromSpec) -> None:
        """Put the image `cdrom` names in the domain's CD-ROM drive, or eject it (an empty
        `cdrom`): live in a running guest and in its persistent definition."""
        path = self.cdrom_path(cdrom)
        dom = self._domain(uuid)
        with self._translated():
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            self._cdrom_update(dom, path, flags)

    def _cdrom_update(self, dom: libvirt.virDomain, path: str | None, flags: int) -> None:
        """virDomainUpdateDeviceFlags on the CD-ROM drive (test driver: overridden)."""
        dom.updateDeviceFlags(cdrom_xml(path), flags)

    def domain_cdrom(self, uuid: str, *, inactive: bool = False) -> str | None:
        """The file in the domain's CD-ROM drive ("" empty, None no drive): in the running
        guest, or in its persistent definition (`inactive`)."""
        dom = self._domain(uuid)
        with self._translated():
            return cdrom_source(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0))

    def domain_boot_order(self, uuid: str, *, inactive: bool = False) -> list[str]:
        """The devices the domain boots from, in order (running, or as defined)."""
        dom = self._domain(uuid)
        with self._translated():
            return boot_order(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0))

    def domain_disks(self, uuid: str) -> list[tuple[str, str, str]]:
        """(target, device, source) of each disk of the domain as defined (see
        domainxml.domain_disks): what a domain that Vireo did not define reads."""
        dom = self._domain(uuid)
        with self._translated():
            return domain_disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    def rename_domain(self, uuid: str, name: str) -> None:
        """Give a shut-off domain a new name."""
        self._act(uuid, lambda d: d.rename(name, 0))

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
        """Poll until the domain is in one of `states`; its info, or None after `timeout` s.

        The domain is looked up once; each poll is one call (its info), and the managed-save and
        persistence flags are asked only once it is there (a real host: a round trip each)."""
        deadline = time.monotonic() + timeout
        dom = self._domain(uuid)
        while True:
            with self._translated():
                raw = dom.info()
                state = STATE_BY_NUMBER[raw[0]] if 0 <= raw[0] < len(STATE_BY_NUMBER) else "nostate"
                if state in states:
                    saved = bool(dom.hasManagedSaveImage(0))
                    persistent = bool(dom.isPersistent())
                    return self._info(dom, saved=saved, persistent=persistent, info=raw)
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
