"""Connection hygiene for long-lived processes (workers, the monitor)."""

from django.db import close_old_connections, connection, connections

# A worker thread keeps its connection this long (seconds) between jobs: a job then costs no
# new PostgreSQL backend (a connect and its cold catalog caches, about 10 ms each).
WORKER_CONN_MAX_AGE = 600


def db_tidy() -> None:
    """Drop stale or broken DB connections between units of work, as a request would.

    Inside an atomic block (a test running a job in its own transaction) there is nothing
    to tidy, and closing would break that transaction."""
    if not connection.in_atomic_block:
        close_old_connections()


def db_keep_connections(max_age: int = WORKER_CONN_MAX_AGE) -> None:
    """Let this thread's database connections stay open between units of work.

    Only this thread's connection objects change (a web thread of the same process keeps
    closing its connection after each request). `db_tidy` still closes one that is older than
    `max_age` seconds or had an error it does not survive, and the first query after each
    `db_tidy` checks that the connection still answers (Django's health check), so a database
    restart costs a reconnect, not a failed job."""
    for conn in connections.all():
        conn.close()
        conn.settings_dict = {
            **conn.settings_dict,
            "CONN_MAX_AGE": max_age,
            "CONN_HEALTH_CHECKS": True,
        }
