"""Part 10: live migration (issue 11).

`maintenance()`: a test-driver host with 200 Up VMs on shared (NFS) storage is moved to
Maintenance (`vms.inventory.host_maintenance`); the real monitor cycle (`TestHostMonitor`,
whose cycle ends with `vms.evacuation.evacuations_run`) starts the migrations, at most the
cluster's 2 at a time, and two in-process `ThreadWorker`s run the migrate jobs until the host
is in Maintenance. The test driver's migration is immediate (hypervisor/testdriver.py
`_migrate_domain`), so what is measured is Vireo's own cost around a migration: the wall time
against the sum of the migrate jobs' durations (Job started_at to ended_at) over 2.

`downtime()`: on the integration suite's two private libvirtds (tests/integration/libvirtd.py
`ensure_peer`), a TCG guest (tests/integration/guest_image.py: busybox and qemu-ga) that
rewrites a buffer of its memory in a loop is migrated peer-to-peer with
`hypervisor.Connection.migrate` under a bandwidth cap, without and then with auto-converge;
libvirt's downtime (`migration_downtime`, read on the destination), the duration and the
iterations of each, or "did not converge" when the time limit aborted it.
"""

import base64
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid as uuid_lib
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# -- Maintenance on test hosts ----------------------------------------------------------------


class _Workers:
    """`count` ThreadWorkers on the default queue, each in a thread that keeps working (an RQ
    work loop that quits after 2 idle seconds, entered again) until `stop()`."""

    def __init__(self, count: int) -> None:
        from portal.kernel.tasks import get_queue
        from portal.kernel.worker import ThreadWorker

        self.done = threading.Event()
        queue = get_queue()
        self.workers = [
            ThreadWorker([queue], connection=queue.connection, name=f"bench-migrate-{n}")
            for n in range(count)
        ]
        self.threads = [
            threading.Thread(target=self._loop, args=(w,), name=f"bench-migrate-{n}", daemon=True)
            for n, w in enumerate(self.workers)
        ]

    def _loop(self, worker) -> None:
        while not self.done.is_set():
            worker.work(max_idle_time=2, logging_level="WARNING")

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join(30)


def maintenance(
    user, *, vms: int = 200, hosts: int = 4, concurrency: int = 2, poll_seconds: float = 0.5
) -> dict:
    import hypervisor
    import vms.monitor as monitor_module
    from portal.kernel.models import Job, JobKind
    from portal.kernel.tasks import get_queue
    from storage.choices import StorageType
    from storage.models import Disk, StorageDomain
    from vms.choices import HostStatus, VMStatus
    from vms.inventory import host_maintenance
    from vms.models import Cluster, Host, VirtualMachine
    from vms.testhosts import TestHostMonitor

    from .seed import inventory_seed

    inv = inventory_seed(
        prefix="ev",
        data_centers=1,
        clusters=1,
        hosts=hosts,
        vms=vms,
        statuses=[VMStatus.UP],
        user=user,
    )
    cluster, source = inv.clusters[0], inv.hosts[0]
    # All VMs on the first host, 256 MiB each (the other hosts take them in memory), their
    # disks on the data center's NFS domain (no host: every host reaches them).
    Cluster.objects.filter(pk=cluster.pk).update(max_concurrent_migrations=concurrency)
    StorageDomain.objects.filter(data_center=inv.data_centers[0]).update(
        storage_type=StorageType.NFS
    )
    VirtualMachine.objects.filter(cluster=cluster).update(host=source, memory_mb=256, vcpus=1)
    Disk.objects.filter(vm__cluster=cluster).update(host=None)
    # The cycle polls every host not in Maintenance: other parts' hosts are set aside meanwhile
    # (statuses restored afterwards), so that it polls this cluster's only.
    others = dict(
        Host.objects.exclude(cluster=cluster)
        .exclude(status=HostStatus.MAINTENANCE)
        .values_list("pk", "status")
    )
    queue = get_queue()
    queue.empty()

    monitor = TestHostMonitor(poll_seconds=poll_seconds)
    cycles: list[tuple[float, float, int]] = []  # (start, seconds, migrations started)
    cycle = monitor.cycle
    evacuate = monitor_module.evacuations_run
    started_by_cycle: list[int] = []
    evacuation_s: list[float] = []

    def counted_evacuations() -> int:
        began = time.perf_counter()
        n = evacuate()
        evacuation_s.append(time.perf_counter() - began)
        started_by_cycle.append(n)
        return n

    def timed_cycle(wait=None):
        began, before = time.perf_counter(), len(started_by_cycle)
        try:
            return cycle(wait)
        finally:
            n = started_by_cycle[-1] if len(started_by_cycle) > before else 0
            cycles.append((began, time.perf_counter() - began, n))

    monitor.cycle = timed_cycle
    monitor_module.evacuations_run = counted_evacuations
    thread = threading.Thread(target=monitor.run, name="bench-monitor", daemon=True)
    workers = _Workers(2)
    try:
        Host.objects.filter(pk__in=list(others)).update(status=HostStatus.MAINTENANCE)
        prepare_started = time.perf_counter()
        monitor.prepare(Host.objects.filter(cluster=cluster).select_related("cluster"))
        prepare_s = time.perf_counter() - prepare_started
        thread.start()
        deadline = time.monotonic() + 120
        while len(cycles) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(cycles) < 2:
            raise RuntimeError("the monitor did not complete two cycles within 120 s")
        ups = VirtualMachine.objects.filter(host=source, status=VMStatus.UP).count()
        if ups != vms:
            raise RuntimeError(f"{ups} of {vms} VMs Up on {source.name} before Maintenance")
        workers.start()
        first_cycle, first_evacuation = len(cycles), len(evacuation_s)
        began = time.perf_counter()
        mark = time.time()
        host_maintenance(host_id=source.pk, user=user)
        deadline = time.monotonic() + 900
        status = None
        while time.monotonic() < deadline:
            status = Host.objects.filter(pk=source.pk).values_list("status", flat=True).get()
            if status == HostStatus.MAINTENANCE:
                break
            time.sleep(0.02)
        wall_s = time.perf_counter() - began
        during = cycles[first_cycle:]
        evacuations = evacuation_s[first_evacuation:]
        stuck = Host.objects.get(pk=source.pk).maintenance_reason
    finally:
        workers.stop()
        monitor.stop.set()
        thread.join(60)
        for pool in (monitor.pool, monitor.agent_pool):  # no poll left on a closed connection
            pool.shutdown(wait=True)
        monitor_module.evacuations_run = evacuate
        for host in Host.objects.filter(cluster=cluster):
            hypervisor.disconnect(host.uri)
        for status_value in set(others.values()):
            Host.objects.filter(
                pk__in=[pk for pk, s in others.items() if s == status_value]
            ).update(status=status_value)

    from datetime import UTC, datetime

    since = datetime.fromtimestamp(mark, tz=UTC)
    jobs = list(
        Job.objects.filter(kind=JobKind.VM_MIGRATE, created_at__gte=since)
        .order_by("created_at")
        .values("status", "created_at", "started_at", "ended_at")
    )
    done = [j for j in jobs if j["started_at"] and j["ended_at"]]
    durations = [(j["ended_at"] - j["started_at"]).total_seconds() for j in done]
    waits = [(j["started_at"] - j["created_at"]).total_seconds() for j in done]
    total_s = sum(durations)
    # A slot freed by a migration's end stays empty until a cycle starts the next one: for each
    # job after the first `concurrency`, the time from the latest end before its creation.
    ends = sorted(j["ended_at"] for j in done)
    idle = []
    for j in jobs[concurrency:]:
        before = [e for e in ends if e <= j["created_at"]]
        if before:
            idle.append((j["created_at"] - before[-1]).total_seconds())
    placed = Counter(
        VirtualMachine.objects.filter(cluster=cluster).values_list("host__name", "status")
    )
    return {
        "vms": vms,
        "hosts": hosts,
        "concurrency": concurrency,
        "poll_seconds": poll_seconds,
        "prepare_s": prepare_s,
        "reached": status == HostStatus.MAINTENANCE,
        "stuck": stuck,
        "wall_s": wall_s,
        "jobs": len(jobs),
        "job_statuses": dict(Counter(j["status"] for j in jobs)),
        "sum_s": total_s,
        "job_ms": {
            "median": statistics.median(durations) * 1000 if durations else 0.0,
            "max": max(durations) * 1000 if durations else 0.0,
        },
        "queue_wait_ms": statistics.median(waits) * 1000 if waits else 0.0,
        "ideal_s": total_s / concurrency,
        "ratio": wall_s / (total_s / concurrency) if total_s else float("inf"),
        "cycles": len(during),
        "cycle_ms": {
            "median": statistics.median(s for _b, s, _n in during) * 1000 if during else 0.0,
            "max": max(s for _b, s, _n in during) * 1000 if during else 0.0,
        },
        "evacuation_ms": statistics.median(evacuations) * 1000 if evacuations else 0.0,
        "started_per_cycle": dict(sorted(Counter(n for _b, _s, n in during).items())),
        "slot_idle_ms": statistics.median(idle) * 1000 if idle else 0.0,
        "placed": {f"{h} {s}": n for (h, s), n in sorted(placed.items())},
    }


# -- Real pair: downtime with and without auto-converge ------------------------------------------

GUEST_MEMORY_MB = 256
DIRTY_MIB = 32
# Every pass rewrites DIRTY_MIB of the guest's page cache (tmpfs) with random bytes (zero pages
# would cost qemu next to nothing to send).
DIRTY_SCRIPT = (
    f"dd if=/dev/urandom of=/tmp/src bs=1M count={DIRTY_MIB} 2>/dev/null; "
    "while true; do cat /tmp/src > /tmp/dst; done"
)


def _integration():
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    import guest_image
    import libvirtd

    return libvirtd, guest_image


def _agent(dom, command: str, arguments: dict | None = None, timeout: int = 5) -> dict:
    import libvirt_qemu

    message = {"execute": command, **({"arguments": arguments} if arguments else {})}
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(message), timeout, 0))


def _dirty_rate(dom, seconds: int = 2) -> str:
    """qemu's own measure of the guest's dirty rate (calc-dirty-rate, libvirt's
    virDomainStartDirtyRateCalc), as a short text."""
    import libvirt

    try:
        dom.startDirtyRateCalc(seconds, 0)
        time.sleep(seconds + 0.5)
        for _ in range(20):
            stats = dom.connect().domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)
            values = stats[0][1] if stats else {}
            if values.get("dirtyrate.calc_status") == 2:  # measured
                return f"qemu measures {values['dirtyrate.megabytes_per_second']} MiB/s dirtied"
            time.sleep(0.25)
        return "dirty rate not measured"
    except Exception as exc:  # an older qemu or libvirt
        return f"dirty rate not measured ({exc})"


def _one_migration(one, two, uuid: str, options, limit_s: float) -> dict:
    import hypervisor

    began = time.monotonic()
    readings: list = []
    at_abort: list = []  # the last reading before the abort (after it libvirt reads zeros)

    def too_long() -> bool:
        if time.monotonic() - began <= limit_s:
            return False
        if not at_abort and readings:
            at_abort.append(readings[-1])
        return True

    try:
        result = one.migrate(uuid, two, options, progress=readings.append, should_abort=too_long)
    except hypervisor.MigrationCancelled:
        last = at_abort[0] if at_abort else None
        text = f"did not converge in {limit_s:.0f} s" + (
            f" (aborted at iteration {last.iteration}, {last.data_remaining // 2**20} MiB left)"
            if last
            else ""
        )
        runs_on = one.get_domain(uuid).state
        return {
            "converged": False,
            "text": f"{text}; the guest runs on on the source ({runs_on})",
            "short": text,
            "iterations": last.iteration if last else None,
        }
    downtime = two.migration_downtime(uuid)
    shown = f"{downtime} ms" if downtime is not None else "not reported"
    text = (
        f"libvirt's downtime {shown}, duration {result.duration_s:.1f} s, "
        f"{result.iterations} iterations"
    )
    return {
        "converged": True,
        "downtime_ms": downtime,
        "duration_s": result.duration_s,
        "iterations": result.iterations,
        "text": text,
        "short": text,
    }


def downtime(*, bandwidth_mbps: int = 256, limit_s: float = 60.0) -> dict:
    """Migrate a guest that dirties memory from peer 1 to peer 2 without auto-converge and (it
    ran on where it was, or it is brought back) with it, under the same bandwidth cap. Skipped, with the reason, when not
    root or when the peers cannot start."""
    if os.geteuid() != 0:
        return {"skipped": "needs root (the private libvirtds run as root)"}
    try:
        libvirtd, guest_image = _integration()
        uris = [libvirtd.ensure_peer(1), libvirtd.ensure_peer(2)]
        image = guest_image.agent_guest_image()
    except Exception as exc:
        return {"skipped": f"the two private libvirtds or the guest image: {exc}"}

    import libvirt

    import hypervisor
    from hypervisor import Connection, DiskSpec, DomainSpec, MigrationOptions

    one, two = (Connection(uri) for uri in uris)
    one._kvm_usable = lambda: False  # this machine's nested KVM cannot boot the guest kernel
    uuid = str(uuid_lib.uuid4())
    pool = f"vireo-bench-mig-{uuid[:8]}"
    shared = Path(tempfile.mkdtemp(prefix="vireo-bench-mig-"))
    raw = {uri: libvirt.open(uri) for uri in uris}
    runs = []
    try:
        shutil.copyfile(image, shared / "guest.raw")
        for uri in uris:  # the same directory at the same path: storage both hosts see
            libvirtd.make_pool(uri, pool, shared)
        one.define_domain(
            DomainSpec(
                uuid=uuid,
                name=f"vireo-bench-mig-{uuid[:8]}",
                memory_mb=GUEST_MEMORY_MB,
                vcpus=1,
                disks=(DiskSpec(pool=pool, volume="guest.raw"),),
            )
        )
        # libvirt 9.0 refuses to migrate a writable disk on a local file system ("Migration
        # without shared storage is unsafe"; `shared_filesystems` came in 10.x): the guest runs
        # from its initramfs and only reads its disk, so the disk is attached read-only.
        dom = raw[uris[0]].lookupByUUIDString(uuid)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        raw[uris[0]].defineXML(xml.replace("</disk>", "<readonly/></disk>", 1))
        booted = time.monotonic()
        one.start(uuid)
        dom = raw[uris[0]].lookupByUUIDString(uuid)
        deadline = time.monotonic() + 180
        while True:
            try:
                _agent(dom, "guest-ping", timeout=2)
                break
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the guest's qemu-ga did not answer within 180 s") from None
                time.sleep(1)
        boot_s = time.monotonic() - booted
        command = base64.b64encode(DIRTY_SCRIPT.encode()).decode()
        _agent(
            dom,
            "guest-exec",
            {"path": "/bin/sh", "arg": ["-c", f"echo {command} | base64 -d | sh"]},
        )
        time.sleep(3)  # the random source file is made, the loop runs
        rate = _dirty_rate(dom)
        for auto_converge in (False, True):
            options = MigrationOptions(
                auto_converge=auto_converge,
                bandwidth_mbps=bandwidth_mbps,
                migrate_uri="tcp://127.0.0.1",
            )
            row = _one_migration(one, two, uuid, options, limit_s)
            row["auto_converge"] = auto_converge
            runs.append(row)
            if row["converged"] and not auto_converge:
                # Back to peer 1, unhurried, for the next run.
                two.migrate(uuid, one, MigrationOptions(migrate_uri="tcp://127.0.0.1"))
    finally:
        for conn in (one, two):
            for step in (conn.destroy, conn.undefine_domain):
                try:
                    step(uuid)
                except hypervisor.HypervisorError:
                    pass
        for uri in uris:
            libvirtd.remove_pool(uri, pool)
        for conn in (one, two):
            conn.close()
        for conn in raw.values():
            conn.close()
        shutil.rmtree(shared, ignore_errors=True)
    return {
        "memory_mb": GUEST_MEMORY_MB,
        "boot_s": boot_s,
        "dirty_mib": DIRTY_MIB,
        "dirty_rate": rate,
        "bandwidth_mbps": bandwidth_mbps,
        "limit_s": limit_s,
        "runs": runs,
    }
