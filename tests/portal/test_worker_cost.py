"""What a job costs a worker (issue 7 item 20): a worker thread keeps its database connection
from job to job and survives losing it; a shutdown job's end is one transaction whose live
update leaves, once, after the commit."""

import threading

import psycopg
import pytest
from django.db import connection, connections, transaction
from factories import UserFactory

import portal.kernel.live
from portal.kernel import tasks
from portal.kernel.db import db_keep_connections
from portal.kernel.models import Job, JobStatus
from portal.kernel.worker import ThreadWorker
from vms import services
from vms.choices import VMStatus
from vms.models import VirtualMachine

KIND = "cost_probe"


@pytest.fixture
def backend_pids(monkeypatch):
    """A job kind whose handler notes the PostgreSQL backend serving it."""
    pids: list[int] = []

    def handler(job):
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pids.append(cur.fetchone()[0])

    monkeypatch.setitem(
        tasks.JOB_TYPES,
        KIND,
        tasks.JobType(kind=KIND, handler=handler, action="probe", failed=lambda job, vm: ""),
    )
    return pids


def queued_jobs(count: int) -> list[int]:
    ids = []
    for n in range(count):
        with transaction.atomic():
            ids.append(tasks.job_create(kind=KIND, description=f"probe {n}").pk)
    return ids


def in_thread(target) -> None:
    def run():
        try:
            target()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()


def terminate_backend(pid: int) -> None:
    """What a database restart does to a connection, done to one backend only."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.django_db(transaction=True)
def test_a_thread_worker_serves_its_jobs_on_one_connection(backend_pids):
    ids = queued_jobs(3)
    queue = tasks.get_queue()
    worker = ThreadWorker([queue], connection=queue.connection)
    in_thread(lambda: worker.work(burst=True, logging_level="WARNING"))
    assert len(backend_pids) == 3 and len(set(backend_pids)) == 1
    assert set(Job.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        JobStatus.SUCCEEDED
    }


@pytest.mark.django_db(transaction=True)
def test_a_kept_connection_that_died_is_replaced_before_the_next_job(backend_pids):
    first, second, third = queued_jobs(3)

    def work():
        db_keep_connections()
        tasks.execute(first)
        terminate_backend(backend_pids[0])  # the database restarted between two jobs
        tasks.execute(second)
        tasks.execute(third)

    in_thread(work)
    assert backend_pids[0] != backend_pids[1] == backend_pids[2]
    statuses = Job.objects.filter(pk__in=[first, second, third]).values_list("status", flat=True)
    assert set(statuses) == {JobStatus.SUCCEEDED}


@pytest.mark.django_db(transaction=True)
def test_a_shutdown_ends_in_one_live_update_sent_after_its_commit(make_vm, work_off, monkeypatch):
    vm = make_vm(VMStatus.UP)
    job = services.vm_shutdown(vm_id=vm.pk, user=UserFactory(is_superuser=True))
    published: list[tuple[set[str], tuple]] = []
    real = portal.kernel.live.publisher.group_send

    def committed_state() -> tuple:
        """The VM's and the Job's status as another connection reads them."""
        seen = []

        def read():
            seen.append(
                (
                    VirtualMachine.objects.get(pk=vm.pk).status,
                    Job.objects.get(pk=job.pk).status,
                )
            )

        in_thread(read)
        return seen[0]

    def watch(messages):
        published.append(({group for group, _ in messages}, committed_state()))
        real(messages)

    monkeypatch.setattr(portal.kernel.live.publisher, "group_send", watch)
    work_off()
    ends = [(groups, state) for groups, state in published if state[1] == JobStatus.SUCCEEDED]
    # The claim with the Started Event and the first step, then the end: two publishes, not
    # one per write.
    assert len(published) == 2
    assert len(ends) == 1
    groups, state = ends[0]
    assert state == (VMStatus.DOWN, JobStatus.SUCCEEDED)
    assert {f"live.vm.{vm.pk}", f"live.job.{job.pk}", "live.jobs", "live.events"} <= groups
