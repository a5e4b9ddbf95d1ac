"""Live updates: tell every open page that shows an object that it changed.

Topics are short strings ("vm.12", "vms", "job.7", "events", "hosts", "storage"). Browsers
subscribe to topics over the websocket and, on a message, re-fetch the row or panel through a
normal view, so every permission check stays in views.

Each process publishes through one long-lived channel layer running on an event loop in a
thread of its own (`Publisher`): an update costs a few Redis round trips on connections that
stay open, not a new event loop and connection each time. Messages are channels-redis's own
`group_send`, which is what the consumers receive.
"""

import asyncio
import logging
import os
import threading

from asgiref.sync import async_to_sync
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers, get_channel_layer
from django.conf import settings
from django.core.signals import setting_changed
from django.db import transaction

log = logging.getLogger(__name__)

SEND_TIMEOUT = 10.0  # seconds a caller waits for one update before giving it up
# Topics every socket may follow without a permission check: they carry no data and reach
# only the user's own sockets (through the user group). "grants": the user's permissions
# changed, lists may hold more or fewer objects.
OWN_TOPICS = frozenset({"grants"})


class Publisher:
    """One channel layer per process on an event loop in a daemon thread. `run` hands it a
    coroutine and waits for the result, so callers stay synchronous and ordered. A forked child
    (an RQ work horse) and a changed CHANNEL_LAYERS setting start a fresh one."""

    def __init__(self) -> None:
        self._inherited: list = []
        self._forget()

    def _forget(self) -> None:
        # A forked child keeps its parent's loop and layer referenced, never closed: their
        # sockets are the parent's.
        self._inherited.append((getattr(self, "_loop", None), getattr(self, "_layer", None)))
        self._lock = threading.Lock()
        self._pid = None
        self._loop = None
        self._layer = None

    @staticmethod
    def _serve(loop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()  # channels-redis's hook on close closes this loop's connections

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        threading.Thread(
            target=self._serve, args=(loop,), name="vireo-live-publisher", daemon=True
        ).start()
        self._loop, self._pid = loop, os.getpid()
        self._layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)

    def run(self, make_coroutine, timeout: float = SEND_TIMEOUT):
        """Run `make_coroutine(layer)` on the publisher's loop and return its result."""
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._start()
            loop, layer = self._loop, self._layer
        future = asyncio.run_coroutine_threadsafe(make_coroutine(layer), loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        """Close the layer's connections and end the loop's thread (settings changed)."""
        with self._lock:
            loop, pid = self._loop, self._pid
            self._loop = self._layer = self._pid = None
        if loop is not None and pid == os.getpid():
            loop.call_soon_threadsafe(loop.stop)


publisher = Publisher()
os.register_at_fork(after_in_child=publisher._forget)


def _on_setting_changed(setting, **kwargs):
    if setting == "CHANNEL_LAYERS":
        publisher.stop()


setting_changed.connect(_on_setting_changed)


def _network_layer() -> bool:
    """Whether the configured layer is one processes share (Redis): the in-memory layer of a
    test setting lives in one process's one instance, which only get_channel_layer gives."""
    config = getattr(settings, "CHANNEL_LAYERS", {}).get(DEFAULT_CHANNEL_LAYER)
    return bool(config) and "InMemory" not in config.get("BACKEND", "")


def _group_send(messages: list[tuple[str, dict]]) -> None:
    """Send each (group, message) in order through the process's publisher."""
    if not messages or DEFAULT_CHANNEL_LAYER not in getattr(settings, "CHANNEL_LAYERS", {}):
        return

    async def send(layer):
        for group, message in messages:
            await layer.group_send(group, message)

    if _network_layer():
        publisher.run(send)
    else:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(send)(layer)


def group_name(topic: str) -> str:
    return f"live.{topic}"


def send_now(*topics: str) -> None:
    """Send "changed" for the topics at once (callers outside a transaction)."""
    try:
        _group_send(
            [
                (group_name(topic), {"type": "live.changed", "topic": topic})
                for topic in dict.fromkeys(topics)
            ]
        )
    except Exception as exc:  # a live update is best effort: the data is already committed
        log.warning("live update for %s not sent: %s", topics, exc)


def broadcast(*topics: str) -> None:
    """Send "changed" for the topics once the current transaction commits."""
    transaction.on_commit(lambda: send_now(*topics))


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
