"""Affinity groups (the chapter's "Affinity Groups", as in oVirt 4.x): New / Edit / Remove,
what the scheduler reads of them, and the broken enforcing groups the balancer corrects.

A group of a cluster has a VM Affinity Rule over its VMs (Positive: they run on one host;
Negative: on different hosts) and a VM to host rule over its VMs and hosts (Positive: they run
on those hosts; Negative: never on them); each rule is Disabled, or Enforcing (hard: the
scheduler's filters rule hosts out) or not (soft: its weights prefer other hosts). VMs and
hosts of another cluster are refused, and so is a VM Affinity Rule that contradicts another
group's over the same pair of VMs. `affinity_rules(vm)` is what `vms.scheduling` reads for
one VM (two queries, whatever the number of groups and hosts); `enforcing_violation(cluster)`
names one running VM whose enforcing group is broken, for the balancer to migrate.
"""

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property

from django.db import IntegrityError, transaction
from django.db.models import Count, Q

from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Phase
from portal.kernel.validators import text_check

from .choices import VM_AT_REST_STATUSES, AffinityRule, HostStatus, VMStatus
from .models import AffinityGroup, Cluster, Host, VirtualMachine

NAME_MAX = AffinityGroup.NAME_MAX
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")  # as a VM's name
DESCRIPTION_MAX = 1000
NAMES_SHOWN = 5
RULES = frozenset(AffinityRule.values)
# A member counts where it commits its host: anything but at rest or Image Locked (as the
# scheduler's memory filter counts it).
NOT_RUNNING = VM_AT_REST_STATUSES | {VMStatus.IMAGE_LOCKED}
POSITIVE, NEGATIVE, DISABLED = AffinityRule.POSITIVE, AffinityRule.NEGATIVE, AffinityRule.DISABLED


def _shown(names) -> str:
    names = sorted(names)
    more = len(names) - NAMES_SHOWN
    return ", ".join(names[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")


# -- New / Edit / Remove --------------------------------------------------------------------


def _name_check(name) -> str:
    name = text_check(name, "Name", max_length=NAME_MAX)
    if not name:
        raise ActionRefused("Name is required.")
    if not NAME_RE.match(name):
        raise ActionRefused("Name may contain only letters, digits, '-', '_' and '.'.")
    return name


def _rule_check(rule, label: str) -> str:
    if rule not in RULES:
        raise ActionRefused(f"{label} must be Positive, Negative or Disabled.")
    return rule


def _cluster_locked(cluster_id: int) -> Cluster:
    """The cluster's row, locked: the groups of a cluster are checked against each other one
    save at a time (New VM and New Host take the same lock, briefly)."""
    cluster = Cluster.objects.select_for_update().filter(pk=cluster_id).first()
    if cluster is None:
        raise ActionRefused("That cluster does not exist any more.")
    return cluster


def _members_check(cluster: Cluster, name: str, vm_ids, host_ids) -> tuple[list, list]:
    """The VMs and hosts asked for, all of the group's cluster: a missing one or one of
    another cluster is refused by name."""
    vm_ids, host_ids = set(vm_ids), set(host_ids)
    vms = list(VirtualMachine.objects.filter(pk__in=vm_ids).select_related("cluster"))
    hosts = list(Host.objects.filter(pk__in=host_ids).select_related("cluster"))
    if len(vms) != len(vm_ids):
        raise ActionRefused("A virtual machine you selected does not exist any more.")
    if len(hosts) != len(host_ids):
        raise ActionRefused("A host you selected does not exist any more.")
    for kind, rows in (("VM", vms), ("host", hosts)):
        foreign = [r for r in rows if r.cluster_id != cluster.pk]
        if foreign:
            where = _shown(f"{r.name} (cluster {r.cluster.name})" for r in foreign)
            raise ActionRefused(
                f"Cannot save affinity group {name}: an affinity group holds {kind}s of its own "
                f"cluster {cluster.name} only, not {where}."
            )
    return vms, hosts


def _conflict_check(cluster: Cluster, name: str, vm_rule: str, vms, exclude_pk=None) -> None:
    """A Positive VM Affinity Rule and a Negative one over the same pair of VMs cannot both
    hold: refuse naming the other group and the pair."""
    if vm_rule == DISABLED or len(vms) < 2:
        return
    opposite = NEGATIVE if vm_rule == POSITIVE else POSITIVE
    ids = [v.pk for v in vms]
    other = (
        AffinityGroup.objects.filter(cluster=cluster, vm_rule=opposite, vms__in=ids)
        .exclude(pk=exclude_pk)
        .annotate(shared=Count("vms"))
        .filter(shared__gte=2)
        .order_by("name")
        .first()
    )
    if other is None:
        return
    pair = sorted(other.vms.filter(pk__in=ids).values_list("name", flat=True))[:2]
    raise ActionRefused(
        f"Cannot save affinity group {name}: its {AffinityRule(vm_rule).label} VM Affinity "
        f"Rule conflicts with affinity group {other.name} ({AffinityRule(opposite).label}), "
        f"which also holds VMs {pair[0]} and {pair[1]}. Change one of the rules or their VMs."
    )


def _values_check(
    cluster: Cluster, *, name, description, vm_rule, host_rule, vm_ids, host_ids, exclude_pk=None
) -> dict:
    name = _name_check(name)
    description = text_check(description, "Description", max_length=DESCRIPTION_MAX)
    vm_rule = _rule_check(vm_rule, "VM Affinity Rule")
    host_rule = _rule_check(host_rule, "VM to host rule")
    taken = AffinityGroup.objects.filter(cluster=cluster, name__iexact=name).exclude(pk=exclude_pk)
    if taken.exists():
        raise ActionRefused(
            f"Name '{name}' is already used by another affinity group in cluster {cluster.name}."
        )
    vms, hosts = _members_check(cluster, name, vm_ids, host_ids)
    if host_rule != DISABLED and not hosts:
        raise ActionRefused(
            f"Cannot save affinity group {name}: its {AffinityRule(host_rule).label} VM to host "
            "rule needs at least one host (or set it to Disabled)."
        )
    _conflict_check(cluster, name, vm_rule, vms, exclude_pk)
    return {"name": name, "description": description, "vms": vms, "hosts": hosts}


def _topics(cluster_id: int, vm_ids) -> tuple[str, ...]:
    return (f"cluster.{cluster_id}", "clusters", *(f"vm.{pk}" for pk in vm_ids))


def _taken(name: str, cluster: Cluster) -> ActionRefused:
    return ActionRefused(
        f"Name '{name}' is already used by another affinity group in cluster {cluster.name}."
    )


def _summary(group: AffinityGroup, vms, hosts) -> str:
    text = f"VM Affinity Rule {group.vm_rule_text()}, VMs: {_shown(v.name for v in vms) or 'none'}"
    if group.host_rule != DISABLED:
        text += (
            f"; VM to host rule {group.host_rule_text()}, hosts: {_shown(h.name for h in hosts)}"
        )
    return text


def _row(checked: dict, vm_rule, vm_enforcing, host_rule, host_enforcing) -> dict:
    """The group's own columns, from the checked values and the rules."""
    return {
        "name": checked["name"],
        "description": checked["description"],
        "vm_rule": vm_rule,
        "vm_enforcing": bool(vm_enforcing),
        "host_rule": host_rule,
        "host_enforcing": bool(host_enforcing),
    }


def affinity_group_create(
    *,
    user,
    cluster_id: int,
    name: str,
    description: str = "",
    vm_rule: str = POSITIVE,
    vm_enforcing: bool = True,
    host_rule: str = DISABLED,
    host_enforcing: bool = False,
    vm_ids=(),
    host_ids=(),
) -> AffinityGroup:
    """New Affinity Group in a cluster: a name unique there, its rules, VMs and hosts (all of
    that cluster), not contradicting another group's VM Affinity Rule."""
    with transaction.atomic():
        cluster = _cluster_locked(cluster_id)
        checked = _values_check(
            cluster,
            name=name,
            description=description,
            vm_rule=vm_rule,
            host_rule=host_rule,
            vm_ids=vm_ids,
            host_ids=host_ids,
        )
        try:
            with transaction.atomic():
                group = AffinityGroup.objects.create(
                    cluster=cluster,
                    **_row(checked, vm_rule, vm_enforcing, host_rule, host_enforcing),
                )
        except IntegrityError:
            raise _taken(checked["name"], cluster) from None
        group.vms.set(checked["vms"])
        group.hosts.set(checked["hosts"])
        event_record(
            action="affinity_group_create",
            phase=Phase.SUCCEEDED,
            user=user,
            cluster=cluster,
            object_type="cluster",
            object_name=cluster.name,
            message=f"{actor(user)} created affinity group {group.name} in cluster "
            f"{cluster.name} ({_summary(group, checked['vms'], checked['hosts'])}).",
        )
        broadcast(*_topics(cluster.pk, [v.pk for v in checked["vms"]]))
    return group


def _group_of(cluster: Cluster, group_id: int) -> AffinityGroup:
    group = AffinityGroup.objects.filter(pk=group_id, cluster=cluster).first()
    if group is None:
        raise ActionRefused("That affinity group does not exist any more.")
    return group


def affinity_group_update(
    *,
    user,
    group_id: int,
    name: str,
    description: str = "",
    vm_rule: str = POSITIVE,
    vm_enforcing: bool = True,
    host_rule: str = DISABLED,
    host_enforcing: bool = False,
    vm_ids=(),
    host_ids=(),
) -> AffinityGroup:
    """Edit Affinity Group: its name, description, rules, VMs and hosts, checked as New's.
    The scheduler applies the rules from the next placement on (running VMs are not moved
    here; the balancer corrects a broken enforcing group)."""
    cluster_id = AffinityGroup.objects.filter(pk=group_id).values_list("cluster_id", flat=True)
    cluster_id = cluster_id.first()
    if cluster_id is None:
        raise ActionRefused("That affinity group does not exist any more.")
    with transaction.atomic():
        cluster = _cluster_locked(cluster_id)
        group = _group_of(cluster, group_id)
        checked = _values_check(
            cluster,
            name=name,
            description=description,
            vm_rule=vm_rule,
            host_rule=host_rule,
            vm_ids=vm_ids,
            host_ids=host_ids,
            exclude_pk=group.pk,
        )
        before = set(group.vms.values_list("pk", flat=True))
        old = group.name
        try:
            with transaction.atomic():
                changed = AffinityGroup.objects.filter(pk=group.pk, cluster=cluster).update(
                    **_row(checked, vm_rule, vm_enforcing, host_rule, host_enforcing)
                )
        except IntegrityError:
            raise _taken(checked["name"], cluster) from None
        if not changed:
            raise ActionRefused("That affinity group does not exist any more.")
        group.refresh_from_db()
        group.vms.set(checked["vms"])
        group.hosts.set(checked["hosts"])
        renamed = f" (was {old})" if old != group.name else ""
        event_record(
            action="affinity_group_edit",
            phase=Phase.SUCCEEDED,
            user=user,
            cluster=cluster,
            object_type="cluster",
            object_name=cluster.name,
            message=f"{actor(user)} edited affinity group {group.name}{renamed} of cluster "
            f"{cluster.name} ({_summary(group, checked['vms'], checked['hosts'])}).",
        )
        broadcast(*_topics(cluster.pk, before | {v.pk for v in checked["vms"]}))
    return group


def affinity_group_remove(*, user, group_id: int) -> str:
    """Remove Affinity Group: its rules no longer apply to its VMs. Returns its name."""
    with transaction.atomic():
        group = AffinityGroup.objects.select_related("cluster").filter(pk=group_id).first()
        if group is None:
            raise ActionRefused("That affinity group does not exist any more.")
        members = list(group.vms.values_list("pk", flat=True))
        name, cluster = group.name, group.cluster
        deleted, _ = AffinityGroup.objects.filter(pk=group.pk).delete()
        if not deleted:
            raise ActionRefused("That affinity group does not exist any more.")
        event_record(
            action="affinity_group_remove",
            phase=Phase.SUCCEEDED,
            user=user,
            cluster=cluster,
            object_type="cluster",
            object_name=cluster.name,
            message=f"{actor(user)} removed affinity group {name} from cluster {cluster.name}.",
        )
        broadcast(*_topics(cluster.pk, members))
    return name


# -- what the scheduler reads ---------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """Another running VM of a group: the hosts it occupies (its host, and the host it is
    migrating to) and those it holds a Positive rule to (the same, less hosts it is leaving:
    Preparing For Maintenance), with their names for the refusal."""

    name: str
    hosts: frozenset[int]
    staying: frozenset[int]
    where: str  # "h1", or "h1, migrating to h2"


@dataclass(frozen=True)
class GroupRules:
    """One affinity group as the scheduler applies it to one VM."""

    pk: int
    name: str
    vm_rule: str
    vm_enforcing: bool
    host_rule: str
    host_enforcing: bool
    members: tuple[Member, ...]  # the group's other running VMs
    hosts: frozenset[int]  # the VM to host rule's hosts

    def label(self, rule: str, enforcing: bool, *, to_host: bool = False) -> str:
        kind = "VM to host " if to_host else ""
        return (
            f"affinity group {self.name} ({kind}{AffinityRule(rule).label}"
            f"{', Enforcing' if enforcing else ''})"
        )

    @cached_property
    def on_host(self) -> dict[int, list[str]]:
        """The names of the other running members on each host they occupy."""
        names: dict[int, list[str]] = defaultdict(list)
        for m in self.members:
            for host_id in m.hosts:
                names[host_id].append(m.name)
        return names

    @cached_property
    def together(self) -> tuple[frozenset[int], list[Member]]:
        """Where a Positive VM rule wants the VM: the hosts that run most of the group's
        other members (one host unless the group is broken), and the members counted; an
        empty set when none runs (any host will do)."""
        counted = [m for m in self.members if m.staying]
        if not counted:
            return frozenset(), []
        per_host = Counter(h for m in counted for h in m.staying)
        most = max(per_host.values())
        return frozenset(h for h, n in per_host.items() if n == most), counted


def _member(row: dict) -> Member:
    hosts, staying, where = set(), set(), []
    for host_id, status, host_name in (
        (row["vm__host_id"], row["vm__host__status"], row["vm__host__name"]),
        (
            row["vm__migrating_to_id"],
            row["vm__migrating_to__status"],
            row["vm__migrating_to__name"],
        ),
    ):
        if host_id is None:
            continue
        hosts.add(host_id)
        if status != HostStatus.PREPARING_FOR_MAINTENANCE:
            staying.add(host_id)
        where.append(host_name)
    return Member(
        name=row["vm__name"],
        hosts=frozenset(hosts),
        staying=frozenset(staying),
        where=", migrating to ".join(where),
    )


ENABLED = ~Q(vm_rule=DISABLED, host_rule=DISABLED)
# (short name, path from the group-VM link row) of what is read of each group and member
THROUGH_FIELDS = (
    ("group_id", "affinitygroup_id"),
    ("group", "affinitygroup__name"),
    ("vm_rule", "affinitygroup__vm_rule"),
    ("vm_enforcing", "affinitygroup__vm_enforcing"),
    ("host_rule", "affinitygroup__host_rule"),
    ("host_enforcing", "affinitygroup__host_enforcing"),
    ("vm_id", "virtualmachine_id"),
    ("vm__name", "virtualmachine__name"),
    ("vm__status", "virtualmachine__status"),
    ("vm__host_id", "virtualmachine__host_id"),
    ("vm__host__status", "virtualmachine__host__status"),
    ("vm__host__name", "virtualmachine__host__name"),
    ("vm__migrating_to_id", "virtualmachine__migrating_to_id"),
    ("vm__migrating_to__status", "virtualmachine__migrating_to__status"),
    ("vm__migrating_to__name", "virtualmachine__migrating_to__name"),
)


def _through_rows(groups) -> list[dict]:
    """The (group, member) rows of `groups` (a queryset of pks), with the group's rules and
    each member's place: one query."""
    paths = [path for _short, path in THROUGH_FIELDS]
    rows = (
        AffinityGroup.vms.through.objects.filter(affinitygroup__in=groups)
        .order_by("affinitygroup__name", "virtualmachine__name")
        .values_list(*paths)
    )
    shorts = [short for short, _path in THROUGH_FIELDS]
    return [dict(zip(shorts, row, strict=True)) for row in rows]


def _host_rows(group_ids) -> dict[int, set[int]]:
    hosts: dict[int, set[int]] = defaultdict(set)
    rows = AffinityGroup.hosts.through.objects.filter(affinitygroup_id__in=group_ids)
    for group_id, host_id in rows.values_list("affinitygroup_id", "host_id"):
        hosts[group_id].add(host_id)
    return hosts


def affinity_rules(
    vm: VirtualMachine, *, hosts_known: dict[int, frozenset[int]] | None = None
) -> tuple[GroupRules, ...]:
    """The enabled affinity groups of `vm` with their other running members and hosts, as
    the scheduler applies them (two queries; one when no group has a VM to host rule, or
    when `hosts_known` gives each group's hosts, as a re-read under a host's lock does)."""
    if vm.pk is None:
        return ()
    groups = AffinityGroup.objects.filter(ENABLED, vms=vm).values("pk")
    rows = _through_rows(groups)
    if not rows:
        return ()
    by_group: dict[int, dict] = {}
    for row in rows:
        g = by_group.setdefault(row["group_id"], {"row": row, "members": []})
        if row["vm_id"] != vm.pk and row["vm__status"] not in NOT_RUNNING:
            g["members"].append(_member(row))
    with_hosts = [pk for pk, g in by_group.items() if g["row"]["host_rule"] != DISABLED]
    if hosts_known is not None and set(with_hosts) <= set(hosts_known):
        hosts = hosts_known
    else:
        hosts = _host_rows(with_hosts) if with_hosts else {}
    return tuple(
        GroupRules(
            pk=pk,
            name=g["row"]["group"],
            vm_rule=g["row"]["vm_rule"],
            vm_enforcing=g["row"]["vm_enforcing"],
            host_rule=g["row"]["host_rule"],
            host_enforcing=g["row"]["host_enforcing"],
            members=tuple(g["members"]),
            hosts=frozenset(hosts.get(pk, ())),
        )
        for pk, g in by_group.items()
    )


def has_soft_rules(vm: VirtualMachine) -> bool:
    """Whether an affinity group of `vm` has a rule that is enabled but not Enforcing (Run
    then asks the scheduler for the cluster's best host rather than keeping the VM's own)."""
    soft_vm = Q(vm_enforcing=False) & ~Q(vm_rule=DISABLED)
    soft_host = Q(host_enforcing=False) & ~Q(host_rule=DISABLED)
    return vm.pk is not None and AffinityGroup.objects.filter(soft_vm | soft_host, vms=vm).exists()


# -- broken enforcing groups (for the balancer) ---------------------------------------------


def enforcing_violation(cluster: Cluster) -> tuple[VirtualMachine, str] | None:
    """One running VM of `cluster` whose Enforcing affinity group is broken, and why in words:
    members of a Negative group sharing a host, members of a Positive group split over hosts
    (one of the fewest on a host is named), or a VM on a host its Enforcing VM to host rule
    forbids. Only Up VMs are named (a migrating one is being moved); None when every enforcing
    group holds. The balancer migrates the VM through the scheduler, whose filters take it
    where the group wants it. Two queries."""
    groups = AffinityGroup.objects.filter(
        Q(vm_enforcing=True, vm_rule__in=[POSITIVE, NEGATIVE])
        | Q(host_enforcing=True, host_rule__in=[POSITIVE, NEGATIVE]),
        cluster=cluster,
    ).values("pk")
    by_group: dict[int, dict] = {}
    for row in _through_rows(groups):
        g = by_group.setdefault(row["group_id"], {"row": row, "running": []})
        if row["vm__status"] not in NOT_RUNNING and row["vm__host_id"] is not None:
            g["running"].append(row)
    with_hosts = [
        pk
        for pk, g in by_group.items()
        if g["row"]["host_enforcing"] and g["row"]["host_rule"] != DISABLED
    ]
    hosts = _host_rows(with_hosts) if with_hosts else {}
    for pk, g in by_group.items():
        found = _group_violation(g["row"], g["running"], hosts.get(pk, set()))
        if found is not None:
            vm_id, why = found
            vm = VirtualMachine.objects.select_related("cluster", "host").get(pk=vm_id)
            return vm, why
    return None


def _group_violation(group: dict, running: list[dict], hosts: set[int]) -> tuple[int, str] | None:
    name = group["group"]
    if any(r["vm__status"] != VMStatus.UP or r["vm__migrating_to_id"] for r in running):
        return None  # a member is on its way: judge the group once it has settled
    vm_rule, host_rule = group["vm_rule"], group["host_rule"]
    if group["vm_enforcing"] and vm_rule != DISABLED:
        per_host: dict[int, list[dict]] = defaultdict(list)
        for r in running:
            per_host[r["vm__host_id"]].append(r)
        if vm_rule == NEGATIVE:
            for rows in per_host.values():
                if len(rows) > 1:
                    names = [r["vm__name"] for r in rows]
                    return rows[-1]["vm_id"], (
                        f"VMs {_shown(names)} of affinity group {name} (Negative, Enforcing) "
                        f"run on the same host {rows[0]['vm__host__name']}"
                    )
        elif len(per_host) > 1:
            ordered = sorted(
                per_host.values(), key=lambda rows: (len(rows), rows[0]["vm__host__name"])
            )
            where = "; ".join(
                f"{rows[0]['vm__host__name']} ({_shown(r['vm__name'] for r in rows)})"
                for rows in ordered
            )
            return ordered[0][0]["vm_id"], (
                f"the VMs of affinity group {name} (Positive, Enforcing) run on several hosts: "
                f"{where}"
            )
    if group["host_enforcing"] and host_rule != DISABLED:
        for r in running:
            inside = r["vm__host_id"] in hosts
            if (host_rule == POSITIVE) != inside:
                which = "is not one of the hosts" if host_rule == POSITIVE else "is a host"
                return r["vm_id"], (
                    f"VM {r['vm__name']} runs on host {r['vm__host__name']}, which {which} of "
                    f"affinity group {name} (VM to host {AffinityRule(host_rule).label}, Enforcing)"
                )
    return None
