"""The monitor racing the workers: the reconcile against running jobs, and a poll whose
snapshot is older than what happened meanwhile. (Split out of test_monitor.py.)"""

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from factories import HostFactory, StorageDomainFactory
from helpers import GiB
from monitor_support import OLD, detected, status_of, vm_on_host
from rq.job import Job as RQJob

import hypervisor
from portal.kernel import tasks
from portal.kernel.models import Event, Job, JobStatus, Phase
from portal.kernel.tasks import get_queue
from portal.kernel.worker import ThreadWorker
from vms import services
from vms.choices import VMStatus
from vms.models import VirtualMachine
from vms.monitor import QueueView, jobs_reconcile

pytestmark = pytest.mark.django_db


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


@pytest.mark.parametrize("action", ["create", "remove"])
def test_a_job_a_worker_finishes_while_the_reconcile_asks_the_queue_is_not_failed(
    admin, sync_hosts, monkeypatch, django_capture_on_commit_callbacks, work_off, action
):
    """D1, made deterministic: the reconcile lists a New VM (or Remove) job still queued after
    the stale limit, and a worker carries it out before the reconcile asks RQ about it. RQ then
    says `finished`, which is no loss: the job keeps its success, the VM made keeps its disk
    and domain (a removed one stays removed), and no Failed Event is written."""
    host = HostFactory()
    domain = StorageDomainFactory(data_center=host.cluster.data_center)
    sync_hosts(host)
    with django_capture_on_commit_callbacks(execute=True):
        vm = services.vm_create(
            user=admin,
            name="kept",
            cluster_id=host.cluster_id,
            memory_mb=512,
            vcpus=1,
            disk_bytes=GiB,
            storage_domain_id=domain.pk,
        )
    if action == "remove":
        work_off()
        with django_capture_on_commit_callbacks(execute=True):
            services.vm_remove(vm_id=vm.pk, user=admin)
    job = Job.objects.get(kind=f"vm_{action}")
    assert job.status == JobStatus.QUEUED and job.rq_id
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - OLD)  # a long backlog

    real_lost = QueueView.lost
    asked, answers = [], []

    def lost(view, rq_ids):
        work_off()  # the worker ends the listed job before the queue is asked about it
        asked.extend(RQJob.fetch(i, connection=view.connection).get_status() for i in rq_ids)
        answers.append(real_lost(view, rq_ids))
        return answers[-1]

    monkeypatch.setattr(QueueView, "lost", lost)
    assert jobs_reconcile(30) == 0
    assert asked == ["finished"]  # the reconcile did ask about a job RQ had finished
    assert answers == [{}]  # and `finished` is never lost

    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.SUCCEEDED, "")
    assert not Event.objects.filter(phase=Phase.FAILED).exists()
    conn = hypervisor.connect(host.uri)
    if action == "create":
        assert status_of(vm) == VMStatus.DOWN
        disk = vm.disks.get()
        assert conn.get_volume(domain.pool_name, disk.volume_name).capacity == GiB
        assert conn.get_domain(str(vm.uuid)).name == vm.name
    else:
        assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
        assert conn.list_volumes(domain.pool_name) == []


@pytest.fixture
def probe_kind(monkeypatch):
    """A job kind whose handler and on_fail hook only record that they ran."""
    calls: dict[str, list] = {"run": [], "fail": []}
    monkeypatch.setitem(
        tasks.JOB_TYPES,
        "probe",
        tasks.JobType(
            kind="probe",
            handler=lambda job: calls["run"].append(job.pk),
            action="probe",
            failed=lambda job, vm: "",
            on_fail=lambda job, message: calls["fail"].append((job.pk, message)),
        ),
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
