"""Vireo's RQ worker class (issue 7 item 20): production's `rqworker --worker-class
portal.kernel.worker.Worker` runs jobs without forking, and leaves out RQ's per-job Redis writes
that tell nobody anything new while keeping what the monitor's reconcile reads (job status,
registries, the worker's heartbeat)."""

import pytest
from django.core.management import call_command
from django.db import transaction
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus

from portal.kernel import tasks
from portal.kernel.models import Job, JobStatus
from portal.kernel.worker import Worker

KIND = "worker_probe"


@pytest.fixture
def probe(monkeypatch):
    behaviour = {"run": lambda job: "done"}
    monkeypatch.setitem(
        tasks.JOB_TYPES,
        KIND,
        tasks.JobType(
            kind=KIND,
            handler=lambda job: behaviour["run"](job),
            action="probe",
            failed=lambda job, vm: "",
        ),
    )
    return behaviour


def queued(count: int = 1) -> list[Job]:
    jobs = []
    for n in range(count):
        with transaction.atomic():
            jobs.append(tasks.job_create(kind=KIND, description=f"probe {n}"))
    return [Job.objects.get(pk=j.pk) for j in jobs]


@pytest.mark.django_db(transaction=True)
def test_rqworker_runs_jobs_with_vireos_worker_class(probe):
    jobs = queued(2)
    call_command("rqworker", "default", "--burst", "--worker-class", "portal.kernel.worker.Worker")
    queue = tasks.get_queue()
    for job in jobs:
        job.refresh_from_db()
        assert job.status == JobStatus.SUCCEEDED
        rq_job = RQJob.fetch(job.rq_id, connection=queue.connection)
        assert rq_job.get_status() == RQStatus.FINISHED
        assert rq_job.ended_at is not None and rq_job.last_heartbeat is not None
        assert job.rq_id in queue.finished_job_registry.get_job_ids()


@pytest.mark.django_db(transaction=True)
def test_a_failed_job_is_failed_in_rq_too(probe):
    probe["run"] = lambda job: (_ for _ in ()).throw(RuntimeError("no"))
    (job,) = queued(1)
    queue = tasks.get_queue()
    worker = Worker([queue], connection=queue.connection)
    worker.work(burst=True, logging_level="WARNING")
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "no")
    # execute() ends the Job row itself: for RQ the function returned.
    assert RQJob.fetch(job.rq_id, connection=queue.connection).get_status() == RQStatus.FINISHED


def test_a_heartbeat_within_a_second_of_the_last_is_skipped(db):
    queue = tasks.get_queue()
    redis = queue.connection
    worker = Worker([queue], connection=redis, name="beat-probe")
    try:
        worker.heartbeat()
        first = redis.hget(worker.key, "last_heartbeat")
        assert first is not None and 0 < redis.ttl(worker.key) <= worker.worker_ttl + 60
        worker.heartbeat()  # under a second later, the same lifetime: nothing new to say
        assert redis.hget(worker.key, "last_heartbeat") == first
        worker.heartbeat(timeout=worker.worker_ttl + 600)  # a longer life is always sent
        assert redis.ttl(worker.key) > worker.worker_ttl + 60
        at, ttl = worker._beat_at
        worker._beat_at = (at - 2, ttl)  # as if two seconds had passed
        redis.hdel(worker.key, "last_heartbeat")
        worker.heartbeat()
        assert redis.hget(worker.key, "last_heartbeat") is not None
    finally:
        redis.delete(worker.key)
