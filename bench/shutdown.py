"""Part 3: one in-process RQ worker shuts down 500 VMs on test-driver hosts.

Besides the totals it reports where the time went: publishing live updates (the process's
publisher; `send_now` calls inside a `coalesced()` block share one publish), executing SQL, and
the rest (RQ, libvirt, Python), with the Redis round trips (RQ's and the publishes). The split
comes from thin wrappers around `send_now`, the publisher, redis-py's send and an
execute_wrapper; they add microseconds per call.
"""

import time
from collections import Counter
from contextlib import ExitStack, contextmanager

import redis.connection
from django.db import connection

import hypervisor
import portal.kernel.live
import portal.kernel.tasks
from portal.kernel.models import Job
from portal.kernel.tasks import get_queue
from portal.kernel.worker import ThreadWorker
from vms import services, testhosts
from vms.choices import VMStatus
from vms.models import VirtualMachine

from .seed import inventory_seed


class Split:
    """Seconds and calls publishing live updates, send_now calls, seconds and calls in SQL."""

    def __init__(self) -> None:
        self.live_s = self.sql_s = 0.0
        self.live_calls = self.send_calls = self.sql_calls = self.redis_calls = 0

    @contextmanager
    def watching(self):
        original = portal.kernel.live.send_now
        publish = portal.kernel.live.publisher.group_send
        redis_send = redis.connection.AbstractConnection.send_packed_command

        def counted_send(conn, *args, **kwargs):
            self.redis_calls += 1
            return redis_send(conn, *args, **kwargs)

        def timed_send_now(*topics):
            self.send_calls += 1
            return original(*topics)

        def timed_publish(messages):
            started = time.perf_counter()
            try:
                return publish(messages)
            finally:
                self.live_s += time.perf_counter() - started
                self.live_calls += 1

        def sql(execute, sql, params, many, context):
            started = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                self.sql_s += time.perf_counter() - started
                self.sql_calls += 1

        with ExitStack() as stack:
            # portal.kernel.live.broadcast looks send_now up at call time; portal.kernel.tasks imported it.
            for module in (portal.kernel.live, portal.kernel.tasks):
                stack.callback(setattr, module, "send_now", module.send_now)
                module.send_now = timed_send_now
            stack.callback(setattr, portal.kernel.live.publisher, "group_send", publish)
            portal.kernel.live.publisher.group_send = timed_publish
            stack.callback(
                setattr, redis.connection.AbstractConnection, "send_packed_command", redis_send
            )
            redis.connection.AbstractConnection.send_packed_command = counted_send
            stack.enter_context(connection.execute_wrapper(sql))
            yield self

    def as_dict(self, total_s: float, jobs: int) -> dict:
        per = 1000 / jobs if jobs else 0.0
        return {
            "live_ms_per_job": self.live_s * per,
            "live_calls_per_job": self.live_calls / jobs if jobs else 0.0,
            "send_calls_per_job": self.send_calls / jobs if jobs else 0.0,
            "sql_ms_per_job": self.sql_s * per,
            "sql_calls_per_job": self.sql_calls / jobs if jobs else 0.0,
            "redis_calls_per_job": self.redis_calls / jobs if jobs else 0.0,
            "other_ms_per_job": (total_s - self.live_s - self.sql_s) * per,
            "total_ms_per_job": total_s * per,
        }


def measure(user, *, vms: int = 500, hosts: int = 5) -> dict:
    inv = inventory_seed(
        prefix="sd", data_centers=1, clusters=1, hosts=hosts, vms=vms, statuses=[VMStatus.UP]
    )
    for host in inv.hosts:  # each host comes up holding exactly the inventory's VMs, running
        hypervisor.disconnect(host.uri)
        testhosts.node_file_write(host)
    vm_ids = list(
        VirtualMachine.objects.filter(host__in=inv.hosts)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    queue = get_queue()
    queue.empty()

    with Split().watching() as enqueue_split:
        started = time.perf_counter()
        job_ids = [services.vm_shutdown(vm_id=pk, user=user).pk for pk in vm_ids]
        enqueue_s = time.perf_counter() - started
    queued = queue.count

    worker = ThreadWorker([queue], connection=queue.connection, name="bench-worker")
    with Split().watching() as work_split:
        started = time.perf_counter()
        worker.work(burst=True, logging_level="WARNING")
        work_s = time.perf_counter() - started

    statuses = Counter(
        VirtualMachine.objects.filter(pk__in=vm_ids).values_list("status", flat=True)
    )
    job_statuses = Counter(Job.objects.filter(pk__in=job_ids).values_list("status", flat=True))
    domain_states = Counter(
        d.state for host in inv.hosts for d in hypervisor.connect(host.uri).list_domains()
    )
    succeeded = queue.finished_job_registry.count
    failed = queue.failed_job_registry.count
    ended = succeeded + failed
    return {
        "vms": len(vm_ids),
        "hosts": hosts,
        "enqueue_s": enqueue_s,
        "enqueue_split": enqueue_split.as_dict(enqueue_s, len(vm_ids)),
        "queued": queued,
        "left_in_queue": queue.count,
        "work_s": work_s,
        "work_split": work_split.as_dict(work_s, ended),
        "jobs_ended": ended,
        "succeeded": succeeded,
        "failed": failed,
        "jobs_per_s": ended / work_s if work_s else 0.0,
        "vm_statuses": dict(statuses),
        "job_statuses": dict(job_statuses),
        "domain_states": dict(domain_states),
        "all_down": statuses.get(VMStatus.DOWN, 0) == len(vm_ids),
    }


def _send_with_own_loop(*topics: str) -> None:
    """How portal.kernel.live.send_now sent before issue 7 item 20: a fresh event loop (async_to_sync)
    and so a fresh Redis connection for every update. Kept here only to compare against."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()

    async def send():
        for topic in dict.fromkeys(topics):
            await layer.group_send(
                portal.kernel.live.group_name(topic), {"type": "live.changed", "topic": topic}
            )

    async_to_sync(send)()


def live_cost(*, rounds: int = 200) -> dict:
    """Milliseconds per live update of a job's topics (job.N, jobs, vm.N), the publisher against
    the old own-loop-per-update way, alternating so that the machine's load weighs on both."""
    import statistics

    timings: dict[str, list[float]] = {"publisher": [], "own_loop": []}
    ways = {"publisher": portal.kernel.live.send_now, "own_loop": _send_with_own_loop}
    for n in range(rounds):
        topics = (f"job.{n}", "jobs", f"vm.{n}")
        for name, send in ways.items():
            started = time.perf_counter()
            send(*topics)
            timings[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in timings.items()}
