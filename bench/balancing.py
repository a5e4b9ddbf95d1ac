"""The load balancer's cycle (vms/balancing.py): 100 test hosts in 4 clusters with 10,000
VMs, timed as the monitor runs it (`Balancer.run()`), for three states of the inventory:

- quiet: evenly_distributed, every host between 20 and 70 % CPU: nothing to correct;
- over: evenly_distributed, 3 hosts of each cluster at 90 % for 10 minutes: one migration per
  cluster and cycle (scheduler, vm_migrate's Job and Events, the enqueue on commit);
- packing: power_saving, every host under LowUtilization for 10 minutes: the least loaded
  host of each cluster is emptied onto busier ones, one VM per cluster and cycle.

Between two timed cycles the started migrations are taken back (the VMs Up where they were),
so every cycle sees the same inventory."""

import random
import statistics
import time
from datetime import timedelta

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone


def _cycles(rounds: int, reset) -> dict:
    from vms.balancing import Balancer

    samples, queries, started, moving = [], [], [], []

    class Timed(Balancer):
        """Times the moves (the scheduler's pick, vm_migrate's Job, Events and enqueue)."""

        def move(self, *args, **kwargs):
            began = time.perf_counter()
            try:
                return super().move(*args, **kwargs)
            finally:
                spent[0] += (time.perf_counter() - began) * 1000

    for _ in range(rounds):
        spent = [0.0]
        balancer = Timed()
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            started.append(balancer.run())  # each migration commits and enqueues on its own
            samples.append((time.perf_counter() - began) * 1000)
        queries.append(len(captured))
        moving.append(spent[0])
        reset()
    samples.sort()
    return {
        "median_ms": statistics.median(samples),
        "p95_ms": samples[max(0, int(rounds * 0.95) - 1)],
        "queries": statistics.median(queries),
        "migrations": statistics.median(started),
        "moves_ms": statistics.median(moving),
    }


def measure(rounds: int = 20) -> dict:
    from bench.seed import inventory_seed
    from portal.kernel.models import Job
    from storage.choices import StorageType
    from storage.models import StorageDomain
    from vms.choices import SchedulingPolicy, VMStatus
    from vms.models import Cluster, Host, VirtualMachine

    seed = inventory_seed(prefix="bal", data_centers=1, clusters=4, hosts=100, vms=10_000)
    StorageDomain.objects.filter(data_center__in=seed.data_centers).update(
        storage_type=StorageType.NFS
    )
    clusters = Cluster.objects.filter(pk__in=[c.pk for c in seed.clusters])
    # 512 MB VMs: about 60 of each host's 100 VMs commit memory, 30 GiB of its 64 GiB.
    VirtualMachine.objects.filter(cluster__in=clusters).update(memory_mb=512)
    hosts = Host.objects.filter(cluster__in=clusters)
    rng = random.Random(12)
    now = timezone.now()
    with connection.cursor() as cur:
        cur.execute("ANALYZE")

    def quiet_cpu() -> None:
        with transaction.atomic():
            for pk in hosts.values_list("pk", flat=True):
                Host.objects.filter(pk=pk).update(
                    cpu_usage_percent=rng.randint(20, 70),
                    cpu_usage_at=now,
                    over_utilized_since=None,
                    under_utilized_since=None,
                )

    def reset() -> None:
        moved = VirtualMachine.objects.filter(cluster__in=clusters, status=VMStatus.MIGRATING_FROM)
        moved.update(status=VMStatus.UP, migrating_to=None)
        Job.objects.filter(vm__cluster__in=clusters, status__in=Job.ACTIVE).delete()

    results = {"hosts": hosts.count(), "vms": seed.vm_count, "clusters": clusters.count()}
    clusters.update(
        scheduling_policy=SchedulingPolicy.EVENLY_DISTRIBUTED,
        max_free_memory_for_over_utilized=4096,
    )
    quiet_cpu()
    results["quiet"] = _cycles(rounds, reset)

    for cluster in clusters:
        # (the seed gives each host VMs of one status: the hot ones are hosts running VMs)
        running = cluster.hosts.filter(vms__status=VMStatus.UP).distinct().order_by("name")
        hot = list(running.values_list("pk", flat=True)[:3])
        Host.objects.filter(pk__in=hot).update(
            cpu_usage_percent=90, over_utilized_since=now - timedelta(minutes=10)
        )
    results["over"] = _cycles(rounds, reset)

    quiet_cpu()
    clusters.update(scheduling_policy=SchedulingPolicy.POWER_SAVING)
    hosts.update(cpu_usage_percent=10, under_utilized_since=now - timedelta(minutes=10))
    results["packing"] = _cycles(rounds, reset)
    return results
