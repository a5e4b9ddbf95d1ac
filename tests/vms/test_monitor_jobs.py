"""The monitor and jobs left behind: stale jobs reconciled, and a worker that dies between
taking a job and claiming it. (Split out of test_monitor.py.)"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connections, transaction
from django.utils import timezone
from monitor_support import OLD, age, status_of, vm_on_host
from rq.job import Job as RQJob
from rq.utils import utcformat

from portal.kernel import tasks
from portal.kernel.models import Event, Job, JobStatus, Phase
from portal.kernel.tasks import get_queue
from portal.kernel.worker import ThreadWorker
from vms import services
from vms.choices import VMStatus
from vms.models import Host, VirtualMachine
from vms.monitor import QueueView, jobs_reconcile, vm_apply

pytestmark = pytest.mark.django_db


# -- jobs left behind ------------------------------------------------------------------------


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
