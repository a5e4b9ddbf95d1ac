"""Load balancing: the monitor's periodic balancer (the chapter's "Automatic Virtual Machine
Migration" by scheduling policy).

Every `VIREO_BALANCE_SECONDS` the monitor calls `Balancer.run()`. Per cluster, it first keeps
each host's `over_utilized_since` / `under_utilized_since` current by the cluster's Scheduling
Policy (`vms.scheduling.overutilization`, `underutilization`: CPU usage the monitor measures,
committed memory from the inventory). Then, unless a migration is already under way in the
cluster, it asks its CORRECTIONS in order; the first that names a VM to move (and why) gets
one automatic migration: the scheduler picks the destination (Purpose.MIGRATE, automatic,
`balancing`: the balance_headroom filter) and `vms.migration.vm_migrate` starts it. At most
one migration per cluster and cycle; every move is an Event saying why.

A correction is `cluster -> (VM, reason) | Blocked | None`: a VM to move and why; Blocked
when something should move but nothing can (recorded once as a Warning Event while it stays
so); None when there is nothing to correct. A broken Enforcing affinity group
(`vms.affinity.enforcing_violation`) comes first, then the policies'.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from portal.kernel.audit import event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Phase, Severity

from .affinity import enforcing_violation
from .choices import HostStatus, MigrationMode, SchedulingPolicy, VMStatus
from .migration import vm_migrate
from .models import Cluster, Host, VirtualMachine
from .scheduling import (
    Candidate,
    Purpose,
    cluster_candidates,
    evaluate,
    overutilization,
    refusal_text,
    request_of,
    schedule,
    underutilization,
)

log = logging.getLogger(__name__)

VMS_TRIED = 10  # VMs of one host the policies weigh per cycle (smallest first)


@dataclass(frozen=True)
class Blocked:
    """Something should move but nothing can: why, in words; `key` names the situation
    without its changing figures (CPU %, minutes), so that the Warning Event is not repeated
    while only those change (default: the reason itself)."""

    reason: str
    key: str = ""


@dataclass(frozen=True)
class Correction:
    """A named check of a cluster: `find` returns the VM to migrate and why, Blocked, or
    None when there is nothing to correct."""

    name: str
    find: Callable[[Cluster], "tuple[VirtualMachine, str] | Blocked | None"]


# -- what the policies read -------------------------------------------------------------------


def cluster_loads(cluster: Cluster) -> list[Candidate]:
    """The cluster's hosts with their committed memory and CPU usage, read once per cycle
    (the balancer keeps them on the cluster object for the corrections)."""
    loads = getattr(cluster, "_balance_loads", None)
    if loads is None:
        loads = cluster_candidates(cluster.pk)
        cluster._balance_loads = loads
    return loads


def _minutes(since: datetime, now: datetime) -> int:
    return int((now - since).total_seconds() // 60)


def _lasted(since: datetime | None, cluster: Cluster, now: datetime) -> bool:
    """The state began at least CpuOverCommitDurationMinutes ago."""
    duration = timedelta(minutes=cluster.cpu_overcommit_duration_minutes)
    return since is not None and now - since >= duration


def _why_vm_stays(vm: VirtualMachine) -> str:
    """Why a VM cannot be moved by the balancer at all ("" if it may be)."""
    if vm.migration_mode == MigrationMode.PINNED:
        return "the VM does not allow migration"
    if vm.migration_mode == MigrationMode.USER_MIGRATABLE:
        return "the VM allows manual migration only"
    if vm.cpu_passthrough:
        return "the VM passes the host CPU through"
    if vm.unmanaged_disks:
        return "no storage domain holds some of its disks"
    return ""


def _movable(source: Candidate, loads: list[Candidate]) -> tuple[VirtualMachine | None, str, str]:
    """The first Up VM of `source` (smallest memory first) that may move and that the
    scheduler has a balancing destination for; else (None, why none can, the same without
    its changing figures)."""
    vms = list(
        VirtualMachine.objects.filter(host=source.host, status=VMStatus.UP)
        .select_related("cluster", "host")
        .order_by("memory_mb", "name")[: VMS_TRIED + 1]
    )
    if not vms:
        return None, "no VM runs Up on it", ""
    stays, key = [], []
    for vm in vms[:VMS_TRIED]:
        why = _why_vm_stays(vm)
        key.append(f"{vm.name}={why or 'no host'}")  # the refusal's figures left out
        if not why:
            mine = replace(
                source,
                committed_mb=max(0, source.committed_mb - vm.memory_mb),
                running=max(0, source.running - 1),
            )
            request = request_of(vm, Purpose.MIGRATE, automatic=True, balancing=True, source=mine)
            kept, reasons = evaluate(request, [c for c in loads if c.host.pk != vm.host_id])
            if kept:
                return vm, "", ""
            why = f"no host takes it ({refusal_text(reasons) or 'no other host'})"
        stays.append(f"{vm.name}: {why}")
    if len(vms) > VMS_TRIED:
        stays.append("others not tried this cycle")
    return None, "; ".join(stays), ",".join(key)


def _relieve_overutilized(cluster: Cluster) -> "tuple[VirtualMachine, str] | Blocked | None":
    """A host over-utilized for CpuOverCommitDurationMinutes (the most loaded first): one of
    its VMs leaves."""
    now = timezone.now()
    loads = cluster_loads(cluster)
    sources = [
        c
        for c in loads
        if c.host.status == HostStatus.UP
        and _lasted(c.host.over_utilized_since, cluster, now)
        and overutilization(c)
    ]
    sources.sort(key=lambda c: (-(c.host.cpu_usage_percent or 0), c.free_mb(), c.host.name))
    blocked, keys = [], []
    for source in sources:
        since = _minutes(source.host.over_utilized_since, now)
        why = (
            f"host {source.host.name} has been over-utilized for {since} min "
            f"(CpuOverCommitDurationMinutes {cluster.cpu_overcommit_duration_minutes}): "
            f"{overutilization(source)}"
        )
        vm, stays, stays_key = _movable(source, loads)
        if vm is not None:
            return vm, why
        blocked.append(f"{why}, but none of its VMs can move ({stays})")
        keys.append(f"{source.host.pk}:{stays_key}")
    return Blocked("; ".join(blocked), " ".join(keys)) if blocked else None


def evenly_distributed(cluster: Cluster) -> "tuple[VirtualMachine, str] | Blocked | None":
    """evenly_distributed: relieve over-utilized hosts (CPU at or over HighUtilization, or
    less free memory than MaxFreeMemoryForOverUtilized) onto hosts that are not."""
    if cluster.scheduling_policy != SchedulingPolicy.EVENLY_DISTRIBUTED:
        return None
    return _relieve_overutilized(cluster)


def power_saving(cluster: Cluster) -> "tuple[VirtualMachine, str] | Blocked | None":
    """power_saving: relieve over-utilized hosts first; else empty the least loaded
    under-utilized host (CPU under LowUtilization and more free memory than
    MinFreeMemoryForUnderUtilized, for CpuOverCommitDurationMinutes) onto busier hosts that
    stay under HighUtilization, so that it can be shut down."""
    if cluster.scheduling_policy != SchedulingPolicy.POWER_SAVING:
        return None
    relief = _relieve_overutilized(cluster)
    if isinstance(relief, tuple):
        return relief
    now = timezone.now()
    loads = cluster_loads(cluster)
    sources = [
        c
        for c in loads
        if c.host.status == HostStatus.UP
        and c.running
        and _lasted(c.host.under_utilized_since, cluster, now)
        and underutilization(c)
    ]
    sources.sort(key=lambda c: (c.committed_mb, c.host.name))
    for source in sources:
        vm, _stays, _key = _movable(source, loads)
        if vm is not None:
            since = _minutes(source.host.under_utilized_since, now)
            return vm, (
                f"host {source.host.name} has been under-utilized for {since} min "
                f"(CpuOverCommitDurationMinutes {cluster.cpu_overcommit_duration_minutes}): "
                f"{underutilization(source)}; power_saving empties it"
            )
    # An under-utilized host whose VMs find no busier host is simply left as it is.
    return relief


CORRECTIONS: list[Correction] = [
    # A broken Enforcing affinity group first: a hard rule comes before load.
    Correction("affinity", enforcing_violation),
    Correction("evenly_distributed", evenly_distributed),
    Correction("power_saving", power_saving),
]


# -- the balancer -----------------------------------------------------------------------------


def utilization_track(cluster: Cluster, now: datetime) -> None:
    """Keep when each Up host of the cluster became over- or under-utilized (cleared when it
    no longer is), in at most four UPDATEs; the loads read stay on the cluster object."""
    changes: dict[tuple[str, bool], list[int]] = {}
    for c in cluster_loads(cluster):
        up = c.host.status == HostStatus.UP
        for field, state in (
            ("over_utilized_since", up and bool(overutilization(c))),
            ("under_utilized_since", up and bool(underutilization(c))),
        ):
            since = getattr(c.host, field)
            if state and since is None:
                setattr(c.host, field, now)
                changes.setdefault((field, True), []).append(c.host.pk)
            elif not state and since is not None:
                setattr(c.host, field, None)
                changes.setdefault((field, False), []).append(c.host.pk)
    for (field, state), ids in changes.items():
        Host.objects.filter(pk__in=ids).update(**{field: now if state else None})


def migration_under_way(cluster: Cluster) -> bool:
    """A VM of the cluster is migrating (Migrating From, or a destination set)."""
    return VirtualMachine.objects.filter(
        Q(status=VMStatus.MIGRATING_FROM) | Q(migrating_to__isnull=False), cluster=cluster
    ).exists()


class Balancer:
    """The monitor's balancer; `notes` holds, per cluster, what it last reported as blocked
    (one Warning Event per change, not one per cycle)."""

    def __init__(self) -> None:
        self.notes: dict[int, str] = {}

    def run(self) -> int:
        """One cycle over every cluster; returns how many migrations were started."""
        now = timezone.now()
        Host.objects.filter(cluster__scheduling_policy=SchedulingPolicy.NONE).filter(
            Q(over_utilized_since__isnull=False) | Q(under_utilized_since__isnull=False)
        ).update(over_utilized_since=None, under_utilized_since=None)
        started = 0
        for cluster in Cluster.objects.all():
            try:
                started += self.cluster_balance(cluster, now)
            except Exception:
                log.exception("balancing cluster %s failed", cluster.name)
        return started

    def cluster_balance(self, cluster: Cluster, now: datetime | None = None) -> int:
        """Track the hosts' states, then at most one migration (none while one runs)."""
        now = now or timezone.now()
        if cluster.scheduling_policy != SchedulingPolicy.NONE:
            utilization_track(cluster, now)
        if migration_under_way(cluster):
            return 0
        notes, keys = [], []
        for correction in CORRECTIONS:
            found = correction.find(cluster)
            if found is None:
                continue
            if isinstance(found, Blocked):
                notes.append(found.reason)
                keys.append(f"{correction.name}:{found.key or found.reason}")
                continue
            vm, reason = found
            refused = self.move(cluster, vm, reason, correction.name)
            if not refused:
                self.notes.pop(cluster.pk, None)
                return 1
            notes.append(f"VM {vm.name} was to move because {reason}, but {refused}")
            keys.append(f"{correction.name}:{vm.pk}:{refused}")
        self.note(cluster, "; ".join(notes), " ".join(keys))
        return 0

    def move(self, cluster: Cluster, vm: VirtualMachine, reason: str, name: str) -> str:
        """Migrate `vm` where the scheduler says, with an Event saying why; "" when started,
        else why not."""
        source = vm.host
        try:
            with transaction.atomic():
                dest = schedule(
                    vm,
                    purpose=Purpose.MIGRATE,
                    exclude=[vm.host_id],
                    automatic=True,
                    balancing=True,
                )
            with transaction.atomic():
                job = vm_migrate(vm_id=vm.pk, user=None, host_id=dest.pk, automatic=True)
                event_record(
                    action="balance",
                    phase=Phase.DETECTED,
                    vm=vm,
                    host=source,
                    cluster=cluster,
                    job=job,
                    message=f"Load balancing ({name}) of cluster {cluster.name} migrates VM "
                    f"{vm.name} from host {source.name if source else '?'} to {dest.name}: "
                    f"{reason}.",
                )
        except ActionRefused as exc:
            return str(exc)
        return ""

    def note(self, cluster: Cluster, text: str, key: str) -> None:
        """A Warning Event when what the balancer cannot correct changes (`key`: the
        situation without its changing figures)."""
        if key == self.notes.get(cluster.pk, ""):
            return
        self.notes[cluster.pk] = key
        if not text:
            return
        event_record(
            action="balance",
            phase=Phase.DETECTED,
            severity=Severity.WARNING,
            cluster=cluster,
            object_type="cluster",
            object_name=cluster.name,
            message=f"Load balancing of cluster {cluster.name} cannot correct: {text}.",
        )
