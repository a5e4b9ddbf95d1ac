"""The monitor and hosts in Maintenance: what libvirt reports of a host is kept, a host in
Maintenance stays there whatever a poll begun before finds, Activate brings it back Up through
the monitor, and a removed host's connection is closed."""

import re

import pytest
from factories import HostFactory
from monitor_support import host_status, status_of, vm_on_host

from portal.kernel.models import Event
from vms import inventory
from vms.choices import HostStatus, VMStatus
from vms.models import Host

pytestmark = pytest.mark.django_db


def test_poll_records_cores_and_the_libvirt_and_qemu_versions(monitor, sync_hosts):
    vm = vm_on_host(sync_hosts)
    Host.objects.filter(pk=vm.host_id).update(status=HostStatus.CONNECTING)
    monitor.cycle()
    host = Host.objects.get(pk=vm.host_id)
    # The test node: one NUMA node, one socket of 16 cores, one thread each.
    assert (host.status, host.cpu_model, host.cpus, host.cores) == (
        HostStatus.UP,
        "Vireo Test CPU",
        16,
        16,
    )
    assert re.fullmatch(r"\d+\.\d+\.\d+", host.libvirt_version)
    assert re.fullmatch(r"\d+\.\d+\.\d+", host.hypervisor_version)


def test_a_poll_begun_before_maintenance_does_not_bring_the_host_up(monitor, sync_hosts, admin):
    vm = vm_on_host(sync_hosts, status=VMStatus.DOWN)
    host = Host.objects.select_related("cluster").get(pk=vm.host_id)
    Host.objects.filter(pk=host.pk).update(status=HostStatus.CONNECTING)
    host.status = HostStatus.CONNECTING  # as the poll read it
    inventory.host_maintenance(host_id=host.pk, user=admin)
    monitor.host_poll(host, set())
    assert host_status(host) == HostStatus.MAINTENANCE
    assert not Event.objects.filter(action="host_status").exists()


def test_an_unreachable_host_put_in_maintenance_meanwhile_stays_there(monitor, admin):
    host = HostFactory(uri="test:///nonexistent/node.xml")
    vm = vm_on_host(lambda *_: None, status=VMStatus.SUSPENDED, host=host)
    stale = Host.objects.select_related("cluster").get(pk=host.pk)  # read as Up
    inventory.host_maintenance(host_id=host.pk, user=admin)
    monitor.host_poll(stale, set())
    assert host_status(host) == HostStatus.MAINTENANCE
    assert status_of(vm) == VMStatus.SUSPENDED  # not made Unknown
    assert not Event.objects.filter(action="host_status").exists()


def test_activate_brings_the_host_back_up_through_the_monitor(monitor, sync_hosts, admin):
    vm = vm_on_host(sync_hosts, status=VMStatus.DOWN)
    host = vm.host
    inventory.host_maintenance(host_id=host.pk, user=admin)
    monitor.cycle()
    assert host_status(host) == HostStatus.MAINTENANCE
    inventory.host_activate(host_id=host.pk, user=admin)
    assert host_status(host) == HostStatus.CONNECTING
    monitor.cycle()
    assert host_status(host) == HostStatus.UP
    assert Event.objects.filter(action="host_status").latest("id").message == (
        f"Host {host.name} is Up."
    )


def test_the_connection_of_a_removed_host_is_closed(monitor, sync_hosts, admin):
    vm = vm_on_host(sync_hosts, status=VMStatus.DOWN)
    host = vm.host
    monitor.cycle()
    conn = monitor.watched[host.pk]
    inventory.host_maintenance(host_id=host.pk, user=admin)
    monitor.cycle()
    assert monitor.watched[host.pk] is conn  # Maintenance keeps it: events still count
    vm.disks.all().delete()
    vm.delete()
    inventory.host_remove(host_id=host.pk, user=admin)
    monitor.cycle()
    assert host.pk not in monitor.watched
    assert not conn.is_alive()
