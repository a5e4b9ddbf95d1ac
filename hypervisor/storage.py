"""Storage pools and volumes: list, create, clone and delete volumes (part of Connection)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import libvirt

from hypervisor.base import ConnectionBase
from hypervisor.datatypes import PoolInfo, VolumeInfo
from hypervisor.domainxml import pool_path, pool_type, volume_format, volume_xml
from hypervisor.errors import PoolNotFound, VolumeNotFound, convert


class StorageMixin(ConnectionBase):
    """The storage pools of the host and their volumes."""

    def _pool_info(self, pool: libvirt.virStoragePool) -> PoolInfo:
        with self._translated():
            xml = pool.XMLDesc(0)
            _state, capacity, allocation, available = pool.info()
            return PoolInfo(
                name=pool.name(),
                uuid=pool.UUIDString(),
                type=pool_type(xml),
                path=pool_path(xml),
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
                format=volume_format(vol.XMLDesc(0)),
            )

    def volume_at_path(self, path: str) -> tuple[str, VolumeInfo]:
        """(pool name, volume) of the volume whose file is `path`: VolumeNotFound when no
        pool of the host holds it."""
        with self._translated():
            vol = self._conn.storageVolLookupByPath(path)
            pool = vol.storagePoolLookupByVolume().name()
        return pool, self._volume_info(vol)

    def create_volume(
        self, pool: str, name: str, capacity: int, *, preallocate: bool
    ) -> VolumeInfo:
        """Create a thin qcow2 volume, or a fully allocated raw one when `preallocate`."""
        # Preallocation of a raw file comes from allocation == capacity. PREALLOC_METADATA is
        # only for preallocated qcow2 (and refused for raw), so neither case passes it.
        fmt, allocation = ("raw", capacity) if preallocate else ("qcow2", 0)
        xml = volume_xml(name, capacity, allocation, fmt)
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
        xml = volume_xml(new_name, src_info.capacity, allocation, src_info.format)
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
