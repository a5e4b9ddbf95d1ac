"""The live-update websocket against the real channels-redis layer: long-lived sockets, group
clean-up, the end of a session, hostile frames, and grants pushed to open pages."""

import asyncio
import logging
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.test import Client
from factories import (
    ClusterFactory,
    HostFactory,
    SuperUserFactory,
    UserFactory,
    VMFactory,
    grant,
)

import portal.shell.consumers
from accounts.models import Role, System
from accounts.permissions import can_subscribe, subscribable
from accounts.services import permission_add
from portal.kernel.live import group_name, send_now, user_group
from portal.kernel.models import Job
from portal.shell.consumers import USAGE, LiveConsumer
from vms.models import Cluster, DataCenter, Host


@pytest.fixture(autouse=True)
def _own_channel_prefix(settings):
    """A channel-layer prefix of this test's own, so no other run's messages reach it."""
    layers = {name: dict(conf) for name, conf in settings.CHANNEL_LAYERS.items()}
    layers["default"]["CONFIG"] = {
        **layers["default"]["CONFIG"],
        "prefix": f"t5-{uuid.uuid4().hex[:12]}",
    }
    settings.CHANNEL_LAYERS = layers


async def connected(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    ok, _ = await communicator.connect()
    assert ok
    return communicator


async def subscribe(communicator, topics) -> dict:
    await communicator.send_json_to({"subscribe": topics})
    return await communicator.receive_json_from(timeout=5)


async def group_members(group: str) -> list[str]:
    """The channel names channels-redis holds in a group, read from Redis itself."""
    layer = get_channel_layer()
    connection = layer.connection(layer.consistent_hash(group))
    return [m.decode() for m in await connection.zrange(layer._group_key(group), 0, -1)]


# -- D2: sockets that stay up, groups that forget dead consumers ------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_socket_held_open_30_seconds_still_receives(caplog):
    """redis-py 8's default 5 s socket timeout equals channels-redis's blocking pop: without a
    longer one the consumer died with TimeoutError every 5 s and missed what followed, and
    the disconnects logged Redis timeout tracebacks (item 18): none is logged now."""
    caplog.set_level(logging.WARNING)
    admin = await database_sync_to_async(SuperUserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    communicator = await connected(admin)
    topic = f"vm.{vm.pk}"
    assert (await subscribe(communicator, [topic]))["subscribed"] == [topic]
    await asyncio.sleep(30)
    await sync_to_async(send_now)(topic)
    assert await communicator.receive_json_from(timeout=5) == {"topic": topic}
    await communicator.disconnect()
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_leaving_takes_the_channel_out_of_every_group():
    admin = await database_sync_to_async(SuperUserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    communicator = await connected(admin)
    topic = f"vm.{vm.pk}"
    assert (await subscribe(communicator, [topic, "vms"]))["subscribed"] == [topic, "vms"]
    (channel,) = await group_members(group_name(topic))
    assert await group_members(group_name("vms")) == [channel]
    assert await group_members(user_group(admin.pk)) == [channel]
    await communicator.disconnect()
    for group in (group_name(topic), group_name("vms"), user_group(admin.pk)):
        assert await group_members(group) == []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_consumer_that_dies_leaves_its_groups(monkeypatch):
    """A consumer that ends with an exception (as every one did on the Redis timeout) must not
    stay in its groups, where every broadcast fanned out to dead channels."""

    async def broken(self, message):
        raise RuntimeError("lost")

    monkeypatch.setattr(LiveConsumer, "live_changed", broken)
    admin = await database_sync_to_async(SuperUserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    communicator = await connected(admin)
    topic = f"vm.{vm.pk}"
    await subscribe(communicator, [topic])
    assert len(await group_members(group_name(topic))) == 1
    await sync_to_async(send_now)(topic)
    with pytest.raises(RuntimeError, match="lost"):
        await communicator.receive_output(timeout=5)
    assert await group_members(group_name(topic)) == []
    assert await group_members(user_group(admin.pk)) == []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_disconnect_redis_cannot_answer_logs_no_traceback(monkeypatch, caplog):
    """Item 18: disconnects logged Redis timeout tracebacks. Leaving a group Redis cannot
    answer for is one warning line per group (its expiry drops the channel), the socket still
    closes cleanly."""
    import redis.exceptions

    admin = await database_sync_to_async(SuperUserFactory)()
    communicator = await connected(admin)
    assert (await subscribe(communicator, ["vms"]))["subscribed"] == ["vms"]
    layer = get_channel_layer()

    async def timing_out(group, channel):
        raise redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379")

    monkeypatch.setattr(type(layer), "group_discard", lambda self, g, c: timing_out(g, c))
    caplog.set_level(logging.WARNING)
    await communicator.disconnect()
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.WARNING, None)] * 2
    assert all("could not leave" in r.getMessage() for r in caplog.records)


def test_the_layers_socket_timeout_outlasts_its_blocking_pop(settings):
    from channels_redis.core import RedisChannelLayer

    (host,) = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    assert host["socket_timeout"] > RedisChannelLayer.brpop_timeout


# -- 20: one publisher per process ----------------------------------------------------------


def test_live_updates_reuse_one_connection(monkeypatch):
    """Each send used to open its own event loop and Redis connection (~54 ms)."""
    from redis.connection import Connection

    send_now("vms")  # the publisher connects
    opened = []
    original = Connection._connect

    def counting_connect(self, *args, **kwargs):
        opened.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "_connect", counting_connect)
    for n in range(20):
        send_now(f"vm.{n}", "vms", f"job.{n}")
    assert opened == []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_publisher_delivers_in_order():
    admin = await database_sync_to_async(SuperUserFactory)()
    communicator = await connected(admin)
    topics = [f"job.{n}" for n in range(1, 6)]
    jobs = await database_sync_to_async(
        lambda: [Job.objects.create(pk=n, kind="probe", description="p") for n in range(1, 6)]
    )()
    assert len(jobs) == 5
    assert (await subscribe(communicator, topics))["subscribed"] == topics
    for topic in topics:
        await sync_to_async(send_now)(topic)
    assert [(await communicator.receive_json_from(timeout=5))["topic"] for _ in topics] == topics
    await communicator.disconnect()


# -- 5: the end of a session ends its sockets -----------------------------------------------


def logged_in_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def session_socket(client) -> WebsocketCommunicator:
    """A socket through the real auth middleware, on the client's session cookie."""
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    app = AuthMiddlewareStack(LiveConsumer.as_asgi())
    communicator = WebsocketCommunicator(app, "/ws/live/", headers=[(b"cookie", cookie)])
    ok, _ = await communicator.connect()
    assert ok
    return communicator


async def assert_closed_by_server(communicator) -> None:
    assert await communicator.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 4401,
    }


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_logout_closes_that_sessions_socket_and_no_other():
    admin = await database_sync_to_async(SuperUserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    here, elsewhere = await sync_to_async(
        lambda: (logged_in_client(admin), logged_in_client(admin))
    )()
    socket_here, socket_elsewhere = await session_socket(here), await session_socket(elsewhere)
    topic = f"vm.{vm.pk}"
    for socket in (socket_here, socket_elsewhere):
        assert (await subscribe(socket, [topic]))["subscribed"] == [topic]
    response = await sync_to_async(here.post)("/logout/")
    assert response.status_code == 302
    await assert_closed_by_server(socket_here)
    # The ended socket follows nothing any more; the other session's socket still does.
    assert len(await group_members(group_name(topic))) == 1
    await sync_to_async(send_now)(topic)
    assert await socket_elsewhere.receive_json_from(timeout=5) == {"topic": topic}
    assert await socket_here.receive_nothing(timeout=0.3)
    await socket_elsewhere.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_password_change_closes_the_users_sockets():
    """Whatever view changes it: a saved new password invalidates the sessions that hold the
    old one, and their sockets end."""
    user = await database_sync_to_async(SuperUserFactory)()
    other = await database_sync_to_async(SuperUserFactory)()
    first, second, bystander = await sync_to_async(
        lambda: (logged_in_client(user), logged_in_client(user), logged_in_client(other))
    )()
    sockets = [await session_socket(c) for c in (first, second, bystander)]

    def rename():  # a save that changes no password leaves every socket open
        user.first_name = "Renamed"
        user.save()

    await database_sync_to_async(rename)()
    for socket in sockets:
        assert await socket.receive_nothing(timeout=0.3)

    def change_password():
        fresh = type(user).objects.get(pk=user.pk)
        fresh.set_password("a-new-secret")
        fresh.save()

    await database_sync_to_async(change_password)()
    await assert_closed_by_server(sockets[0])
    await assert_closed_by_server(sockets[1])
    assert await sockets[2].receive_nothing(timeout=0.3)
    await sockets[2].disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_disabled_account_loses_its_sockets():
    user = await database_sync_to_async(SuperUserFactory)()
    client = await sync_to_async(logged_in_client)(user)
    socket = await session_socket(client)

    def disable():
        user.is_active = False
        user.save()

    await database_sync_to_async(disable)()
    await assert_closed_by_server(socket)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_each_socket_rechecks_its_session_periodically(settings):
    """A session that ends without a signal (expired, flushed, deleted) ends its socket at the
    next periodic check."""
    settings.VIREO_LIVE_SESSION_CHECK_SECONDS = 0.2
    user = await database_sync_to_async(SuperUserFactory)()
    kept, dropped = await sync_to_async(lambda: (logged_in_client(user), logged_in_client(user)))()
    socket_kept, socket_dropped = await session_socket(kept), await session_socket(dropped)
    key = dropped.cookies["sessionid"].value
    await database_sync_to_async(lambda: Session.objects.filter(session_key=key).delete())()
    await assert_closed_by_server(socket_dropped)
    assert await socket_kept.receive_nothing(timeout=1)
    assert (await subscribe(socket_kept, ["vms"]))["subscribed"] == ["vms"]
    await socket_kept.disconnect()


# -- 6: hostile frames -------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_frames_that_are_not_json_get_the_usage_error():
    admin = await database_sync_to_async(SuperUserFactory)()
    communicator = await connected(admin)
    for frame in ("not json{", " ", "[1, 2", "\u0000", "NaN]"):
        await communicator.send_to(text_data=frame)
        assert await communicator.receive_json_from(timeout=5) == {"error": USAGE}
    await communicator.send_to(bytes_data=b'{"subscribe": ["vms"]}')
    assert await communicator.receive_json_from(timeout=5) == {"error": USAGE}
    await communicator.send_to(text_data='{"subscribe": ["vms"]}' + " " * 300_000)
    assert await communicator.receive_json_from(timeout=5) == {"error": USAGE}
    # Still alive and answering.
    assert (await subscribe(communicator, ["vms"]))["subscribed"] == ["vms"]
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_topic_with_a_trailing_newline_is_refused():
    """`$` matches before a final newline: "vm.<id>.events\n" passed the topic check and
    made the socket join a group no message is ever sent to."""
    admin = await database_sync_to_async(SuperUserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    communicator = await connected(admin)
    topics = [f"vm.{vm.pk}.events\n", f"vm.{vm.pk}\n", "vms\n"]
    assert await subscribe(communicator, topics) == {"subscribed": [], "refused": topics}
    assert await group_members(group_name(topics[0])) == []
    await communicator.disconnect()


def test_a_frames_topics_are_checked_in_one_query(db, django_assert_max_num_queries):
    """1,000 out-of-scope topics used to cost a query each (10 s, stalling everyone)."""
    user = UserFactory()
    mine = VMFactory()
    grant(user, "UserRole", mine)
    ContentType.objects.get_for_models(DataCenter, Cluster, Host, System)  # Django's own cache
    user._vireo_grants = {}  # what the consumer keeps per socket
    topics = [f"vm.{mine.pk + n}" for n in range(1, 1001)] + [f"host.{n}" for n in range(1, 50)]
    topics += [f"vm.{mine.pk}", f"vm.{mine.pk}.events", "vms", "events"]
    with django_assert_max_num_queries(2):  # the grants, then every object topic at once
        allowed = subscribable(user, topics)
    assert allowed == {f"vm.{mine.pk}", f"vm.{mine.pk}.events", "vms", "events"}
    with django_assert_max_num_queries(1):  # the grants are remembered
        assert subscribable(user, topics) == allowed


@pytest.mark.parametrize("who", ["superuser", "vm", "cluster", "host", "nothing", "inactive"])
def test_the_batch_answers_as_can_subscribe_does(db, who):
    """`subscribable` is the batch form of `can_subscribe`: the same answer for every topic."""
    cluster = ClusterFactory()
    host = HostFactory(cluster=cluster)
    vm = VMFactory(host=host)
    elsewhere = VMFactory()
    job = Job.objects.create(kind="probe", description="probe")
    user = SuperUserFactory() if who == "superuser" else UserFactory()
    if who == "vm":
        grant(user, "UserRole", vm)
    elif who == "cluster":
        grant(user, "ClusterAdmin", cluster)
    elif who == "host":
        grant(user, "UserRole", host)
    elif who == "inactive":
        grant(user, "UserRole", vm)
        user.is_active = False
        user.save()
    ids = {vm.pk, elsewhere.pk, host.pk, cluster.pk, job.pk, 999999}
    topics = [f"{kind}.{pk}" for kind in ("vm", "host", "cluster", "job") for pk in ids]
    topics += [f"vm.{vm.pk}.events", f"vm.{elsewhere.pk}.events", "vms", "perms", "hosts"]
    topics += ["events", "jobs", "nosuch", "nosuch.1", "vm", "vm.x", "grants", "disk.1"]
    expected = {t for t in topics if can_subscribe(user, t)}
    assert subscribable(user, topics) == expected


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_thousand_refused_topics_are_one_frame_and_the_socket_goes_on():
    user = await database_sync_to_async(UserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    await database_sync_to_async(grant)(user, "UserRole", vm)
    communicator = await connected(user)
    topics = [f"vm.{vm.pk + n}" for n in range(1, 1001)]
    reply = await subscribe(communicator, topics)
    assert reply == {"subscribed": [], "refused": topics}
    assert (await subscribe(communicator, [f"vm.{vm.pk}"]))["subscribed"] == [f"vm.{vm.pk}"]
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_topics_per_socket_are_capped_and_can_be_given_back(monkeypatch):
    monkeypatch.setattr(portal.shell.consumers, "MAX_TOPICS", 3)
    admin = await database_sync_to_async(SuperUserFactory)()
    vms = [await database_sync_to_async(VMFactory)() for _ in range(5)]
    topics = [f"vm.{vm.pk}" for vm in vms]
    communicator = await connected(admin)
    reply = await subscribe(communicator, topics[:3])
    assert reply == {"subscribed": topics[:3], "refused": []}
    reply = await subscribe(communicator, topics[3:])
    assert reply == {
        "subscribed": [],
        "refused": topics[3:],
        "error": "at most 3 topics per connection",
    }
    await communicator.send_json_to({"unsubscribe": [topics[0]], "subscribe": [topics[3]]})
    assert await communicator.receive_json_from(timeout=5) == {
        "unsubscribed": [topics[0]],
        "subscribed": [topics[3]],
        "refused": [],
    }
    assert await group_members(group_name(topics[0])) == []
    await sync_to_async(send_now)(topics[0], topics[3])
    assert await communicator.receive_json_from(timeout=5) == {"topic": topics[3]}
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_frames_are_rate_limited(monkeypatch):
    monkeypatch.setattr(portal.shell.consumers, "FRAME_RATE", 0.01)  # no refill during the test
    admin = await database_sync_to_async(SuperUserFactory)()
    communicator = await connected(admin)
    for _ in range(portal.shell.consumers.FRAME_BURST + 5):
        await communicator.send_json_to({"subscribe": ["vms"]})
    replies = [
        await communicator.receive_json_from(timeout=5)
        for _ in range(portal.shell.consumers.FRAME_BURST + 5)
    ]
    assert (
        replies[: portal.shell.consumers.FRAME_BURST]
        == [{"subscribed": ["vms"], "refused": []}] * portal.shell.consumers.FRAME_BURST
    )
    assert (
        replies[portal.shell.consumers.FRAME_BURST :]
        == [{"error": "too many requests: at most 0.01 a second"}] * 5
    )
    await communicator.disconnect()


# -- 14: a grant reaches the user's open pages -------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_grant_tells_the_users_open_pages_to_refresh_their_lists():
    admin = await database_sync_to_async(SuperUserFactory)()
    user = await database_sync_to_async(UserFactory)()
    vm = await database_sync_to_async(VMFactory)()
    communicator = await connected(user)
    assert await subscribe(communicator, ["grants", f"vm.{vm.pk}"]) == {
        "subscribed": ["grants"],
        "refused": [f"vm.{vm.pk}"],
    }

    def give():
        permission_add(user=admin, principal=user, role=Role.objects.get(name="UserRole"), obj=vm)

    await database_sync_to_async(give)()
    assert await communicator.receive_json_from(timeout=5) == {"topic": "grants"}
    # The page now may follow the VM it was just given.
    assert (await subscribe(communicator, [f"vm.{vm.pk}"]))["subscribed"] == [f"vm.{vm.pk}"]
    await communicator.disconnect()
