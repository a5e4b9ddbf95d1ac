"""Long work on RQ: creating Job rows, enqueueing them after commit, running them by id.

A service calls `job_create` inside its transaction; the job is enqueued when that
transaction commits. A worker runs `execute(job_id)`, which looks up the handler registered
for the job's kind, reports progress through `job_progress`, and always ends the Job. While a
job runs a heartbeat thread stamps it, so the monitor can tell a job whose worker died.
"""

import logging
import threading
from collections.abc import Callable

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .db import db_tidy
from .errors import ActionRefused
from .live import broadcast, send_now
from .models import Job, JobStatus

log = logging.getLogger(__name__)

HANDLERS: dict[str, Callable[[Job], None]] = {}
# kind -> function(job, message) that puts things back when a job of that kind fails or dies.
ON_FAIL: dict[str, Callable[[Job, str], None]] = {}
HEARTBEAT_SECONDS = 2.0


def job_handler(kind: str, *, on_fail: Callable[[Job, str], None] | None = None):
    """Register the function that carries out jobs of `kind` (it receives the Job row), and
    the one that puts things back when such a job fails or its worker dies."""

    def register(func):
        HANDLERS[kind] = func
        if on_fail:
            ON_FAIL[kind] = on_fail
        return func

    return register


def get_queue():
    return django_rq.get_queue("default")


def queue_ensure_available() -> None:
    """Refuse an action up front when the task queue (Redis) cannot be reached."""
    try:
        get_queue().connection.ping()
    except Exception as exc:
        raise ActionRefused(
            f"The task queue is unreachable ({exc.__class__.__name__}); nothing was changed. "
            "Try again when Redis is back."
        ) from exc


def job_topics(job: Job) -> list[str]:
    topics = [f"job.{job.pk}", "jobs"]
    topics.extend(f"vm.{pk}" for pk in (job.vm_id, job.result_vm_id) if pk)
    return topics


def job_create(
    *,
    kind: str,
    description: str,
    vm=None,
    result_vm=None,
    user=None,
    params: dict | None = None,
    on_enqueue_failure: Callable[[Job], None] | None = None,
) -> Job:
    """Create a queued Job and enqueue it when the surrounding transaction commits.

    If the queue refuses it then, the job is failed and `on_enqueue_failure` undoes what the
    service did (for instance puts the VM back in its status)."""
    if kind not in HANDLERS:
        raise ValueError(f"no handler for job kind {kind!r}")
    job = Job.objects.create(
        kind=kind,
        description=description,
        vm=vm,
        result_vm=result_vm,
        user=user if user is not None and user.is_authenticated else None,
        params=params or {},
    )

    def enqueue():
        try:
            rq_job = get_queue().enqueue(
                execute, job.pk, job_timeout=settings.RQ_QUEUES["default"]["DEFAULT_TIMEOUT"]
            )
        except Exception as exc:
            log.error("could not enqueue job %s: %s", job.pk, exc)
            job_finish(job.pk, error=f"The task queue refused the job: {exc}")
            if on_enqueue_failure:
                on_enqueue_failure(Job.objects.get(pk=job.pk))
            return
        Job.objects.filter(pk=job.pk).update(rq_id=rq_job.id)

    transaction.on_commit(enqueue)
    broadcast(*job_topics(job))
    return job


def job_progress(job: Job, percent: int, step: str = "") -> None:
    """Report progress of a running job and push it to open pages at once."""
    job.progress = max(0, min(100, int(percent)))
    job.step = step[:500]
    Job.objects.filter(pk=job.pk).update(
        progress=job.progress, step=job.step, heartbeat_at=timezone.now()
    )
    send_now(*job_topics(job))


def job_finish(job_id: int, *, error: str = "", job: Job | None = None) -> None:
    """End a job: succeeded, or failed with the message (the hypervisor's own text).

    A handler that ends its job inside its own last transaction passes the Job row it holds
    (its topics are then not read again, and `execute` sees the job ended); the live update
    leaves after that transaction commits."""
    status = JobStatus.FAILED if error else JobStatus.SUCCEEDED
    updates = {"status": status, "ended_at": timezone.now(), "error": error}
    if not error:
        updates["progress"] = 100
    ended = Job.objects.filter(pk=job_id, status__in=Job.ACTIVE).update(**updates)
    if job is None:
        job = Job.objects.get(pk=job_id)
    elif ended:
        for field, value in updates.items():
            setattr(job, field, value)
    broadcast(*job_topics(job))


def job_fail(job: Job, message: str) -> bool:
    """Fail a job that is still unfinished, then let its kind's on_fail hook put the objects back.

    The failure is claimed by a conditional update that finds the job queued or running: only
    that claimant runs the hook. A job that ended meanwhile (its worker finished it, another
    reconcile failed it) is left as it is, and so is everything it made. True if claimed."""
    claimed = Job.objects.filter(pk=job.pk, status__in=Job.ACTIVE).update(
        status=JobStatus.FAILED, ended_at=timezone.now(), error=message
    )
    if not claimed:
        return False
    job.status, job.error = JobStatus.FAILED, message
    undo = ON_FAIL.get(job.kind)
    if undo is not None:
        try:
            undo(job, message)
        except Exception:
            log.exception("putting back after job %s failed did not work", job.pk)
    send_now(*job_topics(job))
    return True


def _heartbeat(job_id: int, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            Job.objects.filter(pk=job_id, status=JobStatus.RUNNING).update(
                heartbeat_at=timezone.now()
            )
        except Exception as exc:
            log.warning("heartbeat for job %s failed: %s", job_id, exc)
        finally:
            db_tidy()


def execute(job_id: int) -> None:
    """RQ entry point: carry out the Job with this id and always end it."""
    db_tidy()
    claimed = Job.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    if not claimed:
        log.warning("job %s is not queued any more; skipped", job_id)
        return
    # The VM with its host and cluster: what VM handlers need (vms.jobs._load), in one query.
    job = Job.objects.select_related("vm__host", "vm__cluster", "user").get(pk=job_id)
    send_now(*job_topics(job))
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(job_id, stop), daemon=True)
    beat.start()
    try:
        HANDLERS[job.kind](job)
    except Exception as exc:
        log.warning(
            "job %s (%s) failed: %s",
            job_id,
            job.kind,
            exc,
            exc_info=not isinstance(exc, ActionRefused),
        )
        job_fail(job, str(exc) or exc.__class__.__name__)
    else:
        if job.status in Job.ACTIVE:  # not ended by the handler's own last transaction
            job_finish(job_id)
    finally:
        stop.set()
        db_tidy()
