"""Shared fixtures: PostgreSQL and Redis are real; hosts are libvirt test-driver nodes private
to each test; jobs run on a real RQ worker (in this process, so it shares the test host)."""

import asyncio
import asyncio.runners
import threading
import warnings

import pytest
from rq import SimpleWorker

import hypervisor
from portal.kernel.config import config_reset_cache
from portal.kernel.tasks import get_queue
from vms import testhosts

# Each async test runs on an event loop of its own, closed by asyncio's Runner, which cancels
# the tasks still pending (consumers a test left connected) and waits for them without limit.
# Rarely (about one full run in five on this machine) a channels-redis receive task does not
# finish once cancelled, and the whole suite then waits for ever. daphne does the same
# cancellation without waiting (its application checker cancels an instance and moves on):
# so do the tests, after 10 s, with a warning naming the task, instead of hanging.
TASKS_CANCEL_WAIT = 10.0


def _cancel_all_tasks_bounded(loop) -> None:
    pending = asyncio.all_tasks(loop)
    if not pending:
        return
    for task in pending:
        task.cancel()
    _done, stuck = loop.run_until_complete(asyncio.wait(pending, timeout=TASKS_CANCEL_WAIT))
    for task in stuck:
        warnings.warn(
            f"a task did not end within {TASKS_CANCEL_WAIT} s of its cancellation: {task!r}",
            stacklevel=2,
        )
    for task in _done:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during test loop shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )


asyncio.runners._cancel_all_tasks = _cancel_all_tasks_bounded


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path):
    """Each test: its own VAR_DIR (test host files), an empty Redis db, no open connections."""
    settings.VAR_DIR = tmp_path
    config_reset_cache()  # engine-config's per-process copy: never another test's values
    settings.VIREO_REBOOT_HOLD_SECONDS = 0  # tests that watch the hold set their own
    get_queue().connection.flushdb()
    yield
    hypervisor.disconnect_all()
    config_reset_cache()


@pytest.fixture
def admin(db):
    from factories import SuperUserFactory

    return SuperUserFactory()


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def testhost_sync(*hosts) -> None:
    """(Re)load test hosts from the inventory: write their node files and drop any open
    connection, so the next connect sees exactly the VMs, states and volumes in the DB."""
    for host in hosts:
        hypervisor.disconnect(host.uri)
        testhosts.node_file_write(host)


@pytest.fixture
def sync_hosts():
    return testhost_sync


def _work_off() -> int:
    queue = get_queue()
    worker = SimpleWorker([queue], connection=queue.connection)
    worker.work(burst=True, logging_level="WARNING")
    worker.refresh()  # rq keeps the counts in Redis (for 60 s after the worker's death)
    return worker.successful_job_count + worker.failed_job_count


@pytest.fixture
def work(django_capture_on_commit_callbacks):
    """Run a service call, fire its on-commit callbacks (the enqueue), then run the queued
    jobs on a real RQ worker: `work(lambda: vm_shutdown(...))` returns the call's result."""

    def run(call=None):
        with django_capture_on_commit_callbacks(execute=True):
            result = call() if call is not None else None
        _work_off()
        return result

    return run


@pytest.fixture
def work_off():
    """Run whatever is queued on a real RQ worker in this process."""
    return _work_off


@pytest.fixture(autouse=True)
def _fast_passwords(request, settings):
    """Cheap password hashing, except where a separate server process checks the passwords."""
    if request.node.get_closest_marker("browser") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def user(db):
    """An administrator of something else: NetworkAdmin on a network of another data center,
    so the Administration Portal opens but none of the test's objects are in reach."""
    from factories import DataCenterFactory, UserFactory, grant

    from vms.models import Network

    account = UserFactory()
    grant(
        account,
        "NetworkAdmin",
        Network.objects.create(name="elsewhere", data_center=DataCenterFactory()),
    )
    return account


@pytest.fixture
def user_client(user):
    """A logged-in administrator with no permission on the test's objects."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def make_vm(sync_hosts):
    """A VM with `disks` disks in `status`, present on its (freshly loaded) test host."""
    from factories import DiskFactory, VMFactory
    from helpers import GiB, MiB

    from vms.choices import VMStatus

    def make(status=VMStatus.DOWN, disks=1, host=None, **fields):
        vm = VMFactory(status=status, **({"host": host} if host else {}), **fields)
        for n in range(disks):
            DiskFactory(
                vm=vm,
                alias=f"{vm.name}_Disk{n + 1}",
                target=f"vd{'abcdefgh'[n]}",
                volume_name=f"{vm.uuid}-disk{n + 1}.qcow2",
                size_bytes=(n + 1) * GiB,
                actual_bytes=(n + 1) * MiB,
            )
        sync_hosts(vm.host)
        return vm

    return make


@pytest.fixture
def refusing_queue(tmp_path, monkeypatch):
    """The task queue on a real Redis that answers PING but refuses every write
    (`min-replicas-to-write 1` with no replica: "NOREPLICAS"), as a Redis losing its replicas
    does: the readiness check passes and the enqueue after commit fails."""
    import socket
    import subprocess
    import time

    from redis import Redis
    from rq import Queue

    import portal.kernel.tasks

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--min-replicas-to-write", "1"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    connection = Redis(host="127.0.0.1", port=port, socket_timeout=5)
    for _ in range(100):
        try:
            connection.ping()
            break
        except Exception:
            time.sleep(0.05)
    queue = Queue("default", connection=connection)
    monkeypatch.setattr(portal.kernel.tasks, "get_queue", lambda: queue)
    yield queue
    connection.close()
    server.terminate()
    server.wait(timeout=10)


class SilentListener:
    """A TCP port that accepts connections and never answers (a host that hangs)."""

    def __init__(self):
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.uri = f"qemu+tcp://127.0.0.1:{self.port}/system"
        self.accepted: list = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="silent-host")
        self._thread.start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.accepted.append(client)

    def close(self):
        """Stop listening and hang up: whoever still waits on it gets an error at last."""
        self.sock.close()
        for client in self.accepted:
            client.close()


@pytest.fixture
def silent_host():
    listener = SilentListener()
    yield listener
    listener.close()
