"""The monitor against test-driver hosts: changes made outside the portal (picked up by a poll
and by a lifecycle event), hosts that stop answering and come back, and jobs left behind."""

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections, transaction
from django.utils import timezone
from factories import DiskFactory, HostFactory, StorageDomainFactory, VMFactory
from helpers import GiB
from rq.job import Job as RQJob
from rq.utils import utcformat

import hypervisor
from portal import tasks
from portal.errors import ActionRefused
from portal.models import Event, Job, JobStatus, Phase, Severity
from portal.tasks import get_queue
from portal.worker import ThreadWorker
from storage.choices import StorageDomainStatus
from vms import services, testhosts
from vms.choices import HostStatus, VMStatus
from vms.models import Host, VirtualMachine
from vms.monitor import Monitor, QueueView, jobs_reconcile, vm_apply

OLD = timedelta(hours=1)

pytestmark = pytest.mark.django_db


class InlineExecutor:
    """Polls hosts in the calling thread, so they see the test's transaction."""

    def submit(self, fn, *args):
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


@pytest.fixture
def monitor():
    """A Monitor whose cycle() polls hosts inline (the threaded test uses a real one)."""
    m = Monitor(poll_seconds=60, stale_seconds=30)
    m.pool.shutdown()
    m.pool = InlineExecutor()
    yield m
    m.stop.set()


def vm_on_host(sync_hosts, status=VMStatus.UP, host=None, **fields) -> VirtualMachine:
    vm = VMFactory(status=status, **({"host": host} if host else {}), **fields)
    DiskFactory(vm=vm)
    sync_hosts(vm.host)
    return vm


def status_of(vm) -> str:
    return VirtualMachine.objects.values_list("status", flat=True).get(pk=vm.pk)


def host_status(host) -> str:
    return Host.objects.values_list("status", flat=True).get(pk=host.pk)


def detected(vm) -> list[str]:
    return list(
        Event.objects.filter(vm=vm, phase=Phase.DETECTED)
        .order_by("id")
        .values_list("message", flat=True)
    )


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


# -- jobs left behind ------------------------------------------------------------------------


def age(job: Job, **fields) -> None:
    """Make a job (and its VM's busy status) look old."""
    then = timezone.now() - OLD
    Job.objects.filter(pk=job.pk).update(created_at=then, **fields)
    VirtualMachine.objects.filter(pk=job.vm_id).update(status_changed_at=then)


def test_running_job_whose_worker_died_is_failed(admin, sync_hosts):
    vm = vm_on_host(sync_hosts)
    job = services.vm_shutdown(vm_id=vm.pk, user=admin)
    age(job, status=JobStatus.RUNNING, heartbeat_at=timezone.now() - OLD)
    assert status_of(vm) == VMStatus.POWERING_DOWN
    assert jobs_reconcile(30) == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error == "The worker carrying out this job stopped before it ended."
    assert job.ended_at is not None
    assert status_of(vm) == VMStatus.UP  # the host still runs it
    failed = Event.objects.get(job=job, phase=Phase.FAILED)
    assert failed.error == job.error
    assert jobs_reconcile(30) == 0


def test_running_job_with_a_fresh_heartbeat_is_left_alone(admin, sync_hosts):
    vm = vm_on_host(sync_hosts)
    job = services.vm_shutdown(vm_id=vm.pk, user=admin)
    age(job, status=JobStatus.RUNNING, heartbeat_at=timezone.now())
    assert jobs_reconcile(30) == 0
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING
    assert status_of(vm) == VMStatus.POWERING_DOWN


def test_queued_job_lost_by_the_queue_is_failed(admin, sync_hosts):
    vm = vm_on_host(sync_hosts, status=VMStatus.DOWN)
    job = services.vm_run(vm_id=vm.pk, user=admin)  # never enqueued: no on-commit here
    age(job)
    assert job.rq_id == ""
    assert jobs_reconcile(30) == 1
    job.refresh_from_db()
    assert (job.status, job.error) == (
        JobStatus.FAILED,
        "The task queue lost this job before a worker took it.",
    )
    assert status_of(vm) == VMStatus.DOWN


def test_queued_job_still_in_the_queue_is_kept(
    admin, sync_hosts, django_capture_on_commit_callbacks
):
    vm = vm_on_host(sync_hosts, status=VMStatus.DOWN)
    with django_capture_on_commit_callbacks(execute=True):
        job = services.vm_run(vm_id=vm.pk, user=admin)
    job.refresh_from_db()
    assert job.rq_id and QueueView(30).lost([job.rq_id]) == {}
    age(job)
    assert jobs_reconcile(30) == 0
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert status_of(vm) == VMStatus.POWERING_UP


def test_recent_queued_job_is_not_failed_yet(admin, sync_hosts):
    vm = vm_on_host(sync_hosts, status=VMStatus.DOWN)
    job = services.vm_run(vm_id=vm.pk, user=admin)
    assert jobs_reconcile(30) == 0
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


@pytest.mark.parametrize(
    ("busy", "on_host", "settled"),
    [
        (VMStatus.POWERING_UP, VMStatus.UP, VMStatus.UP),
        (VMStatus.SAVING_STATE, VMStatus.SUSPENDED, VMStatus.SUSPENDED),
        (VMStatus.IMAGE_LOCKED, VMStatus.DOWN, VMStatus.DOWN),
        (VMStatus.RESTORING_STATE, VMStatus.PAUSED, VMStatus.PAUSED),
    ],
)
def test_busy_vm_without_a_job_is_settled(sync_hosts, busy, on_host, settled):
    vm = vm_on_host(sync_hosts, status=on_host)  # the host holds it as on_host
    VirtualMachine.objects.filter(pk=vm.pk).update(
        status=busy, status_changed_at=timezone.now() - OLD
    )
    jobs_reconcile(30)
    assert status_of(vm) == settled


def test_busy_vm_without_a_job_gets_a_grace_period(sync_hosts):
    vm = vm_on_host(sync_hosts, status=VMStatus.UP)
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.POWERING_DOWN)
    jobs_reconcile(30)
    assert status_of(vm) == VMStatus.POWERING_DOWN


def test_monitor_does_not_override_a_busy_vm_with_an_active_job(admin, monitor, sync_hosts):
    vm = vm_on_host(sync_hosts)
    job = services.vm_shutdown(vm_id=vm.pk, user=admin)
    age(job, status=JobStatus.RUNNING, heartbeat_at=timezone.now())
    monitor.cycle()  # the host says running; the job is still working on it
    assert status_of(vm) == VMStatus.POWERING_DOWN
    vm.refresh_from_db()
    host = vm.host
    assert vm_apply(vm, VMStatus.UP, host) is False
    assert status_of(vm) == VMStatus.POWERING_DOWN
    assert not Event.objects.filter(vm=vm, phase=Phase.DETECTED).exists()
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
    assert vm_apply(vm, VMStatus.UP, host) is True  # no active job: the host is believed
    assert status_of(vm) == VMStatus.UP


def test_clone_in_progress_keeps_both_vms_image_locked(admin, monitor, sync_hosts):
    source = vm_on_host(sync_hosts, status=VMStatus.DOWN)
    clone = services.vm_clone(vm_id=source.pk, user=admin, clone_name="copy")
    job = Job.objects.get(kind="vm_clone")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, heartbeat_at=timezone.now())
    monitor.cycle()
    assert status_of(source) == VMStatus.IMAGE_LOCKED
    assert status_of(clone) == VMStatus.IMAGE_LOCKED


def test_dead_clone_job_is_cleaned_up(admin, sync_hosts):
    source = vm_on_host(sync_hosts, status=VMStatus.DOWN)
    clone = services.vm_clone(vm_id=source.pk, user=admin, clone_name="copy")
    job = Job.objects.get(kind="vm_clone")
    age(job, status=JobStatus.RUNNING, heartbeat_at=timezone.now() - OLD)
    assert jobs_reconcile(30) == 1
    assert not VirtualMachine.objects.filter(pk=clone.pk).exists()
    assert status_of(source) == VMStatus.DOWN


def test_settle_reads_unknown_when_the_host_cannot_be_asked(sync_hosts, tmp_path):
    vm = vm_on_host(sync_hosts)
    Host.objects.filter(pk=vm.host_id).update(uri=f"test://{Path(tmp_path) / 'nowhere.xml'}")
    VirtualMachine.objects.filter(pk=vm.pk).update(
        status=VMStatus.REBOOT_IN_PROGRESS, status_changed_at=timezone.now() - OLD
    )
    jobs_reconcile(30)
    assert status_of(vm) == VMStatus.UNKNOWN


# -- the reconcile racing the workers ---------------------------------------------------------


def run_worker_in_thread(max_jobs: int | None = None) -> threading.Thread:
    """A real RQ worker (burst) in a thread of this process, so it shares the test hosts."""
    queue = get_queue()
    worker = ThreadWorker([queue], connection=queue.connection)

    def work():
        try:
            worker.work(burst=True, max_jobs=max_jobs, logging_level="WARNING")
        finally:
            connections.close_all()

    thread = threading.Thread(target=work, daemon=True, name="test-rq-worker")
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_reconcile_during_a_backlog_never_fails_a_job_that_a_worker_finished(
    sync_hosts, probe_kind
):
    """New VM jobs at the head of a long backlog, all queued longer than the stale limit, worked
    off by a real RQ worker while the monitor reconciles over and over: every VM made stays,
    with its disk and its domain, and no job is failed."""
    from factories import SuperUserFactory

    admin = SuperUserFactory()
    host = HostFactory()
    domain = StorageDomainFactory(data_center=host.cluster.data_center)
    sync_hosts(host)
    vms = [
        services.vm_create(
            user=admin,
            name=f"backlog{n:02d}",
            cluster_id=host.cluster_id,
            memory_mb=512,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=domain.pk,
        )
        for n in range(12)
    ]
    # Behind them, a backlog of other work (queued in RQ too), as after a bulk request.
    then = timezone.now() - OLD
    backlog = Job.objects.bulk_create(
        Job(kind="probe", description="backlog", created_at=then + timedelta(minutes=1))
        for _ in range(600)
    )
    queue = get_queue()
    rq_jobs = queue.enqueue_many([queue.prepare_data(tasks.execute, (j.pk,)) for j in backlog])
    for job, rq_job in zip(backlog, rq_jobs, strict=True):
        job.rq_id = rq_job.id
    Job.objects.bulk_update(backlog, ["rq_id"])
    creates = Job.objects.filter(kind="vm_create").order_by("id")
    for n, job in enumerate(creates):  # queued an hour ago, in this order
        Job.objects.filter(pk=job.pk).update(created_at=then + timedelta(seconds=n))

    worker = run_worker_in_thread(max_jobs=len(vms))
    rounds = 0
    while worker.is_alive():
        jobs_reconcile(30)
        rounds += 1
    jobs_reconcile(30)
    assert rounds >= 1  # at least one reconcile overlapped the worker

    assert set(creates.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}
    assert not Job.objects.filter(status=JobStatus.FAILED).exists()
    assert not Event.objects.filter(phase=Phase.FAILED).exists()
    conn = hypervisor.connect(host.uri)
    for vm in vms:
        assert status_of(vm) == VMStatus.DOWN
        disk = vm.disks.get()
        assert conn.get_volume(domain.pool_name, disk.volume_name).capacity == GiB
        assert conn.get_domain(str(vm.uuid)).name == vm.name


@pytest.fixture
def probe_kind(monkeypatch):
    """A job kind whose handler and on_fail hook only record that they ran."""
    calls: dict[str, list] = {"run": [], "fail": []}
    monkeypatch.setitem(tasks.HANDLERS, "probe", lambda job: calls["run"].append(job.pk))
    monkeypatch.setitem(
        tasks.ON_FAIL, "probe", lambda job, message: calls["fail"].append((job.pk, message))
    )
    return calls


def test_job_fail_after_the_worker_finished_changes_nothing(probe_kind):
    job = tasks.job_create(kind="probe", description="probe")
    as_listed = Job.objects.get(pk=job.pk)  # what a reconcile read while it was queued
    tasks.execute(job.pk)  # the worker takes it and finishes it meanwhile
    assert tasks.job_fail(as_listed, "lost") is False
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.SUCCEEDED, "")
    assert probe_kind == {"run": [job.pk], "fail": []}


def test_job_fail_first_wins_and_the_worker_does_not_run_it(probe_kind):
    job = tasks.job_create(kind="probe", description="probe")
    assert tasks.job_fail(Job.objects.get(pk=job.pk), "lost") is True
    tasks.execute(job.pk)  # the queue delivers it after all: it is ended already
    tasks.job_finish(job.pk)  # and a late success report changes nothing
    assert tasks.job_fail(Job.objects.get(pk=job.pk), "lost again") is False
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "lost")
    assert probe_kind == {"run": [], "fail": [(job.pk, "lost")]}


@pytest.mark.django_db(transaction=True)
def test_job_fail_racing_job_finish_has_one_outcome(probe_kind):
    """job_finish and job_fail at the same moment from two threads: one wins, and the hook runs
    only when the failure won."""
    outcomes = []
    for _ in range(20):
        job = tasks.job_create(kind="probe", description="probe")
        Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
        row = Job.objects.get(pk=job.pk)
        start = threading.Barrier(2)
        claimed = []

        def finish(job_id=job.pk, start=start):
            start.wait()
            tasks.job_finish(job_id)
            connections.close_all()

        def fail(row=row, start=start, claimed=claimed):
            start.wait()
            claimed.append(tasks.job_fail(row, "stopped"))
            connections.close_all()

        threads = [threading.Thread(target=finish), threading.Thread(target=fail)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        job.refresh_from_db()
        hooked = [pk for pk, _ in probe_kind["fail"] if pk == job.pk]
        if job.status == JobStatus.FAILED:
            assert claimed == [True] and hooked == [job.pk] and job.error == "stopped"
        else:
            assert job.status == JobStatus.SUCCEEDED
            assert claimed == [False] and hooked == [] and job.error == ""
        outcomes.append(job.status)
    assert set(outcomes) <= {JobStatus.FAILED, JobStatus.SUCCEEDED}


# -- a poll's snapshot is older than what happened meanwhile ---------------------------------


def slow_listing(monkeypatch, meanwhile):
    """The host takes its time to list its domains: `meanwhile()` runs after the host answered
    and before the poll gets the (by then old) list."""
    real = hypervisor.Connection.list_domains

    def list_domains(conn):
        domains = real(conn)
        meanwhile()
        return domains

    monkeypatch.setattr(hypervisor.Connection, "list_domains", list_domains)


@pytest.mark.parametrize(
    ("before", "action", "after"),
    [
        (VMStatus.UP, services.vm_poweroff, VMStatus.DOWN),  # not "Up (was Down)"
        (VMStatus.PAUSED, services.vm_run, VMStatus.UP),  # a Resume, not shown as Paused
        (VMStatus.DOWN, services.vm_run, VMStatus.UP),
    ],
)
def test_a_poll_never_applies_a_listing_older_than_the_vms_status(
    admin, monitor, sync_hosts, work, monkeypatch, before, action, after
):
    vm = vm_on_host(sync_hosts, status=before)
    monitor.cycle()  # connected; the host agrees with the inventory
    assert status_of(vm) == before
    slow_listing(monkeypatch, lambda: work(lambda: action(vm_id=vm.pk, user=admin)))
    monitor.cycle()
    assert Job.objects.get().status == JobStatus.SUCCEEDED
    assert status_of(vm) == after
    assert detected(vm) == []
    monkeypatch.undo()
    monitor.cycle()  # the next poll, with a listing as of now, agrees
    assert status_of(vm) == after
    assert detected(vm) == []


def test_a_lifecycle_event_read_before_a_job_moved_the_vm_is_not_applied(
    admin, monitor, sync_hosts, work, monkeypatch
):
    vm = vm_on_host(sync_hosts)
    monitor.cycle()
    real = hypervisor.Connection.get_domain

    def get_domain(conn, uuid):
        info = real(conn, uuid)  # says running
        work(lambda: services.vm_poweroff(vm_id=vm.pk, user=admin))
        return info

    monkeypatch.setattr(hypervisor.Connection, "get_domain", get_domain)
    monitor.handle_event(vm.host_id, str(vm.uuid))
    assert status_of(vm) == VMStatus.DOWN
    assert detected(vm) == []


def test_a_poll_still_applies_changes_older_than_its_listing(monitor, sync_hosts):
    vm = vm_on_host(sync_hosts)
    monitor.cycle()
    hypervisor.connect(vm.host.uri).pause(str(vm.uuid))  # made outside the portal, then polled
    monitor.cycle()
    assert status_of(vm) == VMStatus.PAUSED


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
        assert status_of(vm) == VMStatus.UP  # settled to what its host says
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


# -- a worker that dies between taking a job and claiming it ---------------------------------


def worker_process(settings, log: Path) -> subprocess.Popen:
    """`manage.py rqworker` (RQ's forking worker) on this test's database and Redis, in a
    process group of its own so that it can be killed with its work horse."""
    db = connections["default"].settings_dict
    env = dict(os.environ)
    env["DATABASE_URL"] = (
        f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    )
    env["REDIS_URL"] = settings.RQ_QUEUES["default"]["URL"]
    return subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "default", "--burst"],
        cwd=settings.BASE_DIR,
        env=env,
        start_new_session=True,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def children_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def waiting_on_a_lock() -> list[int]:
    """The other sessions of this database that wait for a lock."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else fixed for the transaction
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        return [pid for (pid,) in cursor.fetchall()]


@pytest.mark.skipif(connections["default"].vendor != "postgresql", reason="needs PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_between_taking_a_job_and_claiming_it_strands_no_vm(
    admin, sync_hosts, settings, tmp_path
):
    vm = vm_on_host(sync_hosts, status=VMStatus.DOWN)
    job = services.vm_run(vm_id=vm.pk, user=admin)  # committed: in the queue
    job.refresh_from_db()
    rq_job = RQJob.fetch(job.rq_id, connection=get_queue().connection)
    proc = None
    try:
        with transaction.atomic():
            # The row is held: the worker's claim (UPDATE ... WHERE status = queued) waits.
            Job.objects.select_for_update().get(pk=job.pk)
            log = tmp_path / "worker.log"
            proc = worker_process(settings, log)
            deadline = time.monotonic() + 30
            while not (rq_job.get_status(refresh=True) == "started" and waiting_on_a_lock()):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, (
                    f"the worker did not take the job: {log.read_text()}"
                )
                time.sleep(0.05)
            # The worker and its work horse (in a session of its own) die.
            horses = [int(pid) for pid in children_of(proc.pid)]
            assert horses, "the worker has no work horse"
            for pid in horses:
                os.kill(pid, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            with connections["default"].cursor() as cursor:  # and so does their DB session
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", [waiting_on_a_lock()]
                )
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and status_of(vm) == VMStatus.POWERING_UP
    assert rq_job.get_status(refresh=True) == "started"  # RQ still holds it as started

    stale = 1.0
    killed = time.monotonic()
    while status_of(vm) == VMStatus.POWERING_UP:
        jobs_reconcile(stale)
        assert time.monotonic() - killed < stale + 5, "the VM stayed Powering Up"
        time.sleep(0.1)
    job.refresh_from_db()
    assert (job.status, job.error) == (
        JobStatus.FAILED,
        "The worker that took this job stopped before it began.",
    )
    assert status_of(vm) == VMStatus.DOWN
    assert Event.objects.filter(job=job, phase=Phase.FAILED).count() == 1


def test_a_job_a_live_worker_has_started_is_not_lost(admin, sync_hosts):
    vm = vm_on_host(sync_hosts, status=VMStatus.DOWN)
    job = services.vm_run(vm_id=vm.pk, user=admin)
    queue = get_queue()
    rq_job = queue.enqueue(tasks.execute, job.pk)
    Job.objects.filter(pk=job.pk).update(rq_id=rq_job.id)
    worker = ThreadWorker([queue], connection=queue.connection)
    worker.register_birth()
    try:
        worker.heartbeat()
        with queue.connection.pipeline() as pipeline:
            rq_job.prepare_for_execution(worker.name, pipeline=pipeline)
            pipeline.execute()
        assert QueueView(30).lost([rq_job.id]) == {}  # started by a worker that heartbeats
        worker.last_heartbeat = timezone.now() - OLD
        queue.connection.hset(worker.key, "last_heartbeat", utcformat(worker.last_heartbeat))
        assert QueueView(30).lost([rq_job.id]) == {
            rq_job.id: "The worker that took this job stopped before it began."
        }
    finally:
        worker.register_death()
