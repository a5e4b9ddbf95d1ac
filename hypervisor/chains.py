"""Snapshot chains: qcow2 overlays, external snapshots, merges and memory restore (part of
Connection).

Vireo's database is the truth about snapshots (as in oVirt): a disk is a chain of qcow2
volumes of one pool, base <- ... <- active. libvirt's snapshot metadata is never used
(libvirt 9.0 cannot revert external snapshots): snapshots are taken with NO_METADATA.

This is the real libvirt's way; the test driver's subclass (hypervisor/testdriver.py)
overrides the hooks marked "test driver: overridden".
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable

import libvirt

from hypervisor.datatypes import VolumeInfo
from hypervisor.domains import DomainsMixin
from hypervisor.domainxml import (
    disk_chain,
    disk_files,
    disk_targets,
    external_snapshot_xml,
    overlay_xml,
    pool_path,
    volume_backing_path,
    with_disk_files,
    without_backing_stores,
)
from hypervisor.errors import HypervisorError, VolumeNotFound, convert
from hypervisor.storage import StorageMixin

log = logging.getLogger(__name__)


def _chain(backing: dict[str, str | None], name: str) -> list[str]:
    """`name` and the volumes below it, following `backing` (volume -> its backing volume)."""
    chain = [name]
    while (below := backing.get(chain[-1])) is not None and below not in chain:
        chain.append(below)
    return chain


class SnapshotChainsMixin(DomainsMixin, StorageMixin):
    """Disks as chains of qcow2 volumes, on the domains and pools of the host."""

    def _pool_path(self, pool: str) -> str:
        with self._translated():
            return pool_path(self._pool(pool).XMLDesc(0)).rstrip("/")

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

        Test driver: overridden."""
        with self._translated():
            return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)

    def _redefine_disks(self, dom: libvirt.virDomain, files: dict[str, tuple[str, str]]) -> None:
        """Point the persistent definition's disks (target -> (file, format)) at those files."""
        with self._translated():
            if not dom.isPersistent():
                return
            flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
            self._conn.defineXML(with_disk_files(dom.XMLDesc(flags), files))

    def _backing_names(self, pool: str) -> dict[str, str | None]:
        """Each volume of `pool` -> the volume of the same pool it backs onto (None: none).

        Test driver: overridden."""
        target = self._pool(pool)
        self._refresh(target)  # a block commit rewrites backing files behind the pool's back
        with self._translated():
            volumes = target.listAllVolumes(0)
        names, backing_files = {}, {}
        for vol in volumes:
            try:
                with self._translated():
                    path, name = vol.path(), vol.name()
                    backing = volume_backing_path(vol.XMLDesc(0))
            except VolumeNotFound:
                continue
            names[path] = name
            if backing:  # a relative backing file is relative to the overlay's directory
                backing = posixpath.normpath(posixpath.join(posixpath.dirname(path), backing))
            backing_files[name] = backing
        return {
            name: names.get(backing) if backing else None for name, backing in backing_files.items()
        }

    def _overlay_xml(self, name: str, under: VolumeInfo) -> str:
        """The XML of overlay `name` onto volume `under`. Test driver: overridden."""
        return overlay_xml(name, under.capacity, (under.path, under.format or "raw"))

    def create_overlay(self, pool: str, name: str, backing: str) -> VolumeInfo:
        """Create qcow2 volume `name` in `pool` backed by its volume `backing`, same capacity."""
        target = self._pool(pool)
        under = self._volume_info(self._volume(target, backing))
        with self._translated():
            vol = target.createXML(self._overlay_xml(name, under), 0)
        return self._volume_info(vol)

    def adopt_backing(self, pool: str, name: str, backing: str) -> None:
        """Test driver only: record that existing volume `name` backs onto `backing` (a test
        host reloaded from its node file, whose backing relations the driver cannot keep)."""
        raise HypervisorError(
            "Backing relations are read from the volumes themselves on this host."
        )

    def volume_chain(self, pool: str, name: str) -> list[str]:
        """Volume names from `name` down to its base, following backing files within `pool`."""
        self._volume(self._pool(pool), name)  # VolumeNotFound
        return _chain(self._backing_names(pool), name)

    # -- snapshots ---------------------------------------------------------------------------

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
        if not active:
            self._snapshot_by_overlays(dom, layers)
        elif layers or memory_volume is not None:
            self._snapshot_running(dom, xml, layers, memory_volume)

    def _snapshot_by_overlays(
        self,
        dom: libvirt.virDomain,
        layers: dict[str, tuple[str, str, str]],
        memory_volume: tuple[str, str] | None = None,
    ) -> None:
        """create_overlay for each disk (then _save_memory if `memory_volume`), then redefine;
        undone (volumes deleted) on failure."""
        created: list[tuple[str, str]] = []
        files = {}
        try:
            for target, (pool, current, overlay) in layers.items():
                files[target] = (self.create_overlay(pool, overlay, current).path, "qcow2")
                created.append((pool, overlay))
            if memory_volume is not None:
                self._save_memory(dom, *memory_volume)
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

    def _save_memory(self, dom: libvirt.virDomain, pool: str, name: str) -> None:
        """Save the memory of `dom` to a new volume outside a live snapshot: libvirt saves it
        only within one (_snapshot_running). Test driver: overridden."""
        raise HypervisorError("The memory of a domain is saved only by a live snapshot here.")

    def _snapshot_running(
        self,
        dom: libvirt.virDomain,
        xml: str,
        layers: dict[str, tuple[str, str, str]],
        memory_volume: tuple[str, str] | None,
    ) -> None:
        """One external snapshot of a running domain; libvirt creates the overlays and file.

        Test driver: overridden."""
        memory_file = None
        if memory_volume is not None:
            memory_file = f"{self._pool_path(memory_volume[0])}/{memory_volume[1]}"
        overlay_files = {
            target: f"{self._pool_path(pool)}/{overlay}"
            for target, (pool, _current, overlay) in layers.items()
        }
        snapshot = external_snapshot_xml(disk_targets(xml), overlay_files, memory_file)
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        if memory_volume is None:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        pools = {pool for pool, _c, _o in layers.values()}
        if memory_volume is not None:
            pools.add(memory_volume[0])
        try:
            with self._translated():
                dom.snapshotCreateXML(snapshot, flags)
        finally:
            for pool in pools:  # the new files become volumes
                self._refresh(self._pool(pool))
        # libvirt moved the persistent disks onto the overlays too, but with the chain spelled
        # out in <backingStore>, which a later merge would make stale: redefine without it.
        self._redefine_disks(dom, {target: (f, "qcow2") for target, f in overlay_files.items()})

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

    # -- merges ------------------------------------------------------------------------------

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
        active_layer = index == 0
        self._merge(
            dom,
            target,
            pool,
            path,
            top_info,
            base_info,
            active_layer=active_layer,
            running=active,
            progress=progress,
        )
        if active_layer:
            self._redefine_disks(dom, {target: (base_info.path, base_info.format)})
        self.delete_volume(pool, top)
        self._refresh(self._pool(pool))

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
        """Copy `top`'s data into `base` (volumes of `pool`) on disk `target`, whose active file
        is `path` (`top`'s if `active_layer`): a block commit. Test driver: overridden."""
        self._commit(dom, target, top, base, active_layer, running, progress)
        if not active_layer:  # the definition's <backingStore> still names `top`: drop it
            format_ = self.get_volume(*self._volume_at(path)).format
            self._redefine_disks(dom, {target: (path, format_)})

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
        self._restore(dom, memory)

    def _restore(self, dom: libvirt.virDomain, memory: VolumeInfo) -> None:
        """Start `dom` from the memory file `memory`, on its current definition's disks.

        Test driver: overridden."""
        with self._translated():
            dxml = without_backing_stores(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
            self._conn.restoreFlags(memory.path, dxml, libvirt.VIR_DOMAIN_SAVE_RUNNING)
