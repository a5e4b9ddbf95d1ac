"""A host's CPU times (Connection.host_cpu_times, virNodeGetCPUStats) and the usage between
two readings; the test driver's stand-in (its node counters never move)."""

import time

from hypervisor_nodes import OFF_UUID, RUNNING_UUID

import hypervisor
from hypervisor import HostCpuTimes


def test_usage_between_two_readings_is_the_busy_share_of_the_elapsed_cpu_time():
    earlier = HostCpuTimes(busy_ns=1_000, total_ns=10_000)
    assert HostCpuTimes(busy_ns=1_300, total_ns=11_000).usage_since(earlier) == 30
    assert HostCpuTimes(busy_ns=3_000, total_ns=11_000).usage_since(earlier) == 100  # capped
    assert HostCpuTimes(busy_ns=900, total_ns=11_000).usage_since(earlier) == 0
    assert earlier.usage_since(earlier) is None  # no time passed: nothing to tell


def test_libvirt_node_cpu_stats_busy_is_user_and_kernel(node_uri):
    """libvirt's own reading (the test driver's fixed figures): idle and iowait are not busy."""
    plain = hypervisor.Connection(node_uri)
    try:
        times = plain.host_cpu_times()
        stats = plain._conn.getCPUStats(-1, 0)
    finally:
        plain.close()
    assert times.busy_ns == stats["user"] + stats["kernel"]
    assert times.total_ns == stats["user"] + stats["kernel"] + stats["idle"] + stats["iowait"]


def test_the_test_driver_counts_one_cpu_per_running_domain(conn):
    assert isinstance(conn, hypervisor.TestDriverConnection)
    first = conn.host_cpu_times()
    time.sleep(0.05)
    second = conn.host_cpu_times()
    assert second.usage_since(first) in (12, 13)  # web runs on the node's 8 CPUs
    conn.start(OFF_UUID)
    time.sleep(0.05)
    third = conn.host_cpu_times()
    assert third.usage_since(second) == 25
    conn.destroy(OFF_UUID)
    conn.destroy(RUNNING_UUID)
    time.sleep(0.05)
    assert conn.host_cpu_times().usage_since(third) == 0
