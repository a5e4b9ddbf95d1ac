"""portal.kernel.tasks on a real RQ worker in its own thread, the enqueue-failure path, execute()'s
guarantees, and the live-update websocket against the real channels-redis layer."""

import threading
import time
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from factories import DiskFactory, SuperUserFactory, UserFactory, VMFactory
from redis import Redis
from rq import Queue
from rq.job import Job as RQJob

import portal.kernel.tasks
from portal.kernel import tasks
from portal.kernel.errors import ActionRefused
from portal.kernel.live import recheck_users, send_now
from portal.kernel.models import Job, JobStatus
from portal.kernel.worker import ThreadWorker
from portal.shell.consumers import LiveConsumer
from vms import services
from vms.choices import VMStatus
from vms.models import VirtualMachine

KIND = "t4_probe"


@pytest.fixture(autouse=True)
def _own_channel_prefix(settings):
    """A channel-layer prefix of this test's own, so no other run's messages reach it."""
    layers = {name: dict(conf) for name, conf in settings.CHANNEL_LAYERS.items()}
    layers["default"]["CONFIG"] = {
        **layers["default"]["CONFIG"],
        "prefix": f"t4-{uuid.uuid4().hex[:12]}",
    }
    settings.CHANNEL_LAYERS = layers


@pytest.fixture
def probe(monkeypatch):
    """Register a job kind whose handler and on_fail hook the test controls."""
    calls: dict[str, list] = {"run": [], "fail": []}
    behaviour = {"run": lambda job: None, "fail": lambda job, message: None}

    def handler(job):
        calls["run"].append(job.pk)
        behaviour["run"](job)

    def on_fail(job, message):
        calls["fail"].append((job.pk, message))
        behaviour["fail"](job, message)

    monkeypatch.setitem(
        tasks.JOB_TYPES,
        KIND,
        tasks.JobType(
            kind=KIND, handler=handler, action="probe", failed=lambda job, vm: "", on_fail=on_fail
        ),
    )
    return calls, behaviour


def closed_queue() -> Queue:
    return Queue("default", connection=Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=1))


def run_thread_worker(timeout: float = 30) -> None:
    """Run the queue empty on a ThreadWorker in a thread of its own (its own DB connection)."""
    queue = tasks.get_queue()
    worker = ThreadWorker([queue], connection=queue.connection)
    thread = threading.Thread(
        target=worker.work, kwargs={"burst": True, "logging_level": "WARNING"}, daemon=True
    )
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the worker did not finish"


# -- a real worker in another thread -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_job_runs_on_a_worker_thread(sync_hosts):
    admin = SuperUserFactory()
    vm = VMFactory(status=VMStatus.UP)
    DiskFactory(vm=vm)
    sync_hosts(vm.host)
    job = services.vm_shutdown(vm_id=vm.pk, user=admin)  # committed: enqueued at once
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.rq_id
    rq_job = RQJob.fetch(job.rq_id, connection=tasks.get_queue().connection)
    assert rq_job.get_status() == "queued"
    run_thread_worker()
    job.refresh_from_db()
    assert (job.status, job.progress, job.error) == (JobStatus.SUCCEEDED, 100, "")
    assert job.started_at is not None and job.ended_at >= job.started_at
    assert VirtualMachine.objects.get(pk=vm.pk).status == VMStatus.DOWN
    assert rq_job.get_status(refresh=True) == "finished"


@pytest.mark.django_db(transaction=True)
def test_heartbeat_is_stamped_while_a_job_runs(probe, monkeypatch):
    calls, behaviour = probe
    monkeypatch.setattr(tasks, "HEARTBEAT_SECONDS", 0.05)
    behaviour["run"] = lambda job: time.sleep(0.6)
    job = tasks.job_create(kind=KIND, description="probe")  # autocommit: enqueued at once
    run_thread_worker()
    job.refresh_from_db()
    assert calls["run"] == [job.pk]
    assert job.status == JobStatus.SUCCEEDED
    assert (job.heartbeat_at - job.started_at).total_seconds() >= 0.3


# -- enqueueing ------------------------------------------------------------------------------


def test_job_is_enqueued_only_when_the_transaction_commits(
    db, probe, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = tasks.job_create(kind=KIND, description="probe")
    assert tasks.get_queue().count == 0
    assert len([c for c in callbacks if c.__name__ == "enqueue"]) == 1
    for callback in callbacks:
        callback()
    job.refresh_from_db()
    assert tasks.get_queue().job_ids == [job.rq_id]


def test_enqueue_failure_fails_the_job_and_calls_on_enqueue_failure(
    db, probe, monkeypatch, django_capture_on_commit_callbacks
):
    undone: list[Job] = []
    monkeypatch.setattr(portal.kernel.tasks, "get_queue", closed_queue)
    with django_capture_on_commit_callbacks(execute=True):
        job = tasks.job_create(kind=KIND, description="probe", on_enqueue_failure=undone.append)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("The task queue refused the job: ")
    assert job.ended_at is not None and job.rq_id == ""
    assert [j.pk for j in undone] == [job.pk]
    assert undone[0].status == JobStatus.FAILED  # it is handed the ended job
    assert probe[0]["run"] == []


def test_unknown_kind_is_a_programming_error(db):
    with pytest.raises(ValueError, match="no handler for job kind 'nope'"):
        tasks.job_create(kind="nope", description="x")
    assert not Job.objects.exists()


def test_queue_ensure_available(monkeypatch):
    tasks.queue_ensure_available()  # the real Redis answers
    monkeypatch.setattr(portal.kernel.tasks, "get_queue", closed_queue)
    with pytest.raises(ActionRefused, match=r"task queue is unreachable \(ConnectionError\)"):
        tasks.queue_ensure_available()


def test_create_that_never_reached_a_worker_is_taken_back(
    admin, monkeypatch, django_capture_on_commit_callbacks, sync_hosts
):
    from factories import HostFactory, StorageDomainFactory

    host = HostFactory()
    domain = StorageDomainFactory(data_center=host.cluster.data_center)
    monkeypatch.setattr(services, "queue_ensure_available", lambda: None)
    monkeypatch.setattr(portal.kernel.tasks, "get_queue", closed_queue)
    with django_capture_on_commit_callbacks(execute=True):
        vm = services.vm_create(
            user=admin,
            name="never",
            cluster_id=host.cluster_id,
            memory_mb=512,
            vcpus=1,
            disk_bytes=1024**3,
            storage_domain_id=domain.pk,
        )
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert Job.objects.get().status == JobStatus.FAILED


# -- execute ---------------------------------------------------------------------------------


def test_execute_runs_a_queued_job_once(db, probe):
    calls, _ = probe
    job = tasks.job_create(kind=KIND, description="probe")
    tasks.execute(job.pk)
    tasks.execute(job.pk)  # delivered twice: the second finds it no longer queued
    job.refresh_from_db()
    assert calls["run"] == [job.pk]
    assert (job.status, job.progress) == (JobStatus.SUCCEEDED, 100)


def test_execute_fails_the_job_with_the_handlers_message(db, probe):
    calls, behaviour = probe

    def boom(job):
        tasks.job_progress(job, 40, "halfway")
        raise RuntimeError("the host said no")

    behaviour["run"] = boom
    job = tasks.job_create(kind=KIND, description="probe")
    tasks.execute(job.pk)
    job.refresh_from_db()
    assert (job.status, job.error, job.progress, job.step) == (
        JobStatus.FAILED,
        "the host said no",
        40,
        "halfway",
    )
    assert calls["fail"] == [(job.pk, "the host said no")]


def test_execute_names_an_exception_without_a_message(db, probe):
    calls, behaviour = probe

    def boom(job):
        raise KeyError()

    behaviour["run"] = boom
    job = tasks.job_create(kind=KIND, description="probe")
    tasks.execute(job.pk)
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "KeyError")


def test_a_broken_on_fail_hook_still_ends_the_job(db, probe):
    _calls, behaviour = probe
    behaviour["run"] = lambda job: 1 / 0
    behaviour["fail"] = lambda job, message: [][1]
    job = tasks.job_create(kind=KIND, description="probe")
    tasks.execute(job.pk)
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "division by zero")


def test_a_job_ended_elsewhere_is_not_revived(db, probe):
    job = tasks.job_create(kind=KIND, description="probe")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    tasks.job_fail(Job.objects.get(pk=job.pk), "stopped")
    tasks.job_finish(job.pk)  # the lost worker reports success afterwards
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "stopped")


def test_job_progress_is_clamped(db, probe):
    job = tasks.job_create(kind=KIND, description="probe")
    tasks.job_progress(job, 250, "x" * 600)
    job.refresh_from_db()
    assert (job.progress, len(job.step)) == (100, 500)
    assert job.heartbeat_at is not None
    tasks.job_progress(job, -5)
    job.refresh_from_db()
    assert (job.progress, job.step) == (0, "")


# -- the live websocket -----------------------------------------------------------------------


async def connected(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    ok, _ = await communicator.connect()
    assert ok
    return communicator


async def subscribe(communicator, topics) -> dict:
    await communicator.send_json_to({"subscribe": topics})
    return await communicator.receive_json_from(timeout=5)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_anonymous_is_closed_with_4401():
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = AnonymousUser()
    assert await communicator.connect() == (False, 4401)
    no_user = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    assert await no_user.connect() == (False, 4401)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_superuser_follows_a_vm(sync_hosts):
    admin = await database_sync_to_async(SuperUserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    other = await database_sync_to_async(VMFactory)()
    communicator = await connected(admin)
    topic = f"vm.{vm.pk}"
    assert await subscribe(communicator, [topic, topic]) == {
        "subscribed": [topic, topic],
        "refused": [],
    }
    await sync_to_async(send_now)(topic)
    assert await communicator.receive_json_from(timeout=5) == {"topic": topic}
    await sync_to_async(send_now)(f"vm.{other.pk}", "vms")  # not followed
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_session_cookie_through_the_auth_middleware(client):
    admin = await database_sync_to_async(SuperUserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    await sync_to_async(client.force_login)(admin)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    app = AuthMiddlewareStack(LiveConsumer.as_asgi())
    communicator = WebsocketCommunicator(app, "/ws/live/", headers=[(b"cookie", cookie)])
    ok, _ = await communicator.connect()
    assert ok
    reply = await subscribe(communicator, [f"vm.{vm.pk}", "vms"])
    assert reply == {"subscribed": [f"vm.{vm.pk}", "vms"], "refused": []}
    await communicator.disconnect()

    stranger = WebsocketCommunicator(app, "/ws/live/", headers=[(b"cookie", b"sessionid=bogus")])
    assert await stranger.connect() == (False, 4401)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_user_without_rights_is_refused_and_hears_nothing():
    user = await database_sync_to_async(UserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    communicator = await connected(user)
    topic = f"vm.{vm.pk}"
    assert await subscribe(communicator, [topic]) == {"subscribed": [], "refused": [topic]}
    await sync_to_async(send_now)(topic)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_malformed_requests_and_topics_are_refused():
    admin = await database_sync_to_async(SuperUserFactory)()
    communicator = await connected(admin)
    for bad in ({"subscribe": "vms"}, {"topics": ["vms"]}, ["vms"]):
        await communicator.send_json_to(bad)
        assert await communicator.receive_json_from(timeout=5) == {
            "error": 'send {"subscribe": [topics]} or {"unsubscribe": [topics]}'
        }
    malformed = ["VM.1", "vm.1.2.3", "vm.x", "vm..1", "", "vm 1", "live.vm.1*"]
    reply = await subscribe(communicator, [*malformed, 7, None, "nosuchkind.1", "vm.999999"])
    assert reply["subscribed"] == []
    assert reply["refused"] == [*malformed, "7", "None", "nosuchkind.1", "vm.999999"]
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_losing_the_right_revokes_the_topic():
    admin = await database_sync_to_async(SuperUserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    communicator = await connected(admin)
    topic = f"vm.{vm.pk}"
    assert (await subscribe(communicator, [topic]))["subscribed"] == [topic]

    def demote():
        type(admin).objects.filter(pk=admin.pk).update(is_superuser=False)
        recheck_users([admin.pk])  # autocommit: sent at once

    await database_sync_to_async(demote)()
    assert await communicator.receive_json_from(timeout=5) == {"revoked": [topic]}
    await sync_to_async(send_now)(topic)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()
