"""The scheduler with affinity groups (issue 12): `schedule()` for a Run in one cluster of 100
Up test hosts with 10,000 VMs and 50 affinity groups, the VM scheduled in five of them (one of
each kind: Negative Enforcing, Positive soft, Negative soft, VM to host Positive soft, VM to host
Negative Enforcing); queries and time per call, next to the same call for a VM in no group
(taken in turn, so the machine's load weighs on both alike)."""

import statistics
import time

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

GROUPS = 50
MEMBERS = 20


CPU: list[float] = []  # this process's CPU time of each timed call (ms): Python, not SQL


def _timed(call, rounds: int) -> tuple[list[float], int]:
    samples, queries = [], 0
    for _ in range(rounds):
        with transaction.atomic(), CaptureQueriesContext(connection) as captured:
            started, cpu = time.perf_counter(), time.process_time()
            call()
            samples.append((time.perf_counter() - started) * 1000)
            CPU.append((time.process_time() - cpu) * 1000)
        queries = len(captured)
    return samples, queries


def _groups_seed(cluster, vm, vm_ids: list[int], host_ids: list[int]) -> int:
    """50 groups of 20 VMs by bulk_create; the VM scheduled is in the first five, which share
    no other VM (so no two of them conflict)."""
    from vms.choices import AffinityRule as R
    from vms.models import AffinityGroup

    kinds = [
        (R.NEGATIVE, True, R.DISABLED, False, 0),
        (R.POSITIVE, False, R.DISABLED, False, 0),
        (R.NEGATIVE, False, R.DISABLED, False, 0),
        (R.DISABLED, False, R.POSITIVE, False, 10),
        (R.DISABLED, False, R.NEGATIVE, True, 5),
    ]
    groups = AffinityGroup.objects.bulk_create(
        [
            AffinityGroup(
                cluster=cluster,
                name=f"bench-ag{n:02d}",
                vm_rule=kinds[n % 5][0],
                vm_enforcing=kinds[n % 5][1],
                host_rule=kinds[n % 5][2],
                host_enforcing=kinds[n % 5][3],
            )
            for n in range(GROUPS)
        ]
    )
    others = [pk for pk in vm_ids if pk != vm.pk]
    vm_links, host_links = [], []
    VMs, Hosts = AffinityGroup.vms.through, AffinityGroup.hosts.through
    for n, g in enumerate(groups):
        members = others[n * MEMBERS * 3 : n * MEMBERS * 3 + MEMBERS * 3 : 3][: MEMBERS - 1]
        if n < 5:
            members.append(vm.pk)
        vm_links += [VMs(affinitygroup_id=g.pk, virtualmachine_id=pk) for pk in members]
        count = kinds[n % 5][4]
        host_links += [
            Hosts(affinitygroup_id=g.pk, host_id=h) for h in host_ids[n % 7 : n % 7 + count]
        ]
    VMs.objects.bulk_create(vm_links)
    Hosts.objects.bulk_create(host_links)
    return len(vm_links)


def measure(rounds: int = 50) -> dict:
    from bench.seed import inventory_seed
    from storage.choices import StorageType
    from storage.models import StorageDomain
    from vms.affinity import affinity_rules
    from vms.models import VirtualMachine
    from vms.scheduling import Purpose, schedule

    seed = inventory_seed(prefix="aff", data_centers=1, clusters=1, hosts=100, vms=10_000)
    cluster = seed.clusters[0]
    # Shared storage and 512 MB VMs: every host passes the resource filters (the costliest
    # case: every host goes through the affinity filters and weights).
    StorageDomain.objects.filter(data_center__in=seed.data_centers).update(
        storage_type=StorageType.NFS
    )
    VirtualMachine.objects.filter(cluster=cluster).update(memory_mb=512)
    vm_ids = list(
        VirtualMachine.objects.filter(cluster=cluster).order_by("pk").values_list("pk", flat=True)
    )
    vm = VirtualMachine.objects.select_related("cluster", "host").get(pk=vm_ids[0])
    links = _groups_seed(cluster, vm, vm_ids, [h.pk for h in seed.hosts])
    # a VM in no group, scheduled in turn with the other: the same load weighs on both
    free = VirtualMachine.objects.select_related("cluster", "host").get(pk=vm_ids[-1])
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    chosen = set()
    grouped, plain, queries, plain_queries = [], [], 0, 0
    grouped_cpu, plain_cpu = [], []
    for _ in range(rounds):
        timed, queries = _timed(lambda: chosen.add(schedule(vm, purpose=Purpose.RUN).name), 1)
        grouped += timed
        grouped_cpu.append(CPU[-1])
        timed, plain_queries = _timed(lambda: schedule(free, purpose=Purpose.RUN), 1)
        plain += timed
        plain_cpu.append(CPU[-1])
    reads, _ = _timed(lambda: affinity_rules(vm), rounds)
    rules = affinity_rules(vm)
    return {
        "hosts": len(seed.hosts),
        "vms": seed.vm_count,
        "groups": GROUPS,
        "links": links,
        "vm_groups": len(rules),
        "members": sum(len(g.members) for g in rules),
        "chosen": ", ".join(sorted(chosen)),
        "before_queries": plain_queries,
        "before_median_ms": statistics.median(plain),
        "queries": queries,
        "median_ms": statistics.median(grouped),
        "p95_ms": sorted(grouped)[int(rounds * 0.95) - 1],
        "read_ms": statistics.median(reads),
        "cpu_ms": statistics.median(grouped_cpu),
        "before_cpu_ms": statistics.median(plain_cpu),
    }
