"""Vireo's RQ workers: they run jobs in their own process (no fork per job), keep their
database connection from job to job, and leave out RQ's per-job Redis writes that tell nobody
anything new.

Production runs `manage.py rqworker default --worker-class portal.kernel.worker.Worker`: a job then
costs no fork, no new PostgreSQL backend and no new libvirt connection (the process's cached
one is reused). The demo's test-driver hosts live inside the process that opened them, so the
demo runs `ThreadWorker`s as threads of its monitor process
(`manage.py demo_monitor --workers N`).
"""

import threading
import time

from django.db import connections
from rq import SimpleWorker
from rq.job import JobStatus
from rq.timeouts import TimerDeathPenalty
from rq.utils import now

from .db import db_keep_connections
from .tasks import get_queue

# A worker heartbeat without news (its key's expiry not moved further) is skipped when the last
# one left less than this long ago. The monitor counts a worker alive while its last heartbeat
# is younger than its stale time (tens of seconds), so this hides no dead worker.
HEARTBEAT_MIN_SECONDS = 1.0


class Worker(SimpleWorker):
    """SimpleWorker that keeps its database connection between jobs (checked before each job,
    closed when the worker stops), with fewer Redis round trips a job: its heartbeat in one
    round trip and at most once a second, no "idle" state written between two jobs (the next
    dequeue writes it), and no separate job heartbeat at the end of a job that succeeded
    and has no callbacks (RQ's success bookkeeping saves the job's hash, that stamp with it). RQ's job statuses, started
    and finished registries, executions and worker names stay as they are: the monitor's
    reconcile reads them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._beat_at = None  # (monotonic time, ttl) of the last heartbeat sent

    def heartbeat(self, timeout=None, pipeline=None):
        """RQ's worker heartbeat (three commands) in one round trip, skipped when the last one
        is under a second old and set the key to live at least as long."""
        ttl = timeout or self.worker_ttl + 60
        if pipeline is not None:
            self._beat_at = (time.monotonic(), ttl)
            return super().heartbeat(timeout, pipeline)
        if self._beat_at is not None:
            at, last_ttl = self._beat_at
            if time.monotonic() - at < HEARTBEAT_MIN_SECONDS and last_ttl >= ttl:
                return None
        with self.connection.pipeline() as pipe:
            super().heartbeat(timeout, pipe)
            pipe.execute()
        self._beat_at = (time.monotonic(), ttl)
        return None

    def execute_job(self, job, queue):
        """Run the job in this process. The worker's state goes back to idle with the next
        dequeue (RQ writes it there again anyway), not in a round trip of its own here."""
        execution = self.prepare_execution(job)
        self.perform_job(job, queue, execution)

    def handle_execution_ended(self, job, queue, heartbeat_ttl):
        """A job that succeeded and has no callbacks: its end stamp is saved with the job's hash
        by RQ's success bookkeeping, not in a round trip of its own before it."""
        failed = job.get_status(refresh=False) == JobStatus.FAILED
        if failed or job.success_callback or job.failure_callback or job.stopped_callback:
            return super().handle_execution_ended(job, queue, heartbeat_ttl)
        job.ended_at = now()
        job.last_heartbeat = job.ended_at
        return None

    def work(self, *args, **kwargs):
        db_keep_connections()
        try:
            return super().work(*args, **kwargs)
        finally:
            connections.close_all()  # this thread's connections only


class ThreadWorker(Worker):
    """Worker for a thread of another process: no signal handlers, a timer instead of SIGALRM
    for timeouts."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):
        pass


def start_thread_workers(
    count: int, *, name_prefix: str = "vireo-thread"
) -> list[threading.Thread]:
    """Start `count` worker threads on the default queue (daemon threads)."""
    threads = []
    queue = get_queue()
    for n in range(count):
        worker = ThreadWorker(
            [queue],
            connection=queue.connection,
            name=f"{name_prefix}-{threading.get_native_id()}-{n}",
        )
        thread = threading.Thread(
            target=worker.work,
            kwargs={"logging_level": "WARNING"},
            daemon=True,
            name=f"rq-worker-{n}",
        )
        thread.start()
        threads.append(thread)
    return threads
