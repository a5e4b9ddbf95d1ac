"""An RQ worker that runs in a thread of its process.

The demo's test-driver hosts live inside the process that opened them, so the demo runs its
workers as threads of its monitor process (`manage.py demo_monitor --workers N`). Production
runs ordinary `manage.py rqworker` processes instead.
"""

import threading

from django.db import connections
from rq import SimpleWorker
from rq.timeouts import TimerDeathPenalty

from .db import db_keep_connections
from .tasks import get_queue


class ThreadWorker(SimpleWorker):
    """SimpleWorker without signal handlers, with a timer instead of SIGALRM for timeouts.

    Its thread keeps its database connection from job to job (checked before each job) and
    closes it when the worker stops."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):
        pass

    def heartbeat(self, timeout=None, pipeline=None):
        """RQ's worker heartbeat (three commands, twice per job) in one round trip."""
        if pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        with self.connection.pipeline() as pipe:
            super().heartbeat(timeout, pipe)
            pipe.execute()

    def work(self, *args, **kwargs):
        db_keep_connections()
        try:
            return super().work(*args, **kwargs)
        finally:
            connections.close_all()  # this thread's connections only


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
