"""Part 5: the guest agents of 1,000 running VMs on one host (issue 10 item 4).

One test-driver host with 1,000 Up VMs (each with the agent's channel, as Vireo defines them;
the test driver's agent answers at once with its host name). Timed: the host's steady poll and
the VM list's first page before any agent report exists, one agent pass (VIREO_AGENT_POLL_BATCH
VMs, the oldest reports first) and enough passes to cover every VM, then the poll and the list
again with 1,000 reports stored. The goal: the reports slow neither the poll (the passes run
in threads of their own) nor the list (one select_related, no query per row).
"""

import time

from django.conf import settings

import hypervisor
from vms import testhosts
from vms.choices import VMStatus
from vms.guest_agent import host_agents_refresh
from vms.models import GuestAgentReport
from vms.monitor import Monitor

from .adopt import _Inline, _list_ms, _poll_ms
from .seed import inventory_seed


def measure(user, *, vms: int = 1000, rounds: int = 25) -> dict:
    inv = inventory_seed(
        prefix="agents",
        data_centers=1,
        clusters=1,
        hosts=1,
        vms=vms,
        user=user,
        statuses=[VMStatus.UP],
    )
    host = inv.hosts[0]
    hypervisor.disconnect(host.uri)
    testhosts.node_file_write(host)
    monitor = Monitor(poll_seconds=60, stale_seconds=300)
    monitor.pool.shutdown()
    monitor.pool = _Inline()
    monitor.host_poll(host, set())  # connects
    conn = monitor.watched[host.pk]
    result = {"vms": vms, "batch": settings.VIREO_AGENT_POLL_BATCH}
    result["poll_before_ms"] = _poll_ms(monitor, host, rounds)
    result["list_before_ms"], result["list_before_queries"] = _list_ms(user, rounds)

    started = time.perf_counter()
    host_agents_refresh(host, conn)
    result["first_pass_s"] = time.perf_counter() - started
    passes = 1
    started = time.perf_counter()
    while GuestAgentReport.objects.filter(vm__host=host).count() < vms:
        host_agents_refresh(host, conn)
        passes += 1
    result["cover_passes"] = passes
    result["cover_s"] = result["first_pass_s"] + time.perf_counter() - started
    result["answering"] = GuestAgentReport.objects.filter(vm__host=host, answering=True).count()
    started = time.perf_counter()
    host_agents_refresh(host, conn)  # nothing changed: no writes but the report time
    result["steady_pass_s"] = time.perf_counter() - started

    result["poll_after_ms"] = _poll_ms(monitor, host, rounds)
    result["list_after_ms"], result["list_after_queries"] = _list_ms(user, rounds)
    hypervisor.disconnect(host.uri)
    return result
