"""The scheduler: the one place that chooses a host for a VM (New VM, Run, Migrate).

A pipeline of named filters and weights, as oVirt's scheduling policies: every filter that
applies to the purpose may rule a host out with a reason; the hosts left are ordered by the
sum of the weights (lower is better; ties go to the host running fewer VMs, then by name).
`schedule` returns the best host, locked against Maintenance until the transaction ends, or
raises `NoHostAvailable`, which names why each host was filtered out. Later issues add
filters (affinity, high availability, host devices) by appending to FILTERS or WEIGHTS:
docs/scheduling.md.

What the filters read is the inventory (hosts' facts the monitor stores, the VMs placed on
each host); there is no libvirt call on the request path.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import models
from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from portal.kernel.errors import ActionRefused
from storage.choices import StorageType

from .choices import VM_AT_REST_STATUSES, HostStatus, MigrationMode, VMStatus
from .models import Host, VirtualMachine


class Purpose(models.TextChoices):
    """Why a host is wanted: a New VM is defined on it (not started), Run starts the VM on it,
    Migrate moves a running VM to it, the HA watcher restarts a Highly Available VM on it."""

    CREATE = "create", "create"
    RUN = "run", "run"
    MIGRATE = "migrate", "migrate"
    HA_RESTART = "ha_restart", "restart"


# VMs that commit their memory on their host: anything but a guest at rest (Down, Suspended)
# or a VM whose disks are still being made.
NOT_COMMITTING = VM_AT_REST_STATUSES | {VMStatus.IMAGE_LOCKED}


@dataclass(frozen=True)
class Request:
    """What is being scheduled: the VM (its memory, vCPUs, cluster, disks, migration mode)
    and for what."""

    vm: VirtualMachine
    purpose: str
    automatic: bool = False  # a migration the engine starts itself (Maintenance, balancing)
    # (alias, host id, host name) of each disk on one host's local storage, read once
    local_disks: tuple[tuple[str, int, str], ...] = ()


@dataclass(frozen=True)
class Candidate:
    """A host with what the inventory says is committed on it (the VM scheduled excluded)."""

    host: Host
    committed_mb: int
    running: int

    def capacity_mb(self) -> int:
        """The memory the host's cluster lets running VMs commit on it."""
        return self.host.memory_mb * self.host.cluster.memory_overcommit_percent // 100

    def free_mb(self) -> int:
        return max(0, self.capacity_mb() - self.committed_mb)


@dataclass(frozen=True)
class Filter:
    """A named step that rules a host out: `check` returns why, or None to keep it."""

    name: str
    check: Callable[[Request, Candidate], str | None]
    purposes: frozenset = frozenset(Purpose)


@dataclass(frozen=True)
class Weight:
    """A named score of a host (lower is better), multiplied by `factor` and summed."""

    name: str
    score: Callable[[Request, Candidate], float]
    factor: float = 1.0
    purposes: frozenset = frozenset(Purpose)


def _host_up(request: Request, c: Candidate) -> str | None:
    if c.host.status != HostStatus.UP:
        return f"the host is {HostStatus(c.host.status).label}"
    return None


def _same_cluster(request: Request, c: Candidate) -> str | None:
    if c.host.cluster_id != request.vm.cluster_id:
        return f"the host is in cluster {c.host.cluster.name}, not {request.vm.cluster.name}"
    return None


def _memory(request: Request, c: Candidate) -> str | None:
    if c.host.memory_mb == 0:
        return "its memory is not known yet (the monitor reads it when it connects)"
    needs = request.vm.memory_mb
    if needs > c.free_mb():
        return f"not enough free memory (needs {needs} MB, {c.free_mb()} MB free)"
    return None


def _cpu(request: Request, c: Candidate) -> str | None:
    if c.host.cpus == 0:
        return "its CPUs are not known yet (the monitor reads them when it connects)"
    if request.vm.vcpus > c.host.cpus:
        return f"too few CPUs (the VM has {request.vm.vcpus} vCPUs, the host {c.host.cpus})"
    return None


def _migration_allowed(request: Request, c: Candidate) -> str | None:
    mode = request.vm.migration_mode
    if mode == MigrationMode.PINNED:
        return "the VM does not allow migration"
    if mode == MigrationMode.USER_MIGRATABLE and request.automatic:
        return "the VM allows manual migration only"
    return None


def _cpu_passthrough(request: Request, c: Candidate) -> str | None:
    """A guest that sees its host's CPU as it is (Pass-Through Host CPU) cannot move."""
    return "the VM passes the host CPU through" if request.vm.cpu_passthrough else None


def _ha_start_host(request: Request, c: Candidate) -> str | None:
    """A Highly Available VM that names a Start Running On host restarts only there (the
    chapter: a VM assigned to one host can be made highly available only on that host)."""
    host_id = request.vm.start_host_id
    if host_id is not None and host_id != c.host.pk:
        return "the VM may start only on its Start Running On host"
    return None


def _storage(request: Request, c: Candidate) -> str | None:
    """A disk on one host's local storage keeps the VM on that host (an NFS disk is reached
    from every host of the data center)."""
    for alias, host_id, host_name in request.local_disks:
        if host_id != c.host.pk:
            return f"the VM's disk {alias} is on the local storage of host {host_name}"
    return None


def local_disks_of(vm: VirtualMachine) -> tuple[tuple[str, int, str], ...]:
    """The VM's disks on one host's local storage, as the storage filter reads them."""
    if vm.pk is None:
        return ()
    return tuple(
        vm.disks.exclude(host__isnull=True)
        .exclude(storage_domain__storage_type=StorageType.NFS)
        .values_list("alias", "host_id", "host__name")
    )


def _least_loaded(request: Request, c: Candidate) -> float:
    """The share of the host's memory that running VMs commit, this VM's included."""
    capacity = c.capacity_mb() or 1
    return (c.committed_mb + request.vm.memory_mb) / capacity


RESOURCE_PURPOSES = frozenset({Purpose.RUN, Purpose.MIGRATE, Purpose.HA_RESTART})

FILTERS: list[Filter] = [
    Filter("host_up", _host_up),
    Filter("same_cluster", _same_cluster),
    Filter("ha_start_host", _ha_start_host, frozenset({Purpose.HA_RESTART})),
    Filter("storage", _storage, RESOURCE_PURPOSES),
    Filter("memory", _memory, RESOURCE_PURPOSES),
    Filter("cpu", _cpu, RESOURCE_PURPOSES),
    Filter("migration_allowed", _migration_allowed, frozenset({Purpose.MIGRATE})),
    Filter("cpu_passthrough", _cpu_passthrough, frozenset({Purpose.MIGRATE})),
]

WEIGHTS: list[Weight] = [Weight("least_loaded", _least_loaded)]


def host_status_locked(host_id: int) -> str | None:
    """A host's status, read under a row lock held to the end of the transaction (None when
    the host is gone). Run, New VM's placement and Maintenance (`vms.inventory`) take it, so a
    VM cannot be placed on a host going into Maintenance."""
    return (
        Host.objects.select_for_update(no_key=True)
        .filter(pk=host_id)
        .values_list("status", flat=True)
        .first()
    )


class NoHostAvailable(ActionRefused):
    """No host passed the filters; `reasons` maps each host's name to why it was ruled out."""

    def __init__(self, message: str, reasons: dict[str, str]):
        super().__init__(message)
        self.reasons = reasons


def candidates_of(vm: VirtualMachine, hosts: Iterable[Host] | None = None) -> list[Candidate]:
    """The hosts to consider (the VM's cluster's, or those given) with what is committed on
    each, read in one query."""
    qs = Host.objects.select_related("cluster")
    if hosts is None:
        qs = qs.filter(cluster_id=vm.cluster_id)
    else:
        qs = qs.filter(pk__in=[h.pk for h in hosts])
    committing = ~Q(vms__status__in=NOT_COMMITTING)
    if vm.pk is not None:
        committing &= ~Q(vms__pk=vm.pk)
    # VMs migrating to a host commit their memory there already (a subquery: a second join
    # would multiply the first one's rows).
    incoming = (
        VirtualMachine.objects.filter(migrating_to=OuterRef("pk"))
        .exclude(pk=vm.pk)
        .order_by()
        .values("migrating_to")
        .annotate(m=Sum("memory_mb"))
        .values("m")
    )
    qs = qs.annotate(
        committed=Sum("vms__memory_mb", filter=committing, default=0),
        running=Count("vms", filter=committing),
        incoming=Coalesce(Subquery(incoming), 0),
    ).order_by("name")
    return [Candidate(host=h, committed_mb=h.committed + h.incoming, running=h.running) for h in qs]


def evaluate(request: Request, candidates: list[Candidate]) -> tuple[list[Candidate], dict]:
    """Run the filters: (the hosts kept, best first; {host name: why it was ruled out})."""
    kept, reasons = [], {}
    for c in candidates:
        for f in FILTERS:
            if request.purpose in f.purposes and (why := f.check(request, c)):
                reasons[c.host.name] = why
                break
        else:
            kept.append(c)
    weights = [w for w in WEIGHTS if request.purpose in w.purposes]
    kept.sort(
        key=lambda c: (sum(w.factor * w.score(request, c) for w in weights), c.running, c.host.name)
    )
    return kept, reasons


REFUSAL_NAMES = 5  # hosts named per reason; more are counted


def refusal_text(reasons: dict[str, str]) -> str:
    """'host2: not enough free memory (...); host3, host4: the host is Maintenance': hosts
    with the same reason together, at most REFUSAL_NAMES named and the rest counted."""
    by_reason: dict[str, list[str]] = {}
    for name, why in reasons.items():
        by_reason.setdefault(why, []).append(name)
    parts = []
    for why, names in by_reason.items():
        shown = ", ".join(names[:REFUSAL_NAMES])
        if len(names) > REFUSAL_NAMES:
            shown += f" and {len(names) - REFUSAL_NAMES} more"
        parts.append(f"{shown}: {why}")
    return "; ".join(parts)


def schedule(
    vm: VirtualMachine,
    *,
    purpose: str = Purpose.RUN,
    exclude: Iterable[int] = (),
    candidates: Iterable[Host] | None = None,
    automatic: bool = False,
) -> Host:
    """The best host for `vm`, its row locked until the transaction ends (Maintenance takes
    the same lock) and filtered again under the lock; NoHostAvailable names each host's
    reason. `candidates` narrows the choice (Start Running On); `exclude` takes host ids
    out (a migration's source)."""
    request = Request(vm=vm, purpose=purpose, automatic=automatic, local_disks=local_disks_of(vm))
    excluded = set(exclude)
    pool = [c for c in candidates_of(vm, candidates) if c.host.pk not in excluded]
    kept, reasons = evaluate(request, pool)
    for best in kept:
        if host_status_locked(best.host.pk) is None:
            reasons[best.host.name] = "the host was removed"
            continue
        again, why = evaluate(request, candidates_of(vm, [best.host]))
        if again:
            return again[0].host
        reasons.update(why)  # it changed meanwhile (Maintenance, another VM placed there)
    if not pool:
        raise NoHostAvailable(
            f"Cluster {vm.cluster.name} has no host to {purpose} {vm.name} on.", {}
        )
    raise NoHostAvailable(
        f"No host in cluster {vm.cluster.name} can {Purpose(purpose).label} {vm.name}: "
        f"{refusal_text(reasons)}.",
        reasons,
    )
