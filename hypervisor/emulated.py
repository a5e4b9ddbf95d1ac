"""Snapshot support that libvirt's test driver lacks, emulated in process (test driver only).

The test driver (`test:///node.xml`, used by unit tests and the demo) keeps pools, volumes and
domain definitions, but has no backing files, block jobs, external snapshots or restore from
a file. For a test-driver Connection only, this stands in for exactly those:

- backing relations live in a dict (pool, volume) -> backing volume, per Connection (a test
  node's state is per connection too); overlays and memory files are ordinary test volumes,
  so they show in list_volumes and in the pool's allocation;
- a snapshot of a running test domain is taken like one of a shut-off domain (overlays, then
  defineXML): the domain keeps running, and since the test driver cannot change a running
  domain's live XML, its persistent definition is where the current disks are read from;
- a merge rewires the dict (no data to move), restoring memory just starts the domain.

Everything else (checks, redefinition, deleting volumes) is Connection's own code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import libvirt

if TYPE_CHECKING:
    from hypervisor.connection import Connection


class EmulatedChains:
    """Backing chains, memory files, merges and memory restore for one test-driver Connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._backing: dict[tuple[str, str], str] = {}

    def record(self, pool: str, name: str, backing: str) -> None:
        """Volume `name` of `pool` now backs onto volume `backing` of the same pool."""
        with self._lock:
            self._backing[pool, name] = backing

    def forget(self, pool: str, name: str) -> None:
        """Volume `name` was deleted: drop its own backing relation."""
        with self._lock:
            self._backing.pop((pool, name), None)

    def backing_names(self, pool: str) -> dict[str, str | None]:
        """Each volume of `pool` -> the existing volume it backs onto (None: none)."""
        names = {v.name for v in self._conn.list_volumes(pool)}
        with self._lock:
            return {
                name: below if (below := self._backing.get((pool, name))) in names else None
                for name in names
            }

    def save_memory(self, dom: libvirt.virDomain, pool: str, name: str) -> None:
        """Create the memory file of a snapshot: a raw volume as large as the domain's memory."""
        with self._conn._translated():
            size = dom.info()[1] * 1024  # maximum memory, KiB
            self._conn._pool(pool).createXML(self._conn._volume_xml(name, size, size, "raw"), 0)

    def merge(
        self,
        pool: str,
        top: str,
        base: str,
        total: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        """What backed onto `top` now backs onto `base` (Connection redefines and deletes)."""
        if progress:
            progress(0, total)
        with self._lock:
            for key, below in list(self._backing.items()):
                if key[0] == pool and below == top:
                    self._backing[key] = base
        if progress:
            progress(total, total)

    def restore(self, dom: libvirt.virDomain) -> None:
        """Start the domain (the test driver cannot restore from a file)."""
        with self._conn._translated():
            dom.create()
