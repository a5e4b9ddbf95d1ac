"""Connection hygiene for long-lived processes (workers, the monitor)."""

from django.db import close_old_connections, connection


def db_tidy() -> None:
    """Drop stale or broken DB connections between units of work, as a request would.

    Inside an atomic block (a test running a job in its own transaction) there is nothing
    to tidy, and closing would break that transaction."""
    if not connection.in_atomic_block:
        close_old_connections()
