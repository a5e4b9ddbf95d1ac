"""Live updates: tell every open page that shows an object that it changed.

Topics are short strings ("vm.12", "vms", "job.7", "events", "hosts", "storage"). Browsers
subscribe to topics over the websocket and, on a message, re-fetch the row or panel through a
normal view, so every permission check stays in views.

Each process publishes through one `Publisher`: channels-redis's own group_send (its key names,
serializer and Lua script, so consumers receive exactly what they always did) done with a
synchronous Redis client whose connections stay open. An update costs two pipelined round trips
for all of its topics, not a new event loop and Redis connection each time.
"""

import logging
import threading
import time
from collections import defaultdict
from contextlib import contextmanager

from asgiref.sync import async_to_sync
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers, get_channel_layer
from django.conf import settings
from django.core.signals import setting_changed
from django.db import transaction

log = logging.getLogger(__name__)

# Topics every socket may follow without a permission check: they carry no data and reach
# only the user's own sockets (through the user group). "grants": the user's permissions
# changed, lists may hold more or fewer objects.
OWN_TOPICS = frozenset({"grants"})

# channels_redis.core.RedisChannelLayer.group_send's script (channels-redis 4.3, pinned): add
# the message to each channel's sorted set unless the channel is at capacity.
GROUP_SEND_LUA = """
    local over_capacity = 0
    local current_time = ARGV[#ARGV - 1]
    local expiry = ARGV[#ARGV]
    for i=1,#KEYS do
        if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
            redis.call('ZADD', KEYS[i], current_time, ARGV[i])
            redis.call('EXPIRE', KEYS[i], expiry)
        else
            over_capacity = over_capacity + 1
        end
    end
    return over_capacity
"""


def _sync_pool(host: dict):
    """A synchronous redis-py pool for one of the layer's hosts (the same options)."""
    import redis

    host = dict(host)
    address = host.pop("address", None)
    if address is not None:
        return redis.ConnectionPool.from_url(address, **host)
    return redis.ConnectionPool(**host)


class Publisher:
    """channels-redis's group_send for the process, synchronous, on connections that stay
    open (redis-py's pools reconnect after a fork by themselves). The layer instance is used
    only for its naming, hashing and serializer; it never opens a connection itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._layer = None
        self._clients = None
        self._last_score = 0.0

    def _ready(self):
        with self._lock:
            if self._layer is None:
                import redis

                layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
                self._clients = [redis.Redis(connection_pool=_sync_pool(h)) for h in layer.hosts]
                self._layer = layer
            return self._layer, self._clients

    def _score(self) -> float:
        # Strictly increasing: messages to one channel keep their order in its sorted set.
        with self._lock:
            self._last_score = max(time.time(), self._last_score + 1e-6)
            return self._last_score

    def group_send(self, messages: list[tuple[str, dict]]) -> None:
        """Send each (group, message), in order, as RedisChannelLayer.group_send would."""
        layer, clients = self._ready()
        # 1. Each group's channels (dropping expired members): one round trip per shard.
        groups_by_shard = defaultdict(list)
        for group in dict.fromkeys(g for g, _ in messages):
            assert layer.require_valid_group_name(group)
            groups_by_shard[layer.consistent_hash(group)].append(group)
        members: dict[str, list[str]] = {}
        for shard, groups in groups_by_shard.items():
            pipe = clients[shard].pipeline(transaction=False)
            for group in groups:
                key = layer._group_key(group)
                pipe.zremrangebyscore(key, min=0, max=int(time.time()) - layer.group_expiry)
                pipe.zrange(key, 0, -1)
            found = pipe.execute()
            for n, group in enumerate(groups):
                members[group] = [m.decode("utf8") for m in found[2 * n + 1]]
        # 2. Every message onto its channels' sorted sets: one round trip per shard.
        pipes = {}
        for group, message in messages:
            to_shard, key_message, key_capacity = layer._map_channel_keys_to_connection(
                members[group], message
            )
            for shard, keys in to_shard.items():
                if shard not in pipes:
                    pipes[shard] = clients[shard].pipeline(transaction=False)
                pipe = pipes[shard]
                for key in keys:
                    pipe.zremrangebyscore(key, min=0, max=int(time.time()) - int(layer.expiry))
                args = [key_message[k] for k in keys] + [key_capacity[k] for k in keys]
                pipe.eval(GROUP_SEND_LUA, len(keys), *keys, *args, self._score(), layer.expiry)
        for pipe in pipes.values():
            pipe.execute()

    def reset(self) -> None:
        """Forget the layer and close the connections (the CHANNEL_LAYERS setting changed)."""
        with self._lock:
            clients, self._layer, self._clients = self._clients, None, None
        for client in clients or ():
            client.close()
            client.connection_pool.disconnect()


publisher = Publisher()


def _on_setting_changed(setting, **kwargs):
    if setting == "CHANNEL_LAYERS":
        publisher.reset()


setting_changed.connect(_on_setting_changed)


def _redis_layer() -> bool:
    """Whether the configured layer is channels-redis's RedisChannelLayer on plain hosts (the
    publisher's format); any other (in-memory, pub/sub, sentinel) goes through the layer."""
    config = getattr(settings, "CHANNEL_LAYERS", {}).get(DEFAULT_CHANNEL_LAYER) or {}
    hosts = config.get("CONFIG", {}).get("hosts") or []
    return config.get("BACKEND") == "channels_redis.core.RedisChannelLayer" and not any(
        isinstance(h, dict) and "master_name" in h for h in hosts
    )


# Per thread: the messages held by an open `coalesced()` block, else None.
_held = threading.local()


@contextmanager
def coalesced():
    """Hold this thread's live updates until the block ends, then send them together (each
    group and message once, in the order first sent): one publish for a burst of changes, such
    as a job's last writes. Open it around the transaction whose commit sends them, so they
    still leave after the commit. A block inside another joins the outer one."""
    if getattr(_held, "messages", None) is not None:
        yield
        return
    _held.messages = []
    try:
        yield
    finally:
        messages, _held.messages = _held.messages, None
        unique: dict[tuple, tuple[str, dict]] = {}
        for group, message in messages:
            unique.setdefault((group, tuple(sorted(message.items()))), (group, message))
        try:
            _group_send(list(unique.values()))
        except Exception as exc:  # best effort, as send_now
            log.warning("live updates for %s not sent: %s", [g for g, _ in messages], exc)


def _group_send(messages: list[tuple[str, dict]]) -> None:
    """Send each (group, message) in order (held until the end of a `coalesced()` block)."""
    held = getattr(_held, "messages", None)
    if held is not None:
        held.extend(messages)
        return
    if not messages or DEFAULT_CHANNEL_LAYER not in getattr(settings, "CHANNEL_LAYERS", {}):
        return
    if _redis_layer():
        publisher.group_send(messages)
        return
    layer = get_channel_layer()
    if layer is None:
        return

    async def send():
        for group, message in messages:
            await layer.group_send(group, message)

    async_to_sync(send)()


def group_name(topic: str) -> str:
    return f"live.{topic}"


def send_now(*topics: str, gone: bool = False) -> None:
    """Send "changed" for the topics at once (callers outside a transaction); `gone`: the
    object behind them was deleted, so pages take it off rather than re-fetch it."""
    extra = {"gone": True} if gone else {}
    try:
        _group_send(
            [
                (group_name(topic), {"type": "live.changed", "topic": topic, **extra})
                for topic in dict.fromkeys(topics)
            ]
        )
    except Exception as exc:  # a live update is best effort: the data is already committed
        log.warning("live update for %s not sent: %s", topics, exc)


def broadcast(*topics: str) -> None:
    """Send "changed" for the topics once the current transaction commits."""
    transaction.on_commit(lambda: send_now(*topics))


def broadcast_gone(*topics: str) -> None:
    """Once the current transaction commits, tell pages that the objects behind these topics
    (a removed VM's "vm.12") are deleted: they take the row or pane off and stop asking."""
    transaction.on_commit(lambda: send_now(*topics, gone=True))


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def _tell_users(user_ids, message: dict, what: str) -> None:
    """After commit, send `message` to each of these users' open websockets."""
    user_ids = list(dict.fromkeys(user_ids))

    def send():
        try:
            _group_send([(user_group(pk), dict(message)) for pk in user_ids])
        except Exception as exc:
            log.warning("%s for users %s not sent: %s", what, user_ids, exc)

    if user_ids:
        transaction.on_commit(send)


def recheck_users(user_ids) -> None:
    """After commit, tell these users' open websockets to re-check every topic they follow
    (a permission was given, taken away or changed); their pages re-fetch their lists."""
    _tell_users(user_ids, {"type": "live.recheck"}, "permission recheck")


def close_user_sockets(user_id: int, session_key: str | None = None) -> None:
    """After commit, close the user's open websockets: those of one session (logout), or all
    of them when no session is named."""
    _tell_users([user_id], {"type": "live.close", "session_key": session_key}, "socket close")


def sessions_recheck(user_id: int) -> None:
    """After commit, have each of the user's websockets check that its session still logs the
    user in (a password change invalidates the other sessions; a disabled account all)."""
    _tell_users([user_id], {"type": "live.session.check"}, "session recheck")


# -- the end of a session ends its sockets --------------------------------------------------


def _on_logged_out(sender, request, user, **kwargs):
    if user is not None and user.pk is not None:
        session = getattr(request, "session", None)
        close_user_sockets(user.pk, getattr(session, "session_key", None))


def _auth_state(user) -> tuple:
    # From __dict__: a deferred field is not loaded just to remember it.
    return (user.__dict__.get("password"), user.__dict__.get("is_active"))


def _on_user_init(sender, instance, **kwargs):
    instance._vireo_auth_state = _auth_state(instance)


def _on_user_saved(sender, instance, created, update_fields=None, **kwargs):
    """A saved password or is_active change, whatever view made it: the user's sockets check
    their sessions (Django invalidates the other sessions of a changed password)."""
    before = getattr(instance, "_vireo_auth_state", (None, None))
    now = _auth_state(instance)
    instance._vireo_auth_state = now
    if created or (
        update_fields is not None and not {"password", "is_active"} & set(update_fields)
    ):
        return
    changed = [b is not None and n is not None and b != n for b, n in zip(before, now, strict=True)]
    if any(changed):
        sessions_recheck(instance.pk)


def connect_signals() -> None:
    """Hook logout and password / account changes to the sockets (PortalConfig.ready)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import post_init, post_save

    user_model = get_user_model()
    user_logged_out.connect(_on_logged_out, dispatch_uid="vireo-live-logout")
    post_init.connect(_on_user_init, sender=user_model, dispatch_uid="vireo-live-user-init")
    post_save.connect(_on_user_saved, sender=user_model, dispatch_uid="vireo-live-user-saved")
