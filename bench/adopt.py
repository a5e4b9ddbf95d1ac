"""Part 4: a host that already runs 1,000 domains Vireo did not define (issue 9 item 3).

One test-driver host with 1,000 domains, each with a disk in the data domain's pool. First
the inventory knows them as Vireo's own VMs: the steady poll and the VM list are timed. Then
the inventory forgets them (rows deleted, domains kept): the first poll adopts all 1,000 as
external VMs (disks mapped to the storage domain), and the steady poll and the VM list are
timed again. The goal: adopting them slows neither the poll nor the list.
"""

import statistics
import time
from concurrent.futures import Future

from django.db import connection
from django.test import Client

import hypervisor
from storage.models import Disk
from vms import testhosts
from vms.choices import VMOrigin
from vms.models import VirtualMachine
from vms.monitor import Monitor, vms_with_active_jobs

from .seed import inventory_seed


class _Inline:
    """Polls in the calling thread."""

    def submit(self, fn, *args):
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def _poll_ms(monitor: Monitor, host, rounds: int) -> float:
    """Median milliseconds of a poll of `host` (connected already)."""
    times = []
    for _ in range(rounds):
        busy = vms_with_active_jobs()
        started = time.perf_counter()
        monitor.host_poll(host, busy)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _list_ms(user, rounds: int) -> tuple[float, int]:
    """Median milliseconds of the VM list's first page, and its queries."""
    client = Client()
    client.force_login(user)
    for _ in range(3):
        client.get("/vms/")
    executed = []

    def count(execute, sql, params, many, context):
        executed.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        assert client.get("/vms/").status_code == 200
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        client.get("/vms/")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(executed)


def measure(user, *, domains: int = 1000, rounds: int = 25) -> dict:
    inv = inventory_seed(
        prefix="adopt", data_centers=1, clusters=1, hosts=1, vms=domains, user=user
    )
    host = inv.hosts[0]
    hypervisor.disconnect(host.uri)
    testhosts.node_file_write(host)
    monitor = Monitor(poll_seconds=60, stale_seconds=300)
    monitor.pool.shutdown()
    monitor.pool = _Inline()
    monitor.host_poll(host, set())  # connects
    result = {"domains": domains}
    result["poll_vireo_ms"] = _poll_ms(monitor, host, rounds)
    result["list_vireo_ms"], result["list_vireo_queries"] = _list_ms(user, rounds)

    # The inventory forgets them; the host keeps every domain and volume.
    Disk.objects.filter(vm__host=host).delete()
    VirtualMachine.objects.filter(host=host).delete()
    started = time.perf_counter()
    monitor.host_poll(host, set())
    result["adopt_s"] = time.perf_counter() - started
    external = VirtualMachine.objects.filter(host=host, origin=VMOrigin.EXTERNAL)
    result["adopted"] = external.count()
    result["disks_mapped"] = Disk.objects.filter(vm__in=external).count()
    result["poll_external_ms"] = _poll_ms(monitor, host, rounds)
    result["list_external_ms"], result["list_external_queries"] = _list_ms(user, rounds)
    hypervisor.disconnect(host.uri)
    return result
