"""Hosts on libvirt's test driver (the demo, the benchmarks, the browser suite).

The test driver keeps its state inside the one process that opened it, so a test host is
served by the process that runs the monitor (and, for the demo, the worker beside it). When
that process starts, each test host's node file (`test:///abs/path.xml`) is written from the
inventory, so the host comes back holding the VMs, states and volumes the portal knows: read
from one snapshot, without what queued jobs have still to make, with each VM as its last job
or its host left it. `TestHostMonitor` is the monitor of such a process; the production
monitor (vms.monitor) knows nothing of node files.
"""

import threading
from contextlib import contextmanager
from pathlib import Path

from django.db import connection, transaction
from django.db.models import Q

import hypervisor
from hypervisor.testnode import (
    TEST_HOST_DEVICES,
    TestDomain,
    TestPool,
    TestVolume,
    render_node_xml,
)
from portal.kernel.models import Job, JobKind, JobStatus
from storage.choices import DiskStatus, IsoImageStatus, StorageDomainStatus
from storage.models import Disk, StorageDomain

from .choices import VMStatus
from .jobs import network_spec, vm_domain_spec
from .models import Host, Network, Snapshot, SnapshotDisk, SnapshotPreview
from .monitor import Monitor

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


@contextmanager
def _one_view():
    """Read everything a node file needs from one snapshot of the database, so a job that moves
    on meanwhile cannot make it half old and half new (PostgreSQL: REPEATABLE READ)."""
    if connection.in_atomic_block:
        yield  # already inside a transaction: read in it
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def _vm_state(vm, waiting: dict[int, str]) -> tuple[str, bool]:
    """(domain state, has managed save) for a VM as the host holds it: a VM whose job is still
    queued is as it was before the job (which has not touched the host); an Unknown VM as it
    was when its host stopped answering."""
    status = waiting.get(vm.pk, vm.status)
    if status == VMStatus.UNKNOWN:
        status = vm.last_known_status or (VMStatus.UP if vm.started_at else VMStatus.DOWN)
    state = _STATE_FOR_STATUS.get(status, hypervisor.DomainState.SHUTOFF)
    return state, status in (VMStatus.SUSPENDED, VMStatus.RESTORING_STATE)


def node_xml(host: Host) -> str:
    """The test driver's node description of `host` as the inventory knows it: what its jobs
    have made so far, in the states they left, all read from one snapshot."""
    with _one_view():
        return _node_xml(host)


def _node_xml(host: Host) -> str:
    active = list(
        Job.objects.filter(status__in=Job.ACTIVE).values_list(
            "kind", "status", "vm_id", "result_vm_id", "params"
        )
    )
    # VMs a job is making: not defined on the host yet, nor the disks it has still to make.
    making = {vm_id for kind, _s, vm_id, _r, _p in active if kind == JobKind.VM_CREATE}
    making |= {result_vm_id for *_x, result_vm_id, _p in active if result_vm_id}
    waiting = {
        vm_id: params["from_status"]
        for _k, status, vm_id, _r, params in active
        if status == JobStatus.QUEUED and vm_id and (params or {}).get("from_status")
    }
    pools = []
    # A disk on no host is on shared storage: every host of its data center sees its volume.
    shared = Q(host__isnull=True, storage_domain__data_center_id=host.cluster.data_center_id)
    disks = [
        d
        for d in Disk.objects.filter(Q(host=host) | shared).select_related("storage_domain")
        if not (d.vm_id in making and d.status == DiskStatus.LOCKED)
    ]
    extra = _snapshot_volumes(host)
    domains = StorageDomain.objects.filter(data_center_id=host.cluster.data_center_id).exclude(
        status=StorageDomainStatus.UNATTACHED
    )
    for domain in domains:
        volumes = (
            tuple(
                TestVolume(
                    name=d.volume_name,
                    capacity=d.size_bytes,
                    allocation=d.actual_bytes,
                    format="qcow2" if d.sparse else "raw",
                )
                for d in disks
                if d.storage_domain_id == domain.pk
            )
            + tuple(
                TestVolume(name=name, capacity=capacity, allocation=0, format=fmt)
                for pool, name, capacity, fmt in extra
                if pool == domain.pool_name
            )
            + tuple(  # an ISO domain's images (an upload's volume is made by its job)
                TestVolume(name=i.name, capacity=i.size_bytes, allocation=0, format="raw")
                for i in domain.images.filter(status=IsoImageStatus.OK)
            )
        )
        pools.append(
            TestPool(
                name=domain.pool_name,
                path=domain.target_path,
                capacity=POOL_CAPACITY,
                volumes=volumes,
            )
        )
    domains = []
    vms = host.vms.exclude(pk__in=making).prefetch_related(
        "disks__storage_domain", "nics__profile__network", "host_devices__device"
    )
    for vm in vms:
        state, saved = _vm_state(vm, waiting)
        domains.append(TestDomain(spec=vm_domain_spec(vm), state=state, has_managed_save=saved))
    # The data center's logical networks, as their jobs left them on every host.
    networks = [
        network_spec(n)
        for n in Network.objects.filter(data_center_id=host.cluster.data_center_id).order_by("pk")
    ]
    return render_node_xml(
        hostname=host.name,
        cpus=16,
        memory_mb=64 * 1024,
        pools=pools,
        domains=domains,
        networks=networks,
        devices=TEST_HOST_DEVICES,
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
    previews = {p.vm_id: p for p in SnapshotPreview.objects.filter(vm__host=host)}
    frozen_by_disk: dict[int, list[tuple[str, int]]] = {}
    for disk_id, name, snapshot_id in (
        SnapshotDisk.objects.filter(disk__host=host)
        .order_by("snapshot__created_at", "snapshot_id")
        .values_list("disk_id", "volume_name", "snapshot_id")
    ):
        frozen_by_disk.setdefault(disk_id, []).append((name, snapshot_id))
    for disk in Disk.objects.filter(host=host).select_related("storage_domain"):
        frozen = frozen_by_disk.get(disk.pk, [])
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


def node_files_write(hosts) -> int:
    """Write the node files of the test hosts among `hosts` (all of them by default) from one
    view of the inventory, before their first connection; returns how many were written."""
    count = 0
    with _one_view():
        for host in hosts:
            if node_file(host) is not None:
                node_file_write(host)
                count += 1
    return count


class TestHostMonitor(Monitor):
    """The monitor of a process that serves test hosts (the demo, the browser suite, the
    benchmarks). Before a test host's first connection in this process its node file is
    written from the inventory (after a restart the inventory is the truth again; a host
    `prepare()` wrote up front is not written again), and on each new connection the host is
    told its volumes' backing chains, which the test driver forgets."""

    __test__ = False  # not a pytest test class

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.prepared: set[int] = set()  # test hosts whose node file this process wrote
        self._prepare_lock = threading.Lock()

    def prepare(self, hosts=None) -> int:
        """Write the node files of every test host (or of `hosts`) not written yet, in one
        pass and one view of the inventory: quicker than host by host in the first poll."""
        hosts = Host.objects.select_related("cluster") if hosts is None else hosts
        with self._prepare_lock:
            todo = [h for h in hosts if h.pk not in self.prepared and node_file(h) is not None]
            node_files_write(todo)
            self.prepared.update(h.pk for h in todo)
        return len(todo)

    def host_connect(self, host: Host) -> hypervisor.Connection:
        if node_file(host) is None:
            return super().host_connect(host)
        if host.pk not in self.prepared:
            self.prepare([host])
        conn = super().host_connect(host)
        if host.pk not in self.watched:
            chains_adopt(host, conn)
        return conn
