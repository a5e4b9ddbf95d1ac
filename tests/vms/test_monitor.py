"""The monitor against test-driver hosts: changes made outside the portal (picked up by a poll
and by a lifecycle event), hosts that stop answering and come back, and a host that never
answers. Jobs left behind are in test_monitor_jobs.py, races in test_monitor_races.py."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from factories import HostFactory, StorageDomainFactory
from monitor_support import OLD, age, detected, host_status, status_of, vm_on_host

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus, Phase, Severity
from storage.choices import StorageDomainStatus
from vms import services, testhosts
from vms.choices import HostStatus, VMStatus
from vms.models import Host, VirtualMachine
from vms.monitor import Monitor

pytestmark = pytest.mark.django_db


# -- changes made outside the portal ----------------------------------------------------------


def test_poll_picks_up_changes_made_on_the_host(monitor, sync_hosts):
    vm = vm_on_host(sync_hosts)
    other = vm_on_host(sync_hosts, host=vm.host, status=VMStatus.DOWN)
    conn = hypervisor.connect(vm.host.uri)
    uuid = str(vm.uuid)
    monitor.cycle()
    assert status_of(vm) == VMStatus.UP
    assert detected(vm) == []  # nothing changed: nothing recorded

    conn.pause(uuid)
    monitor.cycle()
    assert status_of(vm) == VMStatus.PAUSED
    conn.resume(uuid)
    conn.managed_save(uuid)
    monitor.cycle()
    assert status_of(vm) == VMStatus.SUSPENDED
    conn.start(uuid)
    monitor.cycle()
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP and vm.started_at is not None
    conn.destroy(uuid)
    monitor.cycle()
    vm.refresh_from_db()
    assert (vm.status, vm.started_at) == (VMStatus.DOWN, None)
    assert status_of(other) == VMStatus.DOWN
    host = vm.host
    assert detected(vm) == [
        f"VM {vm.name} is now Paused (was Up), as reported by host {host.name}.",
        f"VM {vm.name} is now Suspended (was Paused), as reported by host {host.name}.",
        f"VM {vm.name} is now Up (was Suspended), as reported by host {host.name}.",
        f"VM {vm.name} is now Down (was Up), as reported by host {host.name}.",
    ]
    assert detected(other) == []


def test_a_domain_removed_on_the_host_shows_down(monitor, sync_hosts):
    vm = vm_on_host(sync_hosts, status=VMStatus.PAUSED)
    conn = hypervisor.connect(vm.host.uri)
    conn.destroy(str(vm.uuid))
    conn.undefine_domain(str(vm.uuid))
    monitor.cycle()
    assert status_of(vm) == VMStatus.DOWN


def test_lifecycle_event_is_applied(monitor, sync_hosts):
    vm = vm_on_host(sync_hosts)
    monitor.cycle()  # connects and registers for lifecycle events
    assert vm.host_id in monitor.watched
    conn = hypervisor.connect(vm.host.uri)
    conn.pause(str(vm.uuid))
    host_id, uuid = monitor.events.get(timeout=5)  # delivered by libvirt's event loop
    assert (host_id, uuid) == (vm.host_id, str(vm.uuid))
    monitor.handle_event(host_id, uuid)
    assert status_of(vm) == VMStatus.PAUSED

    conn.destroy(str(vm.uuid))
    monitor.handle_event(*monitor.events.get(timeout=5))
    assert status_of(vm) == VMStatus.DOWN


def test_lifecycle_event_for_an_unknown_vm_or_unwatched_host_is_ignored(monitor, sync_hosts):
    vm = vm_on_host(sync_hosts)
    hypervisor.connect(vm.host.uri).pause(str(vm.uuid))
    monitor.handle_event(vm.host_id, str(vm.uuid))  # host not watched yet
    assert status_of(vm) == VMStatus.UP
    monitor.cycle()
    assert status_of(vm) == VMStatus.PAUSED
    monitor.handle_event(vm.host_id, "00000000-0000-4000-8000-00000000dead")
    monitor.handle_event(vm.host_id + 1000, str(vm.uuid))
    assert status_of(vm) == VMStatus.PAUSED


@pytest.mark.django_db(transaction=True)
def test_running_monitor_follows_a_lifecycle_event_within_two_seconds(sync_hosts):
    vm = vm_on_host(sync_hosts)
    conn = hypervisor.connect(vm.host.uri)
    # A long poll: only the lifecycle event can bring the change in time.
    monitor = Monitor(poll_seconds=60, stale_seconds=30)

    def run():
        try:
            monitor.run()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while vm.host_id not in monitor.watched or host_status(vm.host) != HostStatus.UP:
            assert time.monotonic() < deadline, "the monitor did not finish its first cycle"
            time.sleep(0.05)
        time.sleep(0.2)  # let the first cycle finish its job reconcile
        conn.pause(str(vm.uuid))
        deadline = time.monotonic() + 2
        while status_of(vm) != VMStatus.PAUSED:
            assert time.monotonic() < deadline, "the change was not picked up within 2 s"
            time.sleep(0.05)
        conn.resume(str(vm.uuid))
        deadline = time.monotonic() + 2
        while status_of(vm) != VMStatus.UP:
            assert time.monotonic() < deadline, "the second change was not picked up"
            time.sleep(0.05)
    finally:
        monitor.stop.set()
        thread.join(5)
    assert not thread.is_alive()


# -- hosts that stop answering ---------------------------------------------------------------


def test_unreachable_host_goes_non_responsive_and_comes_back(monitor, tmp_path, sync_hosts):
    # A URI the monitor will not (re)write for us: the node file is ours to take away.
    path = tmp_path / "outside" / "node"
    path.parent.mkdir()
    host = HostFactory(uri=f"test://{path}")
    StorageDomainFactory(data_center=host.cluster.data_center)
    up = vm_on_host(sync_hosts, host=host, started_at=timezone.now() - timedelta(days=2))
    paused = vm_on_host(sync_hosts, host=host, status=VMStatus.PAUSED)
    down = vm_on_host(sync_hosts, host=host, status=VMStatus.DOWN)
    assert testhosts.node_file(host) is None
    node = testhosts.node_xml(host)
    path.write_text(node)
    monitor.cycle()
    assert host_status(host) == HostStatus.UP
    assert [status_of(v) for v in (up, paused, down)] == [
        VMStatus.UP,
        VMStatus.PAUSED,
        VMStatus.DOWN,
    ]

    started = VirtualMachine.objects.get(pk=up.pk).started_at
    assert started is not None

    path.rename(tmp_path / "outside" / "gone")
    hypervisor.disconnect(host.uri)  # the link is lost
    monitor.cycle()
    host.refresh_from_db()
    assert host.status == HostStatus.NON_RESPONSIVE
    assert host.last_error
    assert [status_of(v) for v in (up, paused, down)] == [
        VMStatus.UNKNOWN,
        VMStatus.UNKNOWN,
        VMStatus.DOWN,
    ]
    host_event = Event.objects.get(host=host, action="host_status")
    assert (host_event.severity, host_event.message) == (
        Severity.ERROR,
        f"Host {host.name} is Non Responsive.",
    )
    assert host_event.error == host.last_error
    assert Event.objects.get(vm=up, phase=Phase.DETECTED).severity == Severity.WARNING
    assert host.pk not in monitor.watched

    monitor.cycle()  # still unreachable: nothing new recorded
    assert Event.objects.filter(host=host, action="host_status").count() == 1
    with pytest.raises(ActionRefused, match="Non Responsive"):
        services.vm_run(vm_id=down.pk, user=None)

    path.write_text(node)  # the host answers again, its VMs as they really are
    monitor.cycle()
    host.refresh_from_db()
    assert (host.status, host.last_error) == (HostStatus.UP, "")
    assert [status_of(v) for v in (up, paused, down)] == [
        VMStatus.UP,
        VMStatus.PAUSED,
        VMStatus.DOWN,
    ]
    # The guest kept running through the outage: its uptime goes on from where it was.
    assert VirtualMachine.objects.get(pk=up.pk).started_at == started
    assert Event.objects.filter(host=host, action="host_status").latest("id").message == (
        f"Host {host.name} is Up."
    )
    assert host.pk in monitor.watched


def test_poll_records_host_facts_and_storage(monitor, sync_hosts):
    vm = vm_on_host(sync_hosts)
    storage = vm.disks.get().storage_domain
    type(storage).objects.filter(pk=storage.pk).update(
        total_bytes=0, free_bytes=0, status=StorageDomainStatus.UNKNOWN
    )
    Host.objects.filter(pk=vm.host_id).update(status=HostStatus.CONNECTING)
    monitor.cycle()
    host = Host.objects.get(pk=vm.host_id)
    assert (host.status, host.cpus, host.memory_mb, host.cpu_model) == (
        HostStatus.UP,
        16,
        64 * 1024,
        "Vireo Test CPU",
    )
    assert host.last_seen is not None
    storage.refresh_from_db()
    pool = hypervisor.connect(host.uri).get_pool(storage.pool_name)
    assert storage.status == StorageDomainStatus.ACTIVE
    assert (storage.total_bytes, storage.used_bytes, storage.free_bytes) == (
        pool.capacity,
        pool.allocation,
        pool.available,
    )
    assert storage.total_bytes > 0


def test_hosts_in_maintenance_are_not_polled(monitor, sync_hosts):
    vm = vm_on_host(sync_hosts)
    Host.objects.filter(pk=vm.host_id).update(status=HostStatus.MAINTENANCE)
    hypervisor.connect(vm.host.uri).pause(str(vm.uuid))
    monitor.cycle()
    assert status_of(vm) == VMStatus.UP
    assert host_status(vm.host) == HostStatus.MAINTENANCE


# -- a host that never answers ---------------------------------------------------------------


def test_a_silent_host_goes_non_responsive_after_the_connect_timeout(monitor, silent_host):
    host = HostFactory(uri=silent_host.uri, status=HostStatus.CONNECTING)
    monitor.connect_timeout = 0.5
    started = time.monotonic()
    monitor.cycle()
    assert time.monotonic() - started < 3
    host.refresh_from_db()
    assert host.status == HostStatus.NON_RESPONSIVE
    assert host.last_error == "The host did not answer within 0.5 seconds."
    monitor.cycle()  # the first attempt still hangs: no second connection is opened
    assert len(silent_host.accepted) == 1


@pytest.mark.django_db(transaction=True)
def test_a_silent_host_holds_up_neither_other_hosts_nor_the_job_reconcile(sync_hosts, silent_host):
    from factories import SuperUserFactory

    silent = HostFactory(uri=silent_host.uri, status=HostStatus.CONNECTING)
    vm = vm_on_host(sync_hosts)
    good = vm.host
    job = services.vm_shutdown(vm_id=vm.pk, user=SuperUserFactory())
    age(job, status=JobStatus.RUNNING, heartbeat_at=timezone.now() - OLD)  # its worker died
    # A connect timeout far beyond this test: only a monitor that does not wait can pass.
    monitor = Monitor(poll_seconds=0.2, stale_seconds=30, connect_timeout=60)

    def run():
        try:
            monitor.run()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while Job.objects.get(pk=job.pk).status != JobStatus.FAILED:
            assert time.monotonic() < deadline, "the dead job was not reconciled"
            time.sleep(0.05)
        # The failure is claimed first, then its on_fail hook settles the VM to what its host
        # says: the VM follows a moment after the job.
        while status_of(vm) != VMStatus.UP:
            assert time.monotonic() < deadline, "the VM was not settled"
            time.sleep(0.05)
        seen = Host.objects.get(pk=good.pk).last_seen
        while Host.objects.get(pk=good.pk).last_seen == seen:  # polled again and again
            assert time.monotonic() < deadline, "the other host was not polled again"
            time.sleep(0.05)
        hypervisor.connect(good.uri).pause(str(vm.uuid))
        while status_of(vm) != VMStatus.PAUSED:
            assert time.monotonic() < deadline, "the other host's change was not picked up"
            time.sleep(0.05)
        assert host_status(silent) == HostStatus.CONNECTING  # its first attempt still waits
        assert len(silent_host.accepted) == 1  # and no poll piled up behind it
    finally:
        monitor.stop.set()
        thread.join(5)
    assert not thread.is_alive(), "the monitor did not stop"


def test_a_report_older_than_the_vms_last_change_moves_nothing(make_vm, sync_hosts):
    """vm_apply with a host's answer from before the VM last changed (a job or an event moved
    it meanwhile): the VM keeps its newer status, and nothing else is written."""
    from vms.monitor import vm_apply

    host = HostFactory(status=HostStatus.PREPARING_FOR_MAINTENANCE)
    sync_hosts(host)
    vm = make_vm(status=VMStatus.UP, disks=0, host=host)
    asked = timezone.now() - timedelta(seconds=5)
    VirtualMachine.objects.filter(pk=vm.pk).update(status_changed_at=timezone.now())
    vm.refresh_from_db()
    assert vm_apply(vm, VMStatus.DOWN, host, set(), seen_at=asked) is False
    assert status_of(vm) == VMStatus.UP
    assert host_status(host) == HostStatus.PREPARING_FOR_MAINTENANCE
