"""Long work on RQ: creating Job rows, enqueueing them after commit, running them by id.

A service calls `job_create` inside its transaction; the job is enqueued when that
transaction commits. A worker runs `execute(job_id)`, the job frame: it claims the Job,
records the Started Event, runs the handler registered for the job's kind (which reports
progress through `job_progress` and returns its Succeeded message), and always ends the Job:
Succeeded with that message, or Failed with the hypervisor's text after the kind's `on_fail`.
Handlers hold only their own steps; the Events of a job are written here, once. While a job
runs a heartbeat thread stamps it, so the monitor can tell a job whose worker died.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import django_rq
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from .audit import event_record
from .db import db_tidy
from .errors import ActionRefused
from .live import broadcast, coalesced, send_now
from .models import Job, JobKind, JobStatus, Phase

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0


@dataclass(frozen=True)
class Outcome:
    """What a handler hands back to the frame when its steps succeeded: the Succeeded Event's
    message and reason, the Event's own fields when they are not the job's VM (a clone, a
    disk), and its last writes, which the frame commits in one transaction with that Event
    and the Job's end (so a VM never shows its new status with its job still running)."""

    message: str
    reason: str = ""
    last_writes: Callable[[], None] | None = None
    event: dict = field(default_factory=dict)


@dataclass(frozen=True)
class JobType:
    """How the frame runs a job kind: its handler, the Events' action (and object type), the
    Started Event's message (None: the kind records no Started Event), the Failed Event's
    message from the job and its VM as it was before `on_fail`, the hook that puts things
    back when such a job fails or dies, and the progress shown as soon as it starts."""

    kind: str
    handler: Callable[[Job], "Outcome | str"]
    action: str
    failed: Callable[[Job, object], str]
    started: Callable[[Job], str | None] | None = None
    on_fail: Callable[[Job, str], None] | None = None
    object_type: str = "vm"
    first_step: tuple[int, str] | None = None


JOB_TYPES: dict[str, JobType] = {}


def job_handler(
    kind: str,
    *,
    action: str,
    failed: Callable[[Job, object], str],
    started: Callable[[Job], str | None] | None = None,
    on_fail: Callable[[Job, str], None] | None = None,
    object_type: str = "vm",
    first_step: tuple[int, str] | None = None,
):
    """Register the function that carries out jobs of `kind` (it receives the Job row, with
    its VM, the VM's host and cluster read, and returns its Outcome or Succeeded message), with
    what the frame needs to write the job's Events (see JobType)."""
    kind = JobKind(kind)

    def register(func):
        JOB_TYPES[kind] = JobType(
            kind=kind,
            handler=func,
            action=action,
            failed=failed,
            started=started,
            on_fail=on_fail,
            object_type=object_type,
            first_step=first_step,
        )
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
    kind: JobKind,
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
    if kind not in JOB_TYPES:
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

    The frame, ending a job inside the job's last transaction, passes the Job row it holds
    (its topics are then not read again); the live update leaves after that transaction
    commits."""
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


def _job_vm(job: Job):
    """The job's VM as it is now (None when it has none or it is gone)."""
    if job.vm_id is None:
        return None
    try:
        return job.vm
    except ObjectDoesNotExist:
        return None


def job_fail(job: Job, message: str) -> bool:
    """Fail a job that is still unfinished, let its kind's on_fail hook put the objects back,
    then record the Failed Event with the message (the hypervisor's own text).

    The failure is claimed by a conditional update that finds the job queued or running: only
    that claimant runs the hook. A job that ended meanwhile (its worker finished it, another
    reconcile failed it) is left as it is, and so is everything it made. True if claimed."""
    claimed = Job.objects.filter(pk=job.pk, status__in=Job.ACTIVE).update(
        status=JobStatus.FAILED, ended_at=timezone.now(), error=message
    )
    if not claimed:
        return False
    job.status, job.error = JobStatus.FAILED, message
    kind = JOB_TYPES.get(job.kind)
    vm = _job_vm(job)
    if vm is not None:
        vm.host, vm.cluster  # noqa: B018 - read now: on_fail may take the VM away
    if kind is not None and kind.on_fail is not None:
        try:
            kind.on_fail(job, message)
        except Exception:
            log.exception("putting back after job %s failed did not work", job.pk)
    if kind is not None:
        _failed_record(kind, job, vm, message)
    send_now(*job_topics(job))
    return True


def _failed_record(kind: JobType, job: Job, vm, message: str) -> None:
    """The Failed Event of a job: on its VM if that is still there after on_fail, else with
    the VM's name, cluster and host as they were."""
    text = kind.failed(job, vm)
    fields = {}
    if vm is not None and not type(vm).objects.filter(pk=vm.pk).exists():
        fields = {"object_name": vm.name, "cluster": vm.cluster, "host": vm.host}
        vm = None
    try:
        event_record(
            action=kind.action,
            phase=Phase.FAILED,
            user=job.user,
            vm=vm,
            job=job,
            object_type=kind.object_type,
            error=message,
            message=text,
            **fields,
        )
    except Exception:
        log.exception("the Failed Event of job %s was not recorded", job.pk)


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


def _first_steps() -> dict:
    """The claim's progress and step columns: each kind's first step, in the same UPDATE."""
    steps = [(k, t.first_step) for k, t in JOB_TYPES.items() if t.first_step is not None]
    if not steps:
        return {}
    return {
        "progress": Case(
            *(When(kind=k, then=Value(percent)) for k, (percent, _) in steps),
            default=F("progress"),
            output_field=Job._meta.get_field("progress"),
        ),
        "step": Case(
            *(When(kind=k, then=Value(text)) for k, (_, text) in steps),
            default=F("step"),
            output_field=Job._meta.get_field("step"),
        ),
    }


def _claim(job_id: int) -> Job | None:
    """Move the job from queued to running, showing its kind's first step, in one UPDATE: the
    Job read with its VM, host and cluster (what handlers need), or None if it was not queued
    any more."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=now, heartbeat_at=now, **_first_steps()
    )
    if not claimed:
        return None
    return Job.objects.select_related("vm__host", "vm__cluster", "user").get(pk=job_id)


def _succeeded(kind: JobType, job: Job, outcome: "Outcome | str | None") -> None:
    """A job's end: its last writes, the Succeeded Event and the Job succeeded, in one
    transaction; open pages hear of all of it in one update after the commit."""
    if not isinstance(outcome, Outcome):
        outcome = Outcome(message=outcome or "")
    with coalesced(), transaction.atomic():
        if outcome.message:
            event_record(
                action=kind.action,
                phase=Phase.SUCCEEDED,
                user=job.user,
                job=job,
                message=outcome.message,
                reason=outcome.reason,
                **({"vm": job.vm, "object_type": kind.object_type} | outcome.event),
            )
        if outcome.last_writes is not None:
            outcome.last_writes()
        job_finish(job.pk, job=job)


def execute(job_id: int) -> None:
    """RQ entry point, the job frame: claim the Job with this id, record its Started Event, run
    its kind's handler, and always end it (Succeeded, or Failed after the kind's on_fail)."""
    db_tidy()
    job = _claim(job_id)
    if job is None:
        log.warning("job %s is not queued any more; skipped", job_id)
        return
    kind = JOB_TYPES[job.kind]
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(job_id, stop), daemon=True)
    beat.start()
    try:
        with coalesced():  # the claim and the Started Event: one live update
            message = kind.started(job) if kind.started is not None else None
            if message:
                event_record(
                    action=kind.action,
                    phase=Phase.STARTED,
                    user=job.user,
                    vm=job.vm,
                    job=job,
                    object_type=kind.object_type,
                    message=message,
                )
            send_now(*job_topics(job))
        _succeeded(kind, job, kind.handler(job))
    except Exception as exc:
        log.warning(
            "job %s (%s) failed: %s",
            job_id,
            job.kind,
            exc,
            exc_info=not isinstance(exc, ActionRefused),
        )
        job_fail(job, str(exc) or exc.__class__.__name__)
    finally:
        stop.set()
        db_tidy()
