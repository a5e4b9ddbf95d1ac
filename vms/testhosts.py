"""Hosts on libvirt's test driver (the demo, the benchmarks, the browser suite).

The test driver keeps its state inside the one process that opened it, so a test host is
served by the process that runs the monitor (and, for the demo, the worker beside it). When
that process starts, each test host's node file (`test:///abs/path.xml`) is written from the
inventory, so the host comes back holding the VMs, states and volumes the portal knows.
"""

from pathlib import Path

import hypervisor
from hypervisor.testnode import TestDomain, TestPool, TestVolume, render_node_xml
from storage.models import Disk, StorageDomain

from .choices import VMStatus
from .models import Host

TEST_PREFIX = "test:///"

_STATE_FOR_STATUS = {
    VMStatus.UP: hypervisor.DomainState.RUNNING,
    VMStatus.POWERING_UP: hypervisor.DomainState.RUNNING,
    VMStatus.POWERING_DOWN: hypervisor.DomainState.RUNNING,
    VMStatus.REBOOT_IN_PROGRESS: hypervisor.DomainState.RUNNING,
    VMStatus.SAVING_STATE: hypervisor.DomainState.RUNNING,
    VMStatus.NOT_RESPONDING: hypervisor.DomainState.RUNNING,
    VMStatus.PAUSED: hypervisor.DomainState.PAUSED,
}

POOL_CAPACITY = 2 * 1024**4


def node_file(host: Host) -> Path | None:
    """The node file behind a test host, or None for any other URI."""
    if host.uri.startswith(TEST_PREFIX) and host.uri.endswith(".xml"):
        return Path("/" + host.uri[len(TEST_PREFIX) :].lstrip("/"))
    return None


def node_xml(host: Host) -> str:
    """The test driver's node description of `host` as the inventory knows it."""
    from .jobs import vm_domain_spec

    pools = []
    disks = Disk.objects.filter(host=host).select_related("storage_domain")
    extra = _snapshot_volumes(host)
    for domain in StorageDomain.objects.filter(data_center_id=host.cluster.data_center_id):
        volumes = tuple(
            TestVolume(
                name=d.volume_name,
                capacity=d.size_bytes,
                allocation=d.actual_bytes,
                format="qcow2" if d.sparse else "raw",
            )
            for d in disks
            if d.storage_domain_id == domain.pk
        ) + tuple(
            TestVolume(name=name, capacity=capacity, allocation=0, format=fmt)
            for pool, name, capacity, fmt in extra
            if pool == domain.pool_name
        )
        pools.append(
            TestPool(
                name=domain.pool_name,
                path=f"/{domain.pool_name}",
                capacity=POOL_CAPACITY,
                volumes=volumes,
            )
        )
    domains = [
        TestDomain(
            spec=vm_domain_spec(vm),
            state=_STATE_FOR_STATUS.get(vm.status, hypervisor.DomainState.SHUTOFF),
            has_managed_save=vm.status in (VMStatus.SUSPENDED, VMStatus.RESTORING_STATE),
        )
        for vm in host.vms.prefetch_related("disks__storage_domain")
    ]
    return render_node_xml(
        hostname=host.name, cpus=16, memory_mb=64 * 1024, pools=pools, domains=domains
    )


def node_file_write(host: Host) -> Path | None:
    """Write a test host's node file from the inventory (before its first connection)."""
    path = node_file(host)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(node_xml(host))
    return path


def _disk_chains(host: Host):
    """(disk, [volume names base -> top]) for the disks of `host`, and a preview's kept-aside
    tops: derived from the snapshots, oldest first, as each snapshot froze the then-top."""
    from .models import SnapshotPreview

    previews = {p.vm_id: p for p in SnapshotPreview.objects.filter(vm__host=host)}
    for disk in Disk.objects.filter(host=host).select_related("storage_domain"):
        frozen = list(
            disk.snapshot_volumes.order_by("snapshot__created_at", "snapshot_id").values_list(
                "volume_name", "snapshot_id"
            )
        )
        preview = previews.get(disk.vm_id)
        state = preview.disks.get(str(disk.pk)) if preview else None
        names = [name for name, _ in frozen]
        if state:
            # active chain: frozen volumes then the kept-aside top; the preview overlay sits on
            # the chosen snapshot's volume
            yield disk, names + [state["active"]]
            chosen = next((name for name, sid in frozen if sid == state["snapshot"]), None)
            if chosen:
                yield disk, [chosen, disk.volume_name]
        else:
            yield disk, names + [disk.volume_name]


def _snapshot_volumes(host: Host) -> list[tuple[str, str, int, str]]:
    """Volumes of a test host beyond the disks' tops: frozen snapshot layers, kept-aside
    tops and saved memory states, as (pool, name, capacity, format)."""
    from .models import Snapshot

    seen, out = set(), []
    tops = set(Disk.objects.filter(host=host).values_list("volume_name", flat=True))
    for disk, chain in _disk_chains(host):
        for name in chain:
            if name not in tops and name not in seen:
                seen.add(name)
                out.append((disk.storage_domain.pool_name, name, disk.size_bytes, "qcow2"))
    for ref in (
        Snapshot.objects.filter(vm__host=host)
        .exclude(memory_volume="")
        .values_list("memory_volume", flat=True)
    ):
        pool, _, name = ref.partition("/")
        out.append((pool, name, 1, "raw"))
    return out


def chains_adopt(host: Host, conn) -> None:
    """Tell a freshly loaded test host which volume backs onto which (its driver forgets)."""
    if node_file(host) is None:
        return
    for disk, chain in _disk_chains(host):
        for below, above in zip(chain, chain[1:], strict=False):
            conn.adopt_backing(disk.storage_domain.pool_name, above, below)
