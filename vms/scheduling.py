"""The scheduler: the one place that chooses a host for a VM (New VM, Run, Migrate).

A pipeline of named filters and weights, as oVirt's scheduling policies: every filter that
applies to the purpose may rule a host out with a reason; the hosts left are ordered by the
sum of the weights (lower is better; ties go to the host running fewer VMs, then by name).
`schedule` returns the best host, locked against Maintenance until the transaction ends, or
raises `NoHostAvailable`, which names why each host was filtered out. Later issues add
filters (affinity, high availability)  by appending to FILTERS or WEIGHTS:
docs/scheduling.md.

What the filters read is the inventory (hosts' facts the monitor stores, the VMs placed on
each host); there is no libvirt call on the request path.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from django.db import models
from django.db.models import Count, Q, Sum

from portal.kernel.errors import ActionRefused
from storage.choices import StorageType

from .affinity import POSITIVE, GroupRules, affinity_rules
from .choices import (
    VM_AT_REST_STATUSES,
    AffinityRule,
    HostStatus,
    MigrationMode,
    SchedulingPolicy,
    VMStatus,
)
from .models import Host, HostDevice, VirtualMachine


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
    # (host id, host name) of the host whose devices are attached to the VM, read once
    device_host: tuple[int, str] | None = None
    # A move the balancer asks for (vms/balancing.py): the balance_headroom filter applies,
    # and `source` is the VM's host as the balancer sees it (the VM not counted on it).
    balancing: bool = False
    source: "Candidate | None" = None
    # the VM's enabled affinity groups with their other running members, read once
    affinity: tuple[GroupRules, ...] = ()

    @property
    def policy(self) -> str:
        """The Scheduling Policy of the VM's cluster (which weights apply)."""
        return self.vm.cluster.scheduling_policy


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
    """A named score of a host (lower is better), multiplied by `factor` and summed; only
    under the clusters' Scheduling Policies in `policies` (None: every policy)."""

    name: str
    score: Callable[[Request, Candidate], float]
    factor: float = 1.0
    purposes: frozenset = frozenset(Purpose)
    policies: frozenset | None = None


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


def _host_devices(request: Request, c: Candidate) -> str | None:
    """A VM given host devices runs only on the host they belong to (its pinned host)."""
    if request.device_host is not None and request.device_host[0] != c.host.pk:
        return f"the VM has host devices of host {request.device_host[1]} attached (pinned there)"
    return None


def device_host_of(vm: VirtualMachine) -> tuple[int, str] | None:
    """(id, name) of the host whose devices are attached to the VM, as the host-devices filter
    reads it; None when it has none."""
    if vm.pk is None:
        return None
    return (
        HostDevice.objects.filter(attachments__vm=vm)
        .values_list("host_id", "host__name")
        .order_by()
        .first()
    )


def local_disks_of(vm: VirtualMachine) -> tuple[tuple[str, int, str], ...]:
    """The VM's disks on one host's local storage, as the storage filter reads them."""
    if vm.pk is None:
        return ()
    return tuple(
        vm.disks.exclude(host__isnull=True)
        .exclude(storage_domain__storage_type=StorageType.NFS)
        .values_list("alias", "host_id", "host__name")
    )


# -- affinity groups (vms/affinity.py): hard rules filter, soft rules weigh -------------------


def _vm_rule_broken(g: GroupRules, host_id: int) -> str | None:
    """Why `host_id` breaks the group's VM Affinity Rule for the VM, or None."""
    if g.vm_rule == AffinityRule.NEGATIVE:
        here = sorted(g.on_host.get(host_id, ()))
        if len(here) == 1:
            return f"its VM {here[0]} runs there"
        if here:
            return f"its VMs {', '.join(here)} run there"
    elif g.vm_rule == POSITIVE:
        wanted, counted = g.together
        if wanted and host_id not in wanted:
            away = [m for m in counted if host_id not in m.staying]
            shown = "; ".join(f"{m.name} on {m.where}" for m in away[:5])
            more = f" and {len(away) - 5} more" if len(away) > 5 else ""
            return f"its VMs run elsewhere ({shown}{more})"
    return None


def _vm_rule_breaks(g: GroupRules, host_id: int) -> bool:
    """Whether `host_id` breaks the group's VM Affinity Rule (the weights' quick test)."""
    if g.vm_rule == AffinityRule.NEGATIVE:
        return host_id in g.on_host
    if g.vm_rule == POSITIVE:
        wanted = g.together[0]
        return bool(wanted) and host_id not in wanted
    return False


def _host_rule_broken(g: GroupRules, host_id: int) -> str | None:
    if g.host_rule == POSITIVE and host_id not in g.hosts:
        return "the host is not one of the group's hosts"
    if g.host_rule == AffinityRule.NEGATIVE and host_id in g.hosts:
        return "the group keeps its VMs off this host"
    return None


def _vm_affinity(request: Request, c: Candidate) -> str | None:
    """An Enforcing VM Affinity Rule: Positive, the host that runs the group's other running
    VMs (most of them, if the group is broken); Negative, no host running one of them."""
    for g in request.affinity:
        if g.vm_enforcing and (why := _vm_rule_broken(g, c.host.pk)):
            return f"{g.label(g.vm_rule, True)}: {why}"
    return None


def _vm_to_host_affinity(request: Request, c: Candidate) -> str | None:
    """An Enforcing VM to host rule: Positive, one of the group's hosts; Negative, none."""
    for g in request.affinity:
        if g.host_enforcing and (why := _host_rule_broken(g, c.host.pk)):
            return f"{g.label(g.host_rule, True, to_host=True)}: {why}"
    return None


def _vm_affinity_soft(request: Request, c: Candidate) -> float:
    """A rule not Enforcing: 1 for each group whose VM Affinity Rule the host would break."""
    return float(
        sum(1 for g in request.affinity if not g.vm_enforcing and _vm_rule_breaks(g, c.host.pk))
    )


def _vm_to_host_affinity_soft(request: Request, c: Candidate) -> float:
    return float(
        sum(1 for g in request.affinity if not g.host_enforcing and _host_rule_broken(g, c.host.pk))
    )


# A soft rule outweighs the load: a broken preference costs more than a full host.
AFFINITY_FACTOR = 10.0


def _least_loaded(request: Request, c: Candidate) -> float:
    """The share of the host's memory that running VMs commit, this VM's included."""
    capacity = c.capacity_mb() or 1
    return (c.committed_mb + request.vm.memory_mb) / capacity


# -- load: the Scheduling Policy's thresholds (Edit Cluster's Scheduling Policy tab) --------


def overutilization(c: Candidate) -> str:
    """Why the host is over-utilized by its cluster's Scheduling Policy ("" if it is not, or
    the cluster has none): its CPU at or over HighUtilization, or less free memory than
    MaxFreeMemoryForOverUtilized."""
    cluster = c.host.cluster
    if cluster.scheduling_policy == SchedulingPolicy.NONE:
        return ""
    why = []
    cpu = c.host.cpu_usage_percent
    if cpu is not None and cpu >= cluster.high_utilization:
        why.append(
            f"its CPU is at {cpu} %, at or over HighUtilization ({cluster.high_utilization} %)"
        )
    limit = cluster.max_free_memory_for_over_utilized
    if limit is not None and c.host.memory_mb and c.free_mb() < limit:
        why.append(
            f"it has {c.free_mb()} MB free memory, under MaxFreeMemoryForOverUtilized ({limit} MB)"
        )
    return " and ".join(why)


def underutilization(c: Candidate) -> str:
    """Why the host is under-utilized by a power_saving cluster's thresholds ("" if not): its
    CPU under LowUtilization and (when set) more free memory than
    MinFreeMemoryForUnderUtilized. A host whose CPU usage is not known yet is not."""
    cluster = c.host.cluster
    cpu = c.host.cpu_usage_percent
    if cluster.scheduling_policy != SchedulingPolicy.POWER_SAVING or cpu is None:
        return ""
    if cpu >= cluster.low_utilization:
        return ""
    why = f"its CPU is at {cpu} %, under LowUtilization ({cluster.low_utilization} %)"
    limit = cluster.min_free_memory_for_under_utilized
    if limit is not None:
        if c.free_mb() <= limit:
            return ""
        why += f" and it has {c.free_mb()} MB free memory, over MinFreeMemoryForUnderUtilized ({limit} MB)"
    return why


def _balance_headroom(request: Request, c: Candidate) -> str | None:
    """A balancing move goes only where it corrects something: to a host that is not
    over-utilized, nor would be by the VM's memory; under evenly_distributed to a host with
    more free memory than MinFreeMemoryForUnderUtilized (when set); under power_saving, when
    the VM leaves a host that is not over-utilized, not to a host less loaded than that one
    (it packs, it does not spread)."""
    if not request.balancing:
        return None
    cluster = c.host.cluster
    policy = cluster.scheduling_policy
    if policy == SchedulingPolicy.NONE:
        return None
    cpu = c.host.cpu_usage_percent
    if cpu is None:
        return "its CPU usage is not known yet (the monitor measures it between two polls)"
    if cpu >= cluster.high_utilization:
        return f"its CPU is at {cpu} %, at or over HighUtilization ({cluster.high_utilization} %)"
    after = c.free_mb() - request.vm.memory_mb
    limit = cluster.max_free_memory_for_over_utilized
    if limit is not None and after < limit:
        return (
            f"it would have {max(0, after)} MB free memory, under MaxFreeMemoryForOverUtilized "
            f"({limit} MB)"
        )
    under = cluster.min_free_memory_for_under_utilized
    if policy == SchedulingPolicy.EVENLY_DISTRIBUTED and under is not None and c.free_mb() <= under:
        return f"it has {c.free_mb()} MB free memory, not over MinFreeMemoryForUnderUtilized ({under} MB)"
    source = request.source
    if (
        policy == SchedulingPolicy.POWER_SAVING
        and source is not None
        and not overutilization(source)
        and c.committed_mb < source.committed_mb
    ):
        return (
            f"it is less loaded than {source.host.name} (power_saving packs VMs onto busier hosts)"
        )
    return None


def _cpu_load(request: Request, c: Candidate) -> float:
    """evenly_distributed: the host's CPU usage (a host not measured yet counts as idle)."""
    return (c.host.cpu_usage_percent or 0) / 100


def _power_saving(request: Request, c: Candidate) -> float:
    """power_saving packs: the busiest host that stays under HighUtilization (CPU, and
    MaxFreeMemoryForOverUtilized after the VM's memory) first; then under-utilized hosts
    (being emptied), busiest first; a host the VM would push over the thresholds last."""
    cluster = c.host.cluster
    capacity = c.capacity_mb() or 1
    share = min(1.0, (c.committed_mb + request.vm.memory_mb) / capacity)
    cpu = c.host.cpu_usage_percent
    limit = cluster.max_free_memory_for_over_utilized
    if (cpu is not None and cpu >= cluster.high_utilization) or (
        limit is not None and c.free_mb() - request.vm.memory_mb < limit
    ):
        return 2 + share
    if underutilization(c):
        return 2 - share
    return 1 - share


RESOURCE_PURPOSES = frozenset({Purpose.RUN, Purpose.MIGRATE, Purpose.HA_RESTART})

FILTERS: list[Filter] = [
    Filter("host_up", _host_up),
    Filter("same_cluster", _same_cluster),
    Filter("host_devices", _host_devices),
    Filter("ha_start_host", _ha_start_host, frozenset({Purpose.HA_RESTART})),
    Filter("storage", _storage, RESOURCE_PURPOSES),
    Filter("memory", _memory, RESOURCE_PURPOSES),
    Filter("cpu", _cpu, RESOURCE_PURPOSES),
    Filter("migration_allowed", _migration_allowed, frozenset({Purpose.MIGRATE})),
    Filter("cpu_passthrough", _cpu_passthrough, frozenset({Purpose.MIGRATE})),
    Filter("vm_affinity", _vm_affinity, RESOURCE_PURPOSES),
    Filter("vm_to_host_affinity", _vm_to_host_affinity, RESOURCE_PURPOSES),
    Filter("balance_headroom", _balance_headroom, frozenset({Purpose.MIGRATE})),
]

EVENLY = frozenset({SchedulingPolicy.NONE, SchedulingPolicy.EVENLY_DISTRIBUTED})

WEIGHTS: list[Weight] = [
    Weight("least_loaded", _least_loaded, policies=EVENLY),
    Weight("cpu_load", _cpu_load, policies=frozenset({SchedulingPolicy.EVENLY_DISTRIBUTED})),
    Weight("power_saving", _power_saving, policies=frozenset({SchedulingPolicy.POWER_SAVING})),
    Weight("vm_affinity", _vm_affinity_soft, AFFINITY_FACTOR, RESOURCE_PURPOSES),
    Weight("vm_to_host_affinity", _vm_to_host_affinity_soft, AFFINITY_FACTOR, RESOURCE_PURPOSES),
]


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
    each: the hosts with what their VMs commit in one query, what is migrating to them in
    another (a subquery of the first would run once per VM joined, a second join would
    multiply its rows)."""
    qs = Host.objects.select_related("cluster")
    if hosts is None:
        qs = qs.filter(cluster_id=vm.cluster_id)
    else:
        qs = qs.filter(pk__in=[h.pk for h in hosts])
    return _with_committed(qs, vm.pk)


def cluster_candidates(cluster_id: int) -> list[Candidate]:
    """Every host of a cluster with all that is committed on it (the balancer's view)."""
    return _with_committed(
        Host.objects.select_related("cluster").filter(cluster_id=cluster_id), None
    )


def _with_committed(qs, vm_pk: int | None) -> list[Candidate]:
    committing = ~Q(vms__status__in=NOT_COMMITTING)
    if vm_pk is not None:
        committing &= ~Q(vms__pk=vm_pk)
    qs = qs.annotate(
        committed=Sum("vms__memory_mb", filter=committing, default=0),
        running=Count("vms", filter=committing),
    ).order_by("name")
    rows = list(qs)
    # VMs migrating to a host commit their memory there already.
    incoming = dict(
        VirtualMachine.objects.filter(migrating_to__in=[h.pk for h in rows])
        .exclude(pk=vm_pk)
        .order_by()
        .values("migrating_to")
        .annotate(m=Sum("memory_mb"))
        .values_list("migrating_to", "m")
    )
    return [
        Candidate(host=h, committed_mb=h.committed + incoming.get(h.pk, 0), running=h.running)
        for h in rows
    ]


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
    policy = request.policy
    weights = [
        w
        for w in WEIGHTS
        if request.purpose in w.purposes and (w.policies is None or policy in w.policies)
    ]
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


def request_of(
    vm: VirtualMachine,
    purpose: str,
    *,
    automatic: bool = False,
    balancing: bool = False,
    source: Candidate | None = None,
) -> Request:
    """What the filters read of the VM, read once: its local disks, the host of its host
    devices and (to run or migrate it) its affinity groups."""
    return Request(
        vm=vm,
        purpose=purpose,
        automatic=automatic,
        local_disks=local_disks_of(vm),
        device_host=device_host_of(vm),
        balancing=balancing,
        source=source,
        affinity=affinity_rules(vm) if purpose in RESOURCE_PURPOSES else (),
    )


def schedule(
    vm: VirtualMachine,
    *,
    purpose: str = Purpose.RUN,
    exclude: Iterable[int] = (),
    candidates: Iterable[Host] | None = None,
    automatic: bool = False,
    balancing: bool = False,
) -> Host:
    """The best host for `vm`, its row locked until the transaction ends (Maintenance takes
    the same lock) and filtered again under the lock; NoHostAvailable names each host's
    reason. `candidates` narrows the choice (Start Running On); `exclude` takes host ids
    out (a migration's source). `balancing`: the balancer's own move (vms/balancing.py),
    which the balance_headroom filter keeps to hosts where it corrects something."""
    everyone = candidates_of(vm, candidates)
    source = next((c for c in everyone if c.host.pk == vm.host_id), None) if balancing else None
    request = request_of(vm, purpose, automatic=automatic, balancing=balancing, source=source)
    excluded = set(exclude)
    pool = [c for c in everyone if c.host.pk not in excluded]
    kept, reasons = evaluate(request, pool)
    for best in kept:
        if host_status_locked(best.host.pk) is None:
            reasons[best.host.name] = "the host was removed"
            continue
        if any(g.vm_enforcing for g in request.affinity):
            # where the groups' VMs run, read again under the lock (a member placed meanwhile)
            known = {g.pk: g.hosts for g in request.affinity}
            request = replace(request, affinity=affinity_rules(vm, hosts_known=known))
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
