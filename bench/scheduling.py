"""The scheduler's cost: `schedule()` for a VM in a cluster of 100 Up hosts with 2,000 VMs
(most running), as Run calls it inside its transaction: queries and time per call."""

import statistics
import time

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext


def measure(rounds: int = 50) -> dict:
    from bench.seed import inventory_seed
    from storage.choices import StorageType
    from storage.models import StorageDomain
    from vms.models import VirtualMachine
    from vms.scheduling import Purpose, schedule

    seed = inventory_seed(prefix="sched", data_centers=1, clusters=1, hosts=100, vms=2_000)
    # Shared storage and 1 GiB VMs: every host is a candidate that passes every filter, the
    # costliest case (a local disk would rule 99 hosts out at the storage filter).
    StorageDomain.objects.filter(data_center__in=seed.data_centers).update(
        storage_type=StorageType.NFS
    )
    VirtualMachine.objects.filter(cluster=seed.clusters[0]).update(memory_mb=1024)
    vm = VirtualMachine.objects.select_related("cluster").filter(cluster=seed.clusters[0]).first()
    samples, queries = [], 0
    for _ in range(rounds):
        with transaction.atomic(), CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            host = schedule(vm, purpose=Purpose.RUN)
            samples.append((time.perf_counter() - started) * 1000)
        queries = len(captured)
    from vms.scheduling import candidates_of

    reads = []
    for _ in range(rounds):
        started = time.perf_counter()
        candidates_of(vm)
        reads.append((time.perf_counter() - started) * 1000)
    return {
        "read_ms": statistics.median(reads),
        "hosts": len(seed.hosts),
        "vms": seed.vm_count,
        "chosen": host.name,
        "queries": queries,
        "median_ms": statistics.median(samples),
        "p95_ms": sorted(samples)[int(rounds * 0.95) - 1],
    }
