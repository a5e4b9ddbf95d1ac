"""Storage pools and volumes: set pools up, stop and remove them; list, create, clone, upload
and delete volumes (part of Connection)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import BinaryIO

import libvirt

from hypervisor.base import ConnectionBase
from hypervisor.datatypes import PoolInfo, PoolSpec, VolumeInfo
from hypervisor.domainxml import pool_path, pool_type, pool_xml, volume_format, volume_xml
from hypervisor.errors import HypervisorError, PoolNotFound, VolumeNotFound, convert


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

    def pool_setup(self, spec: PoolSpec, *, build: bool) -> PoolInfo:
        """Make the pool usable on this host and return it: define it (unless a pool of that
        name exists), build it when `build` (an NFS mount point; a `dir` pool's directory is
        the administrator's and is never made here), start it (NFS: mount), mark it to start
        with the host, and check that a volume can be written in it (a read-only path fails
        here rather than at the first disk). Safe to repeat."""
        with self._translated():
            try:
                pool = self._conn.storagePoolLookupByName(spec.name)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                pool = self._conn.storagePoolDefineXML(pool_xml(spec), 0)
            if not pool.isActive():
                if build:
                    pool.build(0)
                pool.create(0)
            pool.setAutostart(1)
            probe = pool.createXML(volume_xml(f".vireo-probe-{uuid.uuid4().hex}", 0, 0, "raw"), 0)
            probe.delete(0)
        self._refresh(pool)
        return self._pool_info(pool)

    def pool_stop(self, name: str) -> None:
        """Stop the pool (NFS: unmount) and keep it from starting with the host; its
        definition and its data stay (PoolNotFound if there is no such pool)."""
        pool = self._pool(name)
        with self._translated():
            pool.setAutostart(0)
            if pool.isActive():
                pool.destroy()

    def pool_remove(self, name: str, *, wipe: bool, delete_target: bool) -> None:
        """Undefine the pool. `wipe`: first delete every volume in it (starting it for that);
        `delete_target`: remove its (empty) target directory once stopped, for a mount point
        Vireo built. PoolNotFound if there is no such pool."""
        pool = self._pool(name)
        with self._translated():
            if wipe:
                if not pool.isActive():
                    pool.create(0)
                pool.refresh(0)
                for vol in pool.listAllVolumes(0):
                    vol.delete(0)
            if pool.isActive():
                pool.destroy()
            if delete_target:
                pool.delete(0)
            pool.undefine()

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

    def upload_volume(
        self,
        pool: str,
        name: str,
        source: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> VolumeInfo:
        """Create the raw volume `name` in `pool` the size of the file `source` and write the
        file into it through libvirt's volume upload stream (virStorageVolUpload), reading it
        a stream buffer at a time (never whole in memory). `progress(done, total)` is called at
        the start, about every 0.5 s and at the end. On any failure the half-written volume is
        deleted before the error is raised, so no partial volume is left in the pool."""
        size = os.path.getsize(source)
        target = self._pool(pool)
        with self._translated():
            vol = target.createXML(volume_xml(name, size, 0, "raw"), 0)
        try:
            with open(source, "rb") as data:
                self._upload(vol, data, size, progress)
        except BaseException:
            try:
                vol.delete(0)
            except libvirt.libvirtError:
                pass
            raise
        self._refresh(target)
        return self._volume_info(vol)

    def _upload(
        self,
        vol: libvirt.virStorageVol,
        data: BinaryIO,
        size: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        """Send `size` bytes of `data` into the volume over a libvirt stream (the test driver
        has no volume upload: TestDriverConnection overrides this)."""
        sent = [0, time.monotonic()]
        if progress:
            progress(0, size)

        def read(_stream: libvirt.virStream, nbytes: int, _opaque: object) -> bytes:
            chunk = data.read(min(nbytes, size - sent[0]))
            sent[0] += len(chunk)
            if not chunk and sent[0] < size:
                raise HypervisorError(f"the source file ended after {sent[0]} of {size} bytes")
            if progress and time.monotonic() - sent[1] >= 0.5:
                sent[1] = time.monotonic()
                progress(sent[0], size)
            return chunk

        with self._translated():
            stream = self._conn.newStream(0)
            try:
                vol.upload(stream, 0, size, 0)
                stream.sendAll(read, None)
                stream.finish()
            except BaseException:
                try:
                    stream.abort()
                except libvirt.libvirtError:
                    pass
                raise
        if progress:
            progress(size, size)

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
