"""The monitor: keeps the inventory true to what the hosts say.

It holds one libvirt connection per host, listens to libvirt lifecycle events (a change made
outside the portal shows within a second), and polls every host as a fallback. Domains a host
runs that Vireo did not define are adopted as external VMs (vms.external). A host that
cannot be reached goes Non Responsive and its VMs Unknown; they come back by themselves when
it answers. It also ends jobs whose worker died, so no VM stays busy, and asks the guest
agents of running VMs what they report (vms.guest_agent), in passes of their own, and reads
each host's devices (vms.host_devices) when it connects and every few minutes. A host's answer never
overrides a status set after the host was asked, and one silent host holds up neither the
other hosts nor the job reconcile. The HA watcher (vms.high_availability) runs here: a Highly
Available VM seen to stop without anyone asking is restarted, and a Non Responsive host with
power management is fenced (vms.fencing) so its Highly Available VMs can be.
"""

import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rq import Worker as RQWorker
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job as RQJob
from rq.utils import now as rq_now

import hypervisor
from portal.kernel.audit import event_record
from portal.kernel.db import db_tidy
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobStatus, Phase, Severity
from portal.kernel.tasks import get_queue, job_fail
from storage.choices import DOMAIN_IN_USE_STATUSES, DomainFunction, PoolStatus, StorageDomainStatus
from storage.models import StorageDomain, StorageDomainHost
from storage.space import domain_space_refresh, pool_figures

from .balancing import Balancer
from .choices import (
    BUSY_STATUSES,
    HOST_MAINTENANCE_STATUSES,
    RUNNING_STATUSES,
    HostStatus,
    SnapshotStatus,
    VMStatus,
    status_from_domain,
)
from .domains import storage_domain_host_setup
from .evacuation import evacuations_run
from .external import domain_adopt, external_gone, host_domains_adopt, host_externals_gone
from .fencing import host_fence, hosts_to_fence
from .guest_agent import host_agents_refresh
from .high_availability import ha_restarts_run, vm_stop_detected
from .host_devices import host_devices_refresh
from .isos import iso_images_sync
from .jobs import vm_settle
from .leftovers import host_leftovers_clear
from .models import Host, Snapshot, SnapshotPreview, VirtualMachine

log = logging.getLogger(__name__)

# RQ statuses of a job that waits to be taken by a worker.
RQ_WAITING = {"queued", "deferred", "scheduled"}
LOST_BY_QUEUE = "The task queue lost this job before a worker took it."
LOST_WITH_WORKER = "The worker that took this job stopped before it began."


def vms_with_active_jobs() -> set[int]:
    rows = Job.objects.filter(status__in=Job.ACTIVE).values_list("vm_id", "result_vm_id")
    return {pk for pair in rows for pk in pair if pk}


def vm_has_active_job(vm_id: int) -> bool:
    return Job.objects.filter(
        Q(vm_id=vm_id) | Q(result_vm_id=vm_id), status__in=Job.ACTIVE
    ).exists()


def vm_apply(
    vm: VirtualMachine,
    status: str,
    host: Host,
    busy_ids: set[int] | None = None,
    *,
    seen_at: datetime | None = None,
) -> bool:
    """Bring one VM to the status its host reports, unless a job is working on it.

    `seen_at` is when the host was asked: a VM whose status changed after that (an event or a
    job moved it while the host answered) is newer than the report and is left as it is."""
    if vm.status == status:
        return False
    if vm.status in BUSY_STATUSES:
        # busy_ids is a snapshot from the start of the cycle: a job begun since is not in it.
        if (busy_ids is not None and vm.pk in busy_ids) or vm_has_active_job(vm.pk):
            return False
    fields = {}
    # Unknown keeps started_at (the host could not be asked): a guest found running again
    # goes on with its uptime instead of starting it over.
    resumed = vm.status == VMStatus.UNKNOWN and vm.started_at is not None
    if status in RUNNING_STATUSES and vm.status not in RUNNING_STATUSES and not resumed:
        fields["started_at"] = timezone.now()
    elif status not in RUNNING_STATUSES and status != VMStatus.UNKNOWN:
        fields["started_at"] = None
    if status == VMStatus.UNKNOWN:
        fields["last_known_status"] = vm.status
    current = VirtualMachine.objects.filter(pk=vm.pk, status=vm.status)
    if seen_at is not None:
        current = current.filter(status_changed_at__lte=seen_at)
    moved = current.update(status=status, status_changed_at=timezone.now(), **fields)
    if not moved:
        return False  # it changed after the host was asked: newer than the report
    previous = VMStatus(vm.status).label
    vm.status = status
    broadcast(f"vm.{vm.pk}")
    severity = (
        Severity.WARNING
        if status in (VMStatus.UNKNOWN, VMStatus.NOT_RESPONDING)
        else Severity.NORMAL
    )
    event_record(
        action="status",
        phase=Phase.DETECTED,
        vm=vm,
        host=host,
        severity=severity,
        message=f"VM {vm.name} is now {VMStatus(status).label} (was {previous}), as reported by host {host.name}.",
    )
    return True


def host_vms_sync(
    host: Host,
    domains: list[hypervisor.DomainInfo],
    busy_ids: set[int],
    seen_at: datetime | None = None,
    stopped=None,
) -> int:
    """Reconcile every VM placed on `host` with the host's domain list (taken at `seen_at`);
    returns changes. `stopped(vm, previous status, started_at)` is told of each VM moved Down."""
    by_uuid = {d.uuid: d for d in domains}
    changed = 0
    for vm in VirtualMachine.objects.filter(host=host).select_related("cluster"):
        info = by_uuid.get(str(vm.uuid))
        status = status_from_domain(info.state, info.has_managed_save) if info else VMStatus.DOWN
        previous, started_at = vm.status, vm.started_at
        moved = vm_apply(vm, status, host, busy_ids, seen_at=seen_at)
        changed += moved
        if moved and status == VMStatus.DOWN and stopped is not None:
            stopped(vm, previous, started_at)
    return changed


# A VM that was in one of these and is seen Down stopped while running (Unknown: its host
# stopped answering while it ran, and says now that it is off).
WENT_DOWN_FROM = RUNNING_STATUSES | {VMStatus.UNKNOWN}


def vm_went_down(
    vm: VirtualMachine,
    host: Host,
    conn: hypervisor.Connection | None,
    previous: str,
    started_at: datetime | None,
    hints: dict | None,
) -> bool:
    """Tell the HA watcher of a Highly Available VM seen to go Down while it ran, with why
    libvirt says it stopped (the lifecycle events' `hints`, the domain's shut-off reason).
    True if a restart was queued."""
    if not vm.highly_available or previous not in WENT_DOWN_FROM:
        return False
    reason = ""
    if conn is not None:
        try:
            reason = conn.stop_reason(str(vm.uuid))
        except hypervisor.DomainNotFound:
            reason = "undefined"
        except hypervisor.HypervisorError as exc:
            log.warning("stop reason of %s not read: %s", vm.name, exc)
    if previous == VMStatus.UNKNOWN and not hints and reason in ("", "unknown", "daemon"):
        reason = "lost"
    return (
        vm_stop_detected(vm, host=host, started_at=started_at, hints=hints, shutoff_reason=reason)
        is not None
    )


def host_unreachable(
    host: Host, error: str, busy_ids: set[int], seen_at: datetime | None = None
) -> None:
    """Mark a host Non Responsive and the VMs that were running on it Unknown. A host put in
    Maintenance while it was being asked stays there, and its VMs as they are."""
    if (
        Host.objects.filter(pk=host.pk)
        .exclude(status__in={HostStatus.NON_RESPONSIVE, *HOST_MAINTENANCE_STATUSES})
        .update(status=HostStatus.NON_RESPONSIVE, last_error=error[:2000])
    ):
        broadcast("hosts", f"host.{host.pk}")
        event_record(
            action="host_status",
            phase=Phase.DETECTED,
            host=host,
            cluster=host.cluster,
            object_type="host",
            object_name=host.name,
            severity=Severity.ERROR,
            error=error,
            message=f"Host {host.name} is Non Responsive.",
        )
    elif Host.objects.filter(pk=host.pk, status__in=HOST_MAINTENANCE_STATUSES).exists():
        # Preparing For Maintenance stays so (its evacuation waits); the error is shown.
        Host.objects.filter(pk=host.pk, status=HostStatus.PREPARING_FOR_MAINTENANCE).update(
            last_error=error[:2000]
        )
        return
    for vm in VirtualMachine.objects.filter(host=host).exclude(
        status__in=(VMStatus.DOWN, VMStatus.UNKNOWN)
    ):
        vm_apply(vm, VMStatus.UNKNOWN, host, busy_ids, seen_at=seen_at)


def host_reachable(host: Host, info: hypervisor.HostInfo | None) -> bool:
    """Mark a host that answered Up, with what libvirt reports about it (`info`, read when the
    monitor connects or the host was not Up). A host put in Maintenance meanwhile is left
    there (only Activate brings it back): returns False then."""
    fields = {
        "status": HostStatus.UP,
        "last_seen": timezone.now(),
        "last_error": "",
        "fence_tried_at": None,  # fenced or confirmed rebooted, it is back
        "fenced_at": None,
    }
    if info is not None:
        fields.update(
            hostname=info.hostname[:255],
            cpu_model=info.cpu_model[:255],
            cpus=info.cpus,
            cores=info.cores,
            memory_mb=info.memory_mb,
            libvirt_version=info.libvirt_version[:64],
            hypervisor_version=info.hypervisor_version[:64],
            link_speed_mbps=info.link_speed_mbps,
        )
    was = host.status
    moved = (
        Host.objects.filter(pk=host.pk)
        .exclude(status__in=HOST_MAINTENANCE_STATUSES)
        .update(**fields)
    )
    if not moved:
        # Preparing For Maintenance: still polled (its VMs run until they leave), status kept.
        kept = {k: v for k, v in fields.items() if k != "status"}
        preparing = Host.objects.filter(pk=host.pk, status=HostStatus.PREPARING_FOR_MAINTENANCE)
        return bool(preparing.update(**kept))
    if info is not None:
        broadcast("hosts")
    if was != HostStatus.UP:
        broadcast("hosts", f"host.{host.pk}")
        event_record(
            action="host_status",
            phase=Phase.DETECTED,
            host=host,
            cluster=host.cluster,
            object_type="host",
            object_name=host.name,
            message=f"Host {host.name} is Up.",
        )
    return True


def storage_sync(host: Host, conn: hypervisor.Connection) -> None:
    """Record what the host's pools say on the host's own row of each storage domain of its
    data center (hosts never overwrite one another: the domain's figures are derived from the
    rows), and have a pool set up on a host that has not got it yet (a host added later)."""
    pools = {p.name: p for p in conn.list_pools()}
    rows = {row.domain_id: row for row in StorageDomainHost.objects.filter(host=host).order_by()}
    domains = StorageDomain.objects.filter(data_center_id=host.cluster.data_center_id).exclude(
        status=StorageDomainStatus.UNATTACHED
    )
    for domain in domains:
        pool = pools.get(domain.pool_name)
        row = rows.get(domain.pk)
        if row is None and pool is None:
            if domain.managed and domain.status in DOMAIN_IN_USE_STATUSES:
                storage_domain_host_setup(domain_id=domain.pk, host_id=host.pk)
            continue
        if row is None:
            row, _ = StorageDomainHost.objects.get_or_create(domain=domain, host=host)
        if host_pool_apply(domain, host, row, pool):
            domain_space_refresh(domain.pk)
        if domain.domain_function == DomainFunction.ISO and pool is not None and pool.active:
            iso_images_sync(domain, host, conn.list_volumes(domain.pool_name))


def host_pool_apply(
    domain: StorageDomain, host: Host, row: StorageDomainHost, pool: hypervisor.PoolInfo | None
) -> bool:
    """Write one host's reading of a domain's pool on its row, if it changed; True if so. An
    error from setting the pool up stays until Activate tries again; the status of a domain
    a job holds (or in Maintenance) is left to that job."""
    fields = {}
    if pool is not None and pool.active:
        fields.update(pool_figures(pool.capacity, pool.allocation, pool.available))
    if not row.setup_failed and domain.status in DOMAIN_IN_USE_STATUSES:
        if pool is None:
            status = PoolStatus.INACTIVE
            error = f"Storage pool {domain.pool_name} is not defined on host {host.name}."
        elif not pool.active:
            status = PoolStatus.INACTIVE
            error = f"Storage pool {domain.pool_name} is not active on host {host.name}."
        else:
            status, error = PoolStatus.ACTIVE, ""
        fields.update(status=status, error=error)
    changed = {k: v for k, v in fields.items() if getattr(row, k) != v}
    if not changed:
        return False
    StorageDomainHost.objects.filter(pk=row.pk).update(**changed, updated_at=timezone.now())
    for k, v in changed.items():
        setattr(row, k, v)
    broadcast("storage")
    return True


class QueueView:
    """What the task queue holds, read once per reconcile: which workers still heartbeat, and
    which jobs a worker took off the queue (RQ's intermediate list) without starting them."""

    def __init__(self, stale_seconds: float):
        queue = get_queue()
        self.connection = queue.connection
        self.stale = timedelta(seconds=stale_seconds)
        self.now = rq_now()
        self.live_workers = {
            w.name
            for w in RQWorker.all(connection=self.connection)
            if w.last_heartbeat is not None and self.now - w.last_heartbeat < self.stale
        }
        self.intermediate = IntermediateQueue(queue.key, self.connection)
        self.taken = set(self.intermediate.get_job_ids())

    def lost(self, rq_ids: list[str]) -> dict[str, str]:
        """rq id -> why that job will never be carried out, for those of `rq_ids` that won't."""
        jobs = RQJob.fetch_many(rq_ids, connection=self.connection) if rq_ids else []
        out = {}
        for rq_id, rq_job in zip(rq_ids, jobs, strict=True):
            why = self._lost(rq_id, rq_job)
            if why:
                out[rq_id] = why
        return out

    def _lost(self, rq_id: str, rq_job: RQJob | None) -> str:
        if rq_job is None:
            return LOST_BY_QUEUE
        status = rq_job.get_status(refresh=False)
        if status == "finished":
            return ""  # execute() ran: it ended the Job row, or found it ended already
        if status == "started":
            return "" if rq_job.worker_name in self.live_workers else LOST_WITH_WORKER
        if status not in RQ_WAITING:
            return LOST_BY_QUEUE  # failed, stopped, canceled: execute() will not run
        if rq_id not in self.taken:
            return ""  # still waiting in the queue, however long the backlog
        # Taken off the queue by a worker that has not started it yet: normally milliseconds.
        holders = {e.worker_name for e in rq_job.get_executions()}
        if holders & self.live_workers:
            return ""
        self.intermediate.set_first_seen(rq_id)
        first_seen = self.intermediate.get_first_seen(rq_id)
        if first_seen is not None and self.now - first_seen < self.stale:
            return ""
        return LOST_WITH_WORKER


def jobs_reconcile(stale_seconds: float) -> int:
    """Fail jobs whose worker died or that the queue lost, and settle VMs left busy.

    A job is failed only through `job_fail`'s conditional update, so one that a worker ended
    meanwhile keeps its outcome (and what it made). A queued job is lost only when the queue
    will never run it: RQ does not hold it, or holds it for a worker that stopped heartbeating;
    a long backlog is not a loss."""
    cutoff = timezone.now() - timedelta(seconds=stale_seconds)
    ended = 0
    for job in Job.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=cutoff).select_related(
        "vm", "user"
    ):
        ended += job_fail(job, "The worker carrying out this job stopped before it ended.")
    queued = list(
        Job.objects.filter(status=JobStatus.QUEUED, created_at__lt=cutoff).select_related(
            "vm", "user"
        )
    )
    if queued:
        lost = QueueView(stale_seconds).lost([job.rq_id for job in queued if job.rq_id])
        for job in queued:
            why = lost.get(job.rq_id) if job.rq_id else LOST_BY_QUEUE
            if why:
                ended += job_fail(job, why)
    active = vms_with_active_jobs()
    busy = VirtualMachine.objects.filter(status__in=BUSY_STATUSES, status_changed_at__lt=cutoff)
    for vm_id in busy.exclude(pk__in=active).values_list("pk", flat=True):
        vm_settle(vm_id)
    snapshots_unlock(cutoff, active)
    return ended


def snapshots_unlock(cutoff, active_vm_ids: set[int]) -> None:
    """A snapshot left Locked with no job working on its VM: one whose creation never finished
    (no disks recorded) is dropped, the one a preview is about returns to Preview Mode, any
    other to Ok. Its volumes are untouched; the job that failed said what happened."""
    stuck = Snapshot.objects.filter(status=SnapshotStatus.LOCKED, created_at__lt=cutoff).exclude(
        vm_id__in=active_vm_ids
    )
    for snapshot in stuck.select_related("vm"):
        if not snapshot.disks.exists():
            Snapshot.objects.filter(pk=snapshot.pk, status=SnapshotStatus.LOCKED).delete()
        else:
            previewing = SnapshotPreview.objects.filter(snapshot=snapshot).exists()
            Snapshot.objects.filter(pk=snapshot.pk, status=SnapshotStatus.LOCKED).update(
                status=SnapshotStatus.IN_PREVIEW if previewing else SnapshotStatus.OK
            )
        broadcast(f"vm.{snapshot.vm_id}")


class Monitor:
    """Watches every host; `run()` until `stop` is set.

    Each host is connected to and polled in a thread of its own, bounded by a connect timeout
    and libvirt's keepalive; a host still being polled is skipped by the next cycle rather than
    waited for, so one silent host never holds up the others. Dead jobs are reconciled by a
    thread of their own on the poll's schedule."""

    def __init__(
        self,
        *,
        poll_seconds: float | None = None,
        stale_seconds: float | None = None,
        connect_timeout: float | None = None,
    ):
        self.poll_seconds = poll_seconds or settings.VIREO_MONITOR_POLL_SECONDS
        self.stale_seconds = stale_seconds or settings.VIREO_JOB_STALE_SECONDS
        self.connect_timeout = connect_timeout or settings.VIREO_HOST_CONNECT_TIMEOUT
        self.events: queue.Queue = queue.Queue()
        self.watched: dict[int, hypervisor.Connection] = {}
        self.polling: dict[int, Future] = {}  # host id -> its poll, while it runs
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="monitor-host")
        self.agent_seconds = settings.VIREO_AGENT_POLL_SECONDS
        self.devices_seconds = settings.VIREO_HOST_DEVICES_POLL_SECONDS
        self.devices_read: dict[int, float] = {}  # host id -> when its devices were last read
        self.agent_polling: dict[int, Future] = {}  # host id -> its guest agents' pass
        self.agent_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="monitor-agent")
        self.cpu_times: dict[int, hypervisor.HostCpuTimes] = {}  # host id -> last reading
        self.balancer = Balancer()
        self.balanced_at = time.monotonic()  # the first balancing comes one interval in
        # uuid -> why libvirt's events said it stopped ({"stopped": "failed", "shutdown":
        # "guest"}), read when the VM is seen Down; dropped when it starts again.
        self.stop_hints: dict[str, dict[str, str]] = {}
        self.fencing: dict[int, Future] = {}  # host id -> its fence, while it runs
        self.ha_wake = threading.Event()  # a restart was queued: the HA pass runs now
        self.ha_lock = threading.Lock()  # one HA pass at a time

    def _on_lifecycle(self, host_id: int):
        def callback(event: hypervisor.LifecycleEvent) -> None:
            if event.event == "started":
                self.stop_hints.pop(event.uuid, None)
            elif event.why and event.why != "finished":
                self.stop_hints.setdefault(event.uuid, {})[event.event] = event.why
            self.events.put((host_id, event.uuid))

        return callback

    def vm_went_down(self, vm, host, conn, previous, started_at) -> None:
        """A VM seen Down while it ran: the HA watcher decides (woken if it must restart)."""
        hints = self.stop_hints.pop(str(vm.uuid), None)
        if vm_went_down(vm, host, conn, previous, started_at, hints):
            self.ha_wake.set()

    def ha_pass(self) -> int:
        """One pass of the HA watcher (one at a time); returns the restarts started."""
        with self.ha_lock:
            return ha_restarts_run()

    def _fence_thread(self, host_id: int) -> None:
        try:
            if host_fence(host_id):
                self.ha_wake.set()
        except Exception:
            log.exception("fencing host %s failed", host_id)
        finally:
            db_tidy()

    def fence_cycle(self) -> int:
        """Fence the Non Responsive hosts with power management (each in a thread of the
        poll pool; one still being fenced is not started again); returns how many started."""
        started = 0
        for host_id in hosts_to_fence():
            running = self.fencing.get(host_id)
            if running is not None and not running.done():
                continue
            self.fencing[host_id] = self.pool.submit(self._fence_thread, host_id)
            started += 1
        return started

    def host_connect(self, host: Host) -> hypervisor.Connection:
        """The host's connection (the process's cached one, or a new one)."""
        return hypervisor.connect(host.uri, timeout=self.connect_timeout)

    def host_poll(self, host: Host, busy_ids: set[int]) -> None:
        """Connect (registering for events on a new connection), then reconcile the host."""
        seen_at = timezone.now()  # the domain list is as of now: newer changes win over it
        try:
            conn = self.host_connect(host)
            fresh = self.watched.get(host.pk) is not conn
            if fresh:
                conn.on_lifecycle(self._on_lifecycle(host.pk))
                self.watched[host.pk] = conn
            info = conn.host_info() if fresh or host.status != HostStatus.UP else None
            seen_at = timezone.now()
            domains = conn.list_domains()
        except (hypervisor.HypervisorError, OSError) as exc:
            self.watched.pop(host.pk, None)
            host_unreachable(host, str(exc), busy_ids, seen_at)
            return
        finally:
            db_tidy()
        if not host_reachable(host, info):
            return  # put in Maintenance while it was being asked
        host_externals_gone(host, domains)
        host_vms_sync(
            host,
            domains,
            busy_ids,
            seen_at,
            stopped=lambda vm, previous, started_at: self.vm_went_down(
                vm, host, conn, previous, started_at
            ),
        )
        host_domains_adopt(host, conn, domains)
        try:
            storage_sync(host, conn)
        except hypervisor.HypervisorError as exc:
            log.warning("storage of host %s not refreshed: %s", host.name, exc)
        host_leftovers_clear(host, conn)
        self.host_load_record(host, conn)
        self.host_devices_read(host, conn, fresh)

    def host_load_record(self, host: Host, conn: hypervisor.Connection) -> None:
        """Store the host's CPU usage since its previous poll (libvirt's host CPU times), what
        the Scheduling Policy's HighUtilization and LowUtilization are measured against."""
        try:
            reading = conn.host_cpu_times()
        except hypervisor.HypervisorError as exc:
            log.warning("CPU usage of host %s not read: %s", host.name, exc)
            return
        earlier = self.cpu_times.get(host.pk)
        self.cpu_times[host.pk] = reading
        usage = reading.usage_since(earlier) if earlier is not None else None
        if usage is not None:
            Host.objects.filter(pk=host.pk).update(
                cpu_usage_percent=usage, cpu_usage_at=timezone.now()
            )

    def balance_if_due(self) -> int:
        """Run the balancer (vms.balancing) when VIREO_BALANCE_SECONDS have passed since its
        last run; returns how many migrations it started."""
        if time.monotonic() - self.balanced_at < settings.VIREO_BALANCE_SECONDS:
            return 0
        self.balanced_at = time.monotonic()
        return self.balancer.run()

    def host_devices_read(self, host: Host, conn: hypervisor.Connection, fresh: bool) -> None:
        """Store the host's devices on a new connection, then every
        VIREO_HOST_DEVICES_POLL_SECONDS (they change when hardware is plugged in or out)."""
        due = self.devices_read.get(host.pk)
        now = time.monotonic()
        if not fresh and due is not None and now - due < self.devices_seconds:
            return
        try:
            host_devices_refresh(host, conn)
        except hypervisor.HypervisorError as exc:
            log.warning("devices of host %s not read: %s", host.name, exc)
            return
        self.devices_read[host.pk] = now

    def _host_poll_thread(self, host: Host, busy_ids: set[int]) -> None:
        try:
            self.host_poll(host, busy_ids)
        except Exception:
            log.exception("polling host %s failed", host.name)
        finally:
            db_tidy()

    def cycle(self, wait: float | None = None) -> int:
        """Start a poll of every host not still being polled from an earlier cycle, and wait
        up to `wait` seconds (the poll interval) for them; returns how many were started."""
        busy_ids = vms_with_active_jobs()
        hosts = list(Host.objects.exclude(status=HostStatus.MAINTENANCE).select_related("cluster"))
        self.removed_hosts_forget()
        started = []
        for host in hosts:
            running = self.polling.get(host.pk)
            if running is not None and not running.done():
                log.info("host %s is still being polled; not polled again yet", host.name)
                continue
            self.polling[host.pk] = future = self.pool.submit(
                self._host_poll_thread, host, busy_ids
            )
            started.append(future)
        futures_wait(started, timeout=self.poll_seconds if wait is None else wait)
        evacuations_run()
        try:
            self.balance_if_due()
        except Exception:
            log.exception("load balancing failed")
        self.fence_cycle()
        self.ha_pass()
        return len(started)

    def _host_agents_thread(self, host: Host, conn: hypervisor.Connection) -> None:
        try:
            host_agents_refresh(host, conn)
        except hypervisor.HypervisorError as exc:
            log.warning("guest agents of host %s not asked: %s", host.name, exc)
        except Exception:
            log.exception("asking the guest agents of host %s failed", host.name)
        finally:
            db_tidy()

    def agents_cycle(self, wait: float | None = None) -> int:
        """Start a pass over the guest agents of every Up host the monitor is connected to
        (skipping a host whose previous pass still runs: silent agents make it slow, never the
        host's poll), and wait up to `wait` seconds for them; returns how many were started."""
        hosts = Host.objects.filter(pk__in=list(self.watched), status=HostStatus.UP)
        started = []
        for host in hosts.select_related("cluster"):
            conn = self.watched.get(host.pk)
            running = self.agent_polling.get(host.pk)
            if conn is None or (running is not None and not running.done()):
                continue
            self.agent_polling[host.pk] = future = self.agent_pool.submit(
                self._host_agents_thread, host, conn
            )
            started.append(future)
        futures_wait(started, timeout=0 if wait is None else wait)
        return len(started)

    def _agents_forever(self) -> None:
        while not self.stop.wait(self.agent_seconds):
            try:
                self.agents_cycle()
            except Exception:
                log.exception("guest agent cycle failed")
            finally:
                db_tidy()

    def removed_hosts_forget(self) -> None:
        """Close the connections of hosts removed from the inventory (a host in Maintenance
        keeps its connection: its lifecycle events still count)."""
        gone = set(self.watched) - set(
            Host.objects.filter(pk__in=list(self.watched)).values_list("pk", flat=True)
        )
        for host_id in gone:
            running = self.polling.get(host_id)
            if running is not None and not running.done():
                continue
            self.polling.pop(host_id, None)
            self.cpu_times.pop(host_id, None)
            conn = self.watched.pop(host_id, None)
            if conn is not None:
                hypervisor.disconnect(conn.uri)

    def handle_event(self, host_id: int, uuid: str) -> None:
        """A lifecycle event: read the domain's state now and apply it."""
        vm = (
            VirtualMachine.objects.filter(uuid=uuid, host_id=host_id)
            .select_related("host", "cluster")
            .first()
        )
        conn = self.watched.get(host_id)
        if conn is None:
            return
        if vm is None:  # a domain defined outside Vireo (or not yet its own): adopt it
            host = Host.objects.select_related("cluster").filter(pk=host_id).first()
            if host is not None and not VirtualMachine.objects.filter(uuid=uuid).exists():
                domain_adopt(host, conn, uuid)
            return
        seen_at = timezone.now()
        try:
            info = conn.get_domain(uuid)
            status = status_from_domain(info.state, info.has_managed_save)
        except hypervisor.DomainNotFound:
            if vm.status == VMStatus.MIGRATING_FROM:
                return  # it left for its destination: the migrate job moves it
            if vm.is_external:  # undefined outside Vireo: it leaves the inventory
                external_gone(vm, vm.host)
                return
            status = VMStatus.DOWN
        except hypervisor.HypervisorError as exc:
            log.warning("event for %s on host %s not read: %s", uuid, host_id, exc)
            return
        previous, started_at = vm.status, vm.started_at
        if vm_apply(vm, status, vm.host, seen_at=seen_at) and status == VMStatus.DOWN:
            self.vm_went_down(vm, vm.host, conn, previous, started_at)

    def drain_events(self, until: float) -> None:
        while not self.stop.is_set():
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            try:
                host_id, uuid = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            try:
                self.handle_event(host_id, uuid)
            except Exception:
                log.exception("lifecycle event for %s not handled", uuid)
            finally:
                db_tidy()

    def _events_forever(self) -> None:
        while not self.stop.is_set():
            self.drain_events(time.monotonic() + 1.0)
        db_tidy()

    def _ha_forever(self) -> None:
        """The HA watcher's passes: at once when a restart is queued, else every poll."""
        while not self.stop.is_set():
            self.ha_wake.wait(self.poll_seconds)
            self.ha_wake.clear()
            if self.stop.is_set():
                break
            try:
                self.ha_pass()
            except Exception:
                log.exception("HA pass failed")
            finally:
                db_tidy()

    def _reconcile_forever(self) -> None:
        while not self.stop.is_set():
            try:
                jobs_reconcile(self.stale_seconds)
            except Exception:
                log.exception("reconciling jobs failed")
            finally:
                db_tidy()
            self.stop.wait(self.poll_seconds)

    def run(self) -> None:
        """Poll every host each cycle while one thread applies lifecycle events as they come
        (an event never waits for a slow poll) and another reconciles dead jobs (they never
        wait for a host)."""
        hypervisor.start_event_loop()
        log.info("monitor started: poll every %.1fs", self.poll_seconds)
        helpers = [
            threading.Thread(target=self._events_forever, name="monitor-events", daemon=True),
            threading.Thread(target=self._reconcile_forever, name="monitor-jobs", daemon=True),
            threading.Thread(target=self._agents_forever, name="monitor-agents", daemon=True),
            threading.Thread(target=self._ha_forever, name="monitor-ha", daemon=True),
        ]
        for thread in helpers:
            thread.start()
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.cycle()
            except Exception:
                log.exception("monitor cycle failed")
            finally:
                db_tidy()
            self.stop.wait(max(0.0, started + self.poll_seconds - time.monotonic()))
        self.ha_wake.set()
        for thread in helpers:
            thread.join(timeout=5)
        # A poll stuck on a silent host ends by its own timeout; it is not waited for.
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.agent_pool.shutdown(wait=False, cancel_futures=True)
